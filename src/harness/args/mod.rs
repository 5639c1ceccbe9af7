//! The argument types of `#[pgclone::test]` functions: [`TestArg`] builds one from the test's
//! copy and, after the test, ends what it opened before the copy is torn down. One file per
//! family: `tokio_postgres` (always), `sqlx` (features `sqlx` and `sqlx-0_8`), `diesel`
//! (feature `diesel`). The macro knows none of them: it hands the function over as a fn
//! pointer, and these impls decide which parameter types compile.

use std::future::Future;

use crate::error::Result;
use crate::harness::test_db::{Mode, TestDb};

#[cfg(feature = "diesel")]
mod diesel;
#[cfg(any(feature = "sqlx", feature = "sqlx-0_8"))]
mod sqlx;
mod tokio_postgres;

/// A type a `#[pgclone::test]` function may take as its argument: the test's copy reached
/// through it. Implemented by pgclone for:
///
/// | argument | feature |
/// | --- | --- |
/// | `pgclone::TestDb` (the copy, with a connected client) | |
/// | `tokio_postgres::Client` | |
/// | `sqlx::PgPool`, `sqlx::pool::PoolConnection<sqlx::Postgres>`, `sqlx::PgConnection` | `sqlx` (sqlx 0.9), `sqlx-0_8` (sqlx 0.8) |
/// | two arguments: `sqlx::postgres::PgPoolOptions, sqlx::postgres::PgConnectOptions` | `sqlx`, `sqlx-0_8` |
/// | `diesel::PgConnection` (sync tests) | `diesel` |
///
/// A function with no argument gets its copy made (the golden built) and torn down, and is not
/// connected to it. After the test, what the harness opened goes first (a sqlx pool is closed,
/// waiting for its connections), then the copy, so that no session of the test is left in it.
///
/// Its methods are the harness's, not an API.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the argument of a #[pgclone::test] function",
    label = "not an argument type pgclone knows",
    note = "accepted: `pgclone::TestDb`, `tokio_postgres::Client`; with feature `sqlx` (sqlx 0.9) or `sqlx-0_8` (sqlx 0.8): `sqlx::PgPool`, `sqlx::PgConnection`, `sqlx::pool::PoolConnection<sqlx::Postgres>`, or the two arguments `(sqlx::postgres::PgPoolOptions, sqlx::postgres::PgConnectOptions)`; with feature `diesel`: `diesel::PgConnection`",
    note = "the sqlx types must come from the sqlx the enabled feature names: pgclone's `sqlx` feature is sqlx 0.9, `sqlx-0_8` is sqlx 0.8"
)]
pub trait TestArg: Sized {
    /// What the harness holds while the test runs (the copy, unless it is the argument, and
    /// what must be closed afterwards).
    #[doc(hidden)]
    type Held;

    /// Whether the copy's own tokio-postgres client is wanted ([`TestDb::client`]); the other
    /// arguments connect their own way and pay for no such connection.
    #[doc(hidden)]
    const CLIENT: bool = false;

    /// The mode a test with this argument gets when neither its attribute nor `PGCLONE_MODE`
    /// names one, under `cargo test` and nextest alike: cluster mode, except for sqlx's types,
    /// which get a database per test as `#[sqlx::test]` gives (faster for such suites: README,
    /// section "Against `#[sqlx::test]`").
    const MODE: Mode = Mode::Cluster;

    /// Whether this is one of sqlx's types, whose tests get the crate's `./migrations` (sqlx's
    /// format) when the attribute names no migrations and no golden, as `#[sqlx::test]` does.
    /// Other arguments get an empty cluster then: their crate's `migrations/` may be another
    /// tool's.
    #[doc(hidden)]
    const SQLX: bool = false;

    /// Builds the argument from the test's copy (on the test's runtime). On error the copy,
    /// dropped, goes back to the harness.
    #[doc(hidden)]
    fn make(db: TestDb) -> impl Future<Output = Result<(Self, Self::Held)>>;

    /// After the test (passed, failed or panicked): closes what [`make`](TestArg::make) opened,
    /// then drops the copy.
    #[doc(hidden)]
    fn end(held: Self::Held) -> impl Future<Output = ()>;
}

/// No argument: the copy is made, not connected to, and torn down.
impl TestArg for () {
    type Held = TestDb;

    async fn make(db: TestDb) -> Result<((), TestDb)> {
        Ok(((), db))
    }

    async fn end(db: TestDb) {
        drop(db);
    }
}

/// How long the harness waits for a test's pool to get its connections back before tearing
/// the copy down anyway.
#[cfg(any(feature = "sqlx", feature = "sqlx-0_8"))]
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Printed when a test kept a connection past its end (in a static, a leaked task).
#[cfg(any(feature = "sqlx", feature = "sqlx-0_8"))]
fn still_held(what: &str) {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "pgclone: the test still holds a connection of its {what} after {} s; tearing its copy down anyway",
        CLOSE_TIMEOUT.as_secs()
    );
}
