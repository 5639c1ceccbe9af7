//! Plain migrations ([`Golden::migrations`](crate::Golden::migrations)): every `*.sql` file of
//! the directory, in lexical order of their names, each sent as one query. No bookkeeping.

use super::{Migration, Migrations, Source};
use crate::error::Result;

pub(super) fn read(source: &Source) -> Result<Migrations> {
    let mut migrations = Migrations {
        steps: Vec::new(),
        key: Vec::new(),
    };
    let files = source
        .entries(source.dir)?
        .into_iter()
        .filter(|p| p.is_file() && p.extension().is_some_and(|ext| ext == "sql"));
    for file in files {
        let text = source.read(&file)?;
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        migrations.key.extend([name.to_string(), text.clone()]);
        let origin = format!("migration {}", source.display(&file));
        migrations
            .steps
            .push(Migration::alone(name.into_owned(), origin, text));
    }
    Ok(migrations)
}
