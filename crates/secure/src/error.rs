//! The one error type of this crate.

use std::io;
use std::path::PathBuf;

use crate::Fingerprint;

/// Everything that can go wrong while setting up TLS, checking a peer or loading a token.
///
/// Each message says what to do about it; none of them contains a token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecureError {
    /// A file could not be read, written or created.
    #[error("cannot {action} {}: {source}", path.display())]
    File {
        /// What was being done ("read", "create", ...).
        action: &'static str,
        /// The file in question.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },

    /// A PEM file held nothing usable of the expected kind.
    #[error("{}: {detail}", path.display())]
    Pem {
        /// The PEM file.
        path: PathBuf,
        /// What was wrong with it.
        detail: String,
    },

    /// The certificate and private key were refused by the TLS library.
    #[error("the TLS certificate {} and key {} cannot be used together: {source}", cert.display(), key.display())]
    CertKey {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// Why rustls refused them.
        source: rustls::Error,
    },

    /// rustls refused the configuration (a bug rather than a user error).
    #[error("cannot build the TLS configuration: {0}")]
    TlsConfig(rustls::Error),

    /// Generating a self-signed certificate failed.
    #[error("cannot generate a self-signed certificate: {0}")]
    CertGen(String),

    /// The state folder holds only one of the two self-signed files.
    #[error(
        "the state folder {} holds {present} but not {missing}; restore {missing} or remove {present} to generate a new certificate (clients that pinned the old one will refuse the new one)",
        dir.display()
    )]
    PartialSelfSigned {
        /// The state folder.
        dir: PathBuf,
        /// The file that is there.
        present: &'static str,
        /// The file that is missing.
        missing: &'static str,
    },

    /// A secret file (token, private key) is accessible by group or others.
    #[error(
        "{} is accessible by other users (mode {mode:03o}); it holds a secret: run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    InsecurePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },

    /// A fingerprint could not be parsed.
    #[error("invalid fingerprint {input:?}: expected `SHA256:` then 64 hex digits (colons allowed), as the server prints it")]
    BadFingerprint {
        /// What was given.
        input: String,
    },

    /// A known-hosts file has a line that is not `host:port SHA256:<hex>`.
    #[error("{} line {line}: {reason} (expected `host:port SHA256:<hex>`; fix or remove that line)", path.display())]
    KnownHostsSyntax {
        /// The known-hosts file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },

    /// The host name cannot be used as a TLS server name.
    #[error("{host:?} is not a valid host name or IP address for TLS")]
    BadServerName {
        /// What was given.
        host: String,
    },

    /// The server's certificate is not the pinned one.
    #[error("the server's certificate does not match the pinned fingerprint: expected {expected}, got {got}; refusing to connect")]
    PinMismatch {
        /// The pinned fingerprint.
        expected: Fingerprint,
        /// The server's fingerprint.
        got: Fingerprint,
    },

    /// The server's certificate differs from the one recorded on first use.
    #[error(
        "WARNING: the server's certificate for {host_port} changed: expected {expected}, got {got}; someone may be intercepting the connection, so it is refused. If this is expected, remove line {line} of {}",
        path.display()
    )]
    CertificateChanged {
        /// The `host:port` key.
        host_port: String,
        /// The recorded fingerprint.
        expected: Fingerprint,
        /// The server's fingerprint now.
        got: Fingerprint,
        /// The known-hosts file.
        path: PathBuf,
        /// The 1-based line that holds the recorded fingerprint.
        line: usize,
    },

    /// The TLS handshake failed.
    #[error("TLS handshake with {peer} failed: {source}{hint}")]
    Handshake {
        /// The peer's address.
        peer: String,
        /// The TLS error.
        source: rustls::Error,
        /// A suggestion, empty or starting with "; ".
        hint: &'static str,
    },

    /// The connection failed (or timed out) during the TLS handshake.
    #[error("connection with {peer} failed during the TLS handshake: {source}{hint}")]
    HandshakeIo {
        /// The peer's address.
        peer: String,
        /// The I/O error.
        source: io::Error,
        /// A suggestion, empty or starting with "; ".
        hint: &'static str,
    },

    /// A plain connection reached a server that requires TLS.
    #[error("refused a plain (unencrypted) connection from {peer}: this server requires TLS (the client must use --tls)")]
    PlainRefused {
        /// The peer's address.
        peer: String,
    },

    /// A TLS handshake reached a server that has no TLS configured.
    #[error("{peer} started a TLS handshake but this server has no TLS configured (start it with --tls-cert/--tls-key or --tls-self-signed)")]
    TlsNotConfigured {
        /// The peer's address.
        peer: String,
    },

    /// The peer closed the connection before sending a byte.
    #[error("{peer} closed the connection before sending anything")]
    EmptyConnection {
        /// The peer's address.
        peer: String,
    },

    /// A token is unusable (empty, too long).
    #[error("the token from {origin} {reason}")]
    BadToken {
        /// Where it came from (a path or the variable's name).
        origin: String,
        /// What is wrong, e.g. "is empty".
        reason: String,
    },

    /// Any other I/O error.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

impl SecureError {
    /// Builds [`SecureError::File`].
    pub(crate) fn file(action: &'static str, path: &std::path::Path, source: io::Error) -> Self {
        SecureError::File {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}
