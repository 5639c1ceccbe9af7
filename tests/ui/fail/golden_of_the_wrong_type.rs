fn app() -> u32 {
    7
}

#[pgclone::test(golden = app)]
async fn t(_db: pgclone::TestDb) {}

fn main() {}
