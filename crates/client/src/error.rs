//! What can end a whole run, with a message a person can act on and an exit code.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use ferry_proto::{Code, DriveError, NameError, ProtocolError, UsageError};
use ferry_secure::SecureError;

use crate::sniff::Peer;
use crate::target::{Target, TargetError};

/// What a plain client is told about a server that answered in TLS.
const TLS_ANSWER: &str = "in TLS (if it is a ferry server that requires TLS, connect with \
                          --pin, --tofu, --ca or --tls)";

/// Exit codes of the `ferry` command, also listed in `ferry --help`.
pub mod exit {
    /// Every file was transferred.
    pub const OK: u8 = 0;
    /// Some files failed (refused, digest mismatch, local error); the others went through.
    pub const PARTIAL: u8 = 1;
    /// Bad command line or local files: nothing was sent.
    pub const USAGE: u8 = 2;
    /// The server refused the connection (busy, denied, shutting down) or every file.
    pub const REFUSED: u8 = 3;
    /// The network failed: no connection, a timeout, or a connection cut mid-way.
    pub const NETWORK: u8 = 4;
    /// The server broke the protocol.
    pub const PROTOCOL: u8 = 5;
    /// TLS: the server's certificate is not trusted (not the pinned one, changed since it was
    /// first trusted, or not vouched for by a trusted CA); nothing was sent to it.
    pub const UNTRUSTED: u8 = 6;
    /// Interrupted (Ctrl-C, SIGINT) after saying which files were confirmed: 128 + 2, as
    /// shells report it.
    pub const INTERRUPTED: u8 = 130;
}

