//! Cloning a cleanly stopped cluster: exclusions, tree, data, methods, and bad input.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use pgclone::{
    clone::{clone_stopped_cluster, CloneOptions, CopyMethod},
    server::{Server, ServerOptions, TempCluster},
    ErrorKind,
};

use crate::support::{self, execute, query_text};

/// A stopped cluster with a logged table, an unlogged one and a replication slot.
fn stopped_source(root: &Path) -> PathBuf {
    let cluster = TempCluster::builder().root(root).start().unwrap();
    execute(
        &cluster.connection_string(),
        "create table kept as select g as id from generate_series(1, 1000) g;
         create unlogged table scratch as select g as id from generate_series(1, 10) g;
         select pg_create_physical_replication_slot('source_slot', true);",
    );
    cluster.keep().unwrap().join("data")
}

/// Every path below `dir` with its size, modification time, mode and owner (to prove nothing
/// changed).
fn snapshot(dir: &Path) -> BTreeSet<(PathBuf, u64, i64, u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let mut seen = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            }
            seen.insert((
                entry.path().strip_prefix(dir).unwrap().to_path_buf(),
                meta.len(),
                meta.mtime_nsec() + meta.mtime() * 1_000_000_000,
                meta.mode(),
                meta.uid(),
            ));
        }
    }
    seen
}

fn dirs_of(dir: &Path) -> BTreeSet<PathBuf> {
    snapshot(dir)
        .into_iter()
        .map(|(p, ..)| p)
        .filter(|p| dir.join(p).is_dir())
        .collect()
}

#[test]
fn a_stopped_cluster_clones_with_its_data_and_without_runtime_state() {
    let root = support::unique_root("offline");
    let source = stopped_source(&root);
    assert!(
        source.join("postmaster.opts").exists() && source.join("pg_replslot/source_slot").exists()
    );
    use std::os::unix::fs::PermissionsExt;
    let group_readable = source.join("PG_VERSION");
    std::fs::set_permissions(&group_readable, std::fs::Permissions::from_mode(0o640)).unwrap();
    let before = snapshot(&source);

    let target = root.join("clone/data");
    let report = clone_stopped_cluster(&source, &target, &CloneOptions::new()).unwrap();
    assert!(report.files > 900 && report.bytes > 1 << 20, "{report:?}");
    assert_eq!(
        report.files,
        report
            .by_method
            .values()
            .map(|(files, _)| files)
            .sum::<u64>()
    );
    if support::reflink_required() {
        assert_eq!(
            report.method(),
            Some(CopyMethod::Reflink),
            "CI requires reflinks here: {report:?}"
        );
        assert_eq!(report.bytes_shared(), report.bytes);
    } else {
        assert!(report.method().is_some());
    }

    assert_eq!(snapshot(&source), before, "the source is only read");
    let copied: BTreeMap<PathBuf, (u64, u32)> = snapshot(&target)
        .into_iter()
        .map(|(path, len, _, mode, _)| (path, (len, mode)))
        .collect();
    let mut empty_files = 0;
    for (path, len, _, mode, _) in &before {
        let rewritten = path == Path::new("postgresql.auto.conf"); // the clone's own settings
        if source.join(path).is_file() && !rewritten {
            if let Some(&clone) = copied.get(path) {
                assert_eq!(clone, (*len, *mode), "size and mode of {}", path.display());
                empty_files += usize::from(*len == 0);
            }
        }
    }
    assert!(
        empty_files > 100,
        "a cluster has many empty files: {empty_files}"
    );
    assert_eq!(copied[Path::new("PG_VERSION")].1 & 0o777, 0o640);
    let mut source_dirs = dirs_of(&source);
    assert!(source_dirs.remove(Path::new("pg_replslot/source_slot")));
    assert_eq!(
        dirs_of(&target),
        source_dirs,
        "the directory tree is the same, but for the slot"
    );
    assert!(!target.join("postmaster.opts").exists() && !target.join("postmaster.pid").exists());
    assert_eq!(
        std::fs::read_dir(target.join("pg_replslot"))
            .unwrap()
            .count(),
        0,
        "slots stay behind"
    );

    let server = Server::start(&target, &ServerOptions::new()).unwrap();
    assert_eq!(
        query_text(
            &server.connection_string("postgres"),
            "select count(*)::text from kept"
        ),
        "1000"
    );
    assert_eq!(
        query_text(
            &server.connection_string("postgres"),
            "select count(*)::text from scratch"
        ),
        "10",
        "a stopped cluster's unlogged tables are kept"
    );
    assert_eq!(
        query_text(
            &server.connection_string("postgres"),
            "select count(*)::text from pg_replication_slots"
        ),
        "0"
    );
    server.stop().unwrap();
}

#[test]
fn a_target_on_another_file_system_needs_allow_copy_and_is_then_copied() {
    let root = support::unique_root("crossfs");
    let source = stopped_source(&root);
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    let target = shm.path().join("data");

    let err = clone_stopped_cluster(&source, &target, &CloneOptions::new()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CrossFilesystem, "{err}");
    assert!(err.to_string().contains("--allow-copy"), "{err}");
    assert!(!target.exists(), "nothing made");

    let report =
        clone_stopped_cluster(&source, &target, &CloneOptions::new().allow_copy(true)).unwrap();
    assert_ne!(
        report.method(),
        Some(CopyMethod::Reflink),
        "tmpfs cannot share extents"
    );
    assert_eq!(report.bytes_shared(), 0);
    let server = Server::start(&target, &ServerOptions::new()).unwrap();
    assert_eq!(
        query_text(
            &server.connection_string("postgres"),
            "select count(*)::text from kept"
        ),
        "1000"
    );
}

