//! The argument types of `#[pgclone::test]` (`pgclone::TestArg`): each gets the test's copy and
//! works in it, sqlx 0.8 and 0.9 alike; what the harness opened for the test is closed before
//! the copy is torn down, even if the test keeps a handle to it.

use std::sync::{Mutex, OnceLock};

use pgclone::{Golden, Mode, TestDb};

fn items() -> Golden {
    Golden::new("args_items").sql("create table items (id int primary key, name text not null)")
}

fn spec(name: &'static str, mode: Mode) -> pgclone::__private::TestSpec {
    pgclone::__private::TestSpec {
        golden: Some(items),
        mode: Some(mode),
        ..crate::support::spec(name)
    }
}

#[pgclone::test(golden = items)]
async fn the_test_db(db: TestDb) {
    db.client()
        .execute("insert into items values (1, 'one')", &[])
        .await
        .unwrap();
    let row = db
        .client()
        .query_one("select name from items", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "one");
}

#[pgclone::test(golden = items, mode = "database")]
async fn a_tokio_postgres_client(client: tokio_postgres::Client) {
    client
        .execute("insert into items values (1, 'one')", &[])
        .await
        .unwrap();
    let row = client
        .query_one("select name from items", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "one");
}

#[pgclone::test(golden = items)]
async fn no_argument() {}

#[pgclone::test(golden = items)]
fn no_argument_sync() {}

/// A client the test leaks is cut when the test ends, before its copy goes.
#[test]
fn a_leaked_client_is_disconnected_before_teardown() {
    static LEAKED: Mutex<Option<tokio_postgres::Client>> = Mutex::new(None);
    let test: fn(tokio_postgres::Client) -> _ = |client| async move {
        *LEAKED.lock().unwrap() = Some(client);
    };
    pgclone::__private::run_async(spec("args::leaked_client", Mode::Database), test);
    let client = LEAKED.lock().unwrap().take().unwrap();
    assert!(client.is_closed(), "its connection ended with the test");
}

#[pgclone::test(golden = items)]
fn a_diesel_connection(mut connection: diesel::PgConnection) {
    use diesel::RunQueryDsl;
    diesel::sql_query("insert into items values (1, 'one')")
        .execute(&mut connection)
        .unwrap();
    let name: String = diesel::select(diesel::dsl::sql::<diesel::sql_types::Text>(
        "(select name from items where id = 1)",
    ))
    .get_result(&mut connection)
    .unwrap();
    assert_eq!(name, "one");
}

/// The same tests for sqlx 0.9 (`sqlx`) and sqlx 0.8 (`sqlx_0_8`).
macro_rules! sqlx_tests {
    ($module:ident, $sqlx:ident) => {
        mod $module {
            use super::*;
            use ::$sqlx::postgres::{PgConnectOptions, PgPoolOptions};
            use ::$sqlx::{PgConnection, PgPool, Postgres};

            async fn insert_and_select<'c, E>(executor: E) -> String
            where
                E: ::$sqlx::Executor<'c, Database = Postgres> + Copy,
            {
                ::$sqlx::query("insert into items values (1, 'one')")
                    .execute(executor)
                    .await
                    .unwrap();
                ::$sqlx::query_scalar("select name from items where id = 1")
                    .fetch_one(executor)
                    .await
                    .unwrap()
            }

            #[pgclone::test(golden = items)]
            async fn a_pool(pool: PgPool) {
                assert_eq!(insert_and_select(&pool).await, "one");
            }

            #[pgclone::test(golden = items, mode = "database")]
            async fn a_pool_in_database_mode(pool: PgPool) -> Result<(), ::$sqlx::Error> {
                assert_eq!(insert_and_select(&pool).await, "one");
                Ok(())
            }

            #[pgclone::test(golden = items, mode = "database")]
            async fn a_pool_connection(mut connection: ::$sqlx::pool::PoolConnection<Postgres>) {
                ::$sqlx::query("insert into items values (1, 'one')")
                    .execute(&mut *connection)
                    .await
                    .unwrap();
                let name: String = ::$sqlx::query_scalar("select name from items")
                    .fetch_one(&mut *connection)
                    .await
                    .unwrap();
                assert_eq!(name, "one");
            }

            #[pgclone::test(golden = items)]
            async fn a_connection(mut connection: PgConnection) {
                ::$sqlx::query("insert into items values (1, 'one')")
                    .execute(&mut connection)
                    .await
                    .unwrap();
                let name: String = ::$sqlx::query_scalar("select name from items")
                    .fetch_one(&mut connection)
                    .await
                    .unwrap();
                assert_eq!(name, "one");
            }

            #[pgclone::test(golden = items, mode = "database")]
            async fn pool_and_connect_options(options: PgPoolOptions, connect: PgConnectOptions) {
                let pool = options.connect_with(connect).await.unwrap();
                assert_eq!(insert_and_select(&pool).await, "one");
                pool.close().await;
            }

            /// The harness closes the test's pool (all its sessions gone) before the copy goes,
            /// also when the test keeps a handle to it.
            #[test]
            fn a_kept_pool_is_closed_before_teardown() {
                static KEPT: OnceLock<PgPool> = OnceLock::new();
                let test: fn(PgPool) -> _ = |pool| async move {
                    assert_eq!(insert_and_select(&pool).await, "one");
                    let _ = KEPT.set(pool);
                };
                pgclone::__private::run_async(
                    spec(concat!("args::", stringify!($module)), Mode::Database),
                    test,
                );
                let pool = KEPT.get().unwrap();
                assert!(pool.is_closed());
                assert_eq!(pool.size(), 0, "no connection left");
            }
        }
    };
}

sqlx_tests!(sqlx_0_9, sqlx);
sqlx_tests!(sqlx_0_8, sqlx_0_8);
