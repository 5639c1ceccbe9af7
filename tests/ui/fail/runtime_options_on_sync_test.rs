#[pgclone::test(flavor = "multi_thread")]
fn t(_db: pgclone::TestDb) {}

fn main() {}
