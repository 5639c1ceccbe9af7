//! What CI promises about the machine: checked, so a missing capability fails instead of skipping.

use pgclone::server::PgBinaries;

use crate::support;

#[test]
fn the_binaries_found_are_the_ones_pgclone_pg_bin_names() {
    let bins = PgBinaries::find().unwrap();
    assert!(pgclone::server::features::is_supported(
        bins.version().major()
    ));
    assert!(bins.program("postgres").is_file() && bins.program("initdb").is_file());
    if let Some(dir) = std::env::var_os("PGCLONE_PG_BIN").filter(|d| !d.is_empty()) {
        assert_eq!(bins.bin_dir(), std::path::Path::new(&dir));
    }
}

/// With `PGCLONE_TEST_REQUIRE_REFLINK=1` (CI's XFS run) the test root must share extents (FICLONE);
/// otherwise it must refuse cleanly, as ext4 and tmpfs do.
#[test]
fn reflinks_work_in_the_test_root_when_ci_requires_them() {
    let dir = tempfile::tempdir_in(support::base_dir()).unwrap();
    let source = dir.path().join("source");
    std::fs::write(&source, vec![7u8; 1 << 16]).unwrap();
    let from = std::fs::File::open(&source).unwrap();
    let to = std::fs::File::create(dir.path().join("clone")).unwrap();
    let cloned = rustix::fs::ioctl_ficlone(&to, &from);
    if support::reflink_required() {
        cloned.unwrap_or_else(|e| {
            panic!(
                "CI requires reflinks in {}, but FICLONE failed: {e}",
                dir.path().display()
            )
        });
        assert_eq!(
            std::fs::read(dir.path().join("clone")).unwrap(),
            vec![7u8; 1 << 16]
        );
    } else if let Err(e) = cloned {
        let unsupported = [
            rustix::io::Errno::OPNOTSUPP,
            rustix::io::Errno::XDEV,
            rustix::io::Errno::INVAL,
        ];
        assert!(
            unsupported.contains(&e),
            "FICLONE failed with an unexpected error: {e}"
        );
    }
}
