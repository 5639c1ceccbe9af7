//! All integration tests in one binary (fast to build; see STYLE.md, xshell).

mod bad_input;
mod concurrency;
mod consistency;
mod environment;
mod harness;
mod helpers;
mod lifecycle;
mod offline_clone;
mod online_clone;
mod parent_death;
mod support;
mod users;
