//! The `ferry` command line: parsing (clap) and running a parsed command.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};

use ferry_proto::{EntryKind, Name};
use ferry_secure::{ClientTls, Fingerprint, Token, Trust, TOKEN_ENV};

use crate::download::{self, Dest};
use crate::error::{exit, ClientError};
use crate::net::{Backoff, Options};
use crate::output::{self, Console, Verb};
use crate::report::Observer;
use crate::report::Outcome;
use crate::target::Target;
use crate::walk;

const AFTER_HELP: &str = "\
Examples:
  ferry send box.example photos/                      plain TCP, port 8386
  ferry send box.example photos --to backups/2026     stored as backups/2026/photos/...
  ferry ls -r box.example backups                     what the server holds
  ferry get box.example backups/2026/photos -o out/   a whole folder, into out/backups/...
  ferry send --pin SHA256:3f9a... box.example a.iso   TLS, only the certificate the server printed
                                                      (ferry-server fingerprint; openssl's
                                                      AB:CD:... form works too)
  ferry send --tofu box.example a.iso                 TLS, trust on first use (like ssh)
  ferry send --tls box.example a.iso                  TLS, certificate signed by a public CA
  ferry get --ca my-ca.pem box.example a.iso -o dl/   TLS, certificate signed by your own CA
  FERRY_TOKEN=... ferry send --tofu box.example a.iso     with a token (or --token-file FILE)
  ferry send --retries 5 box.example big/             reconnect and resume on network failures
                                                      or busy

Running a send or get again is safe: files already there with the same size and
modification time (or the same digest, with --checksum) are reported unchanged.

Exit codes:
  0  every file was transferred or already there (unchanged)
  1  some files failed (refused, digest mismatch, no room left on the server once it took
     them, local error such as a file that could not be read while it was sent, or no room
     for a download) or were skipped (special files,
     dangling links, unreadable entries, names that cannot travel: one \"ferry: skipped
     PATH: why\" line each); the others went through; or standard output could not be
     written (\"cannot write to standard output: ...\")
  2  usage: bad arguments, or a path named on the command line (to send, --ca,
     --token-file, known hosts) is missing, unusable or not readable by you (nothing was
     sent)
  3  the server refused the connection (busy, wrong or missing token, blocked after failed
     logins: it says for how long), every file, folders alike (a stream over its size
     limit, a folder sent under a name that is a file there, say), or the listing (no such
     name)
  4  network: cannot connect, closed before the server said a byte (a server too busy to
     answer; the lab report's server.py does it too: --legacy), timed out (see --timeout),
     or the connection was cut (after --retries; run again to resume)
  5  the server broke the protocol (an offer without a size, say), is not a ferry server (it
     says what answered: an HTTP or SSH server, ...), does not speak TLS (not retried), or
     (ls) speaks only protocol 1
  6  TLS: the server's certificate is not trusted (not the pinned one, changed since first
     use, or not signed by a trusted CA); nothing was sent to it
  130  interrupted (Ctrl-C): what was confirmed is printed; run the same command again to
     resume
  141  standard output's reader went away (ferry ls HOST | head -1): stopped at once,
     quietly, as tools that SIGPIPE ends

Shell completions and manual pages: ferry completions bash|zsh|fish, ferry man --out DIR.

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
    /// Print nothing but failures (what was skipped included), and no progress bars.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Print one JSON object per file and a summary on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// Seconds to wait for connecting, for each message and each reply from the server
    /// (however slowly its bytes trickle in), and for each 64 KiB of a file to move.
    #[arg(long, global = true, value_name = "SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
    /// After a network failure (refused, reset or closed before any answer, timed out, cut)
    /// or a "busy" answer (too many connections, or a file another connection is uploading),
    /// connect again up to N times, waiting 0.2 s, 0.4 s, ... up to 5 s (each cut to a random
    /// 50-100 %, so that clients cut off together do not all come back at once), and go on
    /// with the files not yet confirmed, each resuming where the server's verified copy ends.
    #[arg(long, global = true, value_name = "N", default_value_t = 0)]
    pub retries: u32,
    /// TLS and authentication.
    #[command(flatten)]
    pub secure: SecureArgs,
}

/// TLS and token options (any of --ca, --pin, --known-hosts, --tofu implies --tls).
#[derive(Debug, Args)]
pub struct SecureArgs {
    /// Encrypt with TLS 1.3; the server's certificate must be signed by a public CA (Mozilla's
    /// list, built in) for the host name.
    #[arg(long, global = true, help_heading = "Security")]
    pub tls: bool,
    /// TLS; the server's certificate must be signed by a CA in FILE (PEM).
    #[arg(long, global = true, value_name = "FILE", help_heading = "Security")]
    pub ca: Option<PathBuf>,
    /// TLS; accept only the certificate with this fingerprint, as `ferry-server` prints it
    /// (colons allowed).
    #[arg(long, global = true, value_name = "SHA256:HEX", value_parser = parse_pin,
          help_heading = "Security")]
    pub pin: Option<Fingerprint>,
    /// TLS, trust on first use: the first certificate seen for HOST:PORT is recorded in FILE;
    /// a different one later is refused (exit 6).
    #[arg(long, global = true, value_name = "FILE", help_heading = "Security")]
    pub known_hosts: Option<PathBuf>,
    /// --known-hosts with the default file: $XDG_CONFIG_HOME/ferry/known_hosts, else
    /// ~/.config/ferry/known_hosts.
    #[arg(long, global = true, help_heading = "Security")]
    pub tofu: bool,
    /// Read the server's token from FILE (only you may read it: chmod 600). Without it,
    /// FERRY_TOKEN is used if set. Never give a token on the command line.
    #[arg(long, global = true, value_name = "FILE", help_heading = "Security")]
    pub token_file: Option<PathBuf>,
}

