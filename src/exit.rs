//! Work to do when the process exits normally (`cargo test` and nextest end with `exit`):
//! stopping per-process template servers, deleting discarded clones. A process killed with
//! SIGKILL does none of it; its children die with it and the next run reaps its files.

use std::sync::{Mutex, Once};

static HANDLERS: Mutex<Vec<fn()>> = Mutex::new(Vec::new());

/// Runs `handler` at exit, in registration order (register each once).
pub(crate) fn at_exit(handler: fn()) {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // SAFETY: `run_handlers` is a plain extern "C" function with no arguments.
        unsafe { libc::atexit(run_handlers) };
    });
    HANDLERS.lock().unwrap().push(handler);
}

extern "C" fn run_handlers() {
    let handlers = std::mem::take(&mut *HANDLERS.lock().unwrap_or_else(|e| e.into_inner()));
    for handler in handlers {
        // A panic must not cross the C boundary.
        let _ = std::panic::catch_unwind(handler);
    }
}
