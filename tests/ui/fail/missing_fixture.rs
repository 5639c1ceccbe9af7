use pgclone::TestDb;

#[pgclone::test(fixtures("users", "missing"))]
async fn reads_fixtures(_db: TestDb) {}

fn main() {}
