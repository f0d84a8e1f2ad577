//! Standard output as both commands write it: whole, flushed, with a failure returned to be
//! told (`cannot write to standard output: ...`, never a panic), and a reader that went away
//! (`| head`, `| true`) ending the process at once and quietly, as tools that SIGPIPE ends do.

use std::io::{self, Write};

/// The exit status once standard output's reader went away: 128 + SIGPIPE (13), as a shell
/// reports a tool that SIGPIPE ended.
pub const PIPE_CLOSED: u8 = 141;

/// Writes `bytes` to standard output and flushes them. A closed pipe ends the process with
/// [`PIPE_CLOSED`] and no word; any other failure (a full disk) is returned.
pub fn write_all(bytes: &[u8]) -> io::Result<()> {
    let mut out = io::stdout().lock();
    let written = out.write_all(bytes).and_then(|()| out.flush());
    if written
        .as_ref()
        .is_err_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    {
        drop(out);
        std::process::exit(PIPE_CLOSED.into());
    }
    written
}
