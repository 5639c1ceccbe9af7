//! Cloning data directories: file by file, copy-on-write where the file system allows.

mod exclude;
mod file;
mod offline;
mod tree;

pub use file::CopyMethod;
pub use offline::clone_stopped_cluster;
pub use tree::CloneReport;

/// How a clone may be made.
#[derive(Debug, Clone, Default)]
pub struct CloneOptions {
    pub(crate) allow_copy: bool,
}

impl CloneOptions {
    pub fn new() -> Self {
        Self::default()
    }

    /// Allow a target on another file system than the source, where every byte is copied.
    pub fn allow_copy(mut self, allow: bool) -> Self {
        self.allow_copy = allow;
        self
    }
}
