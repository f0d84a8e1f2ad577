//! `ferry-server`: receives files over TCP into a folder (and serves them back).

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use ferry_cli_docs::{stdout, DocsError};
use ferry_secure::{Fingerprint, ServerTls, Token};
use ferry_server::config_file::{self, ConfigError, Problem};
use ferry_server::logger::Logger;
use ferry_server::logging::{Background, Flusher};
use ferry_server::proxy::Trusted;
use ferry_server::units::{parse_duration, parse_size, parse_timeout};
use ferry_server::{
    Config, Credential, ObjectStore, Overwrite, Permissions, Server, ShutdownHandle,
};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// Exit status: the command line was wrong (clap's own code).
const EXIT_USAGE: u8 = 2;
/// Exit status: the server could not start (address in use, folder not writable, ...).
const EXIT_START: u8 = 3;
/// Exit status: the `--config` file is unusable (unreadable, not TOML, an unknown key, a bad
/// value or token); as for any other file the server could not use at start.
const EXIT_CONFIG: u8 = EXIT_START;
/// Exit status: the server failed while running.
const EXIT_RUN: u8 = 1;
/// Exit status: stopped on request, by one SIGINT/SIGTERM (transfers in flight had `--grace`)
/// or by a second one (they were cut, as asked: their files are not published and resume).
const EXIT_STOPPED: u8 = 0;
/// Longest wait for queued log lines to be written before exiting (stderr may be stuck).
const LOG_FLUSH: Duration = Duration::from_secs(2);

const AFTER_HELP: &str = "\
Examples:
  ferry-server
      listen on 127.0.0.1:8386 and store into ./uploaded_files
  ferry-server --listen 0.0.0.0:9000 --dir /srv/inbox --overwrite rename
      reachable from other machines, with neither TLS nor a token: a warning is printed
  ferry-server --listen 0.0.0.0:9000 --tls-self-signed --token-file ~/.config/ferry/token
      TLS 1.3 with a certificate generated on first run (kept in --state-dir, default
      $XDG_STATE_HOME/ferry/tls); its SHA256 fingerprint is logged at start, for clients'
      --pin. Every client must present the token; create it readable by you alone with
      `(umask 077; head -c 32 /dev/urandom | base64 > ~/.config/ferry/token)`.
      Plain and seed connections are refused.
  ferry-server --listen 0.0.0.0:9000 --tls-cert cert.pem --tls-key key.pem --token-file token
      TLS with a certificate from a CA (clients verify it with --tls or --ca)
  ferry-server --max-file-size 10G --max-connections 16 --idle-timeout 2m --no-seed
  RUST_LOG=debug ferry-server
      more detailed logs (default level: info)

The lab report's client works unchanged against the default address:
  printf '127.0.0.1\\nreport.pdf\\n' | python3 seed/client.py

Sizes take binary units (512K, 10M, 10G, 2T); durations take ms, s, m, h, d (a bare number is
seconds). SIGINT or SIGTERM stops gracefully: no new connections, transfers in flight get
--grace to finish; a second signal stops at once (exit 0 too: a stop on request). Unfinished
files are never published.

Progress is a file (or listing) completed, or 16 KiB of file data moved (either way) since the
last progress: a body trickled a byte at a time is no progress, 50 KiB/s is progress three
times a second (so --evict-after asks 8 KiB/s of a slot holder when the server is full, and
--stall-timeout 273 B/s, at their defaults). A connection without progress
for --stall-timeout is closed, however many small messages it sends; when every slot is taken,
a newcomer that makes progress takes the slot of the connection longest without it (past
--evict-after). Log lines about refusals are capped per connection (--max-refusal-logs); lines
about connections refused before they are served, at 5 a second of each kind, the rest summed
up in one line a second; and, when stderr cannot keep up, lines are dropped and counted rather
than waited for.

Fixed limits per connection: 8 partial uploads held open (more offers are taken as plain
uploads), 1,024 downloads offered and not yet answered, 1,024 frames in flight each way; a
takeover waits 2 s for the stale connection; closing after an error (last message, TLS close,
linger) takes at most 1 s; log queue 4,096 lines, names in logs cut to 200 characters; TCP
keepalive after 30 s idle, every 10 s, 3 probes. The descriptor limit is raised to its hard
limit at start. Server state lives in DIR/.ferry-state (mode 0700; names starting with
.ferry- are refused in every path component).