impl SecureArgs {
    /// Whether any option asks for TLS.
    #[must_use]
    pub fn wants_tls(&self) -> bool {
        self.tls
            || self.ca.is_some()
            || self.pin.is_some()
            || self.known_hosts.is_some()
            || self.tofu
    }

    /// The known-hosts file trust on first use works with, if that is the mode.
    pub fn known_hosts_file(&self) -> Result<Option<PathBuf>, ClientError> {
        if let Some(p) = &self.known_hosts {
            return Ok(Some(p.clone()));
        }
        if !self.tofu {
            return Ok(None);
        }
        ferry_secure::default_known_hosts_path()
            .map(Some)
            .ok_or_else(|| {
                ClientError::Usage(
                    "--tofu needs HOME or XDG_CONFIG_HOME to find its file; use --known-hosts FILE"
                        .into(),
                )
            })
    }

    /// The TLS settings these options ask for (`None`: plain TCP).
    pub fn client_tls(&self) -> Result<Option<ClientTls>, ClientError> {
        let modes = [
            self.ca.is_some(),
            self.pin.is_some(),
            self.known_hosts.is_some(),
            self.tofu,
        ];
        if modes.iter().filter(|&&m| m).count() > 1 {
            return Err(ClientError::Usage(
                "--ca, --pin, --known-hosts and --tofu each say how to trust the server: \
                 give only one"
                    .into(),
            ));
        }
        let trust = if let Some(ca) = &self.ca {
            Trust::CaFile(ca.clone())
        } else if let Some(fp) = self.pin {
            Trust::Pin(fp)
        } else if let Some(file) = self.known_hosts_file()? {
            Trust::KnownHosts(file)
        } else if self.tls {
            Trust::WebPkiRoots
        } else {
            return Ok(None);
        };
        ClientTls::new(trust).map(Some).map_err(ClientError::secure)
    }
}

