//! Bad input: each a clear error that says what is wrong and what to do, and nothing left behind.

use pgclone::{
    server::{PgBinaries, Server, ServerOptions, TempCluster},
    ErrorKind, Golden, TestDb,
};

use crate::support::{self, helper_result, is_root};

fn clones_in(root: &std::path::Path) -> usize {
    std::fs::read_dir(root.join("clones"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn a_bin_dir_without_postgres() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("initdb"), "").unwrap();
    let err = PgBinaries::from_dir(dir.path()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BinariesNotFound);
    let text = err.to_string();
    assert!(
        text.contains(&dir.path().display().to_string()) && text.contains("postgres"),
        "{text}"
    );
    assert!(text.contains("PGCLONE_PG_BIN"), "says what to do: {text}");
}

#[test]
fn no_installation_of_the_wanted_major_lists_what_was_searched_and_how_to_install() {
    let mut cmd = support::helper("find_binaries");
    cmd.env_remove("PGCLONE_PG_BIN")
        .env("PGCLONE_PG_VERSION", "99");
    let result = helper_result(cmd);
    assert!(
        result.starts_with("ERR BinariesNotFound could not find PostgreSQL 99"),
        "{result}"
    );
    for expected in [
        "searched:",
        "/usr/lib/postgresql/*/bin",
        "/usr/pgsql-*/bin",
        "apt-get install",
        "dnf install",
        "brew install",
        "PGCLONE_PG_BIN",
    ] {
        assert!(
            result.contains(expected),
            "missing {expected:?} in {result}"
        );
    }
}

#[test]
fn pgclone_pg_bin_is_used_alone_when_set() {
    let mut cmd = support::helper("find_binaries");
    let bins = PgBinaries::find().unwrap();
    cmd.env("PGCLONE_PG_BIN", bins.bin_dir());
    assert_eq!(
        helper_result(cmd),
        format!("OK {}", bins.bin_dir().display())
    );

    let mut cmd = support::helper("find_binaries");
    cmd.env("PGCLONE_PG_BIN", "/nonexistent/bin");
    let result = helper_result(cmd);
    assert!(
        result.starts_with("ERR BinariesNotFound /nonexistent/bin has no executable `postgres`"),
        "{result}"
    );
}

#[test]
fn a_data_dir_that_is_not_a_cluster() {
    let empty = tempfile::tempdir().unwrap();
    for dir in [empty.path().to_path_buf(), empty.path().join("missing")] {
        let err = Server::start(&dir, &ServerOptions::new()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotACluster, "{err}");
        assert!(
            err.to_string().contains(&dir.display().to_string()),
            "{err}"
        );
        assert!(err.to_string().contains("PG_VERSION"), "{err}");
    }
    assert_eq!(
        std::fs::read_dir(empty.path()).unwrap().count(),
        0,
        "nothing written into it"
    );
}

#[test]
fn binaries_of_another_major_than_the_data_dir() {
    let root = support::unique_root("major");
    let cluster = TempCluster::builder().root(&root).start().unwrap();
    let dir = cluster.keep().unwrap();
    let data = dir.join("data");
    let ours = PgBinaries::find().unwrap();
    // A data directory of another major: PG_VERSION is what PostgreSQL itself checks.
    let other_major = ours.version().major() - 1;
    std::fs::write(data.join("PG_VERSION"), format!("{other_major}\n")).unwrap();

    let err = Server::start(&data, &ServerOptions::new().binaries(ours.clone())).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::VersionMismatch);
    let text = err.to_string();
    assert!(
        text.contains(&format!("PostgreSQL {other_major}"))
            && text.contains(&ours.version().to_string()),
        "{text}"
    );
    assert!(
        text.contains(&format!("PGCLONE_PG_VERSION={other_major}")),
        "says what to do: {text}"
    );
    assert!(
        !data.join("postmaster.pid").exists(),
        "no server was started"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_unwritable_pgclone_dir() {
    // A path below a regular file can be neither created nor written, even by root.
    let file = tempfile::NamedTempFile::new_in(support::base_dir()).unwrap();
    let root = file.path().join("pgclone");
    let err = TempCluster::builder().root(&root).start().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RootDirUnusable);
    let text = err.to_string();
    assert!(
        text.contains(&root.display().to_string()) && text.contains("PGCLONE_DIR"),
        "{text}"
    );
}

#[test]
fn a_pgclone_dir_the_run_as_user_cannot_reach() {
    let Some(user) = pgclone::server::run_as_user().unwrap() else {
        assert!(!is_root(), "only root hands the server to another user");
        return;
    };
    let private = support::unique_root("private");
    std::fs::set_permissions(
        &private,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let err = TempCluster::builder()
        .root(private.join("root"))
        .start()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RunAsUser);
    let text = err.to_string();
    assert!(
        text.contains(user.name()) && text.contains("out of reach") && text.contains("PGCLONE_DIR"),
        "{text}"
    );
}

#[test]
fn a_socket_path_over_the_limit() {
    let root = support::unique_root("socket");
    let long = format!("/tmp/{}", "s".repeat(100));
    let err = TempCluster::builder()
        .root(&root)
        .with(|o| o.socket_dir(&long))
        .start()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SocketPathTooLong);
    let text = err.to_string();
    assert!(
        text.contains(&long) && text.contains("107") && text.contains("PGCLONE_SOCKET_DIR"),
        "{text}"
    );
    assert_eq!(clones_in(&root), 0, "nothing left behind");
}