Permissions: each token (--token-file, or [[token]] tables in --config with a name, its
permissions and maybe its own folder) may upload, download and/or list. Clients without a token
may do what --anonymous says; by default nothing when tokens are set, else everything on a
loopback address and upload only when other machines can connect (an inbox: senders cannot
fetch or see each other's files). The server logs these at start.

A token is never taken on the command line. After --max-auth-failures failed attempts within
--auth-window, a source (an IPv4 address or an IPv6 /64) is refused before the TLS handshake
for that long, and told so; an IPv6 /48 may fail 16 times as often. When more than 4,096
sources are counting at once, the others share 64 overflow counters (16 times the limit each)
that are never forgotten early, so guesses stay bounded however many addresses send them.

Other commands:
  ferry-server fingerprint [--state-dir DIR | --tls-cert FILE]
      print the certificate's fingerprint, for clients' --pin (self-signed by default)
  ferry-server completions bash|zsh|fish|elvish|powershell
      print a shell completion script (see the README for where to put it)
  ferry-server man --out DIR
      write the manual page ferry-server.1 into DIR

Exit status: 0 stopped on request (by one signal or two), 1 failed while running, 2 bad
command line, 3 could not start (address in use, storage folder unusable or not a folder,
bad setting, a bad --config file: unreadable, not TOML, an unknown key, a bad value or token,
named with its line; unusable certificate, key or token file, or --on-stored program; for
`fingerprint`: no certificate there);
`fingerprint` and `completions`: 1 when standard output cannot be written, 141 (quietly) when
its reader went away.";

/// Receive files over TCP (ferry protocol, and the lab report's seed framing) into a folder.
#[derive(Debug, Parser)]
#[command(
    version,
    about,
    after_help = AFTER_HELP,
    args_conflicts_with_subcommands = true,
    args_override_self = true
)]
struct Args {
    /// Read options from a TOML file (keys are these options' names; `[[token]]` tables add
    /// named tokens); options on the command line win
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Something other than serving
    #[command(subcommand)]
    tool: Option<Tool>,
    /// Address and port to listen on
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8386")]
    listen: SocketAddr,
    /// Folder to store uploads in and serve downloads from (created if missing)
    #[arg(long, value_name = "DIR", default_value = "uploaded_files")]
    dir: PathBuf,
    /// Store in an S3-compatible object store instead of --dir: s3://BUCKET[/PREFIX], with
    /// credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, region from AWS_REGION
    /// (default us-east-1); several servers may share one
    #[arg(long, value_name = "URL", requires = "s3_endpoint")]
    store: Option<String>,
    /// The object store's endpoint for --store (path-style), e.g. http://127.0.0.1:7480
    #[arg(long, value_name = "URL", requires = "store")]
    s3_endpoint: Option<String>,
    /// What to do when an uploaded name already exists
    #[arg(long, value_enum, default_value_t = OverwriteArg::Refuse)]
    overwrite: OverwriteArg,
    /// Largest file accepted (e.g. 10G); no limit when absent
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_file_size: Option<u64>,
    /// Most clients served at once; when all are taken, a newcomer that makes progress takes
    /// the slot of a connection without progress for --evict-after, else it is refused as busy
    /// (also the most refusals told on threads at once; past that, in one non-blocking write)
    #[arg(long, value_name = "N", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    max_connections: u64,
    /// Most connections one address (an IPv6 /64) may have open at once, handshakes included
    #[arg(long, value_name = "N", default_value_t = 8,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    max_per_source: u64,
    /// Close a connection that finishes no file and moves fewer than 16 KiB of file bytes for
    /// this long, however many small messages it sends
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_timeout)]
    stall_timeout: Duration,
    /// When the server is full, a connection without progress (a finished file, or 16 KiB of
    /// file bytes) for longer than this loses its slot to a newcomer
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_timeout)]
    evict_after: Duration,
    /// An upload resuming a name held by a connection without progress for this long takes it
    /// over (the stale connection, cut off by the network say, is closed)
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = parse_timeout)]
    takeover_after: Duration,
    /// Lines about refusals one connection may log; the rest are counted in its closing line
    #[arg(long, value_name = "N", default_value_t = 16)]
    max_refusal_logs: u32,
    /// Most connections still saying hello at once, on top of --max-connections; when both
    /// are full, a newcomer takes the place of the oldest one without a slot (still saying
    /// hello, or waiting for a stale one's) after 1 s
    #[arg(long, value_name = "N", default_value_t = 256,
          value_parser = clap::value_parser!(u64).range(0..=100_000))]
    max_handshakes: u64,
    /// Time a client has to say hello after connecting, and to finish any message it began
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_timeout)]
    header_timeout: Duration,
    /// Longest silence tolerated between messages and while a file's bytes are arriving
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_timeout)]
    idle_timeout: Duration,
    /// Refuse the lab report's seed framing (name line, then bytes until close); it is always
    /// refused with TLS or a token
    #[arg(long)]
    no_seed: bool,
    /// TLS certificate chain, PEM, leaf first (with --tls-key); TLS is then required
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_key",
        conflicts_with = "tls_self_signed"
    )]
    tls_cert: Option<PathBuf>,
    /// TLS private key, PEM (with --tls-cert)
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require TLS with a self-signed certificate, generated on first use and kept in
    /// --state-dir; its fingerprint is logged at start for clients to pin
    #[arg(long)]
    tls_self_signed: bool,
    /// Folder for the self-signed certificate [default: $XDG_STATE_HOME/ferry/tls, else
    /// ~/.local/state/ferry/tls]
    #[arg(long, value_name = "DIR", requires = "tls_self_signed")]
    state_dir: Option<PathBuf>,
    /// Require every client to present the token in FILE (one line; the file must not be
    /// readable by group or others)
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// What clients without a token may do: upload, download, list (comma separated), all or
    /// none [default: none when tokens are set; else all when listening on loopback, upload
    /// only when other machines can connect]
    #[arg(long, value_name = "PERMS")]
    anonymous: Option<Permissions>,
    /// Run PROGRAM (no shell, no arguments) for each stored file, with FERRY_PATH, FERRY_NAME,
    /// FERRY_SIZE, FERRY_DIGEST, FERRY_CLIENT and FERRY_USER in its environment
    #[arg(long, value_name = "PROGRAM")]
    on_stored: Option<PathBuf>,
    /// Most --on-stored programs running at once
    #[arg(long, value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u64).range(1..=256))]
    hook_concurrency: u64,
    /// An --on-stored program still running after this long is killed
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    hook_timeout: Duration,
    /// Log a line with the bytes so far and the rate this often during each long transfer
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    progress_interval: Duration,
    /// Serve Prometheus metrics over HTTP at ADDR (GET /metrics); off when absent
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Expect a PROXY protocol v2 header from the --trusted-proxy addresses (a load balancer)
    /// and take the client's address from it (logs, limits, hook); connections from other
    /// addresses are served as direct ones, and a PROXY header from them is a protocol error
    #[arg(long, requires = "trusted_proxy")]
    proxy_protocol: bool,
    /// An address or network (ADDR or ADDR/PREFIX) allowed to send PROXY headers; repeatable
    #[arg(long, value_name = "ADDR|CIDR", requires = "proxy_protocol")]
    trusted_proxy: Vec<Trusted>,
    /// Failed authentications a source may make within --auth-window before it is refused
    #[arg(long, value_name = "N", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_auth_failures: u32,
    /// Window for --max-auth-failures, and how long a source is then refused
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_timeout)]
    auth_window: Duration,
    /// Refuse uploaded names that Windows cannot store (`aux.c`, `x:y`, `what?`, a trailing dot
    /// or space, `\`, `:<>"|?*`), naming the rule; by default every name POSIX can store is
    /// accepted, except unsafe ones (`..`, absolute, control characters, `.ferry-*`)
    #[arg(long)]
    portable_names: bool,
    /// Acknowledge files without flushing them to disk first: faster, but a power cut can
    /// lose files the client was told are stored
    #[arg(long)]
    no_fsync: bool,
    /// Remove partial uploads (kept for resume) untouched for longer than this, at start-up and
    /// hourly while running ("never" keeps them until resumed); at most 1,024 are kept per
    /// state folder, the oldest removed first
    #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = parse_ttl)]
    keep_partials: Ttl,
    /// How long transfers in flight may go on after SIGINT/SIGTERM
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    grace: Duration,
}