fn parse_pin(s: &str) -> Result<Fingerprint, String> {
    s.parse()
        .map_err(|e: ferry_secure::SecureError| e.to_string())
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Upload files and folders (folders keep their relative paths; empty ones too).
    #[command(after_help = AFTER_HELP)]
    Send {
        /// The server: HOST, HOST:PORT or `[IPv6]:PORT` (port 8386 by default).
        #[arg(value_name = "HOST[:PORT]", value_parser = parse_target)]
        target: Target,
        /// Files and folders to send; `-` is standard input (needs --name).
        #[arg(value_name = "PATH", required = true)]
        paths: Vec<PathBuf>,
        /// The name standard input is stored under.
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// Store everything under this folder on the server (`--to backups/2026` stores
        /// `photos/` as `backups/2026/photos/...`).
        #[arg(long, value_name = "PATH")]
        to: Option<String>,
        /// Compare contents, not size and modification time, to tell an unchanged file: each
        /// file is hashed before it is offered (protocol 2 servers; ignored by older ones).
        #[arg(long)]
        checksum: bool,
        /// Speak the lab report's seed framing (one file per connection, base names only,
        /// no confirmation), for its `server.py`.
        #[arg(long, conflicts_with_all = ["to", "checksum"])]
        legacy: bool,
    },
    /// Download files and folders by name (folders whole, with their modes and times).
    #[command(after_help = AFTER_HELP)]
    Get {
        /// The server: HOST, HOST:PORT or `[IPv6]:PORT` (port 8386 by default).
        #[arg(value_name = "HOST[:PORT]", value_parser = parse_target)]
        target: Target,
        /// Names of files or folders on the server (relative paths such as photos/cat.jpg).
        #[arg(value_name = "NAME", required = true)]
        names: Vec<String>,
        /// Where to save, as `cp` takes it: an existing folder receives (NAME lands at
        /// DIR/NAME); a path that does not exist names the file when exactly one file is
        /// fetched, and is made a folder otherwise (or when it ends with `/`); `-` is standard
        /// output (files only, one after the other).
        #[arg(short, long, value_name = "PATH", default_value = ".")]
        output: PathBuf,
        /// Replace local files that already exist.
        #[arg(long)]
        force: bool,
    },
    /// List what the server holds: names, sizes and modification times (protocol 2 servers).
    #[command(after_help = AFTER_HELP)]
    Ls {
        /// The server: HOST, HOST:PORT or `[IPv6]:PORT` (port 8386 by default).
        #[arg(value_name = "HOST[:PORT]", value_parser = parse_target)]
        target: Target,
        /// A folder or file on the server; the server's whole folder when absent.
        #[arg(value_name = "PATH")]
        path: Option<String>,
        /// Everything below, not only the first level.
        #[arg(short, long)]
        recursive: bool,
    },
    /// `completions SHELL`; `man --out DIR` writes ferry.1, ferry-send.1, ...
    #[command(flatten)]
    Docs(ferry_cli_docs::Docs),
}

fn parse_target(s: &str) -> Result<Target, String> {
    s.parse()
        .map_err(|e: crate::target::TargetError| e.to_string())
}

/// Runs a parsed command line; returns the process exit code (at least 1 when standard
/// output could not be written, which is then told).
#[must_use]
pub fn run(cli: &Cli) -> u8 {
    crate::stdout::settle(run_command(cli))
}

/// Runs the command itself; returns its exit code.
fn run_command(cli: &Cli) -> u8 {
    if let Some(code) = crate::completions::answer(&cli.command) {
        return code;
    }
    let started = Instant::now();
    let opts = match options(cli) {
        Ok(o) => o,
        Err(e) => return fail(cli, &e),
    };
    let known_hosts = cli.common.secure.known_hosts_file().ok().flatten();
    let bars = std::io::stderr().is_terminal();
    let (outcome, console) = match &cli.command {
        Command::Send {
            target,
            paths,
            name,
            to,
            legacy,
            ..
        } => {
            if let Err(e) = crate::precheck::named_files_readable(paths) {
                return fail(cli, &e);
            }
            let to = match to.as_deref().map(parse_name).transpose() {
                Ok(t) => t,
                Err(e) => return fail(cli, &e),
            };
            let walk::Collected { sources, skipped } =
                match walk::collect(paths, name.as_deref(), to.as_ref()) {
                    Ok(c) => c,
                    Err(e) => return fail(cli, &e),
                };
            let verb = if *legacy { Verb::Legacy } else { Verb::Send };
            let resumable = !*legacy && sources.iter().all(|s| s.path().is_some());
            let files = sources.iter().filter(|s| s.kind() == EntryKind::File);
            // Unknown (`None`) when standard input is among them.
            let bytes = files.clone().map(|s| s.size).sum();
            let mut console = Console::new(
                verb,
                cli.common.json,
                cli.common.quiet,
                bars,
                files.count(),
                bytes,
            )
            .with_known_hosts(known_hosts)
            .interruptible(resumable);
            for s in &skipped {
                console.skipped(s);
            }
            let mut outcome = if sources.is_empty() {
                Outcome::default()
            } else if *legacy {
                crate::legacy::send(target, sources, &opts, &mut console)
            } else {
                crate::upload::send(target, sources, &opts, &mut console)
            };
            outcome.skipped = skipped;
            (outcome, console)
        }
        Command::Ls {
            target,
            path,
            recursive,
        } => {
            let mut console =
                Console::new(Verb::Get, cli.common.json, cli.common.quiet, false, 0, None)
                    .with_known_hosts(known_hosts);
            let path = path.as_deref();
            return ls(cli, target, path, *recursive, &opts, &mut console, started);
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
            } else if output.as_os_str().as_encoded_bytes().ends_with(b"/") {
                Dest::Dir(output.clone())
            } else {
                Dest::Path(output.clone())
            };
            let mut console = Console::new(
                Verb::Get,
                cli.common.json,
                cli.common.quiet,
                bars,
                names.len(),
                None,
            )
            .with_known_hosts(known_hosts)
            // Only standard output cannot be taken up again: a file lands beside its partial.
            .interruptible(!matches!(dest, Dest::Stdout));
            let outcome = download::get(target, names, &dest, &opts, &mut console);
            (outcome, console)
        }
        // Answered above, before any setting was loaded.
        Command::Docs(_) => return exit::OK,
    };
    console.finish(&outcome, started.elapsed().as_secs_f64());
    outcome.exit_code()
}

