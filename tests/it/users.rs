//! The root path (PostgreSQL runs as an unprivileged user) and the non-root path.

use std::os::unix::fs::MetadataExt;

use pgclone::server::TempCluster;

use crate::support::{self, helper_result, is_root, uid_of};

#[test]
fn the_server_runs_as_the_run_as_user_when_root_and_as_the_caller_otherwise() {
    let root = support::unique_root("uid");
    let cluster = TempCluster::builder().root(&root).start().unwrap();
    let expected = match pgclone::server::run_as_user().unwrap() {
        Some(user) => {
            assert!(is_root(), "a run-as user only when root");
            user.uid()
        }
        None => rustix::process::getuid().as_raw(),
    };
    assert_ne!(
        uid_of(cluster.server().pid()),
        0,
        "postgres never runs as root"
    );
    assert_eq!(uid_of(cluster.server().pid()), expected);
    assert_eq!(
        std::fs::metadata(cluster.data_dir()).unwrap().uid(),
        expected,
        "the data directory belongs to the server's user"
    );
    assert_eq!(
        support::query_text(&cluster.connection_string(), "select current_user::text"),
        "postgres"
    );
}

#[test]
fn the_non_root_path_works_for_an_unprivileged_caller() {
    if !is_root() {
        // We are the unprivileged caller: the cluster runs as ourselves.
        let root = support::unique_root("nonroot");
        let cluster = TempCluster::builder().root(&root).start().unwrap();
        assert_eq!(
            uid_of(cluster.server().pid()),
            rustix::process::getuid().as_raw()
        );
        return;
    }
    // Run this suite's own check as the run-as user: copy the test binary where that user can
    // execute it, give it a root of its own, and start a cluster there without any uid change.
    let user = pgclone::server::run_as_user().unwrap().unwrap();
    let root = support::unique_root("nonroot");
    std::os::unix::fs::chown(&root, Some(user.uid()), Some(user.gid())).unwrap();
    let exe = root.join("it-helper");
    // `cp` writes the copy, not this process: a write descriptor of ours would be inherited by
    // any child another test thread forks meanwhile, and kept until that child's exec, and
    // executing a file someone holds open for writing fails with ETXTBSY ("Text file busy").
    let copied = std::process::Command::new("cp")
        .arg(std::env::current_exe().unwrap())
        .arg(&exe)
        .status()
        .unwrap();
    assert!(copied.success(), "cp of the test binary: {copied}");
    let mut cmd = support::helper_from(&exe, "start_and_query");
    cmd.env("PGCLONE_DIR", root.join("clusters"))
        .env("HOME", &root)
        .current_dir(&root);
    support::as_user(&mut cmd, user.uid(), user.gid());
    let result = helper_result(cmd);
    assert_eq!(result, format!("OK uid={} query=1", user.uid()));
}
