//! sqlx arguments, the ones `#[sqlx::test]` takes plus a bare connection: `PgPool`,
//! `PoolConnection<Postgres>`, `PgConnection`, and the two arguments `(PgPoolOptions,
//! PgConnectOptions)`. Written once over the crate's path, for sqlx 0.9 (feature `sqlx`) and
//! sqlx 0.8 (feature `sqlx-0_8`, the dependency renamed `sqlx_0_8`): their types are distinct,
//! so a test gets the ones of the sqlx it uses.

use crate::error::{Error, ErrorKind, Result};
use crate::harness::args::{still_held, TestArg, CLOSE_TIMEOUT};
use crate::harness::test_db::{Mode, TestDb};
use crate::postgres::url::redacted;

macro_rules! sqlx_args {
    ($sqlx:ident, $version:literal) => {
        use ::$sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};

        /// The copy: its socket, port, superuser and database, without TLS (a Unix socket).
        fn connect_options(db: &TestDb) -> PgConnectOptions {
            let host = db.host();
            let mut options = match host.starts_with('/') {
                true => PgConnectOptions::new_without_pgpass().socket(host),
                false => PgConnectOptions::new_without_pgpass().host(&host),
            };
            if let Some(password) = db.password() {
                options = options.password(password);
            }
            options
                .port(db.port())
                .username(db.user())
                .database(db.dbname())
                .ssl_mode(PgSslMode::Disable)
        }

        /// A test's pool: as `#[sqlx::test]`'s, at most 5 connections.
        fn pool_options() -> PgPoolOptions {
            PgPoolOptions::new().max_connections(5)
        }

        /// A test's pool of the copy's database.
        async fn connect_pool(db: &TestDb) -> Result<::$sqlx::PgPool> {
            pool_options()
                .connect_with(connect_options(db))
                .await
                .map_err(|e| connect_error("PgPool", db, e))
        }

        fn connect_error(what: &str, db: &TestDb, e: ::$sqlx::Error) -> Error {
            Error::new(
                ErrorKind::Query,
                format!(
                    "connect a {what} ({}) to {}",
                    $version,
                    redacted(&db.connection_string())
                ),
            )
            .with_source(e)
        }

        /// Closes the test's pool, waiting for its connections to come back (bounded).
        async fn close(pool: ::$sqlx::PgPool) {
            if tokio::time::timeout(CLOSE_TIMEOUT, pool.close())
                .await
                .is_err()
            {
                still_held(concat!("PgPool (", $version, ")"));
            }
        }

        /// A pool of the copy's database, closed after the test.
        impl TestArg for ::$sqlx::PgPool {
            type Held = (::$sqlx::PgPool, TestDb);
            const MODE: Mode = Mode::Database;
            const SQLX: bool = true;

            async fn make(db: TestDb) -> Result<(Self, Self::Held)> {
                let pool = connect_pool(&db).await?;
                Ok((pool.clone(), (pool, db)))
            }

            async fn end((pool, db): Self::Held) {
                close(pool).await;
                drop(db);
            }
        }

        /// One connection of a test pool, as `#[sqlx::test]` gives; the pool is closed after
        /// the test.
        impl TestArg for ::$sqlx::pool::PoolConnection<::$sqlx::Postgres> {
            type Held = (::$sqlx::PgPool, TestDb);
            const MODE: Mode = Mode::Database;
            const SQLX: bool = true;

            async fn make(db: TestDb) -> Result<(Self, Self::Held)> {
                let pool = connect_pool(&db).await?;
                let connection = pool
                    .acquire()
                    .await
                    .map_err(|e| connect_error("PoolConnection", &db, e))?;
                Ok((connection, (pool, db)))
            }

            async fn end((pool, db): Self::Held) {
                close(pool).await;
                drop(db);
            }
        }

        /// A connection of the test's own; it ends when the test drops it.
        impl TestArg for ::$sqlx::PgConnection {
            type Held = TestDb;
            const MODE: Mode = Mode::Database;
            const SQLX: bool = true;

            async fn make(db: TestDb) -> Result<(Self, TestDb)> {
                let connection = <::$sqlx::PgConnection as ::$sqlx::Connection>::connect_with(
                    &connect_options(&db),
                )
                .await
                .map_err(|e| connect_error("PgConnection", &db, e))?;
                Ok((connection, db))
            }

            async fn end(db: TestDb) {
                drop(db);
            }
        }

        /// `#[sqlx::test]`'s two-argument form: the options to build a pool of the copy with.
        impl TestArg for (PgPoolOptions, PgConnectOptions) {
            type Held = TestDb;
            const MODE: Mode = Mode::Database;
            const SQLX: bool = true;

            async fn make(db: TestDb) -> Result<(Self, TestDb)> {
                Ok(((pool_options(), connect_options(&db)), db))
            }

            async fn end(db: TestDb) {
                drop(db);
            }
        }
    };
}

#[cfg(feature = "sqlx")]
mod v0_9 {
    use super::*;
    sqlx_args!(sqlx, "sqlx 0.9");
}

#[cfg(feature = "sqlx-0_8")]
mod v0_8 {
    use super::*;
    sqlx_args!(sqlx_0_8, "sqlx 0.8");
}
