//! Root is never turned against the machine: directories another user can change are refused,
//! and nothing pgclone deletes, writes or chowns can be redirected by a planted symlink.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use pgclone::{clone::CloneOptions, server::TempCluster, ErrorKind};

use crate::support::{self, is_root};

/// A directory with a file in it, standing for anything on the machine worth protecting.
fn victim(base: &Path) -> PathBuf {
    let dir = base.join("victim");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("precious"), "keep me").unwrap();
    dir
}

fn assert_untouched(victim: &Path) {
    assert_eq!(
        std::fs::read_to_string(victim.join("precious")).unwrap(),
        "keep me"
    );
    let meta = std::fs::metadata(victim.join("precious")).unwrap();
    assert_eq!(
        meta.uid(),
        rustix::process::geteuid().as_raw(),
        "not chowned"
    );
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn a_pgclone_dir_others_can_write_is_refused_and_nothing_is_deleted() {
    let base = support::unique_root("trust-shared");
    let victim = victim(&base);
    // A world-writable directory (sticky or not) as the root: another user could plant a
    // symlink in it (here: `clones` pointing at the victim).
    for mode in [0o777, 0o1777] {
        let shared = base.join(format!("shared-{mode:o}"));
        std::fs::create_dir(&shared).unwrap();
        chmod(&shared, mode);
        std::os::unix::fs::symlink(&victim, shared.join("clones")).unwrap();
        let err = TempCluster::builder().root(&shared).start().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Untrusted, "{err}");
        assert!(err.to_string().contains("other users may write"), "{err}");
        let err = pgclone::gc::collect_garbage(Some(&shared), true).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Untrusted, "{err}");
        assert_untouched(&victim);
    }
}

#[test]
fn as_root_a_pgclone_dir_of_another_user_or_below_one_is_refused() {
    let Some(user) = pgclone::server::run_as_user().unwrap() else {
        assert!(!is_root(), "root always has a run-as user");
        return; // only root can make a directory another user's; the test above covers the rest
    };
    let base = support::unique_root("trust-owner");
    let victim = victim(&base);
    let theirs = base.join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(user.uid()), Some(user.gid())).unwrap();
    // Their directory as the root, and a root-owned directory below theirs: either way they
    // could swap what pgclone walks for a symlink to the victim.
    std::os::unix::fs::symlink(&victim, theirs.join("clones")).unwrap();
    let below = theirs.join("mine");
    std::fs::create_dir(&below).unwrap();
    for root in [&theirs, &below] {
        let err = TempCluster::builder().root(root).start().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Untrusted, "{err}");
        assert!(
            err.to_string()
                .contains(&format!("belongs to uid {}", user.uid())),
            "{err}"
        );
        let err = pgclone::gc::collect_garbage(Some(root), false).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Untrusted, "{err}");
    }
    assert_untouched(&victim);
}

#[test]
fn a_symlink_where_a_pgclone_subdirectory_belongs_is_refused() {
    let base = support::unique_root("trust-link");
    let victim = victim(&base);
    let root = base.join("root");
    std::fs::create_dir(&root).unwrap();
    chmod(&root, 0o755);
    std::os::unix::fs::symlink(&victim, root.join("trash")).unwrap();
    let err = pgclone::gc::collect_garbage(Some(&root), true).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Untrusted, "{err}");
    assert!(err.to_string().contains("symlink"), "{err}");
    assert_untouched(&victim);
}

#[test]
fn a_clones_directory_belongs_to_the_caller_and_only_its_data_to_the_server_user() {
    // Records, markers and logs live beside `data/`, in a directory the server's user cannot
    // write: a symlink it plants there cannot turn root's writes elsewhere.
    let root = support::unique_root("trust-layout");
    let cluster = TempCluster::builder().root(&root).start().unwrap();
    let me = rustix::process::geteuid().as_raw();
    let dir = std::fs::metadata(cluster.dir()).unwrap();
    assert_eq!(dir.uid(), me);
    assert_eq!(dir.mode() & 0o022, 0, "nobody else writes in it");
    let server_user = pgclone::server::run_as_user()
        .unwrap()
        .map_or(me, |user| user.uid());
    assert_eq!(
        std::fs::metadata(cluster.data_dir()).unwrap().uid(),
        server_user
    );
    let kept = cluster.keep().unwrap();
    assert_eq!(std::fs::metadata(kept.join("keep")).unwrap().uid(), me);
    pgclone::gc::collect_garbage(Some(&root), true).unwrap();
}

#[test]
fn as_root_a_clone_target_that_is_another_users_symlink_is_refused() {
    let Some(user) = pgclone::server::run_as_user().unwrap() else {
        assert!(!is_root(), "root always has a run-as user");
        return;
    };
    let root = support::unique_root("trust-target");
    let source = TempCluster::builder().root(&root).start().unwrap();
    let source_data = source.keep().unwrap().join("data");
    // The server's user owns a directory beside the target and plants a link to a directory
    // of root's: cloning "into" the link would chown and fill root's directory.
    let victim = victim(&root);
    let theirs = root.join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(user.uid()), Some(user.gid())).unwrap();
    let link = theirs.join("target");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let options = CloneOptions::new().allow_copy(true);
    let err = pgclone::clone::clone_cluster(&source_data, &link, &options).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Untrusted, "{err}");
    // A plain target inside their directory is refused too: they could swap it meanwhile.
    let err =
        pgclone::clone::clone_cluster(&source_data, &theirs.join("plain"), &options).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Untrusted, "{err}");
    assert_untouched(&victim);
    assert_eq!(std::fs::metadata(&victim).unwrap().uid(), 0);
    assert!(!theirs.join("plain").exists());
    pgclone::gc::collect_garbage(Some(&root), true).unwrap();
}
