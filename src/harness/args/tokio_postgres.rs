//! tokio-postgres arguments: the [`TestDb`] itself (with its client), or a bare `Client`.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::harness::args::TestArg;
use crate::harness::test_db::TestDb;
use crate::postgres::url::redacted;

/// The copy itself, with its connected client.
impl TestArg for TestDb {
    type Held = ();
    const CLIENT: bool = true;

    async fn make(db: TestDb) -> Result<(TestDb, ())> {
        Ok((db, ()))
    }

    async fn end((): ()) {}
}

/// A client of its own, connected to the copy; its connection ends before the copy does.
impl TestArg for tokio_postgres::Client {
    type Held = (TestDb, tokio::task::JoinHandle<()>);

    async fn make(db: TestDb) -> Result<(Self, Self::Held)> {
        let url = db.connection_string();
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .map_err(|e| Error::query(format!("connect to {}", redacted(&url)), e))?;
        let connection = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok((client, (db, connection)))
    }

    async fn end((db, mut connection): Self::Held) {
        // A dropped client ends its connection at the next poll (it says goodbye to the
        // server); one the test still holds somewhere is cut.
        if tokio::time::timeout(Duration::from_millis(100), &mut connection)
            .await
            .is_err()
        {
            connection.abort();
            let _ = connection.await;
        }
        drop(db);
    }
}
