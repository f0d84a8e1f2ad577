//! The `ferry` command line: parsing (clap) and running a parsed command.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};

use ferry_proto::Name;
use ferry_secure::{ClientTls, Fingerprint, Token, Trust, TOKEN_ENV};

use crate::download::{self, Dest};
use crate::error::{exit, ClientError};
use crate::net::{Backoff, Options};
use crate::output::{Console, Verb};
use crate::report::Outcome;
use crate::target::Target;
use crate::walk;

const AFTER_HELP: &str = "\
Examples:
  ferry send box.example photos/                      plain TCP, port 8386
  ferry send --pin SHA256:3f9a... box.example a.iso   TLS, only the certificate the server printed
                                                      (ferry-server fingerprint; openssl's
                                                      AB:CD:... form works too)
  ferry send --tofu box.example a.iso                 TLS, trust on first use (like ssh)
  ferry send --tls box.example a.iso                  TLS, certificate signed by a public CA
  ferry get --ca my-ca.pem box.example a.iso -o dl/   TLS, certificate signed by your own CA
  FERRY_TOKEN=... ferry send --tofu box.example a.iso     with a token (or --token-file FILE)
  ferry send --retries 5 box.example big/             reconnect and resume on network failures
                                                      or busy

Exit codes:
  0  every file was transferred
  1  some files failed (refused, digest mismatch, local error such as a file that could not
     be read while it was sent, or no room for a download); the others went through
  2  usage: bad arguments, or a local file (to send, --ca, --token-file, known hosts) is
     missing, unusable or not readable by you (nothing was sent)
  3  the server refused the connection (busy, wrong or missing token, blocked after failed
     logins: it says for how long) or every file (a stream over its size limit, say)
  4  network: cannot connect, timed out (see --timeout), or the connection was cut (after
     --retries; run again to resume)
  5  the server broke the protocol (an offer without a size, say), is not a ferry server (it
     says what answered: an HTTP or SSH server, ...), or does not speak TLS (not retried)
  6  TLS: the server's certificate is not trusted (not the pinned one, changed since first
     use, or not signed by a trusted CA); nothing was sent to it
  130  interrupted (Ctrl-C): what was confirmed is printed; run the same command again to
     resume

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
    /// Print nothing but failures, and no progress bars.
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
    /// After a network failure (refused, reset, timed out, cut) or a "busy" answer (too many
    /// connections, or a file another connection is uploading), connect again up to N times,
    /// waiting 0.2 s, 0.4 s, ... up to 5 s, and go on with the files not yet confirmed, each
    /// resuming where the server's verified copy ends.
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
    /// Upload files and folders (folders keep their relative paths).
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
        /// Speak the lab report's seed framing (one file per connection, base names only,
        /// no confirmation), for its `server.py`.
        #[arg(long)]
        legacy: bool,
    },
    /// Download files by name.
    #[command(after_help = AFTER_HELP)]
    Get {
        /// The server: HOST, HOST:PORT or `[IPv6]:PORT` (port 8386 by default).
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
    /// Print a shell completion script (see the README for where to put it).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write the manual pages (ferry.1, ferry-send.1, ...) into a folder.
    #[command(hide = true)]
    Man {
        /// The folder (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

fn parse_target(s: &str) -> Result<Target, String> {
    s.parse()
        .map_err(|e: crate::target::TargetError| e.to_string())
}

/// Runs a parsed command line; returns the process exit code.
#[must_use]
pub fn run(cli: &Cli) -> u8 {
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
            legacy,
        } => {
            if let Err(e) = crate::precheck::named_files_readable(paths) {
                return fail(cli, &e);
            }
            let sources = match walk::collect(paths, name.as_deref()) {
                Ok(s) if s.is_empty() => {
                    let e = ClientError::Usage("nothing to send: the folders hold no files".into());
                    return fail(cli, &e);
                }
                Ok(s) => s,
                Err(e) => return fail(cli, &e),
            };
            let verb = if *legacy { Verb::Legacy } else { Verb::Send };
            let resumable = !*legacy && sources.iter().all(|s| s.path().is_some());
            // Unknown (`None`) when standard input is among them.
            let bytes = sources.iter().map(|s| s.size).sum();
            let mut console = Console::new(
                verb,
                cli.common.json,
                cli.common.quiet,
                bars,
                sources.len(),
                bytes,
            )
            .with_known_hosts(known_hosts)
            .interruptible(resumable);
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
            )
            .with_known_hosts(known_hosts)
            .interruptible(matches!(dest, Dest::Dir(_)));
            let outcome = download::get(target, names, &dest, &opts, &mut console);
            (outcome, console)
        }
        // Answered above, before any setting was loaded.
        Command::Completions { .. } | Command::Man { .. } => return exit::OK,
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
    if token.is_some() && tls.is_none() {
        eprintln!(
            "ferry: warning: sending the token without TLS: anyone on the way can read it \
             (use --pin, --tofu, --ca or --tls)"
        );
    }
    Ok(Options {
        timeout: Duration::from_secs(cli.common.timeout),
        force: matches!(cli.command, Command::Get { force: true, .. }),
        token,
        tls,
        retries: cli.common.retries,
        backoff: Backoff::default(),
        ..Options::default()
    })
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
