//! A small lending library: members borrow books and bring them back. Written the way a sqlx
//! application is, with its migrations embedded by `sqlx::migrate!()`; its tests
//! (`tests/library.rs`) are `#[sqlx::test]` tests with the attribute renamed to
//! `#[pgclone::test]`.

use sqlx::migrate::Migrator;
use sqlx::{FromRow, PgExecutor, PgPool};

/// The application's migrations (`./migrations`), run by `MIGRATOR.run(&pool)` at start-up.
pub static MIGRATOR: Migrator = sqlx::migrate!();

/// A book on the shelf.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Book {
    pub id: i64,
    pub title: String,
    pub author: String,
}

/// Why a book could not be lent.
#[derive(Debug)]
pub enum LendError {
    /// Someone else has it.
    AlreadyLent,
    /// No such book or member.
    Unknown,
    Database(sqlx::Error),
}

impl From<sqlx::Error> for LendError {
    fn from(e: sqlx::Error) -> Self {
        match e.as_database_error().and_then(|db| db.code()).as_deref() {
            Some("23505") => LendError::AlreadyLent,
            Some("23503") => LendError::Unknown,
            _ => LendError::Database(e),
        }
    }
}

/// Signs a member up; their email must be new.
pub async fn join(db: impl PgExecutor<'_>, name: &str, email: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar("insert into members (name, email) values ($1, $2) returning id")
        .bind(name)
        .bind(email)
        .fetch_one(db)
        .await
}

/// Puts a book on the shelf.
pub async fn add_book(db: impl PgExecutor<'_>, title: &str, author: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar("insert into books (title, author) values ($1, $2) returning id")
        .bind(title)
        .bind(author)
        .fetch_one(db)
        .await
}

/// The member with this email.
pub async fn member_id(db: impl PgExecutor<'_>, email: &str) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar("select id from members where email = $1")
        .bind(email)
        .fetch_optional(db)
        .await
}

/// The book with this title.
pub async fn book_id(db: impl PgExecutor<'_>, title: &str) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar("select id from books where title = $1")
        .bind(title)
        .fetch_optional(db)
        .await
}

/// Lends a book to a member, unless it is out.
pub async fn lend(db: impl PgExecutor<'_>, book: i64, member: i64) -> Result<(), LendError> {
    sqlx::query("insert into loans (book_id, member_id) values ($1, $2)")
        .bind(book)
        .bind(member)
        .execute(db)
        .await?;
    Ok(())
}

/// Brings a book back; false if it was not out.
pub async fn bring_back(db: impl PgExecutor<'_>, book: i64) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "update loans set returned_on = current_date where book_id = $1 and returned_on is null",
    )
    .bind(book)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The books on the shelf now, by title.
pub async fn on_the_shelf(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<Book>> {
    sqlx::query_as(
        "select id, title, author from books b
         where not exists (select from loans l where l.book_id = b.id and l.returned_on is null)
         order by title",
    )
    .fetch_all(db)
    .await
}

/// What a member has out, by title.
pub async fn borrowed_by(db: impl PgExecutor<'_>, member: i64) -> sqlx::Result<Vec<Book>> {
    sqlx::query_as(
        "select b.id, b.title, b.author from books b join loans l on l.book_id = b.id
         where l.member_id = $1 and l.returned_on is null
         order by b.title",
    )
    .bind(member)
    .fetch_all(db)
    .await
}

/// Connects and brings the schema up to date, as the application does at start-up.
pub async fn open(url: &str) -> Result<PgPool, Box<dyn std::error::Error + Send + Sync>> {
    let pool = PgPool::connect(url).await?;
    MIGRATOR.run(&pool).await?;
    Ok(pool)
}
