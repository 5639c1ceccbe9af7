//! Applying a recipe's steps to the golden database, wherever it is: a local building server
//! or a server given by `PGCLONE_URL`. Each step's failure names the file and statement.

use super::recipe::Step;
use super::{BoxError, MigratorTarget};
use crate::error::{Error, ErrorKind, Result};
use crate::harness::test_db::connect_params;
use crate::postgres::libpq::ConnectParams;

/// Runs the recipe's steps in the database `target` names (`name` is the recipe's, for
/// messages), then freezes it and analyzes its tables: every clone then plans its queries the
/// same way, whenever autovacuum would have run, and reading a clone's rows never rewrites
/// (copy-on-write) a page to set hint bits. The catalogs were analyzed when the cluster was made
/// (`initdb` does it): analyzing them again would cost about 100 ms a golden, for statistics
/// that only plan queries of the catalogs.
pub(crate) async fn apply(target: &ConnectParams, name: &str, steps: Vec<Step>) -> Result<()> {
    let client = connect_params(target).await?;
    for step in steps {
        match step {
            Step::Sql { origin, text } => {
                client
                    .batch_execute(&text)
                    .await
                    .map_err(|e| step_error(name, &origin, &text, e))?;
            }
            Step::SqlxMigrator(migrator) => {
                let host = target.host_text();
                let migrator_target = MigratorTarget {
                    host: &host,
                    port: target.port,
                    user: &target.user,
                    password: target.password.as_ref().map(|p| p.expose()),
                    dbname: &target.dbname,
                };
                migrator.run(migrator_target).await.map_err(|e| {
                    Error::new(
                        ErrorKind::Golden,
                        format!("golden {name:?}: the sqlx migrator failed"),
                    )
                    .with_source(e)
                    .hint("a migration that was \"previously applied but has been modified\" was recorded earlier in this recipe (by `sqlx_migrations` or another migrator) with other bytes: give the recipe one source of migrations")
                })?;
            }
            Step::Hook(hook) => {
                let hook_client = connect_params(target).await?;
                hook(hook_client).await.map_err(|e| hook_failed(name, e))?;
            }
            Step::UrlHook(hook) => hook(target.url()).await.map_err(|e| hook_failed(name, e))?,
        }
    }
    let freeze = "vacuum (freeze)";
    client
        .batch_execute(freeze)
        .await
        .map_err(|e| step_error(name, freeze, freeze, e))?;
    let tables = client
        .query(USER_TABLES, &[])
        .await
        .map_err(|e| step_error(name, "list the tables to analyze", USER_TABLES, e))?;
    let tables: Vec<String> = tables.iter().map(|row| row.get(0)).collect();
    if tables.is_empty() {
        return Ok(());
    }
    let analyze = format!("analyze {}", tables.join(", "));
    client
        .batch_execute(&analyze)
        .await
        .map_err(|e| step_error(name, "analyze", &analyze, e))
}

/// The tables `ANALYZE` without a list would analyze (tables, partitioned tables, materialized
/// views; not foreign tables) outside the catalogs, quoted.
const USER_TABLES: &str = "select format('%I.%I', n.nspname, c.relname) \
    from pg_class c join pg_namespace n on n.oid = c.relnamespace \
    where c.relkind in ('r', 'p', 'm') and c.relpersistence <> 't' \
    and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname !~ '^pg_toast' \
    order by 1";

fn hook_failed(name: &str, e: BoxError) -> Error {
    Error::new(
        ErrorKind::Golden,
        format!("golden {name:?}: the setup hook failed"),
    )
    .with_source(e)
}

/// `golden "app": migration migrations/0002.sql failed at line 3: <message> (SQLSTATE <code>)`,
/// then `in: <statement>` and the hint.
fn step_error(name: &str, origin: &str, text: &str, error: tokio_postgres::Error) -> Error {
    let Some(db) = error.as_db_error() else {
        return Error::new(
            ErrorKind::Golden,
            format!("golden {name:?}: {origin} failed"),
        )
        .with_source(error);
    };
    let mut message = format!("golden {name:?}: {origin} failed");
    let mut statement = None;
    if let Some(tokio_postgres::error::ErrorPosition::Original(position)) = db.position() {
        let (line, at) = statement_at(text, *position as usize);
        message.push_str(&format!(" at line {line}"));
        statement = Some(at);
    }
    let mut error = Error::new(ErrorKind::Golden, message).with_source(error);
    if let Some(statement) = statement {
        error = error.note(format_args!("in: {statement}"));
    }
    error.hint("fix that statement; the golden is rebuilt on the next run")
}

/// The line number and the statement around a 1-based character position in `text`.
fn statement_at(text: &str, position: usize) -> (usize, String) {
    let at = text
        .char_indices()
        .nth(position.saturating_sub(1))
        .map_or(text.len(), |(i, _)| i);
    let start = text[..at].rfind(';').map_or(0, |i| i + 1);
    let end = text[at..].find(';').map_or(text.len(), |i| at + i + 1);
    let line = text[..at].matches('\n').count() + 1;
    (line, text[start..end].trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_failing_statement() {
        let text = "create table a(x int);\ninsert into b values (1);\nselect 1;";
        let position = text.find("b values").unwrap() + 1;
        assert_eq!(
            statement_at(text, position),
            (2, "insert into b values (1);".to_string())
        );
    }
}
