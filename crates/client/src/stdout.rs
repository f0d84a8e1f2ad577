//! Standard output, whose failures are the local side's: the records of `--json`, the lines of
//! `ferry ls` and the bytes of `get -o -` all go through here. A write that fails (a full
//! disk) stops what goes there, is told once, `cannot write to standard output: ...`, and
//! makes the run exit 1 at least; when the reader went away (`ferry ls | head -1`), ferry ends
//! at once and quietly, as tools that SIGPIPE ends do, with their status
//! ([`ferry_cli_docs::stdout`], which both commands share).

use std::fmt::Display;
use std::io;
use std::sync::{Mutex, PoisonError};

use ferry_cli_docs::stdout::write_all;

use crate::error::exit;

/// The first write that failed: `Some(Some(e))` until it is told, `Some(None)` once its caller
/// took it to tell (as an error of the run).
static FAILED: Mutex<Option<Option<io::Error>>> = Mutex::new(None);

/// Writes `bytes` and flushes them, for a caller that reports the failure itself (`get -o -`).
/// A reader gone ends the process ([`PIPE_CLOSED`](ferry_cli_docs::stdout::PIPE_CLOSED), 141).
pub(crate) fn write(bytes: &[u8]) -> io::Result<()> {
    let written = write_all(bytes);
    if written.is_err() {
        *failed() = Some(None);
    }
    written
}

/// Writes one line (a record, an entry); a failure is kept to be told by [`settle`], and the
/// lines after it are dropped. A reader gone ends the process
/// ([`PIPE_CLOSED`](ferry_cli_docs::stdout::PIPE_CLOSED), 141).
pub(crate) fn line(text: impl Display) {
    let mut failed = failed();
    if failed.is_none() {
        if let Err(e) = write_all(format!("{text}\n").as_bytes()) {
            *failed = Some(Some(e));
        }
    }
}

/// The run's exit `code`, once any failure of standard output is told: at least 1
/// ([`exit::PARTIAL`]) when a write failed.
pub(crate) fn settle(code: u8) -> u8 {
    match failed().take() {
        None => code,
        Some(untold) => {
            if let Some(e) = untold {
                eprintln!("ferry: cannot write to standard output: {e}");
            }
            code.max(exit::PARTIAL)
        }
    }
}

/// [`FAILED`], locked.
fn failed() -> std::sync::MutexGuard<'static, Option<Option<io::Error>>> {
    FAILED.lock().unwrap_or_else(PoisonError::into_inner)
}
