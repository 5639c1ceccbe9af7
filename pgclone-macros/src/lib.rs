//! Procedural macros of pgclone. Use them through the `pgclone` crate.
//!
//! `#[pgclone::test]` arrives with the test harness; this crate does no I/O and knows nothing
//! about PostgreSQL: the attribute expands to one call into the `pgclone` library.
