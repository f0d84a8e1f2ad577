//! Shell completions and manual pages, generated from the clap definition of the command line
//! (`ferry completions SHELL`, `ferry man --out DIR`), so that they never drift from it.

use clap::CommandFactory;
use ferry_cli_docs::DocsError;

use crate::cli::{Cli, Command};
use crate::error::exit;

/// Answers `completions` and `man` (which writes `ferry.1` and one page per visible
/// subcommand, `ferry-send.1`, ...); `None` for the commands that transfer files.
pub(crate) fn answer(command: &Command) -> Option<u8> {
    let Command::Docs(docs) = command else {
        return None;
    };
    Some(match docs.run(Cli::command(), true) {
        Ok(()) => exit::OK,
        Err(DocsError::Man { dir, source }) => {
            eprintln!(
                "ferry: cannot write the manual pages into {}: {}",
                dir.display(),
                crate::error::describe(&source)
            );
            exit::USAGE
        }
        // As any other write to standard output (crate::stdout).
        Err(e @ DocsError::Stdout(_)) => {
            eprintln!("ferry: {e}");
            exit::PARTIAL
        }
    })
}
