//! # ferry-cli-docs
//!
//! `completions SHELL` and `man --out DIR`, the same two subcommands of `ferry` and
//! `ferry-server`: flatten [`Docs`] into the command's subcommands and [`Docs::run`] it with
//! the command's clap definition, so that the scripts and pages never drift from it.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::io;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use clap_complete::Shell;

/// The subcommands that describe the command itself.
#[derive(Debug, Clone, Subcommand)]
pub enum Docs {
    /// Print a shell completion script (see the README for where to put it)
    Completions {
        /// The shell
        shell: Shell,
    },
    /// Write the manual pages into a folder
    #[command(hide = true)]
    Man {
        /// The folder (created if missing)
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

pub mod stdout;

/// What [`Docs::run`] could not write.
#[derive(Debug, thiserror::Error)]
pub enum DocsError {
    /// The manual pages, into their folder.
    #[error("cannot write the manual pages into {}: {source}", dir.display())]
    Man {
        /// The folder given to `man --out`.
        dir: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// The completion script, to standard output (a full disk, say).
    #[error("cannot write to standard output: {0}")]
    Stdout(#[source] io::Error),
}

impl Docs {
    /// Prints the completion script of `cmd` on standard output (through
    /// [`stdout::write_all`]: a closed pipe ends the process quietly), or writes its manual
    /// page (`NAME.1`) into the folder, and with `subcommand_pages` one page per visible
    /// subcommand too (`NAME-SUB.1`).
    pub fn run(&self, cmd: clap::Command, subcommand_pages: bool) -> Result<(), DocsError> {
        match self {
            Docs::Completions { shell } => {
                let mut cmd = cmd;
                let bin = cmd.get_name().to_owned();
                // Generated whole first: clap_complete panics on a failed write.
                let mut script = Vec::new();
                clap_complete::generate(*shell, &mut cmd, bin, &mut script);
                stdout::write_all(&script).map_err(DocsError::Stdout)
            }
            Docs::Man { out } => {
                write_man_pages(cmd, out, subcommand_pages).map_err(|source| DocsError::Man {
                    dir: out.clone(),
                    source,
                })
            }
        }
    }
}

/// See [`Docs::run`].
fn write_man_pages(mut cmd: clap::Command, dir: &Path, subcommand_pages: bool) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut subs = Vec::new();
    if subcommand_pages {
        // Global options (--timeout, --pin, ...) then show on every page.
        cmd.build();
        subs.extend(
            cmd.get_subcommands()
                .filter(|s| !s.is_hide_set() && s.get_name() != "help")
                .cloned(),
        );
    }
    for page in std::iter::once(&cmd).chain(&subs) {
        // Built, a subcommand is displayed as `ferry-send`.
        let name = page.get_display_name().unwrap_or(page.get_name());
        let mut roff = Vec::new();
        clap_mangen::Man::new(page.clone()).render(&mut roff)?;
        std::fs::write(dir.join(format!("{name}.1")), roff)?;
    }
    Ok(())
}
