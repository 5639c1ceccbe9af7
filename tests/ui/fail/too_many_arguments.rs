#[pgclone::test]
async fn t(_a: pgclone::TestDb, _b: pgclone::TestDb, _c: pgclone::TestDb) {}

fn main() {}