/// The commands besides serving.
#[derive(Debug, Subcommand)]
enum Tool {
    /// Print the SHA256 fingerprint of the server's certificate, for clients' --pin
    Fingerprint {
        /// Folder of the self-signed certificate [default: $XDG_STATE_HOME/ferry/tls, else
        /// ~/.local/state/ferry/tls]
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// A PEM certificate chain (leaf first), as given to --tls-cert
        #[arg(long, value_name = "FILE", conflicts_with = "state_dir")]
        tls_cert: Option<PathBuf>,
    },
    /// `completions SHELL`; `man --out DIR` writes ferry-server.1
    #[command(flatten)]
    Docs(ferry_cli_docs::Docs),
}

impl Tool {
    /// Runs the command; the exit status.
    fn run(self) -> ExitCode {
        let done = match self {
            Tool::Fingerprint {
                state_dir,
                tls_cert,
            } => fingerprint(state_dir, tls_cert)
                .map_err(|e| (e, EXIT_START))
                .and_then(|fp| {
                    stdout::write_all(format!("{fp}\n").as_bytes()).map_err(|e| {
                        let e = DocsError::Stdout(e);
                        (e.to_string(), EXIT_RUN)
                    })
                }),
            Tool::Docs(docs) => docs.run(Args::command(), false).map_err(|e| match e {
                DocsError::Man { dir, source } => {
                    let dir = dir.display();
                    let why = format!("cannot write the manual page into {dir}: {source}");
                    (why, EXIT_START)
                }
                e @ DocsError::Stdout(_) => (e.to_string(), EXIT_RUN),
            }),
        };
        match done {
            Ok(()) => ExitCode::SUCCESS,
            Err((e, code)) => {
                eprintln!("ferry-server: {e}");
                ExitCode::from(code)
            }
        }
    }
}

