#[pgclone::test(flavor = "multi_thread", worker_threads = 0)]
async fn t(_db: pgclone::TestDb) {}

fn main() {}
