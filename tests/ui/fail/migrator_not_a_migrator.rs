static NOT_A_MIGRATOR: &str = "migrations";

#[pgclone::test(migrator = "NOT_A_MIGRATOR")]
async fn migrated(_pool: sqlx::PgPool) {}

fn main() {}
