//! Migration formats: the applications' own runners (sqlx, diesel, refinery) find nothing to do
//! on a copy of a golden built from their migrations, and apply a migration added later.

use std::path::Path;

use pgclone::{ErrorKind, Golden, TestDb};
// The runner of sqlx 0.8 (`sqlx` is 0.9): the dependency of pgclone's feature `sqlx-0_8`.
use sqlx_0_8 as sqlx;

/// Writes `text` to `dir/name`, creating directories on the way.
fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// The first column of each row of `sql`, a text.
async fn rows(db: &TestDb, sql: &str) -> Vec<String> {
    let rows = db.client().query(sql, &[]).await.unwrap();
    rows.iter().map(|row| row.get(0)).collect()
}

/// The numbers in `log`.
async fn log(db: &TestDb) -> Vec<String> {
    rows(db, "select n::text from log order by log.n").await
}

/// Whether the index `name` exists and is valid (a failed `create index concurrently` leaves
/// an invalid one).
async fn valid_index(db: &TestDb, name: &str) -> bool {
    let sql =
        format!("select indisvalid::text from pg_index where indexrelid = '{name}'::regclass");
    rows(db, &sql).await == ["true"]
}

#[tokio::test]
async fn the_sqlx_runner_finds_nothing_to_do_on_a_copy_and_applies_a_new_migration() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path();
    write(
        m,
        "1_create_log.sql",
        "create table log(n int primary key);",
    );
    write(
        m,
        "2_y.sql",
        "create table y(n int); insert into log values (2);",
    );
    // After 2 in numeric order (before it in lexical order, where it would fail).
    write(
        m,
        "10_x.sql",
        "insert into y values (10); insert into log values (10);",
    );
    write(m, "3_reversible.up.sql", "insert into log values (3);");
    write(m, "3_reversible.down.sql", "drop table log;");
    write(
        m,
        "4_index.sql",
        "-- no-transaction\ncreate index concurrently log_n on log (n);",
    );
    write(m, "README.md", "not a migration");
    write(m, "notes.sql", "not a migration either: no version");

    let golden = Golden::new("sqlx_app").sqlx_migrations(m);
    let db = TestDb::start(&golden).await.unwrap();
    assert_eq!(log(&db).await, ["2", "3", "10"]);
    assert!(valid_index(&db, "log_n").await);
    let bookkeeping =
        "select concat_ws('|', version, description, installed_on, success, \
                       encode(checksum, 'hex'), execution_time >= 0) from _sqlx_migrations order by version";
    let before = rows(&db, bookkeeping).await;
    assert_eq!(before.len(), 5, "{before:?}");
    assert!(
        before.iter().all(|row| row.ends_with("|t")),
        "execution times: {before:?}"
    );

    let pool = sqlx::PgPool::connect(&db.connection_string())
        .await
        .unwrap();
    let migrator = sqlx::migrate::Migrator::new(m).await.unwrap();
    let descriptions: Vec<String> = migrator
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .map(|m| format!("{}|{}", m.version, m.description))
        .collect();
    let ours: Vec<String> = before
        .iter()
        .map(|row| row.split('|').take(2).collect::<Vec<_>>().join("|"))
        .collect();
    assert_eq!(
        ours, descriptions,
        "versions and descriptions as sqlx reads them"
    );
    migrator.run(&pool).await.unwrap();
    assert_eq!(
        rows(&db, bookkeeping).await,
        before,
        "sqlx applied something"
    );
    assert_eq!(log(&db).await, ["2", "3", "10"]);

    write(m, "11_z.sql", "insert into log values (11);");
    let migrator = sqlx::migrate::Migrator::new(m).await.unwrap();
    migrator.run(&pool).await.unwrap();
    assert_eq!(log(&db).await, ["2", "3", "10", "11"]);
    assert_eq!(rows(&db, bookkeeping).await.len(), 6);
    pool.close().await;
    db.close().await.unwrap();
}

