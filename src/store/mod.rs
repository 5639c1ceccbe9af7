//! The on-disk store: the pgclone directory and what lives in it (clone directories with their
//! owners, goldens, records of unfinished clones), the locks between processes, garbage
//! collection, and the rules that keep root from following a path another user controls.

pub(crate) mod gc;
pub(crate) mod lock;
pub(crate) mod root;
pub(crate) mod safe_path;
