#[pgclone::test(worker_threads = 2)]
async fn t(_db: pgclone::TestDb) {}

fn main() {}
