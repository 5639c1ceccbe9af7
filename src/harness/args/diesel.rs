//! diesel's `PgConnection` (libpq, blocking): for sync tests.

use crate::error::{Error, ErrorKind, Result};
use crate::harness::args::TestArg;
use crate::harness::golden::blocking;
use crate::harness::test_db::TestDb;
use crate::postgres::url::redacted;

/// A libpq connection to the copy; it ends (libpq says goodbye) when the test drops it.
impl TestArg for diesel::PgConnection {
    type Held = TestDb;

    async fn make(db: TestDb) -> Result<(Self, TestDb)> {
        let url = db.connection_string();
        let connection = blocking(move || {
            <diesel::PgConnection as diesel::Connection>::establish(&url).map_err(|e| {
                Error::new(
                    ErrorKind::Query,
                    format!("connect a diesel PgConnection to {}", redacted(&url)),
                )
                .with_source(e)
            })
        })
        .await?;
        Ok((connection, db))
    }

    async fn end(db: TestDb) {
        drop(db);
    }
}
