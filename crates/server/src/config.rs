//! What a server is told to do: where to listen, where to store, and its limits.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ferry_secure::{ServerTls, Token};

use crate::access::{Credential, Permissions};
use crate::proxy::Trusted;

/// The seed server's port, kept so that the lab report's client works unchanged.
pub const DEFAULT_PORT: u16 = 8386;

/// What to do when an upload's name is already taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overwrite {
    /// Keep the existing file and refuse the upload with [`ferry_proto::Code::Exists`].
    #[default]
    Refuse,
    /// Store the upload as `name (1).ext`, `name (2).ext`, ... (the first free one).
    Rename,
    /// Replace the existing file atomically.
    Replace,
}

/// An S3-compatible object store to store into instead of [`Config::dir`] (`--store
/// s3://BUCKET[/PREFIX] --s3-endpoint URL`). Credentials come from `AWS_ACCESS_KEY_ID` and
/// `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`), the region from `AWS_REGION` (default
/// `us-east-1`), as every S3 tool reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectStore {
    /// `s3://BUCKET[/PREFIX]`: files are stored as `PREFIX/NAME`, the server's own state under
    /// `PREFIX/.ferry-state/`.
    pub url: String,
    /// The store's endpoint, `http://host:port` or `https://host` (path-style requests).
    pub endpoint: String,
}