/// An error that ends a whole run (per-file failures are [`crate::FileReport`]s instead).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The command line does not make sense.
    #[error("{0}")]
    Usage(String),
    /// The `HOST[:PORT]` argument.
    #[error("bad address {input:?}: {source}")]
    BadTarget {
        /// What was typed.
        input: String,
        /// What is wrong with it.
        source: TargetError,
    },
    /// A local file or folder to send cannot be read.
    #[error("cannot read {}: {}", path.display(), describe(source))]
    LocalRead {
        /// The path.
        path: PathBuf,
        /// The system's reason.
        source: io::Error,
    },
    /// A local path cannot become a portable file name.
    #[error("cannot send {}: {source}", path.display())]
    LocalName {
        /// The path.
        path: PathBuf,
        /// Why its name is refused.
        source: NameError,
    },
    /// A local path whose name is not UTF-8.
    #[error("cannot send {}: its name is not valid UTF-8", path.display())]
    NotUtf8 {
        /// The path.
        path: PathBuf,
    },
    /// A file name to download, or `--name`, is not a valid name.
    #[error("bad file name {name}: {source}")]
    BadName {
        /// The name, escaped.
        name: String,
        /// Why.
        source: NameError,
    },
    /// The local destination folder cannot be used.
    #[error("cannot use {}: {source}", path.display())]
    Destination {
        /// The folder.
        path: PathBuf,
        /// The system's reason.
        source: io::Error,
    },
    /// The host name does not resolve.
    #[error("cannot find host {host}: {source}")]
    Resolve {
        /// The host.
        host: String,
        /// The resolver's reason.
        source: io::Error,
    },
    /// Nothing listens on the port.
    #[error("connection refused: is ferry-server running on {0}?")]
    ConnectionRefused(Target),
    /// Connecting failed otherwise.
    #[error("cannot connect to {target}: {source}")]
    Connect {
        /// Where.
        target: Target,
        /// The system's reason.
        source: io::Error,
    },
    /// The server went silent.
    #[error("{target} did not answer within {} s (see --timeout)", after.as_secs())]
    Timeout {
        /// Where.
        target: Target,
        /// How long we waited.
        after: Duration,
    },
    /// The connection broke mid-way.
    #[error("connection to {target} lost: {reason}")]
    Lost {
        /// Where.
        target: Target,
        /// What happened.
        reason: String,
    },
    /// The peer closed, or reset, the connection before sending a single byte: a network
    /// failure, or a server too busy to answer, so retried like one; or the lab report's
    /// server.py, which the message names second.
    #[error(
        "{0} closed the connection before answering: the network or a server too busy to \
         answer cut it (run again, or use --retries); if it is the lab report's server.py, \
         use --legacy"
    )]
    HungUp(Target),
    /// The peer closed after sending something that was not a WELCOME (nor anything else this
    /// client knows): it is probably not a ferry server.
    #[error(
        "{0} closed the connection without answering: is it a ferry server? \
         (if it requires TLS, use --pin, --tofu, --ca or --tls; \
         for the lab report's server.py, use --legacy)"
    )]
    NoWelcome(Target),
    /// The server turned the connection away (ERROR before WELCOME).
    #[error("{target} refused the connection: {reason}")]
    ServerRefused {
        /// Where.
        target: Target,
        /// The server's code.
        code: Code,
        /// The server's words (escaped) or the code.
        reason: String,
    },
    /// The server ended the conversation with an ERROR.
    #[error("{target} ended the connection ({code}): {reason}")]
    ServerError {
        /// Where.
        target: Target,
        /// The server's code.
        code: Code,
        /// The server's words (escaped).
        reason: String,
    },
    /// The server turned the connection away because the token is missing or wrong, or because
    /// this address failed too often lately (the reason says for how long).
    #[error("{target} refused the connection: {reason}: check FERRY_TOKEN / --token-file")]
    Denied {
        /// Where.
        target: Target,
        /// The server's words (escaped).
        reason: String,
    },
    /// The peer answered, but not in ferry: an HTTP or SSH server, say.
    #[error("{target} is not a ferry server: it answered {answer}")]
    NotFerry {
        /// Where.
        target: Target,
        /// How it answered ("like an HTTP server (HTTP/1.1 400 Bad Request)").
        answer: String,
    },
    /// `--legacy`: the peer answered an upload, which the lab report's server.py never does,
    /// and not with a ferry refusal; whether it kept the file is unknown.
    #[error(
        "{target} answered the upload {answer}, which the lab report's server.py never does: \
         it is not a seed server, and may not have kept the file"
    )]
    NotSeed {
        /// Where.
        target: Target,
        /// How it answered ("with \"...\"", "12 bytes").
        answer: String,
    },
    /// TLS was asked for, and the peer closed the connection during the handshake without
    /// sending a byte: a ferry server without TLS does just that.
    #[error(
        "{0} closed the connection at the start of the TLS handshake without a word: it does \
         not speak TLS (a ferry-server started without --tls-self-signed or --tls-cert does \
         this); connect without --pin/--tofu/--known-hosts/--ca/--tls, or start the server \
         with TLS"
    )]
    NoTls(Target),
    /// TLS: the server's certificate is not trusted. The handshake stopped there, so nothing
    /// (no HELLO, no token, no file) was sent.
    #[error("{source}; nothing was sent to {target}")]
    Untrusted {
        /// Where.
        target: Target,
        /// Which check failed.
        source: Box<SecureError>,
    },
    /// TLS: the handshake was cut, reset or timed out (a network failure).
    #[error("{0}")]
    TlsNetwork(Box<SecureError>),
    /// TLS: the handshake failed otherwise (the peer does not speak TLS 1.3, say).
    #[error("{0}")]
    TlsFailed(Box<SecureError>),
    /// A local TLS or token setting cannot be used (CA file, known-hosts file, token file).
    #[error("{0}")]
    Secure(Box<SecureError>),
    /// The server broke the protocol.
    #[error("{target} broke the ferry protocol: {reason}")]
    Protocol {
        /// Where.
        target: Target,
        /// What it did.
        reason: String,
    },
    /// The server speaks protocol 1, which has no listing (`ferry ls`).
    #[error("{0} speaks protocol 1, which has no listing; upgrade its ferry-server")]
    NoListing(Target),
    /// The server refused a listing (`ferry ls`): no such name, not allowed, ...
    #[error("{target} refused to list {path} ({code}): {}", after_name(reason, &[path]))]
    ListRefused {
        /// Where.
        target: Target,
        /// The path asked for, escaped (`/` for the root).
        path: String,
        /// The server's code.
        code: Code,
        /// The server's words, escaped.
        reason: String,
    },
    /// Standard output cannot be written (`-o -` into a closed pipe, say).
    #[error("cannot write to standard output: {0}")]
    Stdout(io::Error),
    /// A bug in this program: it used the protocol machine wrongly.
    #[error("internal error (a bug in ferry, please report it): {0}")]
    Bug(#[from] UsageError),
}

