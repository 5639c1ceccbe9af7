use pgclone::Golden;

fn a() -> Golden {
    Golden::new("a")
}

fn b() -> Golden {
    Golden::new("b")
}

#[pgclone::test(golden = a, golden = b)]
async fn t(_db: pgclone::TestDb) {}

fn main() {
    // Still defined: a rejected test keeps its function, so only the macro's error shows.
    let _ = t;
}
