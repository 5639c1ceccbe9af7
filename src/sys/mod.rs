//! The platform layer: every call that only Linux has, behind a small API the rest of the crate
//! uses (checked by `tests/it/tidy.rs`). The code elsewhere stays POSIX: `open` flags, `flock`,
//! `fchown`, `setsid`, uids and gids.
//!
//! Only Linux is implemented (`linux.rs`). docs/platforms.md says what each function relies on
//! and how a macOS implementation would provide it; a port adds a module beside `linux.rs` with
//! the same functions and loosens the `compile_error!` below.
//!
//! - processes: [`process_start_time`], [`process_parent`], [`process_environment_var`],
//!   [`process_exists`], [`process_args`], [`process_cwd`], [`program_name`], [`lock_holders`],
//!   [`process_umask`], [`own_executable`];
//! - the machine: [`boot_id`];
//! - children: [`arm_parent_death_signal`] (for `postgres/server.rs`, between fork and exec);
//! - identity: [`set_thread_fs_identity`], [`with_thread_effective_ids`], [`user_by_name`], [`user_by_uid`];
//! - files: [`reflink`], [`copy_range`], [`shared_bytes`], [`sync_file_system`],
//!   [`file_system_name`], [`MAX_SOCKET_PATH`].

#[cfg(not(target_os = "linux"))]
compile_error!("pgclone supports Linux only for now: see docs/platforms.md");

#[cfg(target_os = "linux")]
mod linux;

#[cfg(target_os = "linux")]
pub(crate) use linux::*;

/// An entry of the password database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct User {
    /// The login name.
    pub name: String,
    /// The user id.
    pub uid: u32,
    /// The primary group id.
    pub gid: u32,
}
