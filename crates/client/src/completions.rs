//! Shell completions and manual pages, generated from the clap definition of the command line
//! (`ferry completions SHELL`, `ferry man --out DIR`), so that they never drift from it.

use std::io;
use std::path::Path;

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::{Cli, Command};
use crate::error::exit;

/// Answers `completions` and `man`; `None` for the commands that transfer files.
pub(crate) fn answer(command: &Command) -> Option<u8> {
    match command {
        Command::Completions { shell } => Some(print_completions(*shell)),
        Command::Man { out } => Some(match write_man_pages(out) {
            Ok(()) => exit::OK,
            Err(e) => {
                eprintln!(
                    "ferry: cannot write the manual pages into {}: {}",
                    out.display(),
                    crate::error::describe(&e)
                );
                exit::USAGE
            }
        }),
        _ => None,
    }
}

fn print_completions(shell: Shell) -> u8 {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "ferry", &mut io::stdout());
    exit::OK
}

/// Writes `ferry.1` and one page per visible subcommand (`ferry-send.1`, ...) into `dir`.
fn write_man_pages(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut cmd = Cli::command();
    // Global options (--timeout, --pin, ...) then show on every page.
    cmd.build();
    let subs = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help");
    for page in std::iter::once(&cmd).chain(subs) {
        // Built, a subcommand is displayed as `ferry-send`.
        let name = page.get_display_name().unwrap_or(page.get_name());
        let mut roff = Vec::new();
        clap_mangen::Man::new(page.clone()).render(&mut roff)?;
        std::fs::write(dir.join(format!("{name}.1")), roff)?;
    }
    Ok(())
}
