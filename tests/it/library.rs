//! A test binary's sqlx-style recipes are one golden, its library (`src/harness/library.rs`):
//! one build for them all, and one template server per process for them all.

use std::path::Path;
use std::process::Stdio;

use sqlx::PgPool;

use crate::support;

/// The products a fixture added (the migrations add ids 1 to 10).
async fn products(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar("select name from products where id > 10 order by id")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[pgclone::test(migrations = "tests/sample/migrations", fixtures("fixtures/cheap.sql"))]
async fn library_member_with_cheap_products(pool: PgPool) {
    assert_eq!(products(&pool).await, ["pencil", "eraser"]);
}

#[pgclone::test(migrations = "tests/sample/migrations", fixtures("fixtures/dear.sql"))]
async fn library_member_with_dear_products(pool: PgPool) {
    assert_eq!(products(&pool).await, ["fountain pen"]);
}

#[pgclone::test(migrations = "tests/sample/migrations")]
async fn library_member_with_the_migrations_alone(pool: PgPool) {
    assert!(products(&pool).await.is_empty());
    // Each test's database is its own, whatever the others do in theirs.
    sqlx::query("insert into products values (99, 'mine', 1)")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(products(&pool).await, ["mine"]);
}

/// A member whose fixture fails in one pgclone directory (below), and works everywhere else.
#[pgclone::test(
    migrations = "tests/sample/migrations",
    fixtures("fixtures/breakable.sql")
)]
async fn library_member_breakable(pool: PgPool) {
    assert_eq!(products(&pool).await, ["vase"]);
}

/// The library's tests, run by a process of their own in a pgclone directory of their own:
/// one library golden holds the binary's four sqlx-style recipes (beside the base), and the
/// process ran one template server, which it parked at exit. Run again, nothing is built.
#[test]
fn a_binarys_sqlx_style_recipes_share_one_golden_and_one_server() {
    let root = support::unique_root("library");
    let run = || {
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["library::library_member_", "--test-threads=2", "-q"])
            .env("PGCLONE_DIR", &root)
            .env_remove("PGCLONE_MODE")
            .env_remove("NEXTEST_RUN_ID")
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "the library's tests pass");
    };
    run();
    let goldens = ready_goldens(&root);
    assert_eq!(goldens.len(), 2, "the base and the library: {goldens:?}");
    let libraries: Vec<&String> = goldens
        .iter()
        .filter(|key| root.join("golden").join(key).join("TEMPLATES").is_file())
        .collect();
    let [library] = libraries.as_slice() else {
        panic!("one library among {goldens:?}");
    };
    let templates =
        std::fs::read_to_string(root.join("golden").join(library).join("TEMPLATES")).unwrap();
    assert_eq!(
        templates.lines().count(),
        4,
        "a database per recipe: {templates}"
    );
    let parked: Vec<String> = entries(&root.join("warm"));
    assert_eq!(parked, [library.to_string()], "one template server, parked");

    let builds = std::fs::read_to_string(root.join("golden/builds.log")).unwrap();
    run();
    let again = std::fs::read_to_string(root.join("golden/builds.log")).unwrap();
    assert_eq!(builds, again, "the second run built nothing");
    assert_eq!(ready_goldens(&root), goldens);
}

/// Where one member's fixture fails, the library is set aside (and marked so, not tried again):
/// the other members' tests pass on goldens of their own, and only the broken member's test
/// fails, with its error.
#[test]
fn a_library_whose_member_fails_to_build_is_set_aside() {
    let root = support::unique_root("library-broken");
    let run = |filter: &str| {
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args([filter, "--test-threads=2", "--nocapture"])
            .env("PGCLONE_DIR", &root)
            .env_remove("PGCLONE_MODE")
            .env_remove("NEXTEST_RUN_ID")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        (output.status.success(), text)
    };
    let (passed, text) = run("library::library_member_with_");
    assert!(passed, "{text}");
    assert!(text.contains("library of goldens did not build"), "{text}");
    assert_eq!(
        ready_goldens(&root).len(),
        4,
        "the base and a golden per test's recipe"
    );
    let failed: Vec<String> = entries(&root.join("golden"))
        .into_iter()
        .filter(|name| name.ends_with(".failed"))
        .collect();
    assert_eq!(failed.len(), 1, "the library marked failed: {failed:?}");

    let (passed, text) = run("library::library_member_with_");
    assert!(passed, "{text}");
    assert!(!text.contains("did not build"), "not tried again: {text}");

    let (passed, text) = run("library::library_member_breakable");
    assert!(!passed, "the broken member's test fails");
    assert!(
        text.contains("this fixture fails in a pgclone directory named library-broken"),
        "with its error: {text}"
    );
}

/// The keys of the goldens built under `root`.
fn ready_goldens(root: &Path) -> Vec<String> {
    let mut keys: Vec<String> = entries(&root.join("golden"))
        .into_iter()
        .filter(|key| root.join("golden").join(key).join("READY").is_file())
        .collect();
    keys.sort();
    keys
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}
