#[pgclone::test]
#[test]
async fn t(_db: pgclone::TestDb) {}

fn main() {}