impl ClientError {
    /// The process exit code for this error (see [`exit`]).
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Usage(_)
            | ClientError::BadTarget { .. }
            | ClientError::LocalRead { .. }
            | ClientError::LocalName { .. }
            | ClientError::NotUtf8 { .. }
            | ClientError::BadName { .. }
            | ClientError::Destination { .. }
            | ClientError::Secure(_) => exit::USAGE,
            ClientError::Resolve { .. }
            | ClientError::ConnectionRefused(_)
            | ClientError::Connect { .. }
            | ClientError::Timeout { .. }
            | ClientError::Lost { .. }
            | ClientError::HungUp(_)
            | ClientError::TlsNetwork(_) => exit::NETWORK,
            ClientError::ServerRefused { .. }
            | ClientError::Denied { .. }
            | ClientError::ListRefused { .. } => exit::REFUSED,
            ClientError::Untrusted { .. } => exit::UNTRUSTED,
            ClientError::TlsFailed(_) => exit::PROTOCOL,
            ClientError::ServerError { code, .. } => match code {
                Code::Protocol | Code::BadName | Code::SizeMismatch | Code::Unsupported => {
                    exit::PROTOCOL
                }
                _ => exit::NETWORK,
            },
            ClientError::Protocol { .. }
            | ClientError::NoWelcome(_)
            | ClientError::NoListing(_)
            | ClientError::NotFerry { .. }
            | ClientError::NotSeed { .. }
            | ClientError::NoTls(_) => exit::PROTOCOL,
            ClientError::Stdout(_) | ClientError::Bug(_) => exit::PARTIAL,
        }
    }

    /// Whether running the transfer again on a new connection may get further (`--retries`):
    /// network failures and a busy server, not other refusals, trust failures or protocol
    /// errors. A peer that hangs up before WELCOME may not be a ferry server at all, so that
    /// is retried only once an earlier connection of the run was `proven` to reach one.
    #[must_use]
    pub fn is_retriable(&self, proven: bool) -> bool {
        match self {
            ClientError::ConnectionRefused(_)
            | ClientError::Connect { .. }
            | ClientError::Timeout { .. }
            | ClientError::Lost { .. }
            | ClientError::HungUp(_)
            | ClientError::TlsNetwork(_) => true,
            // The server gave up on a slow link, or is restarting: transient, once welcomed.
            ClientError::ServerError {
                code: Code::Timeout | Code::ShuttingDown | Code::Busy,
                ..
            } => true,
            // Too many connections for now.
            ClientError::ServerRefused {
                code: Code::Busy, ..
            } => true,
            ClientError::NoWelcome(_) | ClientError::NoTls(_) => proven,
            _ => false,
        }
    }

    /// A local TLS or token setting that cannot be used.
    pub(crate) fn secure(e: SecureError) -> Self {
        ClientError::Secure(Box::new(e))
    }

    /// Maps a failure of the TLS layer while connecting to `target`.
    pub(crate) fn from_secure(target: &Target, timeout: Duration, e: SecureError) -> Self {
        use ferry_secure::rustls::Error as Tls;
        match e {
            SecureError::PinMismatch { .. }
            | SecureError::CertificateChanged { .. }
            | SecureError::Handshake {
                source: Tls::InvalidCertificate(_),
                ..
            } => ClientError::Untrusted {
                target: target.clone(),
                source: Box::new(e),
            },
            SecureError::HandshakeIo { .. } => ClientError::TlsNetwork(Box::new(e)),
            SecureError::Io(e) => Self::from_io(target, timeout, e),
            SecureError::Handshake { .. } => ClientError::TlsFailed(Box::new(e)),
            // Files (known hosts), names: local matters.
            e => ClientError::secure(e),
        }
    }

    /// Maps a failure of the TLS handshake with `target`, knowing what `peer` sent: a ferry
    /// refusal in plain (a source blocked after failed logins), a foreign server, or nothing
    /// before it closed (no TLS there).
    pub(crate) fn from_handshake(
        target: &Target,
        timeout: Duration,
        e: SecureError,
        peer: &Peer,
    ) -> Self {
        use io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
        let (failed, closed) = match &e {
            SecureError::Handshake { .. } => (true, false),
            SecureError::HandshakeIo { source, .. } => (
                true,
                matches!(
                    source.kind(),
                    UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
                ),
            ),
            _ => (false, false),
        };
        match peer {
            Peer::FerryError { code, reason } if failed => {
                Self::from_peer(target, false, *code, reason)
            }
            Peer::Foreign(answer) if failed => ClientError::NotFerry {
                target: target.clone(),
                answer: answer.clone(),
            },
            Peer::Silent if closed => ClientError::NoTls(target.clone()),
            _ => Self::from_secure(target, timeout, e),
        }
    }

    /// This error ended a plain conversation before WELCOME, and `peer` is what the server had
    /// sent: a foreign server is named; a hang-up is [`ClientError::HungUp`] when nothing came
    /// before it, else [`ClientError::NoWelcome`].
    pub(crate) fn unwelcomed(self, target: &Target, peer: &Peer) -> Self {
        let answer = match peer {
            Peer::Foreign(answer) => answer.clone(),
            Peer::Tls => TLS_ANSWER.to_owned(),
            _ => {
                return match self {
                    ClientError::Lost { .. } if *peer == Peer::Silent => {
                        ClientError::HungUp(target.clone())
                    }
                    ClientError::Lost { .. } => ClientError::NoWelcome(target.clone()),
                    e => e,
                }
            }
        };
        ClientError::NotFerry {
            target: target.clone(),
            answer,
        }
    }

    /// Maps a failure of the driver on the connection to `target`.
    pub(crate) fn from_drive(target: &Target, timeout: Duration, e: DriveError) -> Self {
        match e {
            DriveError::Io(e) => Self::from_io(target, timeout, e),
            DriveError::Proto(ferry_proto::Error::Protocol(p)) => Self::from_protocol(target, p),
            DriveError::Proto(ferry_proto::Error::Usage(u)) => ClientError::Bug(u),
            other => ClientError::Protocol {
                target: target.clone(),
                reason: other.to_string(),
            },
        }
    }

    /// Maps an I/O failure on the connection to `target`.
    pub(crate) fn from_io(target: &Target, timeout: Duration, e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => ClientError::Timeout {
                target: target.clone(),
                after: timeout,
            },
            _ => ClientError::Lost {
                target: target.clone(),
                reason: e.to_string(),
            },
        }
    }

    /// A stream that ends early is a network failure; anything else the server's fault.
    fn from_protocol(target: &Target, p: ProtocolError) -> Self {
        match p {
            ProtocolError::Truncated { .. } | ProtocolError::ClosedEarly { .. } => {
                ClientError::Lost {
                    target: target.clone(),
                    reason: p.to_string(),
                }
            }
            p => ClientError::Protocol {
                target: target.clone(),
                reason: p.to_string(),
            },
        }
    }

    /// An ERROR frame from the server: before WELCOME a refusal of the connection.
    pub(crate) fn from_peer(target: &Target, welcomed: bool, code: Code, reason: &str) -> Self {
        let reason = if reason.is_empty() {
            code.to_string()
        } else {
            ferry_proto::name::escape(reason)
        };
        let target = target.clone();
        if code == Code::Denied {
            ClientError::Denied { target, reason }
        } else if welcomed {
            ClientError::ServerError {
                target,
                code,
                reason,
            }
        } else {
            ClientError::ServerRefused {
                target,
                code,
                reason,
            }
        }
    }

    /// An event the protocol machine let through but this client never asked for.
    pub(crate) fn unexpected(target: &Target, what: &str) -> Self {
        ClientError::Protocol {
            target: target.clone(),
            reason: format!("unexpected {what}"),
        }
    }
}