/// The settings of a run: TLS and the token are loaded here, before anything connects.
fn options(cli: &Cli) -> Result<Options, ClientError> {
    let secure = &cli.common.secure;
    let legacy = matches!(cli.command, Command::Send { legacy: true, .. });
    if legacy {
        if secure.wants_tls() || secure.token_file.is_some() {
            return Err(ClientError::Usage(
                "--legacy speaks the seed framing, which has no TLS and no token: \
                 drop --tls/--ca/--pin/--known-hosts/--tofu/--token-file"
                    .into(),
            ));
        }
        if cli.common.retries > 0 {
            return Err(ClientError::Usage(
                "--retries needs the ferry framing: the seed server confirms nothing to resume from"
                    .into(),
            ));
        }
        if std::env::var_os(TOKEN_ENV).is_some_and(|v| !v.is_empty()) {
            eprintln!("ferry: warning: {TOKEN_ENV} is ignored with --legacy (the seed framing has no token)");
        }
        return Ok(Options {
            timeout: Duration::from_secs(cli.common.timeout),
            ..Options::default()
        });
    }
    let tls = secure.client_tls()?;
    let token = Token::for_client(secure.token_file.as_deref()).map_err(ClientError::secure)?;
    // A warning, not a failure: --quiet leaves it out, as scp -q does ssh's.
    if token.is_some() && tls.is_none() && !cli.common.quiet {
        eprintln!(
            "ferry: warning: sending the token without TLS: anyone on the way can read it \
             (use --pin, --tofu, --ca or --tls)"
        );
    }
    Ok(Options {
        timeout: Duration::from_secs(cli.common.timeout),
        force: matches!(cli.command, Command::Get { force: true, .. }),
        checksum: matches!(cli.command, Command::Send { checksum: true, .. }),
        token,
        tls,
        retries: cli.common.retries,
        backoff: Backoff::default(),
        ..Options::default()
    })
}

fn parse_names(raw: &[String]) -> Result<Vec<Name>, ClientError> {
    raw.iter().map(|s| parse_name(s)).collect()
}

/// A name typed on the command line; a trailing `/` (as shells complete folders) is dropped.
fn parse_name(s: &str) -> Result<Name, ClientError> {
    let trimmed = match s.trim_end_matches('/') {
        "" => s,
        t => t,
    };
    Name::parse(trimmed).map_err(|source| ClientError::BadName {
        name: ferry_proto::name::escape(s),
        source,
    })
}

