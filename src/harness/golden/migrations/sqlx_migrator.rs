//! A sqlx `Migrator` given by the user (`#[pgclone::test(migrator = "crate::MIGRATOR")]`,
//! [`Golden::sqlx_migrator`](crate::Golden::sqlx_migrator)): the golden build runs it with
//! sqlx itself, so what the golden holds is exactly what the application's runner writes,
//! whatever its table or settings. Written once over the crate's path, for sqlx 0.9 (feature
//! `sqlx`) and sqlx 0.8 (feature `sqlx-0_8`).

use std::future::Future;
use std::pin::Pin;

use super::super::BoxError;

/// Where the build's server is, for a migrator to connect to.
#[doc(hidden)]
pub struct Target<'a> {
    /// A Unix socket directory (starting with `/`) or a host name, as libpq takes `host`.
    pub host: &'a str,
    /// Its port.
    pub port: u16,
    /// The role that builds the golden.
    pub user: &'a str,
    /// Its password, if the server asks for one.
    pub password: Option<&'a str>,
    /// The golden database.
    pub dbname: &'a str,
}

/// A sqlx `Migrator` (of sqlx 0.9 with feature `sqlx`, of sqlx 0.8 with feature `sqlx-0_8`).
/// Its methods are the golden build's, not an API.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a sqlx `Migrator`",
    label = "`migrator` names a `sqlx::migrate::Migrator`",
    note = "give the path of a static, e.g. `static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();` and `migrator = \"crate::MIGRATOR\"`",
    note = "pgclone's feature `sqlx` takes sqlx 0.9's Migrator, `sqlx-0_8` sqlx 0.8's: enable the one of the sqlx you use"
)]
pub trait SqlxMigrator: Send + Sync + std::panic::RefUnwindSafe + 'static {
    /// Every part of its migrations that decides what a database holds after it ran: versions,
    /// descriptions, kinds, SQL, checksums, transaction use.
    #[doc(hidden)]
    fn key(&self) -> Vec<String>;

    /// Runs it against `target`.
    #[doc(hidden)]
    fn run<'a>(
        &'a self,
        target: Target<'a>,
    ) -> Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send + 'a>>;
}

#[cfg(any(feature = "sqlx", feature = "sqlx-0_8"))]
macro_rules! sqlx_migrator {
    ($sqlx:ident, $version:literal) => {
        impl SqlxMigrator for ::$sqlx::migrate::Migrator {
            fn key(&self) -> Vec<String> {
                let mut key = vec![concat!("sqlx migrator, ", $version).to_string()];
                for m in self.iter() {
                    key.push(m.version.to_string());
                    key.push(m.description.to_string());
                    key.push(format!("{:?}", m.migration_type));
                    key.push(AsRef::<str>::as_ref(&m.sql).to_string());
                    key.push(super::super::hex(&m.checksum));
                    key.push(m.no_tx.to_string());
                }
                key
            }

            fn run<'a>(
                &'a self,
                target: Target<'a>,
            ) -> Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send + 'a>> {
                Box::pin(async move {
                    use ::$sqlx::postgres::{PgConnectOptions, PgSslMode};
                    let mut options = PgConnectOptions::new_without_pgpass();
                    options = match target.host.starts_with('/') {
                        true => options.socket(target.host),
                        false => options.host(target.host),
                    };
                    if let Some(password) = target.password {
                        options = options.password(password);
                    }
                    let options = options
                        .port(target.port)
                        .username(target.user)
                        .database(target.dbname)
                        .ssl_mode(PgSslMode::Disable);
                    // A pool of one: sqlx's runner over a bare `&mut PgConnection` makes a future
                    // the compiler cannot prove `Send`.
                    let pool = ::$sqlx::postgres::PgPoolOptions::new()
                        .max_connections(1)
                        .connect_with(options)
                        .await?;
                    let ran = ::$sqlx::migrate::Migrator::run(self, &pool).await;
                    pool.close().await;
                    ran?;
                    Ok(())
                })
            }
        }
    };
}

#[cfg(feature = "sqlx")]
mod v0_9 {
    use super::*;
    sqlx_migrator!(sqlx, "sqlx 0.9");
}

#[cfg(feature = "sqlx-0_8")]
mod v0_8 {
    use super::*;
    sqlx_migrator!(sqlx_0_8, "sqlx 0.8");
}
