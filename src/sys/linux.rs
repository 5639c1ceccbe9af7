//! The Linux implementation of [`crate::sys`]: `/proc`, per-thread file-system credentials,
//! `PR_SET_PDEATHSIG`, the FICLONE and FIEMAP ioctls, `copy_file_range`, `syncfs`, and the
//! reentrant password-database lookups.

use std::ffi::{CStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::process::{Pid, Signal};

use super::User;

/// The longest socket path the kernel accepts (`sun_path` is 108 bytes with the final NUL).
pub(crate) const MAX_SOCKET_PATH: usize = 107;

/// When process `pid` started, in clock ticks since boot (field 22 of `/proc/<pid>/stat`), or
/// `None` if there is no such process, or it has exited and waits to be reaped (a zombie uses
/// nothing any more). With the pid it tells a process from a later one that got the same pid.
pub(crate) fn process_start_time(pid: u32) -> Option<u64> {
    start_time_in(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The start time in a `/proc/<pid>/stat` line, unless the process is a zombie.
fn start_time_in(stat: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    if fields.next()? == "Z" {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// The parent of process `pid` (field 4 of `/proc/<pid>/stat`), if it can be read.
pub(crate) fn process_parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    fields.nth(1)?.parse().ok()
}

/// The value of `name` in the environment process `pid` started with; `None` if it has none,
/// or if its environment cannot be read (another user's process, when this one is not root).
pub(crate) fn process_environment_var(pid: u32, name: &str) -> Option<OsString> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = [name.as_bytes(), b"="].concat();
    environ
        .split(|b| *b == 0)
        .find_map(|entry| entry.strip_prefix(prefix.as_slice()))
        .map(|value| OsString::from_vec(value.to_vec()))
}

/// Whether a process `pid` exists (a zombie counts), whoever owns it.
pub(crate) fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The command line of process `pid`, program first; `None` if it cannot be read (no such
/// process). A kernel thread or a zombie has none: an empty list.
pub(crate) fn process_args(pid: u32) -> Option<Vec<OsString>> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    // Each argument ends with a NUL.
    let mut args: Vec<OsString> = cmdline
        .split(|b| *b == 0)
        .map(|arg| OsString::from_vec(arg.to_vec()))
        .collect();
    if args.last().is_some_and(|arg| arg.is_empty()) {
        args.pop();
    }
    Some(args)
}

/// This boot of the machine: a random id the kernel makes at each boot, so that what was written
/// without `fsync` in an earlier boot (lost in a crash, maybe) is told apart.
pub(crate) fn boot_id() -> Option<String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    Some(id.trim().to_string()).filter(|id| !id.is_empty())
}

/// A path that runs this very executable, even if the file its path named was replaced since.
pub(crate) fn own_executable() -> PathBuf {
    PathBuf::from("/proc/self/exe")
}

/// The working directory of process `pid` (readable for one's own processes, or as root).
pub(crate) fn process_cwd(pid: u32) -> io::Result<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/cwd"))
}

/// The program name of process `pid` (at most 15 bytes, as the kernel keeps it), `None` if it
/// cannot be read.
pub(crate) fn program_name(pid: u32) -> Option<String> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(comm.trim().to_string())
}

/// The processes holding a lock on `file`, as `/proc/locks` lists them:
/// `1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF`, where `08:01:5678` is the file's device
/// (major:minor, hex) and inode. Processes waiting for the lock (lines with `->`) are left out.
/// Empty where /proc says nothing.
pub(crate) fn lock_holders(file: &File) -> Vec<u32> {
    let Ok(meta) = file.metadata() else {
        return Vec::new();
    };
    let dev = meta.dev();
    let id = format!(
        "{:02x}:{:02x}:{}",
        rustix::fs::major(dev),
        rustix::fs::minor(dev),
        meta.ino()
    );
    let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    locks
        .lines()
        .filter(|line| !line.contains("->"))
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let at = fields.iter().position(|field| *field == id)?;
            fields.get(at.checked_sub(1)?)?.parse().ok()
        })
        .collect()
}