/// `ferry ls`: prints each entry as its page arrives (one JSON object each with `--json`),
/// then with `--json` a summary; returns the exit code.
fn ls(
    cli: &Cli,
    target: &Target,
    path: Option<&str>,
    recursive: bool,
    opts: &Options,
    obs: &mut dyn Observer,
    started: Instant,
) -> u8 {
    let path = match path.filter(|p| !p.is_empty()).map(parse_name).transpose() {
        Ok(p) => p,
        Err(e) => return fail(cli, &e),
    };
    let json = cli.common.json;
    let (mut shown, mut bytes) = (0u64, 0u64);
    let listed = crate::list::list(target, path, recursive, opts, obs, |e| {
        shown += 1;
        bytes = bytes.saturating_add(e.size);
        let line = if json {
            output::entry_json(e).to_string()
        } else {
            output::entry_line(e)
        };
        crate::stdout::line(line);
    });
    let code = listed
        .as_ref()
        .map_or_else(ClientError::exit_code, |_| exit::OK);
    if json {
        output::print_json(&serde_json::json!({
            "type": "summary",
            "entries": shown,
            "skipped": listed.as_ref().map_or(0, |l| l.skipped),
            "bytes": bytes,
            "seconds": started.elapsed().as_secs_f64(),
            "exit_code": code,
            "error": listed.as_ref().err().map(ToString::to_string),
        }));
    }
    match listed {
        Ok(l) if l.skipped > 0 && !cli.common.quiet => eprintln!(
            "ferry: left out {}: {}",
            crate::report::entries(l.skipped),
            output::NOT_SERVED
        ),
        Ok(_) => {}
        Err(e) => eprintln!("ferry: {e}"),
    }
    code
}

/// Reports an error found before connecting.
fn fail(cli: &Cli, e: &ClientError) -> u8 {
    let code = e.exit_code();
    if cli.common.json {
        print_error_summary(code, &e.to_string());
    }
    eprintln!("ferry: {e}");
    debug_assert_ne!(code, exit::OK);
    code
}

/// Under `--json`, the summary of a run that ended before anything moved: `error` says why.
fn print_error_summary(code: u8, error: &str) {
    let mut summary = Outcome::default().summary_json(0.0);
    summary["exit_code"] = code.into();
    summary["error"] = error.into();
    output::print_json(&summary);
}

/// Parses the process's command line. One that cannot be parsed ends the process as clap ends
/// it (its message on stderr, exit 2), after printing, with `--json` among the arguments, the
/// summary every other error prints (clap has not parsed `--json`, so it is looked for here).
#[must_use]
pub fn parse() -> Cli {
    Cli::try_parse().unwrap_or_else(|e| {
        let mut options = std::env::args_os().skip(1).take_while(|a| a != "--");
        if e.use_stderr() && options.any(|a| a == "--json") {
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or_default();
            print_error_summary(exit::USAGE, first.strip_prefix("error: ").unwrap_or(first));
        }
        e.exit()
    })
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
            other => panic!("parsed as {other:?}"),
        }
        assert!(cli.common.json);
        let cli = Cli::try_parse_from(["ferry", "get", "box", "x", "-o", "-"]).unwrap();
        assert!(
            matches!(cli.command, Command::Get { ref output, .. } if output.as_os_str() == "-")
        );
        let e = Cli::try_parse_from(["ferry", "send", "box:99999", "a"]).unwrap_err();
        assert_eq!(e.exit_code(), i32::from(exit::USAGE));
    }

    #[test]
    fn security_and_retry_options_go_anywhere_on_the_line() {
        let pin = format!("SHA256:{}", "ab".repeat(32));
        let cli = Cli::try_parse_from([
            "ferry",
            "--retries",
            "3",
            "get",
            "box",
            "x",
            "--pin",
            &pin,
            "--token-file",
            "t",
        ])
        .unwrap();
        assert_eq!(cli.common.retries, 3);
        let secure = &cli.common.secure;
        assert!(secure.wants_tls());
        assert_eq!(secure.pin.unwrap().to_string(), pin);
        assert_eq!(
            secure.token_file.as_deref(),
            Some(std::path::Path::new("t"))
        );
        assert!(secure.client_tls().unwrap().is_some());
        let plain = Cli::try_parse_from(["ferry", "send", "box", "a"]).unwrap();
        assert!(!plain.common.secure.wants_tls());
        assert!(plain.common.secure.client_tls().unwrap().is_none());
        assert_eq!(plain.common.retries, 0);
        let both =
            Cli::try_parse_from(["ferry", "send", "box", "a", "--pin", &pin, "--ca", "c"]).unwrap();
        assert!(matches!(
            both.common.secure.client_tls(),
            Err(ClientError::Usage(_))
        ));
    }
}
