//! The library's tests, written for `#[sqlx::test]` (0.9) and run by `#[pgclone::test]`: the
//! same arguments, fixtures (`tests/fixtures/*.sql`) and argument types; renaming the attribute
//! back compiles and passes too (`examples/sqlx_suite.rs` does, to compare them). Each test gets a database
//! of its own holding the migrations of `./migrations` and its fixtures; with pgclone, each
//! fixture set is loaded once, into a database of the binary's cached golden (its library),
//! and copied per test.

use bookshelf::{add_book, book_id, borrowed_by, bring_back, join, lend, member_id, on_the_shelf};
use bookshelf::{LendError, MIGRATOR};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Row};

// No arguments: `./migrations` applied, no rows.
#[pgclone::test]
async fn an_empty_library_has_nothing_on_the_shelf(pool: PgPool) -> sqlx::Result<()> {
    assert!(on_the_shelf(&pool).await?.is_empty());
    let id = join(&pool, "Ada", "ada@example.com").await?;
    assert_eq!(member_id(&pool, "ada@example.com").await?, Some(id));
    Ok(())
}

#[pgclone::test(fixtures("members"))]
async fn an_email_joins_once(pool: PgPool) {
    let again = join(&pool, "Ada again", "ada@example.com").await;
    let error = again.unwrap_err().into_database_error().unwrap();
    assert_eq!(error.code().as_deref(), Some("23505"));
}

#[pgclone::test(fixtures("members", "books"))]
async fn a_book_on_the_shelf_can_be_lent(pool: PgPool) -> Result<(), LendError> {
    let ada = member_id(&pool, "ada@example.com").await?.unwrap();
    let book = book_id(&pool, "A Pattern Language").await?.unwrap();
    lend(&pool, book, ada).await?;
    let titles: Vec<String> = borrowed_by(&pool, ada)
        .await?
        .into_iter()
        .map(|b| b.title)
        .collect();
    assert_eq!(titles, ["A Pattern Language"]);
    assert_eq!(on_the_shelf(&pool).await?.len(), 2, "the Knuth is out too");
    Ok(())
}

#[pgclone::test(fixtures("members", "books"))]
async fn a_lent_book_cannot_be_lent_again(pool: PgPool) -> sqlx::Result<()> {
    let grace = member_id(&pool, "grace@example.com").await?.unwrap();
    let knuth = book_id(&pool, "The Art of Computer Programming")
        .await?
        .unwrap();
    assert!(matches!(
        lend(&pool, knuth, grace).await,
        Err(LendError::AlreadyLent)
    ));
    assert!(matches!(
        lend(&pool, 9999, grace).await,
        Err(LendError::Unknown)
    ));
    Ok(())
}

#[pgclone::test(fixtures("members", "books"))]
async fn a_returned_book_is_back_on_the_shelf(
    mut conn: PoolConnection<Postgres>,
) -> sqlx::Result<()> {
    let knuth = book_id(&mut *conn, "The Art of Computer Programming")
        .await?
        .unwrap();
    assert!(bring_back(&mut *conn, knuth).await?);
    assert!(
        !bring_back(&mut *conn, knuth).await?,
        "it is not out any more"
    );
    assert_eq!(on_the_shelf(&mut *conn).await?.len(), 4);
    Ok(())
}

// Two tests that change the same rows: each has its own copy, whichever runs first.
#[pgclone::test(fixtures("members", "books"))]
async fn closing_the_library_removes_everything(
    mut conn: PoolConnection<Postgres>,
) -> sqlx::Result<()> {
    sqlx::query("delete from loans").execute(&mut *conn).await?;
    sqlx::query("delete from books").execute(&mut *conn).await?;
    assert!(on_the_shelf(&mut *conn).await?.is_empty());
    Ok(())
}

#[pgclone::test(fixtures("members", "books"))]
async fn the_fixture_holds_four_books_and_one_loan(pool: PgPool) -> sqlx::Result<()> {
    let books: i64 = sqlx::query_scalar("select count(*) from books")
        .fetch_one(&pool)
        .await?;
    let loans: i64 = sqlx::query_scalar("select count(*) from loans")
        .fetch_one(&pool)
        .await?;
    assert_eq!((books, loans), (4, 1));
    Ok(())
}

// The application's own runner, on a copy: every migration is recorded as applied, with the
// checksum sqlx computes, so there is nothing left to do; the revert (`.down.sql`) never ran.
#[pgclone::test(fixtures("members"))]
async fn the_applications_migrator_finds_nothing_to_do(pool: PgPool) -> sqlx::Result<()> {
    MIGRATOR
        .run(&pool)
        .await
        .expect("the migrations are already applied");
    let applied = sqlx::query("select version, success from _sqlx_migrations order by version")
        .fetch_all(&pool)
        .await?;
    let versions: Vec<i64> = applied.iter().map(|row| row.get("version")).collect();
    assert_eq!(versions, [20240101000000, 20240102000000, 20240103000000]);
    assert!(applied.iter().all(|row| row.get::<bool, _>("success")));
    let index: Option<String> = sqlx::query_scalar(
        "select indexname::text from pg_indexes where indexname = 'loans_by_member'",
    )
    .fetch_optional(&pool)
    .await?;
    assert!(
        index.is_some(),
        "the up migration ran and the down one did not"
    );
    Ok(())
}

// The application's migrator itself builds the golden.
#[pgclone::test(migrator = "bookshelf::MIGRATOR", fixtures("members"))]
async fn a_migrator_given_by_path(pool: PgPool) -> sqlx::Result<()> {
    let members: i64 = sqlx::query_scalar("select count(*) from members")
        .fetch_one(&pool)
        .await?;
    assert_eq!(members, 3);
    MIGRATOR.run(&pool).await.expect("nothing to do");
    Ok(())
}

// sqlx::test's two-argument form, a migrations directory and fixtures by path.
#[pgclone::test(
    migrations = "./migrations",
    fixtures(path = "fixtures", scripts("members", "books"))
)]
async fn pool_options_and_connect_options(
    options: PgPoolOptions,
    connect: PgConnectOptions,
) -> sqlx::Result<()> {
    let pool = options.max_connections(2).connect_with(connect).await?;
    let id = add_book(&pool, "Gödel, Escher, Bach", "Douglas Hofstadter").await?;
    assert!(on_the_shelf(&pool).await?.iter().any(|book| book.id == id));
    pool.close().await;
    Ok(())
}

#[pgclone::test(migrations = false)]
async fn without_migrations_there_are_no_tables(pool: PgPool) -> sqlx::Result<()> {
    let tables: i64 =
        sqlx::query_scalar("select count(*) from pg_tables where schemaname = 'public'")
            .fetch_one(&pool)
            .await?;
    assert_eq!(tables, 0);
    Ok(())
}
