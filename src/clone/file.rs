//! Copying one file the cheapest way the file system allows: a reflink (FICLONE) shares the
//! extents and costs no space; `copy_file_range` lets the kernel copy (and shares extents on some
//! file systems); a plain read/write copy works everywhere. What works is learned once per pair
//! of file systems and remembered for the process.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::sync::{Mutex, OnceLock};

use rustix::io::Errno;

/// How a file's contents reached the clone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CopyMethod {
    /// FICLONE: the clone shares the source's extents (copy-on-write).
    Reflink,
    /// `copy_file_range`: an in-kernel copy (which XFS and btrfs turn into shared extents).
    CopyFileRange,
    /// read/write through user space.
    Copy,
}

impl fmt::Display for CopyMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CopyMethod::Reflink => "reflink",
            CopyMethod::CopyFileRange => "copy_file_range",
            CopyMethod::Copy => "copy",
        })
    }
}

/// Device ids of (source, target) file systems.
type FsPair = (u64, u64);

/// The best method known to work for each pair of file systems.
fn memo() -> &'static Mutex<HashMap<FsPair, CopyMethod>> {
    static MEMO: OnceLock<Mutex<HashMap<FsPair, CopyMethod>>> = OnceLock::new();
    MEMO.get_or_init(Default::default)
}

/// Copies `from` into the empty file `to` (both open) with the best method that works between
/// their file systems; returns the method used. A method the file systems cannot do is
/// remembered for the pair; one that fails for this file only is skipped for this file only.
pub(crate) fn copy_contents(
    from: &File,
    to: &File,
    len: u64,
    fs: FsPair,
) -> std::io::Result<CopyMethod> {
    let mut method = memo()
        .lock()
        .unwrap()
        .get(&fs)
        .copied()
        .unwrap_or(CopyMethod::Reflink);
    loop {
        match try_method(method, from, to, len) {
            Ok(()) => return Ok(method),
            Err(e) if method == CopyMethod::Copy => return Err(e),
            Err(e) if !is_unsupported(&e) => return Err(e),
            Err(e) => {
                let next = if method == CopyMethod::Reflink {
                    CopyMethod::CopyFileRange
                } else {
                    CopyMethod::Copy
                };
                if file_system_cannot(&e) {
                    memo().lock().unwrap().insert(fs, next);
                }
                method = next;
            }
        }
    }
}

fn try_method(method: CopyMethod, from: &File, to: &File, len: u64) -> std::io::Result<()> {
    match method {
        CopyMethod::Reflink => crate::sys::reflink(from, to),
        CopyMethod::CopyFileRange => {
            let (mut off_in, mut off_out) = (0u64, 0u64);
            while off_in < len {
                let chunk = (len - off_in).min(1 << 30) as usize;
                let n = crate::sys::copy_range(from, &mut off_in, to, &mut off_out, chunk)?;
                if n == 0 {
                    break; // the file shrank while we copied: copy what there is
                }
            }
            Ok(())
        }
        CopyMethod::Copy => {
            let mut buf = vec![0u8; 1 << 20];
            let (mut reader, mut writer) = (from, to);
            loop {
                let n = reader.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                writer.write_all(&buf[..n])?;
            }
        }
    }
}

/// Errors after which a simpler method may still work for this file.
fn is_unsupported(e: &std::io::Error) -> bool {
    let fallback = [
        Errno::OPNOTSUPP,
        Errno::XDEV,
        Errno::INVAL,
        Errno::NOSYS,
        Errno::NOTTY,
        Errno::BADF,
        Errno::PERM,
    ];
    e.raw_os_error()
        .is_some_and(|code| fallback.contains(&Errno::from_raw_os_error(code)))
}

/// Errors that mean "these file systems cannot do that at all", worth remembering.
fn file_system_cannot(e: &std::io::Error) -> bool {
    let whole_fs = [Errno::OPNOTSUPP, Errno::XDEV, Errno::NOSYS, Errno::NOTTY];
    e.raw_os_error()
        .is_some_and(|code| whole_fs.contains(&Errno::from_raw_os_error(code)))
}
