#[pgclone::test(mode = "both")]
async fn t(_db: pgclone::TestDb) {}

fn main() {}
