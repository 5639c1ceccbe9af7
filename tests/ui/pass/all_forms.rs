use pgclone::{Golden, TestDb};

fn app() -> Golden {
    Golden::new("app").sql("create table t(x int)")
}

#[pgclone::test(golden = app)]
async fn cluster_mode(db: TestDb) {
    let _ = db.client();
}

#[pgclone::test(golden = app, mode = "database")]
async fn database_mode(_db: TestDb) -> Result<(), Box<dyn std::error::Error>> {
    let parsed: i32 = "1".parse()?;
    assert_eq!(parsed, 1);
    Ok(())
}

#[pgclone::test(golden = self::app, mode = "cluster", flavor = "multi_thread", worker_threads = 2)]
async fn runtime_options(_db: TestDb) {}

#[pgclone::test]
fn sync_and_empty(db: TestDb) {
    let _url = db.connection_string();
}

#[pgclone::test(golden = app)]
#[should_panic(expected = "boom")]
#[ignore = "other attributes keep working"]
async fn with_attributes(_db: TestDb) {
    panic!("boom")
}

#[pgclone::test(golden = app)]
async fn no_argument() {}

#[pgclone::test(mode = "database")]
fn sync_no_argument() -> Result<(), String> {
    Ok(())
}

#[pgclone::test(golden = app)]
async fn a_client(client: tokio_postgres::Client) {
    let _ = client.is_closed();
}

// #[sqlx::test]'s arguments, with sqlx's argument types.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate::Migrator::DEFAULT;

#[pgclone::test(migrator = "MIGRATOR", fixtures("rows"))]
async fn sqlx_migrator_and_fixture(_pool: sqlx::PgPool) {}

#[pgclone::test(migrations = false, fixtures(path = "fixtures", scripts("rows")))]
async fn no_migrations(_conn: sqlx::PgConnection) {}

#[pgclone::test(migrations = "migrations", fixtures("./fixtures/rows.sql"))]
async fn a_directory(
    _options: sqlx::postgres::PgPoolOptions,
    _connect: sqlx::postgres::PgConnectOptions,
) {
}

#[pgclone::test(golden = app, mode = "database", fixtures("rows"))]
async fn fixtures_on_a_golden(_conn: sqlx::pool::PoolConnection<sqlx::Postgres>) {}

fn main() {}
