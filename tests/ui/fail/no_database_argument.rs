#[pgclone::test]
async fn t() {}

fn main() {}