/// Server settings. [`Config::default`] is what `ferry-server` runs with no flags: no TLS, no
/// token (bind to loopback only, or set both).
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port (see [`crate::Server::local_addr`]).
    pub listen: SocketAddr,
    /// Folder that uploads go into and downloads come from; created if missing.
    pub dir: PathBuf,
    /// Policy for names that already exist.
    pub overwrite: Overwrite,
    /// Largest file accepted, in bytes; `None` for no limit.
    pub max_file_size: Option<u64>,
    /// Most clients served at once (counted once a client has opened the conversation).
    /// When all are taken but one has gone without progress for longer than
    /// [`Config::evict_after`], a newcomer may go on for that long and takes the slot of the
    /// connection longest without progress as soon as it makes progress itself; else it is
    /// refused with [`ferry_proto::Code::Busy`]. Default 64.
    pub max_connections: usize,
    /// Most connections one source (an IPv4 address, an IPv6 /64) may have open at once,
    /// counted from accept (handshakes included); more are refused as busy. Default 8.
    pub max_per_source: usize,
    /// A connection that completes no file and moves fewer than 16 KiB of body bytes (either
    /// way) for this long is closed, however many small frames it sends: a body trickled a
    /// byte at a time is no progress. Default 60 s, the idle timeout's default:
    /// a client that the idle timeout lets pause (one hashing a long resume prefix, say) is
    /// not cut by this one; only chatter without transfers is. When the server is full, such a
    /// connection loses its slot much sooner (see [`Config::evict_after`]).
    pub stall_timeout: Duration,
    /// When every slot is taken, a connection without progress for longer than this loses its
    /// slot to a newcomer that makes progress (it is told why with
    /// [`ferry_proto::Code::Busy`]); a connection's clock starts when it takes its slot. Also
    /// how long such a newcomer may go on without a slot. Default 2 s.
    pub evict_after: Duration,
    /// An upload that resumes a name held by a connection without progress for this long
    /// takes it over: the stale connection (cut off by the network, say) is closed and the
    /// newcomer resumes. Default 3 s.
    pub takeover_after: Duration,
    /// Lines about refusals and unexpected events one connection may make the server log; the
    /// rest are counted in the connection's closing line. Default 16.
    pub max_refusal_logs: u32,
    /// Most connections still opening (no HELLO or seed name line yet) on top of those, so
    /// that stalled connections cannot take the slots of real clients. Beyond both limits a
    /// new connection takes the place of the oldest one without a slot (still opening, or on
    /// probation for a slot) for at least 1 s (closed at once), or, when there is none, is
    /// refused as busy before anything is read.
    pub max_handshakes: usize,
    /// Time a client has to open the conversation after connecting (HELLO, or the seed name
    /// line), and to finish any later message once its first byte arrived, however it
    /// trickles the bytes in.
    pub header_timeout: Duration,
    /// Longest silence tolerated: between messages, and while a body is in flight.
    pub idle_timeout: Duration,
    /// Whether the lab report's seed framing (`<name>\n<body>`) is accepted. It never is when
    /// [`Config::tls`] or [`Config::token`] is set: it has neither encryption nor a token.
    pub accept_seed: bool,
    /// How long transfers in flight may go on after a shutdown request.
    pub grace: Duration,
    /// Whether each file (and its folder entry) is flushed to disk before the client is told
    /// it is stored, so that a power cut cannot lose an acknowledged file. Costs throughput,
    /// most with many small files.
    pub fsync: bool,
    /// Partial uploads untouched for longer than this are removed, at start-up and hourly
    /// while the server runs; `None` keeps them until they are resumed (or, past the cap of
    /// 1,024 per state folder, until they are the oldest).
    pub partial_ttl: Option<Duration>,
    /// TLS 1.3 settings (`--tls-cert`/`--tls-key` or `--tls-self-signed`). When set, TLS is
    /// required: plain connections (ferry or seed framing) are refused with a log line.
    pub tls: Option<ServerTls>,
    /// The shared secret every client must present in its HELLO (`--token-file`); checked in
    /// constant time before anything reaches the disk. It may do everything, in the whole
    /// folder (see [`Credential::full`]). `None`: no such token.
    pub token: Option<Token>,
    /// Named tokens with their own permissions and folders (`[[token]]` in `--config`).
    pub credentials: Vec<Credential>,
    /// What clients without a token may do; `None`: [`Permissions::default_anonymous`].
    pub anonymous: Option<Permissions>,
    /// A program run for each stored file (`--on-stored`), with no shell; see
    /// [`crate::hooks`]. `None`: no hook.
    pub on_stored: Option<PathBuf>,
    /// Most hook programs running at once; further stored files wait in a queue of
    /// [`crate::hooks::QUEUE`] (beyond it they are skipped, with a log line). Default 4.
    pub hook_concurrency: usize,
    /// How long a hook program may run before it is killed. Default 60 s.
    pub hook_timeout: Duration,
    /// Interval of the log line about a transfer in flight (name, bytes so far, rate).
    /// Default 5 s.
    pub progress_interval: Duration,
    /// Where to serve Prometheus metrics over HTTP (`GET /metrics`); `None`: not served.
    pub metrics_listen: Option<SocketAddr>,
    /// Read a PROXY protocol v2 header from connections coming from these addresses (a load
    /// balancer), and take the client's address from it; other addresses connect directly.
    /// Empty: no PROXY header is read.
    pub trusted_proxies: Vec<Trusted>,
    /// Store into this object store instead of [`Config::dir`]; `None`: the folder.
    pub object_store: Option<ObjectStore>,
    /// Refuse, with [`ferry_proto::Code::BadName`], uploaded names that Windows cannot store
    /// (`aux.c`, `x:y`, `what?`, `trailing.`: PROTOCOL.md §5.2, [`ferry_proto::Name::portable`]),
    /// so that the folder can be copied to Windows as it is. Off by default: the server then
    /// stores every name POSIX can, except unsafe ones (PROTOCOL.md §5.1).
    pub portable_names: bool,
    /// Failed authentications a source (an IPv4 address or an IPv6 /64) may make within
    /// [`Config::auth_window`] before its connections are refused for that long.
    pub max_auth_failures: u32,
    /// The window of [`Config::max_auth_failures`], and how long a source is then refused.
    pub auth_window: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, DEFAULT_PORT)),
            dir: PathBuf::from("uploaded_files"),
            overwrite: Overwrite::Refuse,
            max_file_size: None,
            max_connections: 64,
            max_per_source: 8,
            stall_timeout: Duration::from_secs(60),
            evict_after: Duration::from_secs(2),
            takeover_after: Duration::from_secs(3),
            max_refusal_logs: 16,
            max_handshakes: 256,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            accept_seed: true,
            grace: Duration::from_secs(10),
            fsync: true,
            partial_ttl: Some(Duration::from_secs(7 * 86_400)),
            tls: None,
            token: None,
            credentials: Vec::new(),
            anonymous: None,
            on_stored: None,
            hook_concurrency: 4,
            hook_timeout: Duration::from_secs(60),
            progress_interval: Duration::from_secs(5),
            metrics_listen: None,
            trusted_proxies: Vec::new(),
            object_store: None,
            portable_names: false,
            max_auth_failures: 5,
            auth_window: Duration::from_secs(60),
        }
    }
}

impl Config {
    /// Whether the seed framing is accepted: asked for, and neither TLS nor a token required.
    pub fn seed_allowed(&self) -> bool {
        self.accept_seed && self.tls.is_none() && !self.has_tokens()
    }

    /// Whether any token is configured (`--token-file` or credentials).
    pub fn has_tokens(&self) -> bool {
        self.token.is_some() || !self.credentials.is_empty()
    }

    /// Every credential: that of [`Config::token`] first, then [`Config::credentials`].
    pub fn all_credentials(&self) -> Vec<Credential> {
        let full = self.token.as_ref().map(Credential::full);
        full.into_iter()
            .chain(self.credentials.iter().cloned())
            .collect()
    }

    /// What clients without a token may do: [`Config::anonymous`], else the default for
    /// this configuration and listening address.
    pub fn anonymous_permissions(&self) -> Permissions {
        self.anonymous
            .unwrap_or_else(|| Permissions::default_anonymous(self.has_tokens(), self.listen.ip()))
    }
}