/// This process's umask (`Umask:` in `/proc/self/status`), read without changing it: umask(2)
/// can only read it by setting it, for a moment, under the other threads. `None` if unknown.
pub(crate) fn process_umask() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Umask:"))?;
    u32::from_str_radix(line["Umask:".len()..].trim(), 8).ok()
}

/// Asks the kernel to send `signal` to the calling process when the thread that forked it
/// exits (`PR_SET_PDEATHSIG`), then checks that `parent` is still its parent: if the parent died
/// before the signal was armed, fails with ESRCH, and the child should not go on.
///
/// Made for `Command::pre_exec`, after the uid change (which clears the setting): it allocates
/// nothing and makes two async-signal-safe system calls (`prctl`, `getppid`).
#[inline]
pub(crate) fn arm_parent_death_signal(signal: Signal, parent: Pid) -> io::Result<()> {
    rustix::process::set_parent_process_death_signal(Some(signal))?;
    if rustix::process::getppid() != Some(parent) {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    Ok(())
}

/// Gives the calling thread, and only it, the file-system identity `uid`/`gid` (fsuid, fsgid)
/// and no supplementary groups, for good: call it on a thread that ends with the work. These are
/// raw system calls, not the libc wrappers that apply to every thread of the process. Fails
/// unless all three changes took (the caller needs CAP_SETUID/CAP_SETGID: root).
pub(crate) fn set_thread_fs_identity(uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: setgroups, setfsgid and setfsuid change only the calling thread's credentials.
    let groups =
        unsafe { libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>()) };
    let groups_error = (groups != 0).then(io::Error::last_os_error);
    // SAFETY: as above.
    unsafe {
        libc::syscall(libc::SYS_setfsgid, gid as libc::c_long);
        libc::syscall(libc::SYS_setfsuid, uid as libc::c_long);
    }
    // setfsuid/setfsgid return the previous id; asking again (with an invalid id) tells
    // whether the change took.
    // SAFETY: as above; -1 changes nothing.
    let (now_gid, now_uid) = unsafe {
        (
            libc::syscall(libc::SYS_setfsgid, -1 as libc::c_long),
            libc::syscall(libc::SYS_setfsuid, -1 as libc::c_long),
        )
    };
    if let Some(error) = groups_error {
        return Err(error);
    }
    if now_gid != gid as libc::c_long || now_uid != uid as libc::c_long {
        return Err(io::Error::other(format!(
            "fsuid/fsgid stayed {now_uid}/{now_gid} instead of {uid}/{gid}"
        )));
    }
    Ok(())
}

