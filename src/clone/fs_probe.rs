//! What a directory's file system can do for clones: its type, whether FICLONE works, whether
//! `copy_file_range` shares extents there (checked with FIEMAP), and so which method pgclone
//! uses. `pgclone doctor` prints it.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::clone::CopyMethod;
use crate::error::{IoContext, Result};

/// What [`probe_file_system`] found.
#[derive(Debug, Clone)]
pub struct FsCapabilities {
    /// The directory probed.
    pub dir: PathBuf,
    /// The file system's name (`xfs`, `ext4`, `btrfs`, `tmpfs`, ...).
    pub fs_type: String,
    /// FICLONE: `Ok` if a reflink worked, else why not.
    pub reflink: std::result::Result<(), String>,
    /// `copy_file_range`: `Ok(true)` if the copy shares extents with its source.
    pub copy_file_range: std::result::Result<bool, String>,
}

impl FsCapabilities {
    /// The method a clone in this directory uses.
    pub fn best_method(&self) -> CopyMethod {
        match (&self.reflink, &self.copy_file_range) {
            (Ok(()), _) => CopyMethod::Reflink,
            (_, Ok(_)) => CopyMethod::CopyFileRange,
            _ => CopyMethod::Copy,
        }
    }

    /// Whether clones here cost (almost) no space.
    pub fn shares_extents(&self) -> bool {
        self.reflink.is_ok() || self.copy_file_range == Ok(true)
    }
}

/// Probes the file system of `dir` with two small files that are removed afterwards.
pub fn probe_file_system(dir: &Path) -> Result<FsCapabilities> {
    let scratch = tempfile::Builder::new()
        .prefix(".pgclone-probe-")
        .tempdir_in(dir)
        .doing("probe", dir)?;
    let source_path = scratch.path().join("source");
    let mut source = File::create(&source_path).doing("create", &source_path)?;
    source
        .write_all(&vec![42u8; 1 << 20])
        .doing("write", &source_path)?;
    source.sync_all().doing("sync", &source_path)?;
    let source = File::open(&source_path).doing("open", &source_path)?;

    let reflinked = File::create(scratch.path().join("reflink")).doing("create", scratch.path())?;
    let reflink = rustix::fs::ioctl_ficlone(&reflinked, &source).map_err(|e| e.to_string());

    let copied = File::create(scratch.path().join("copy")).doing("create", scratch.path())?;
    let copy_file_range =
        rustix::fs::copy_file_range(&source, Some(&mut 0), &copied, Some(&mut 0), 1 << 20)
            .map_err(|e| e.to_string())
            .map(|_| shared_bytes(&copied).unwrap_or(0) > 0);

    Ok(FsCapabilities {
        dir: dir.to_path_buf(),
        fs_type: fs_type(dir),
        reflink,
        copy_file_range,
    })
}

/// How many bytes of `file` share extents with another file (FIEMAP's SHARED flag).
pub fn shared_bytes(file: &File) -> std::io::Result<u64> {
    const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;
    const FIEMAP_FLAG_SYNC: u32 = 0x1;
    const FIEMAP_EXTENT_LAST: u32 = 0x1;
    const FIEMAP_EXTENT_SHARED: u32 = 0x2000;
    const EXTENTS: usize = 128;

    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Extent {
        logical: u64,
        physical: u64,
        length: u64,
        reserved64: [u64; 2],
        flags: u32,
        reserved: [u32; 3],
    }
    #[repr(C)]
    struct Fiemap {
        start: u64,
        length: u64,
        flags: u32,
        mapped_extents: u32,
        extent_count: u32,
        reserved: u32,
        extents: [Extent; EXTENTS],
    }

    let mut shared = 0;
    let mut start = 0;
    loop {
        let mut map = Fiemap {
            start,
            length: u64::MAX - start,
            flags: FIEMAP_FLAG_SYNC,
            mapped_extents: 0,
            extent_count: EXTENTS as u32,
            reserved: 0,
            extents: [Extent::default(); EXTENTS],
        };
        // SAFETY: FS_IOC_FIEMAP reads the header and writes at most `extent_count` extents
        // into the array that follows it, which `map` holds.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_FIEMAP, &mut map as *mut Fiemap) };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let extents = &map.extents[..map.mapped_extents as usize];
        for extent in extents {
            if extent.flags & FIEMAP_EXTENT_SHARED != 0 {
                shared += extent.length;
            }
        }
        match extents.last() {
            Some(last) if last.flags & FIEMAP_EXTENT_LAST == 0 => {
                start = last.logical + last.length
            }
            _ => return Ok(shared),
        }
    }
}

fn fs_type(dir: &Path) -> String {
    let Ok(stat) = rustix::fs::statfs(dir) else {
        return "unknown".into();
    };
    match stat.f_type as u64 {
        0x5846_5342 => "xfs".into(),
        0xEF53 => "ext4".into(),
        0x9123_683E => "btrfs".into(),
        0x0102_1994 => "tmpfs".into(),
        0x794C_7630 => "overlayfs".into(),
        0x2FC1_2FC1 => "zfs".into(),
        0x6969 => "nfs".into(),
        0xF2F5_2010 => "f2fs".into(),
        0x6A65_6A62 => "bcachefs".into(),
        other => format!("unknown (magic {other:#x})"),
    }
}