#[test]
fn bad_sources_and_targets_are_refused_and_nothing_changes() {
    let root = support::unique_root("offline-bad");
    let source = stopped_source(&root);

    // A non-empty target.
    let full = root.join("full");
    std::fs::create_dir_all(&full).unwrap();
    std::fs::write(full.join("precious"), "mine").unwrap();
    let err = clone_stopped_cluster(&source, &full, &CloneOptions::new()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TargetNotEmpty, "{err}");
    assert_eq!(
        std::fs::read_to_string(full.join("precious")).unwrap(),
        "mine"
    );

    // A source that is not a cluster.
    let err = clone_stopped_cluster(&root.join("full"), &root.join("t1"), &CloneOptions::new())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotACluster, "{err}");
    assert!(!root.join("t1").exists());

    // A running source.
    let server = Server::start(&source, &ServerOptions::new()).unwrap();
    let err = clone_stopped_cluster(&source, &root.join("t2"), &CloneOptions::new()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SourceState, "{err}");
    assert!(
        err.to_string().contains("is running")
            && err.to_string().contains(&server.pid().to_string()),
        "{err}"
    );
    assert!(!root.join("t2").exists());

    // A source that was not shut down cleanly.
    server.stop_immediately().unwrap();
    let err = clone_stopped_cluster(&source, &root.join("t3"), &CloneOptions::new()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SourceState, "{err}");
    assert!(err.to_string().contains("not shut down cleanly"), "{err}");
    assert!(!root.join("t3").exists());
}

#[test]
fn an_unreadable_file_fails_the_clone_with_its_name_and_leaves_no_target() {
    use std::os::unix::fs::PermissionsExt;
    let root = support::unique_root("unreadable");
    let source = stopped_source(&root);
    let unreadable = source.join("base/1/99999");
    std::fs::write(&unreadable, "secret").unwrap();
    std::fs::set_permissions(&unreadable, std::fs::Permissions::from_mode(0o000)).unwrap();
    // As root the copy runs with the server user's identity, so root's file is unreadable too.
    let target = root.join("clone");
    let err = clone_stopped_cluster(&source, &target, &CloneOptions::new()).unwrap_err();
    assert!(err.to_string().contains("base/1/99999"), "{err}");
    assert!(!target.exists(), "a failed clone leaves nothing");
}

#[test]
fn a_cloner_killed_mid_copy_leaves_an_unstartable_target_that_gc_removes() {
    let root = support::unique_root("offline-kill");
    let source = stopped_source(&root);
    let target = root.join("clone");
    let mut helper = support::helper("offline_clone_until_copying")
        .env("PGCLONE_IT_SOURCE", &source)
        .env("PGCLONE_IT_TARGET", &target)
        .env("PGCLONE_DIR", &root)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(support::wait_for_report(&mut helper), "COPYING");
    helper.kill().unwrap();
    helper.wait().unwrap();
    assert!(target.join("PG_VERSION").exists() && !target.join("global/pg_control").exists());
    assert!(
        Server::start(&target, &ServerOptions::new()).is_err(),
        "pg_control comes last: no start"
    );
    let garbage = pgclone::gc::collect_garbage(Some(&root), false).unwrap();
    assert_eq!(garbage.unfinished, vec![target.clone()]);
    assert!(!target.exists());
}

/// Runs in a helper process: an offline clone that stops for good once copying is under way.
pub fn offline_clone_until_copying() -> String {
    let source = PathBuf::from(std::env::var("PGCLONE_IT_SOURCE").unwrap());
    let target = PathBuf::from(std::env::var("PGCLONE_IT_TARGET").unwrap());
    let _record = pgclone::gc::UnfinishedClone::begin(None, &target).unwrap();
    let options = CloneOptions::new().on_progress(|event| {
        if matches!(event, pgclone::clone::CloneEvent::Copied { .. }) {
            crate::helpers::report_and_wait_to_be_killed("COPYING");
        }
    });
    match clone_stopped_cluster(&source, &target, &options) {
        Ok(_) => "DONE without stopping".to_string(),
        Err(e) => format!("ERR {e}"),
    }
}

#[test]
fn gc_leaves_a_target_alone_while_a_live_process_clones_into_it() {
    let root = support::unique_root("gc-live");
    let target = root.join("target");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(
        target.join("backup_label"),
        "pgclone: this clone is incomplete and must not be started\n",
    )
    .unwrap();
    // A dead maker's record for the target, and a live one (this process).
    let unfinished = root.join("unfinished");
    std::fs::create_dir_all(&unfinished).unwrap();
    std::fs::write(
        unfinished.join("clone-dead"),
        format!("999999999 1\n{}\n", target.display()),
    )
    .unwrap();
    let live = pgclone::gc::UnfinishedClone::begin(Some(&root), &target).unwrap();
    assert!(pgclone::gc::collect_garbage(Some(&root), false)
        .unwrap()
        .unfinished
        .is_empty());
    assert!(target.exists(), "a live process is making it");
    drop(live);
    assert_eq!(
        pgclone::gc::collect_garbage(Some(&root), false)
            .unwrap()
            .unfinished,
        vec![target.clone()]
    );
    assert!(!target.exists());
}