#[tokio::test]
async fn the_diesel_runner_finds_nothing_to_do_on_a_copy_and_applies_a_new_migration() {
    use diesel::Connection;
    use diesel_migrations::{FileBasedMigrations, MigrationHarness};

    let dir = tempfile::tempdir().unwrap();
    let m = dir.path();
    write(
        m,
        "2024-01-01-000000_create_log/up.sql",
        "create table log(n int primary key);",
    );
    write(
        m,
        "2024-01-01-000000_create_log/down.sql",
        "drop table log;",
    );
    write(
        m,
        "2024-01-02-000000_y/up.sql",
        "create table y(n int); insert into log values (2);",
    );
    write(m, "2024-01-02-000000_y/down.sql", "drop table y;");
    write(
        m,
        "2024-01-10-000000_x/up.sql",
        "insert into y values (10); insert into log values (10);",
    );
    write(m, "2024-01-10-000000_x/down.sql", "delete from y;");
    write(
        m,
        "2024-01-11-000000_index/up.sql",
        "create index concurrently log_n on log (n);",
    );
    write(
        m,
        "2024-01-11-000000_index/metadata.toml",
        "run_in_transaction = false\n",
    );
    write(m, "README.md", "not a migration");

    let golden = Golden::new("diesel_app").diesel_migrations(m);
    let db = TestDb::start(&golden).await.unwrap();
    assert_eq!(log(&db).await, ["2", "10"]);
    assert!(valid_index(&db, "log_n").await);
    let bookkeeping =
        "select concat_ws('|', version, run_on) from __diesel_schema_migrations order by version";
    let before = rows(&db, bookkeeping).await;
    assert_eq!(before.len(), 4, "{before:?}");

    let (url, dir_path) = (db.connection_string(), m.to_path_buf());
    let run = move || {
        let mut conn = diesel::PgConnection::establish(&url).unwrap();
        let migrations = FileBasedMigrations::from_path(&dir_path).unwrap();
        let applied = conn.run_pending_migrations(migrations).unwrap();
        applied.iter().map(|v| v.to_string()).collect::<Vec<_>>()
    };
    let applied = tokio::task::spawn_blocking(run.clone()).await.unwrap();
    assert!(applied.is_empty(), "diesel applied {applied:?}");
    assert_eq!(rows(&db, bookkeeping).await, before);

    write(
        m,
        "2024-01-12-000000_z/up.sql",
        "insert into log values (12);",
    );
    let applied = tokio::task::spawn_blocking(run).await.unwrap();
    assert_eq!(applied, ["20240112000000"]);
    assert_eq!(log(&db).await, ["2", "10", "12"]);
    db.close().await.unwrap();
}

#[tokio::test]
async fn the_refinery_runner_finds_nothing_to_do_on_a_copy_and_applies_a_new_migration() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path();
    write(
        m,
        "V1__create_log.sql",
        "create table log(n int primary key, note text);",
    );
    write(
        m,
        "V2__y.sql",
        "create table y(n int); insert into log values (2, 'it''s');",
    );
    // After 2 in numeric order (before it in lexical order, where it would fail).
    write(
        m,
        "V10__x.sql",
        "insert into y values (10); insert into log values (10, null);",
    );
    write(
        m,
        "more/U3__unversioned.sql",
        "insert into log values (3, null);",
    );
    write(m, "V4__not-a-name.sql", "drop table log;");
    write(m, "README.md", "not a migration");

    let golden = Golden::new("refinery_app").refinery_migrations(m);
    let db = TestDb::start(&golden).await.unwrap();
    assert_eq!(log(&db).await, ["2", "3", "10"]);
    let bookkeeping =
        "select concat_ws('|', version, name, applied_on, checksum) from refinery_schema_history order by version";
    let before = rows(&db, bookkeeping).await;
    assert_eq!(before.len(), 4, "{before:?}");

    let mut client = db.connect().await.unwrap();
    let migrations = refinery::load_sql_migrations(m).unwrap();
    let report = refinery::Runner::new(&migrations)
        .run_async(&mut client)
        .await
        .unwrap();
    let applied: Vec<String> = report
        .applied_migrations()
        .iter()
        .map(|m| m.to_string())
        .collect();
    assert!(applied.is_empty(), "refinery applied {applied:?}");
    assert_eq!(rows(&db, bookkeeping).await, before);

    write(m, "V11__z.sql", "insert into log values (11, null);");
    let migrations = refinery::load_sql_migrations(m).unwrap();
    let report = refinery::Runner::new(&migrations)
        .run_async(&mut client)
        .await
        .unwrap();
    assert_eq!(report.applied_migrations().len(), 1);
    assert_eq!(log(&db).await, ["2", "3", "10", "11"]);
    drop(client);
    db.close().await.unwrap();
}

/// A sqlx `Migrator` of the application's own (`migrator = "crate::MIGRATOR"` in a test)
/// builds the golden by running itself: the runner then finds nothing to do on a copy, and a
/// changed migration is a new golden.
#[tokio::test]
async fn a_sqlx_migrator_builds_the_golden_and_its_migrations_are_in_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path();
    write(
        m,
        "1_create_log.sql",
        "create table log(n int primary key);",
    );
    write(m, "2_first.sql", "insert into log values (2);");
    let migrator: &'static sqlx::migrate::Migrator =
        Box::leak(Box::new(sqlx::migrate::Migrator::new(m).await.unwrap()));
    let db = TestDb::start(&Golden::new("sqlx_migrator").sqlx_migrator(migrator))
        .await
        .unwrap();
    assert_eq!(log(&db).await, ["2"]);
    let pool = sqlx::PgPool::connect(&db.connection_string())
        .await
        .unwrap();
    migrator.run(&pool).await.unwrap();
    assert_eq!(log(&db).await, ["2"], "nothing left to run");
    pool.close().await;
    db.close().await.unwrap();

    write(m, "2_first.sql", "insert into log values (20);");
    let changed: &'static sqlx::migrate::Migrator =
        Box::leak(Box::new(sqlx::migrate::Migrator::new(m).await.unwrap()));
    let db = TestDb::start(&Golden::new("sqlx_migrator").sqlx_migrator(changed))
        .await
        .unwrap();
    assert_eq!(
        log(&db).await,
        ["20"],
        "a changed migration is another golden"
    );
    db.close().await.unwrap();
}