#[test]
fn a_run_as_user_that_does_not_exist() {
    let root = support::unique_root("runas");
    let mut cmd = support::helper("start_and_query");
    cmd.env("PGCLONE_DIR", &root)
        .env("PGCLONE_RUN_AS", "no_such_pgclone_user");
    let result = helper_result(cmd);
    if is_root() {
        assert!(
            result.starts_with("ERR RunAsUser PGCLONE_RUN_AS=no_such_pgclone_user: no such user"),
            "{result}"
        );
        assert!(result.contains("useradd"), "says what to do: {result}");
        assert_eq!(clones_in(&root), 0);
    } else {
        // Not root: PostgreSQL runs as the caller, and the variable does not matter.
        assert!(result.starts_with("OK uid="), "{result}");
    }
}

#[test]
fn an_invalid_pg_version_request() {
    let mut cmd = support::helper("find_binaries");
    cmd.env("PGCLONE_PG_VERSION", "fifteen");
    let result = helper_result(cmd);
    assert!(
        result.starts_with(
            "ERR InvalidConfig PGCLONE_PG_VERSION=\"fifteen\" is not a major version number"
        ),
        "{result}"
    );
}

/// A golden's settings are lines of postgresql.conf: one with a line break would add its own.
#[tokio::test]
async fn a_golden_setting_that_would_add_lines_to_postgresql_conf() {
    let golden = Golden::new("injected").setting("work_mem", "1MB\nfsync = on");
    let err = TestDb::start(&golden).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Golden, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("\"injected\"") && text.contains("\"work_mem\""),
        "{text}"
    );
    assert!(text.contains("one line"), "says what to do: {text}");

    let golden = Golden::new("injected").setting("work_mem\nfsync", "on");
    let err = TestDb::start(&golden).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Golden, "{err}");
    assert!(err.to_string().contains("parameter name"), "{err}");
}

/// A golden's setting is taken as written: quotes, backslashes, commas and `#` need no quoting.
#[tokio::test]
async fn a_golden_setting_reaches_the_server_as_written() {
    let note = r"it's a \test, # not a comment";
    let golden = Golden::new("quoted_setting")
        .setting("work_mem", "5MB")
        .setting("pgclone_it.note", note);
    let db = TestDb::builder(&golden).pool(0).start().await.unwrap();
    let row = db
        .client()
        .query_one(
            "select current_setting('work_mem'), current_setting('pgclone_it.note')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "5MB");
    assert_eq!(row.get::<_, String>(1), note);
}

#[test]
fn a_server_setting_that_is_not_a_parameter_name() {
    let root = support::unique_root("setting");
    let err = TempCluster::builder()
        .root(&root)
        .with(|o| o.setting("work_mem=1MB -c fsync", "on"))
        .start()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
    assert!(err.to_string().contains("parameter name"), "{err}");
    assert_eq!(clones_in(&root), 0, "nothing left behind");
}

#[test]
fn errors_are_send_sync_and_debug_reads_like_display() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<pgclone::Error>();
    let err = PgBinaries::from_dir("/nonexistent").unwrap_err();
    assert_eq!(format!("{err:?}"), err.to_string());
}
