//! A sample suite as users write it: one golden, 50+ tests in both modes, each test writing the
//! same keys at the same time as the others and seeing only its own. Runs under `cargo test`
//! (threads) and `cargo nextest run` (a process per test).

use std::time::Duration;

use pgclone::{Golden, Method, TestDb};

fn shop() -> Golden {
    Golden::new("sample_shop").migrations("tests/sample/migrations")
}

/// Writes keys 1..=50 (the same keys every test writes), waits so that tests overlap, and checks
/// that the table holds exactly this test's rows.
async fn write_own_keys(db: &TestDb, me: &str) {
    let client = db.client();
    client
        .execute(
            "insert into kv (k, v) select g, $1 from generate_series(1, 50) g",
            &[&me],
        )
        .await
        .expect("the keys are free in this test's own copy");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let row = client
        .query_one("select count(*), count(distinct v), min(v) from kv", &[])
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, i64>(0), row.get::<_, i64>(1)),
        (50, 1),
        "only this test's rows"
    );
    assert_eq!(row.get::<_, String>(2), me);
    let products: i64 = client
        .query_one("select count(*) from products", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(products, 10, "the fixture is there");
}

macro_rules! isolated {
    ($mode:literal: $($name:ident),* $(,)?) => { $(
        #[pgclone::test(golden = shop, mode = $mode)]
        async fn $name(db: TestDb) {
            write_own_keys(&db, stringify!($name)).await;
        }
    )* };
}

isolated!("cluster": c01, c02, c03, c04, c05, c06, c07, c08, c09, c10, c11, c12, c13, c14, c15, c16, c17, c18, c19, c20, c21, c22, c23, c24, c25);
isolated!("database": d01, d02, d03, d04, d05, d06, d07, d08, d09, d10, d11, d12, d13, d14, d15, d16, d17, d18, d19, d20, d21, d22, d23, d24, d25);

#[pgclone::test(golden = shop)]
async fn result_test_passes(db: TestDb) -> Result<(), tokio_postgres::Error> {
    let n: i64 = db
        .client()
        .query_one("select count(*) from products", &[])
        .await?
        .get(0);
    assert_eq!(n, 10);
    Ok(())
}

#[pgclone::test(golden = shop)]
#[should_panic(expected = "Error:")]
async fn result_test_returning_err_fails(db: TestDb) -> Result<(), tokio_postgres::Error> {
    db.client()
        .query_one("select * from no_such_table", &[])
        .await?;
    Ok(())
}

#[pgclone::test(golden = shop, mode = "database")]
#[should_panic(expected = "boom")]
async fn panicking_test_fails_and_still_cleans_up(db: TestDb) {
    db.client()
        .execute("insert into kv values (1, 'x')", &[])
        .await
        .unwrap();
    panic!("boom");
}

#[pgclone::test(golden = shop)]
fn sync_test_with_psql(db: TestDb) {
    let output = std::process::Command::new("psql")
        .arg(db.connection_string())
        .args([
            "-X",
            "-A",
            "-t",
            "-c",
            "select sum(price_cents) from products",
        ])
        .output()
        .expect("psql is installed");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "5500");
}

#[pgclone::test(golden = shop, flavor = "multi_thread", worker_threads = 2)]
async fn multi_thread_runtime(db: TestDb) {
    let (a, b) = tokio::join!(
        db.client().query_one("select count(*) from products", &[]),
        db.client().query_one("select count(*) from kv", &[])
    );
    assert_eq!(
        (a.unwrap().get::<_, i64>(0), b.unwrap().get::<_, i64>(0)),
        (10, 0)
    );
}

#[pgclone::test(golden = shop)]
#[ignore = "ignored tests stay ignored"]
async fn ignored(_db: TestDb) {
    panic!("never runs");
}

#[pgclone::test(golden = shop)]
async fn fork_sees_the_state_at_fork_time_and_diverges(db: TestDb) {
    db.client()
        .execute("insert into kv values (1, 'before')", &[])
        .await
        .unwrap();
    let fork = db.fork().await.unwrap();
    db.client()
        .execute("insert into kv values (2, 'after')", &[])
        .await
        .unwrap();
    fork.client()
        .execute("insert into kv values (3, 'fork only')", &[])
        .await
        .unwrap();
    let values = |rows: Vec<tokio_postgres::Row>| {
        rows.iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
    };
    let in_fork = values(
        fork.client()
            .query("select v from kv order by k", &[])
            .await
            .unwrap(),
    );
    let in_original = values(
        db.client()
            .query("select v from kv order by k", &[])
            .await
            .unwrap(),
    );
    assert_eq!(in_fork, ["before", "fork only"]);
    assert_eq!(in_original, ["before", "after"]);
    assert!(matches!(fork.method(), Method::Clone(_)));
}

#[pgclone::test]
async fn no_golden_is_an_empty_cluster(db: TestDb) {
    assert_eq!(db.dbname(), "postgres");
    let tables: i64 = db
        .client()
        .query_one(
            "select count(*) from pg_tables where schemaname = 'public'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 0);
}

#[pgclone::test(golden = shop, mode = "database")]
async fn database_mode_reports_its_method(db: TestDb) {
    assert!(matches!(db.method(), Method::CreateDatabase { .. }));
    assert!(db.dbname().starts_with("sample_shop_"));
}

/// A test written for `#[sqlx::test]` (a `PgPool` argument) runs unchanged: pgclone's feature
/// `sqlx` (sqlx 0.9) makes the pool.
#[pgclone::test(golden = shop, mode = "database")]
async fn a_sqlx_test_runs_unchanged(pool: sqlx::PgPool) -> sqlx::Result<()> {
    sqlx::query("insert into kv (k, v) values (1, 'sqlx')")
        .execute(&pool)
        .await?;
    let products: i64 = sqlx::query_scalar("select count(*) from products")
        .fetch_one(&pool)
        .await?;
    assert_eq!(products, 10);
    Ok(())
}
