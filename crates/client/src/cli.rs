//! The `ferry` command line: parsing (clap) and running a parsed command.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};

use ferry_proto::Name;

use crate::download::{self, Dest};
use crate::error::{exit, ClientError};
use crate::net::Options;
use crate::output::{Console, Verb};
use crate::report::Outcome;
use crate::target::Target;
use crate::walk;

const AFTER_HELP: &str = "\
Exit codes:
  0  every file was transferred
  1  some files failed (refused, digest mismatch, local error); the others went through
  2  usage: bad arguments, or a local file to send is missing or unreadable (nothing was sent)
  3  the server refused the connection (busy, denied) or every file
  4  network: cannot connect, timed out, or the connection was cut (run again to resume)
  5  the server broke the protocol, or is not a ferry server

Set RUST_LOG=debug for a detailed log on stderr.";

/// Send files to a ferry server and get them back, fast and safely.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Options shared by every command.
    #[command(flatten)]
    pub common: Common,
}

/// Options shared by every command.
#[derive(Debug, Args)]
pub struct Common {
    /// Print nothing but failures, and no progress bars.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Print one JSON object per file and a summary on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// Seconds to wait for connecting and for the server at any point.
    #[arg(long, global = true, value_name = "SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Upload files and folders (folders keep their relative paths).
    #[command(after_help = AFTER_HELP)]
    Send {
        /// The server: HOST, HOST:PORT, [IPv6]:PORT (port 8386 by default).
        #[arg(value_name = "HOST[:PORT]", value_parser = parse_target)]
        target: Target,
        /// Files and folders to send; `-` is standard input (needs --name).
        #[arg(value_name = "PATH", required = true)]
        paths: Vec<PathBuf>,
        /// The name standard input is stored under.
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// Speak the lab report's seed framing (one file per connection, base names only,
        /// no confirmation), for its `server.py`.
        #[arg(long)]
        legacy: bool,
    },
    /// Download files by name.
    #[command(after_help = AFTER_HELP)]
    Get {
        /// The server: HOST, HOST:PORT, [IPv6]:PORT (port 8386 by default).
        #[arg(value_name = "HOST[:PORT]", value_parser = parse_target)]
        target: Target,
        /// Names of the files on the server (relative paths such as photos/cat.jpg).
        #[arg(value_name = "NAME", required = true)]
        names: Vec<String>,
        /// Folder to save into (created if missing), or `-` for standard output.
        #[arg(short, long, value_name = "DIR", default_value = ".")]
        output: PathBuf,
        /// Replace local files that already exist.
        #[arg(long)]
        force: bool,
    },
}

fn parse_target(s: &str) -> Result<Target, String> {
    s.parse()
        .map_err(|e: crate::target::TargetError| e.to_string())
}

/// Runs a parsed command line; returns the process exit code.
#[must_use]
pub fn run(cli: &Cli) -> u8 {
    let started = Instant::now();
    let opts = Options {
        timeout: Duration::from_secs(cli.common.timeout),
        force: matches!(cli.command, Command::Get { force: true, .. }),
        ..Options::default()
    };
    let bars = std::io::stderr().is_terminal();
    let (outcome, console) = match &cli.command {
        Command::Send {
            target,
            paths,
            name,
            legacy,
        } => {
            let sources = match walk::collect(paths, name.as_deref()) {
                Ok(s) if s.is_empty() => {
                    let e = ClientError::Usage("nothing to send: the folders hold no files".into());
                    return fail(cli, &e);
                }
                Ok(s) => s,
                Err(e) => return fail(cli, &e),
            };
            let verb = if *legacy { Verb::Legacy } else { Verb::Send };
            let bytes = Some(sources.iter().filter_map(|s| s.size).sum());
            let mut console = Console::new(
                verb,
                cli.common.json,
                cli.common.quiet,
                bars,
                sources.len(),
                bytes,
            );
            let outcome = if *legacy {
                crate::legacy::send(target, sources, &opts, &mut console)
            } else {
                crate::upload::send(target, sources, &opts, &mut console)
            };
            (outcome, console)
        }
        Command::Get {
            target,
            names,
            output,
            ..
        } => {
            let names = match parse_names(names) {
                Ok(n) => n,
                Err(e) => return fail(cli, &e),
            };
            let dest = if output.as_os_str() == "-" {
                if cli.common.json {
                    let e = ClientError::Usage("--json and -o - both want standard output".into());
                    return fail(cli, &e);
                }
                Dest::Stdout
            } else {
                Dest::Dir(output.clone())
            };
            let mut console = Console::new(
                Verb::Get,
                cli.common.json,
                cli.common.quiet,
                bars,
                names.len(),
                None,
            );
            let outcome = download::get(target, names, &dest, &opts, &mut console);
            (outcome, console)
        }
    };
    console.finish(&outcome, started.elapsed().as_secs_f64());
    outcome.exit_code()
}

fn parse_names(raw: &[String]) -> Result<Vec<Name>, ClientError> {
    raw.iter()
        .map(|s| {
            Name::parse(s).map_err(|source| ClientError::BadName {
                name: ferry_proto::name::escape(s),
                source,
            })
        })
        .collect()
}

/// Reports an error found before connecting.
fn fail(cli: &Cli, e: &ClientError) -> u8 {
    let code = e.exit_code();
    if cli.common.json {
        let outcome = Outcome::default();
        let mut summary = outcome.summary_json(0.0);
        summary["exit_code"] = code.into();
        summary["error"] = e.to_string().into();
        println!("{summary}");
    }
    eprintln!("ferry: {e}");
    debug_assert_ne!(code, exit::OK);
    code
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_send_and_get() {
        let cli = Cli::try_parse_from(["ferry", "send", "[::1]:9000", "a", "b", "--json"]).unwrap();
        match cli.command {
            Command::Send { target, paths, .. } => {
                assert_eq!(target.to_string(), "[::1]:9000");
                assert_eq!(paths.len(), 2);
            }
            Command::Get { .. } => panic!("parsed as get"),
        }
        assert!(cli.common.json);
        let cli = Cli::try_parse_from(["ferry", "get", "box", "x", "-o", "-"]).unwrap();
        assert!(
            matches!(cli.command, Command::Get { ref output, .. } if output.as_os_str() == "-")
        );
        let e = Cli::try_parse_from(["ferry", "send", "box:99999", "a"]).unwrap_err();
        assert_eq!(e.exit_code(), i32::from(exit::USAGE));
    }
}