/// The fingerprint of the certificate in `tls_cert`, else of the self-signed one in
/// `state_dir` (or the default state folder); nothing is generated.
fn fingerprint(
    state_dir: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
) -> Result<Fingerprint, String> {
    let cert = match tls_cert {
        Some(cert) => cert,
        None => state_dir
            .or_else(ferry_secure::default_state_dir)
            .ok_or(
                "neither XDG_STATE_HOME nor HOME is set; pass --state-dir DIR or --tls-cert FILE",
            )?
            .join(ferry_secure::CERT_FILE),
    };
    if !cert.exists() {
        return Err(format!(
            "there is no certificate at {}: start the server once with --tls-self-signed \
             (and the same --state-dir) to generate it, or pass --tls-cert FILE",
            cert.display()
        ));
    }
    Fingerprint::of_pem_file(&cert).map_err(|e| e.to_string())
}

/// `--keep-partials`: a duration, or `never` to keep partials until they are resumed.
#[derive(Debug, Clone, Copy)]
struct Ttl(Option<Duration>);

fn parse_ttl(s: &str) -> Result<Ttl, ferry_server::units::ParseUnitError> {
    if s.eq_ignore_ascii_case("never") {
        return Ok(Ttl(None));
    }
    parse_duration(s).map(|d| Ttl(Some(d)))
}

/// `--overwrite` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum OverwriteArg {
    /// Keep the existing file; the upload is refused
    Refuse,
    /// Store as `name (1).ext`, `name (2).ext`, ...
    Rename,
    /// Replace the existing file atomically
    Replace,
}

impl From<OverwriteArg> for Overwrite {
    fn from(o: OverwriteArg) -> Self {
        match o {
            OverwriteArg::Refuse => Overwrite::Refuse,
            OverwriteArg::Rename => Overwrite::Rename,
            OverwriteArg::Replace => Overwrite::Replace,
        }
    }
}

