#[pgclone::test(colour = "red")]
async fn t(_db: pgclone::TestDb) {}

fn main() {}