/// Runs `work` with the calling thread's effective uid/gid switched to `uid`/`gid` (only this
/// thread's: raw system calls; real and saved ids stay, so root switches back after). A Unix
/// socket connected meanwhile carries this identity to its server, whose peer authentication
/// reads it. Fails if a switch does not take; panics if switching back does not (the thread
/// would keep another user's identity).
pub(crate) fn with_thread_effective_ids<T>(
    uid: u32,
    gid: u32,
    work: impl FnOnce() -> T,
) -> io::Result<T> {
    let keep = -1i64 as libc::c_long;
    // The file-system ids follow the effective ones: a thread working as another user's
    // (`set_thread_fs_identity`) gets its own back below. Asking with -1 changes nothing.
    // SAFETY: setfsuid/setfsgid as raw system calls change only the calling thread.
    let (old_fsuid, old_fsgid) = unsafe {
        (
            libc::syscall(libc::SYS_setfsuid, keep),
            libc::syscall(libc::SYS_setfsgid, keep),
        )
    };
    let (old_uid, old_gid) = (
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw(),
    );
    let set = |gid: u32, uid: u32| -> io::Result<()> {
        // SAFETY: setresgid/setresuid as raw system calls change only the calling thread.
        let gid_set =
            unsafe { libc::syscall(libc::SYS_setresgid, keep, gid as libc::c_long, keep) };
        if gid_set != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: as above.
        let uid_set =
            unsafe { libc::syscall(libc::SYS_setresuid, keep, uid as libc::c_long, keep) };
        if uid_set != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    if let Err(e) = set(gid, uid) {
        // The gid may have changed: back, with the uid still ours.
        // SAFETY: as above.
        unsafe { libc::syscall(libc::SYS_setresgid, keep, old_gid as libc::c_long, keep) };
        return Err(e);
    }
    let result = work();
    // The uid first: only with it back may the thread take its gid back.
    // SAFETY: as above.
    let restored = unsafe {
        libc::syscall(libc::SYS_setresuid, keep, old_uid as libc::c_long, keep) == 0
            && libc::syscall(libc::SYS_setresgid, keep, old_gid as libc::c_long, keep) == 0
    };
    assert!(
        restored,
        "pgclone: could not switch this thread back to uid {old_uid}"
    );
    // SAFETY: as above.
    unsafe {
        libc::syscall(libc::SYS_setfsgid, old_fsgid);
        libc::syscall(libc::SYS_setfsuid, old_fsuid);
    }
    Ok(result)
}

/// The password-database entry named `name` (`getpwnam_r`), `None` if there is none.
pub(crate) fn user_by_name(name: &CStr) -> io::Result<Option<User>> {
    passwd_entry(|pwd, buf, result| {
        // SAFETY: `name` is NUL-terminated; getpwnam_r writes into `pwd` and `buf` (of the
        // length given) and sets `result` to `pwd` or null.
        unsafe {
            libc::getpwnam_r(
                name.as_ptr(),
                pwd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                result,
            )
        }
    })
}

/// The password-database entry of user id `uid` (`getpwuid_r`), `None` if there is none.
pub(crate) fn user_by_uid(uid: u32) -> io::Result<Option<User>> {
    passwd_entry(|pwd, buf, result| {
        // SAFETY: getpwuid_r writes into `pwd` and `buf` (of the length given) and sets `result`
        // to `pwd` or null.
        unsafe { libc::getpwuid_r(uid, pwd, buf.as_mut_ptr().cast(), buf.len(), result) }
    })
}

/// Runs a reentrant passwd lookup with a buffer of its own (grown while the entry does not fit)
/// and copies out what pgclone needs before the buffer goes away.
fn passwd_entry(
    lookup: impl Fn(&mut libc::passwd, &mut [u8], &mut *mut libc::passwd) -> libc::c_int,
) -> io::Result<Option<User>> {
    let mut size = 16 * 1024;
    loop {
        let mut buf = vec![0u8; size];
        // SAFETY: passwd is plain data (integers and pointers): all zeroes is a valid value.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = lookup(&mut pwd, &mut buf, &mut result);
        if rc == libc::ERANGE && size < 1 << 20 {
            size *= 4;
            continue;
        }
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        if result.is_null() {
            return Ok(None);
        }
        // SAFETY: on success `pw_name` points at a NUL-terminated string inside `buf`, alive here.
        let name = unsafe { CStr::from_ptr(pwd.pw_name) }
            .to_string_lossy()
            .into_owned();
        return Ok(Some(User {
            name,
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
        }));
    }
}

/// Makes the empty file `to` share `from`'s extents, copy-on-write (the FICLONE ioctl): the copy
/// costs no space. Fails (EOPNOTSUPP, EXDEV, EINVAL...) where the file systems cannot do it.
pub(crate) fn reflink(from: &File, to: &File) -> io::Result<()> {
    Ok(rustix::fs::ioctl_ficlone(to, from)?)
}

/// Copies up to `len` bytes from `from` at `*from_offset` to `to` at `*to_offset` in the kernel
/// (`copy_file_range`, which some file systems, XFS and btrfs, turn into shared extents), moving
/// both offsets on; returns the bytes copied, 0 at the end of `from`.
pub(crate) fn copy_range(
    from: &File,
    from_offset: &mut u64,
    to: &File,
    to_offset: &mut u64,
    len: usize,
) -> io::Result<usize> {
    Ok(rustix::fs::copy_file_range(
        from,
        Some(from_offset),
        to,
        Some(to_offset),
        len,
    )?)
}

/// How many bytes of `file` share extents with another file (FIEMAP's SHARED flag). Fails where
/// the file system has no FIEMAP (tmpfs, say).
pub(crate) fn shared_bytes(file: &File) -> io::Result<u64> {
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
            return Err(io::Error::last_os_error());
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

/// Writes to disk everything cached for the file system that `file` (any file or directory
/// opened on it) is on (`syncfs`): one call for a whole tree of copies.
pub(crate) fn sync_file_system(file: &File) -> io::Result<()> {
    Ok(rustix::fs::syncfs(file)?)
}

/// The name of the file system `dir` is on (`xfs`, `ext4`, `btrfs`, `tmpfs`, ...), from the magic
/// number `statfs` reports; `unknown` if that fails, `unknown (magic 0x...)` if it is not one
/// this list knows.
pub(crate) fn file_system_name(dir: &Path) -> String {
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

#[cfg(test)]
mod tests {
    #[test]
    fn a_process_has_its_parent_and_the_environment_it_started_with() {
        let me = std::process::id();
        let parent = rustix::process::getppid().map(|pid| pid.as_raw_nonzero().get() as u32);
        assert_eq!(super::process_parent(me), parent);
        // The environment this process started with holds the PATH that config reads (none if
        // it started without one), however the test binary was run.
        use std::os::unix::ffi::OsStrExt;
        let path = super::process_environment_var(me, "PATH").unwrap_or_default();
        let dirs: Vec<&std::ffi::OsStr> = path
            .as_bytes()
            .split(|b| *b == b':')
            .filter(|dir| !dir.is_empty())
            .map(std::ffi::OsStr::from_bytes)
            .collect();
        let config = crate::config::Config::from_env().unwrap();
        let configured: Vec<&std::ffi::OsStr> = config
            .path
            .iter()
            .map(|dir| dir.as_os_str())
            .filter(|dir| !dir.is_empty())
            .collect();
        assert_eq!(dirs, configured);
        assert_eq!(super::process_environment_var(me, "PGCLONE_UNSET"), None);
    }

    #[test]
    fn switched_effective_ids_come_back_with_the_file_system_ids() {
        if !rustix::process::geteuid().is_root() {
            return; // only root may switch; CI runs as root
        }
        let fs_ids = || unsafe {
            (
                libc::syscall(libc::SYS_setfsuid, -1i64 as libc::c_long),
                libc::syscall(libc::SYS_setfsgid, -1i64 as libc::c_long),
            )
        };
        std::thread::spawn(move || {
            set_thread_fs_identity(65534, 65534).unwrap();
            let seen = with_thread_effective_ids(65534, 65534, || {
                (rustix::process::geteuid().as_raw(), fs_ids())
            })
            .unwrap();
            assert_eq!(seen, (65534, (65534, 65534)));
            assert_eq!(rustix::process::geteuid().as_raw(), 0);
            assert_eq!(fs_ids(), (65534, 65534), "the thread's own file-system ids");
        })
        .join()
        .unwrap();
    }

    use super::*;
    use std::io::{Read, Write};

    /// A pid no process has: above the kernel's largest `pid_max` (2^22).
    const NO_SUCH_PID: u32 = u32::MAX;

    #[test]
    fn this_process_has_a_start_time_and_a_made_up_one_has_none() {
        let me = std::process::id();
        let start = process_start_time(me).expect("start time of this process");
        assert!(start > 0);
        assert_eq!(process_start_time(me), Some(start), "it does not change");
        assert_eq!(process_start_time(NO_SUCH_PID), None);
        assert!(process_exists(me));
        assert!(!process_exists(NO_SUCH_PID));

        // One that has exited but is not reaped yet has none either.
        let running =
            "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 5 6";
        assert_eq!(start_time_in(running), Some(987654));
        let zombie = running.replace(") S ", ") Z ");
        assert_eq!(start_time_in(&zombie), None);
    }

    #[test]
    fn reads_this_process_command_line_directory_and_name() {
        let me = std::process::id();
        let args = process_args(me).expect("command line of this process");
        assert!(!args.is_empty() && !args[0].is_empty(), "{args:?}");
        assert_eq!(process_args(NO_SUCH_PID), None);
        let cwd = process_cwd(me).unwrap();
        assert_eq!(cwd, Path::new(".").canonicalize().unwrap());
        assert!(process_cwd(NO_SUCH_PID).is_err());
        let name = program_name(me).expect("name of this process");
        assert!(
            !name.is_empty() && name.len() <= 15 && !name.ends_with('\n'),
            "{name:?}"
        );
        assert_eq!(program_name(NO_SUCH_PID), None);
    }

    #[test]
    fn finds_this_process_holding_a_lock() {
        let file = tempfile::tempfile().unwrap();
        assert!(!lock_holders(&file).contains(&std::process::id()));
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive).unwrap();
        assert!(lock_holders(&file).contains(&std::process::id()));
    }

    #[test]
    fn reads_the_umask_without_changing_it() {
        let umask = process_umask().expect("umask of this process");
        assert!(umask <= 0o777, "{umask:o}");
        assert_eq!(process_umask(), Some(umask));
    }

    #[test]
    fn looks_up_root_by_name_and_by_uid() {
        let root = User {
            name: "root".into(),
            uid: 0,
            gid: 0,
        };
        assert_eq!(user_by_name(c"root").unwrap(), Some(root.clone()));
        assert_eq!(user_by_uid(0).unwrap(), Some(root));
        assert_eq!(user_by_name(c"pgclone-no-such-user").unwrap(), None);
        assert_eq!(user_by_uid(u32::MAX - 7).unwrap(), None);
    }

    #[test]
    fn a_thread_takes_another_file_system_identity_as_root_only() {
        let root = rustix::process::geteuid().is_root();
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("private");
        std::fs::create_dir(&private).unwrap();
        let (uid, gid) = (65534, 65534); // nobody, whether it has an entry or not
        let outcome = std::thread::spawn(move || {
            set_thread_fs_identity(uid, gid)?;
            std::fs::File::create(private.join("file")).map(drop)
        })
        .join()
        .unwrap();
        if root {
            // The directory is root's and mode 0755: nobody may not create in it.
            let error = outcome.unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::PermissionDenied, "{error}");
            // This thread kept root's identity.
            std::fs::File::create(dir.path().join("private/mine")).unwrap();
        } else {
            assert!(outcome.is_err(), "only root may change its identity");
        }
    }

    #[test]
    fn copies_a_range_and_syncs_the_file_system() {
        let dir = tempfile::tempdir().unwrap();
        let mut source = File::create(dir.path().join("source")).unwrap();
        source.write_all(b"0123456789").unwrap();
        let source = File::open(dir.path().join("source")).unwrap();
        let target = File::create(dir.path().join("target")).unwrap();
        let (mut from, mut to) = (2, 0);
        assert_eq!(
            copy_range(&source, &mut from, &target, &mut to, 5).unwrap(),
            5
        );
        assert_eq!((from, to), (7, 5));
        let mut copied = String::new();
        File::open(dir.path().join("target"))
            .unwrap()
            .read_to_string(&mut copied)
            .unwrap();
        assert_eq!(copied, "23456");
        // A reflink works (then the clone reads as its source) or says the file system cannot.
        let clone = File::create(dir.path().join("clone")).unwrap();
        match reflink(&source, &clone) {
            Ok(()) => assert_eq!(
                std::fs::read(dir.path().join("clone")).unwrap(),
                b"0123456789"
            ),
            Err(e) => assert!(e.raw_os_error().is_some(), "{e}"),
        }
        sync_file_system(&File::open(dir.path()).unwrap()).unwrap();
        assert!(!file_system_name(dir.path()).is_empty());
        assert_eq!(file_system_name(&dir.path().join("missing")), "unknown");
    }
}