impl Args {
    /// The server's settings, with `credentials` from the configuration file; loading the
    /// certificate, key and token can fail.
    fn into_config(self, credentials: Vec<Credential>) -> Result<Config, String> {
        let tls = if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            let tls = ServerTls::from_pem_files(cert, key).map_err(|e| e.to_string())?;
            log::info!("TLS certificate from {}", cert.display());
            Some(tls)
        } else if self.tls_self_signed {
            let dir = self
                .state_dir
                .clone()
                .or_else(ferry_secure::default_state_dir)
                .ok_or("--tls-self-signed: neither XDG_STATE_HOME nor HOME is set; pass --state-dir DIR")?;
            let tls = ServerTls::self_signed(&dir).map_err(|e| e.to_string())?;
            // ferry-secure logs a generation itself.
            if !tls.generated() {
                log::info!("using the self-signed TLS certificate in {}", dir.display());
            }
            Some(tls)
        } else {
            None
        };
        let token = match &self.token_file {
            Some(path) => Some(Token::from_file(path).map_err(|e| format!("--token-file: {e}"))?),
            None => None,
        };
        Ok(Config {
            listen: self.listen,
            dir: self.dir,
            overwrite: self.overwrite.into(),
            max_file_size: self.max_file_size,
            max_connections: usize::try_from(self.max_connections).unwrap_or(usize::MAX),
            max_per_source: usize::try_from(self.max_per_source).unwrap_or(usize::MAX),
            stall_timeout: self.stall_timeout,
            evict_after: self.evict_after,
            takeover_after: self.takeover_after,
            max_refusal_logs: self.max_refusal_logs,
            max_handshakes: usize::try_from(self.max_handshakes).unwrap_or(usize::MAX),
            header_timeout: self.header_timeout,
            idle_timeout: self.idle_timeout,
            accept_seed: !self.no_seed,
            grace: self.grace,
            fsync: !self.no_fsync,
            partial_ttl: self.keep_partials.0,
            tls,
            token,
            portable_names: self.portable_names,
            max_auth_failures: self.max_auth_failures,
            auth_window: self.auth_window,
            credentials,
            anonymous: self.anonymous,
            on_stored: self.on_stored,
            hook_concurrency: usize::try_from(self.hook_concurrency).unwrap_or(usize::MAX),
            hook_timeout: self.hook_timeout,
            progress_interval: self.progress_interval,
            metrics_listen: self.metrics_listen,
            trusted_proxies: if self.proxy_protocol {
                self.trusted_proxy
            } else {
                Vec::new()
            },
            object_store: self
                .store
                .zip(self.s3_endpoint)
                .map(|(url, endpoint)| ObjectStore { url, endpoint }),
        })
    }
}

/// Graceful stop on the first SIGINT/SIGTERM, immediate exit on the second. `signals` is
/// registered before the server binds, so that no signal can arrive unhandled once it listens.
fn watch_signals(mut signals: Signals, stop: ShutdownHandle, log: Flusher) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("ferry-signals".into())
        .spawn(move || {
            let mut forever = signals.forever();
            if let Some(sig) = forever.next() {
                log::info!("signal {sig}: stopping (send it again to stop at once)");
                stop.shutdown();
            }
            if forever.next().is_some() {
                log::warn!("second signal: stopping now; unfinished files are not published");
                log.flush(LOG_FLUSH);
                std::process::exit(i32::from(EXIT_STOPPED));
            }
        })?;
    Ok(())
}

/// Logs go to stderr through a writer thread (see [`ferry_server::logging`]), in colour on a
/// terminal unless `RUST_LOG_STYLE` says otherwise (`always`, `never`); the default level is
/// info (`RUST_LOG`).
fn init_logging() -> std::io::Result<Flusher> {
    let (background, flusher) = Background::spawn(std::io::stderr())?;
    let styled = match std::env::var("RUST_LOG_STYLE").as_deref() {
        Ok("always") => true,
        Ok("never") => false,
        _ => std::io::stderr().is_terminal(),
    };
    Logger::new(background, styled)
        .install()
        .map_err(std::io::Error::other)?;
    Ok(flusher)
}

/// Prints a command-line error (or --help); the exit status.
fn usage(e: &clap::Error) -> ExitCode {
    let _ = e.print();
    if e.use_stderr() {
        ExitCode::from(EXIT_USAGE)
    } else {
        ExitCode::SUCCESS
    }
}