/// A migration recorded by the recipe with other bytes than the migrator's: sqlx's own
/// checksum check refuses it, and the error says what to do.
#[tokio::test]
async fn a_migrator_whose_checksum_differs_from_the_recorded_one_is_an_error() {
    let (recorded, changed) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write(recorded.path(), "1_log.sql", "create table log(n int);");
    write(changed.path(), "1_log.sql", "create table log(n bigint);");
    let migrator: &'static sqlx::migrate::Migrator = Box::leak(Box::new(
        sqlx::migrate::Migrator::new(changed.path()).await.unwrap(),
    ));
    let golden = Golden::new("sqlx_mismatch")
        .sqlx_migrations(recorded.path())
        .sqlx_migrator(migrator);
    let err = TestDb::start(&golden).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Golden, "{err}");
    let text = format!("{err}");
    assert!(
        text.contains("golden \"sqlx_mismatch\": the sqlx migrator failed"),
        "{text}"
    );
    assert!(
        text.contains("previously applied but has been modified"),
        "{text}"
    );
    assert!(text.contains("one source of migrations"), "{text}");
}

/// The error a golden of `files` (sqlx migrations) fails with.
async fn sqlx_error(files: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        write(dir.path(), name, text);
    }
    let golden = Golden::new("sqlx_bad").sqlx_migrations(dir.path());
    let err = TestDb::start(&golden).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Golden, "{err}");
    err.to_string()
}

#[tokio::test]
async fn a_sqlx_version_that_is_not_an_integer_is_an_error_naming_the_file_and_the_fix() {
    let text = sqlx_error(&[("1_a.sql", "select 1"), ("2024-01-31_b.sql", "select 2")]).await;
    assert!(
        text.contains("2024-01-31_b.sql: \"2024-01-31\" is not an integer version"),
        "{text}"
    );
    assert!(
        text.contains("<version>_<description>.sql") && text.contains("rename the file"),
        "{text}"
    );
}

#[tokio::test]
async fn two_sqlx_migrations_of_one_version_are_an_error_naming_both_files() {
    let text = sqlx_error(&[("1_a.sql", "select 1"), ("001_b.sql", "select 2")]).await;
    assert!(
        text.contains("001_b.sql and ") && text.contains("1_a.sql have the same version, 1"),
        "{text}"
    );
    assert!(text.contains("a version of its own"), "{text}");
}

/// With no `migrations`, `migrator` or `golden`, the crate's `./migrations` (here a directory
/// of its own) is applied in sqlx's format to a test taking a sqlx type, as `#[sqlx::test]`
/// does, and not to a `TestDb` test: its crate's `migrations/` may be another tool's.
#[test]
fn inferred_migrations_are_for_sqlx_arguments_only() {
    use std::sync::atomic::{AtomicI64, Ordering};
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "1_notes.sql", "create table notes (body text);");
    let path: &'static str = Box::leak(dir.path().display().to_string().into_boxed_str());
    let spec = |name| pgclone::__private::TestSpec {
        migrations: pgclone::__private::Migrations::IfExists(path),
        ..crate::support::spec(name)
    };
    static FOUND: AtomicI64 = AtomicI64::new(-1);
    const TABLES: &str = "select count(*) from pg_tables where tablename = 'notes'";

    let pool: fn(::sqlx::PgPool) -> _ = |pool| async move {
        let (n,): (i64,) = ::sqlx::query_as(TABLES).fetch_one(&pool).await.unwrap();
        FOUND.store(n, Ordering::SeqCst);
    };
    pgclone::__private::run_async(spec("migrations::inferred_for_a_pool"), pool);
    assert_eq!(
        FOUND.load(Ordering::SeqCst),
        1,
        "a sqlx test gets ./migrations"
    );

    let test_db: fn(TestDb) -> _ = |db| async move {
        let n: i64 = db.client().query_one(TABLES, &[]).await.unwrap().get(0);
        FOUND.store(n, Ordering::SeqCst);
    };
    pgclone::__private::run_async(spec("migrations::not_for_a_test_db"), test_db);
    assert_eq!(
        FOUND.load(Ordering::SeqCst),
        0,
        "a TestDb test gets an empty cluster"
    );
}

/// A setup hook given the connection string: code with a client of its own (sea-orm's
/// migrator, here sqlx 0.9 as sea-orm uses it) reaches the golden database through it.
#[tokio::test]
async fn a_setup_hook_with_a_connection_string_runs_its_own_client() {
    let golden = Golden::new("url_hook")
        .setup_url(|url| async move {
            let pool = ::sqlx::PgPool::connect(&url).await?;
            ::sqlx::query("create table seeded as select 42 as answer")
                .execute(&pool)
                .await?;
            pool.close().await;
            Ok::<_, ::sqlx::Error>(())
        })
        .version("1");
    let db = TestDb::start(&golden).await.unwrap();
    assert_eq!(rows(&db, "select answer::text from seeded").await, ["42"]);
    db.close().await.unwrap();
}
