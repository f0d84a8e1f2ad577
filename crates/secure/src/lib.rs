//! # ferry-secure
//!
//! TLS and authentication for ferry's blocking adapters. The protocol crate stays sans-IO:
//! this crate only turns a `TcpStream` into a [`Stream`] (`Read + Write`) that
//! `ferry_proto::Driver` runs over, and checks tokens and failed attempts.
//!
//! - **TLS 1.3 only**, rustls with the `ring` provider (builds with a C compiler alone).
//!   Server: [`ServerTls::from_pem_files`] (`--tls-cert`/`--tls-key`) or
//!   [`ServerTls::self_signed`] (`--tls-self-signed`, kept in a state folder), then [`accept`]
//!   or [`accept_any`]. Client: [`ClientTls::new`] with a [`Trust`] (Mozilla roots, a CA
//!   file, a pinned [`Fingerprint`], or a known-hosts file for trust on first use), then
//!   [`connect`].
//! - **One port for plain and TLS**: a TLS connection starts with `0x16`
//!   ([`looks_like_tls`]), which neither ferry framing (magic `0x00`) nor a seed name can.
//!   When TLS is required, [`accept_any`] refuses plain connections
//!   ([`SecureError::PlainRefused`]); the server logs that and closes.
//! - **Fingerprints** are `SHA256:` and 64 lowercase hex digits of the leaf certificate's DER.
//! - **Tokens** ([`Token`]): from a file no one else can read, or `FERRY_TOKEN`; compared in
//!   constant time; never printed.
//! - **Failed attempts** are limited per source ([`FailureLimiter`]), with time passed in.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod client;
mod error;
mod fingerprint;
mod limiter;
mod server;
mod stream;
mod token;

use std::path::Path;
use std::sync::Arc;

pub use client::{connect, host_key, ClientTls, KnownHosts, Trust};
pub use error::SecureError;
pub use fingerprint::Fingerprint;
pub use limiter::{source_key, FailureLimiter, SharedFailureLimiter};
pub use server::{
    accept, accept_any, detect, looks_like_tls, peek_first_byte, Detected, ServerTls, CERT_FILE,
    KEY_FILE, TLS_HANDSHAKE_BYTE,
};
pub use stream::{Stream, Transport};
pub use token::{Token, MAX_TOKEN_LEN, TOKEN_ENV};

/// Re-exported so callers can name rustls types without a version mismatch.
pub use rustls;

/// The crypto provider used everywhere: rustls's `ring` provider.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Refuses a secret file that group or others can access (Unix; elsewhere always fine).
fn check_private_file(path: &Path) -> Result<(), SecureError> {
    let meta = std::fs::metadata(path).map_err(|e| SecureError::file("inspect", path, e))?;
    check_private_metadata(path, &meta)
}

/// Like [`check_private_file`], on metadata already read.
fn check_private_metadata(path: &Path, meta: &std::fs::Metadata) -> Result<(), SecureError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(SecureError::InsecurePermissions {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    #[cfg(not(unix))]
    let _ = (path, meta);
    Ok(())
}