/// The arguments, with the options of `--config FILE` placed before the command line's (which
/// win), and the file's credentials.
fn parse_args() -> Result<(Args, Vec<Credential>), ExitCode> {
    // A first, lenient look for --config only: the command line alone may be incomplete (a
    // --state-dir whose --tls-self-signed is in the file).
    let early = Args::command().ignore_errors(true).try_get_matches().ok();
    let config = early
        .as_ref()
        .filter(|m| m.subcommand_name().is_none())
        .and_then(|m| m.get_one::<PathBuf>("config").cloned());
    let Some(path) = config else {
        return Ok((Args::try_parse().map_err(|e| usage(&e))?, Vec::new()));
    };
    let bad_file = |e: ConfigError| {
        eprintln!("ferry-server: {e}");
        ExitCode::from(EXIT_CONFIG)
    };
    let file = config_file::load(&path, &Args::command()).map_err(bad_file)?;
    let mut argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let tail = argv.split_off(1.min(argv.len()));
    let head = argv.clone();
    argv.extend(file.args.iter().cloned());
    argv.extend(tail);
    let args = Args::try_parse_from(argv).map_err(|e| {
        // Options of the file that cannot go together are the file's fault; else the command
        // line's, with the file's options before it.
        match Args::try_parse_from(head.into_iter().chain(file.args.iter().cloned())) {
            Err(alone) => bad_file(ConfigError {
                path: path.clone(),
                line: None,
                problem: Problem::Options(config_file::clap_reason(&alone)),
            }),
            Ok(_) => {
                eprintln!(
                    "ferry-server: on the command line, with the options of {} before it:",
                    path.display()
                );
                usage(&e)
            }
        }
    })?;
    Ok((args, file.credentials))
}

fn main() -> ExitCode {
    let (args, credentials) = match parse_args() {
        Ok(a) => a,
        Err(code) => return code,
    };
    if let Some(tool) = args.tool {
        return tool.run();
    }
    let log = match init_logging() {
        Ok(log) => log,
        Err(e) => {
            eprintln!("ferry-server: cannot start the logging thread: {e}");
            return ExitCode::from(EXIT_START);
        }
    };
    raise_fd_limit();
    reserve_descriptor_table();
    let code = serve(args, credentials, log.clone());
    log.flush(LOG_FLUSH);
    code
}

/// Raises the soft limit on open files to the hard limit: each connection holds a socket and
/// files, and the soft limit (often 1,024) is far below what the server's caps allow.
fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    if limit.current == limit.maximum {
        log::debug!("open files limit: {:?}", limit.current);
        return;
    }
    let raised = rustix::process::Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => log::debug!(
            "open files limit raised from {:?} to {:?}",
            limit.current,
            limit.maximum
        ),
        Err(e) => log::debug!("open files limit stays {:?}: {e}", limit.current),
    }
}

/// Descriptors the server's table holds from the start (within the limit on open files):
/// dozens of busy connections' worth, each with its socket, wake-ups, the file and folder
/// being stored and the descriptors of its two batches (flushed and gathering, each at most
/// `commit::MAX_TRACKED`).
const RESERVED_DESCRIPTORS: u64 = 4096;

/// Grows this process's table of descriptors to hold [`RESERVED_DESCRIPTORS`] at start, by
/// copying standard error's descriptor to the highest and closing the copy. The kernel
/// doubles the table when a descriptor does not fit, and while threads share it, waits for a
/// grace period each time (10-12 ms here): grown during an upload, the wait fell on the thread
/// storing its files. Best effort: without standard error, the table grows as it is used.
fn reserve_descriptor_table() {
    use rustix::process::{getrlimit, Resource};
    let limit = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    let Ok(highest) = i32::try_from(RESERVED_DESCRIPTORS.min(limit).saturating_sub(1)) else {
        return;
    };
    // The lowest free descriptor at `highest` or above: the table grows to hold it.
    if let Ok(copy) = rustix::io::fcntl_dupfd_cloexec(std::io::stderr(), highest) {
        drop(copy);
    }
}

/// Runs the server until it is stopped; the exit status.
fn serve(args: Args, credentials: Vec<Credential>, log: Flusher) -> ExitCode {
    let signals = match Signals::new([SIGINT, SIGTERM]) {
        Ok(s) => s,
        Err(e) => {
            log::error!("cannot watch SIGINT/SIGTERM: {e}");
            return ExitCode::from(EXIT_START);
        }
    };
    let config = match args.into_config(credentials) {
        Ok(c) => c,
        Err(e) => {
            log::error!("{e}");
            return ExitCode::from(EXIT_START);
        }
    };
    let server = match Server::bind(config) {
        Ok(s) => s,
        Err(e) => {
            log::error!("{e}");
            return ExitCode::from(EXIT_START);
        }
    };
    if let Err(e) = watch_signals(signals, server.shutdown_handle(), log) {
        log::error!("cannot watch SIGINT/SIGTERM: {e}");
        return ExitCode::from(EXIT_START);
    }
    match server.run() {
        Ok(()) => ExitCode::from(EXIT_STOPPED),
        Err(e) => {
            log::error!("{e}");
            ExitCode::from(EXIT_RUN)
        }
    }
}
