#[pgclone::test]
async fn takes_a_string(_url: String) {}

#[pgclone::test]
fn returns_a_number(_db: pgclone::TestDb) -> i32 {
    1
}

fn main() {}
