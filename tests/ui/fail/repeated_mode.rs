#[pgclone::test(mode = "cluster", flavor = "multi_thread", mode = "database")]
async fn t(_db: pgclone::TestDb) {}

fn main() {}
