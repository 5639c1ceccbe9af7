//! All integration tests in one binary: one link step instead of one per file, so they build fast.

mod args;
mod bad_input;
mod concurrency;
mod consistency;
mod environment;
mod harness;
mod helpers;
mod library;
mod lifecycle;
mod migrations;
mod offline_clone;
mod online_clone;
mod parent_death;
mod remote;
mod support;
mod tidy;
mod trust;
mod users;