/// `reason` without the name it starts with (any of its `shown` forms, followed by `: `),
/// for a message that names it already: a server's reasons stand alone (it logs them too), so
/// many begin with the name (`nope: no such file`).
pub(crate) fn after_name<'a>(reason: &'a str, shown: &[&str]) -> &'a str {
    shown
        .iter()
        .find_map(|name| reason.strip_prefix(name)?.strip_prefix(": "))
        .unwrap_or(reason)
}

/// An I/O error in words: the system's message without its "(os error N)" and lower-cased
/// ("permission denied"), to follow a colon.
pub(crate) fn describe(e: &io::Error) -> String {
    let text = e.to_string();
    let text = match (text.rfind(" (os error "), text.ends_with(')')) {
        (Some(at), true) => &text[..at],
        _ => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(c) if chars.clone().next().is_some_and(char::is_lowercase) => {
            c.to_lowercase().chain(chars).collect()
        }
        _ => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_network_failures_and_busy_servers_are_retried() {
        let t = Target::new("box", 8386);
        let secs = Duration::from_secs(1);
        let yes = [
            ClientError::ConnectionRefused(t.clone()),
            ClientError::from_io(&t, secs, io::ErrorKind::ConnectionReset.into()),
            ClientError::from_io(&t, secs, io::ErrorKind::TimedOut.into()),
            ClientError::from_peer(&t, true, Code::ShuttingDown, ""),
            ClientError::from_peer(&t, true, Code::Timeout, ""),
            ClientError::from_peer(&t, false, Code::Busy, ""),
        ];
        for e in &yes {
            assert!(e.is_retriable(false), "{e}");
        }
        let no = [
            ClientError::from_peer(&t, false, Code::ShuttingDown, ""),
            ClientError::from_peer(&t, false, Code::Denied, ""),
            ClientError::from_peer(&t, true, Code::Protocol, ""),
            ClientError::from_drive(&t, secs, DriveError::from(ProtocolError::Unrequested)),
            ClientError::from_secure(
                &t,
                secs,
                SecureError::PinMismatch {
                    expected: ferry_secure::Fingerprint::from_bytes([1; 32]),
                    got: ferry_secure::Fingerprint::from_bytes([2; 32]),
                },
            ),
            ClientError::Usage("x".into()),
        ];
        for e in &no {
            assert!(!e.is_retriable(true), "{e}");
        }
        let unwelcomed = ClientError::NoWelcome(t.clone());
        assert!(!unwelcomed.is_retriable(false) && unwelcomed.is_retriable(true));
        assert_eq!(unwelcomed.exit_code(), exit::PROTOCOL);
    }

    #[test]
    fn a_hang_up_before_any_byte_is_a_network_failure_and_one_after_bytes_is_not() {
        let t = Target::new("box", 8386);
        let lost = || ClientError::Lost {
            target: t.clone(),
            reason: "reset".into(),
        };
        let silent = lost().unwelcomed(&t, &Peer::Silent);
        assert!(matches!(silent, ClientError::HungUp(_)), "{silent}");
        assert_eq!(silent.exit_code(), exit::NETWORK);
        assert!(silent.is_retriable(false));
        assert!(silent.to_string().contains("--legacy"), "{silent}");
        let garbled = lost().unwelcomed(&t, &Peer::Unknown);
        assert!(matches!(garbled, ClientError::NoWelcome(_)), "{garbled}");
        assert_eq!(garbled.exit_code(), exit::PROTOCOL);
    }

    #[test]
    fn messages_are_actionable_and_codes_distinct() {
        let t = Target::new("box", 8386);
        let refused = ClientError::ConnectionRefused(t.clone());
        assert_eq!(
            refused.to_string(),
            "connection refused: is ferry-server running on box:8386?"
        );
        assert_eq!(refused.exit_code(), exit::NETWORK);
        let busy = ClientError::from_peer(&t, false, Code::Busy, "too many clients\x1b[2J");
        assert_eq!(busy.exit_code(), exit::REFUSED);
        assert!(!busy.to_string().contains('\x1b'), "{busy}");
        let cut = ClientError::from_drive(
            &t,
            Duration::from_secs(1),
            DriveError::from(ProtocolError::Truncated {
                got: 1,
                expected: 2,
            }),
        );
        assert_eq!(cut.exit_code(), exit::NETWORK);
        let bad = ClientError::from_drive(
            &t,
            Duration::from_secs(1),
            DriveError::from(ProtocolError::Unrequested),
        );
        assert_eq!(bad.exit_code(), exit::PROTOCOL);
        let denied = ClientError::from_peer(&t, false, Code::Denied, "authentication failed");
        assert_eq!(denied.exit_code(), exit::REFUSED);
        assert!(denied
            .to_string()
            .ends_with("authentication failed: check FERRY_TOKEN / --token-file"));
        let slow = ClientError::from_io(
            &t,
            Duration::from_secs(9),
            io::Error::from(io::ErrorKind::WouldBlock),
        );
        assert_eq!(
            slow.to_string(),
            "box:8386 did not answer within 9 s (see --timeout)"
        );
        let unlisted = ClientError::ListRefused {
            target: t,
            path: "nope".into(),
            code: Code::NotFound,
            reason: "nope: no such file".into(),
        };
        assert_eq!(
            unlisted.to_string(),
            "box:8386 refused to list nope (not found): no such file"
        );
    }

    #[test]
    fn a_reason_loses_only_the_name_it_starts_with() {
        let names = ["a\\b", "a\\\\b"];
        assert_eq!(after_name("a\\\\b: no such file", &names), "no such file");
        assert_eq!(after_name("a\\b: no such file", &names), "no such file");
        assert_eq!(after_name("a\\b is a folder", &names), "a\\b is a folder");
        assert_eq!(
            after_name("a file of that name exists", &["a"]),
            "a file of that name exists"
        );
        assert_eq!(after_name("too large: a: x", &["a"]), "too large: a: x");
    }
}
