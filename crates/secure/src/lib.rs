//! # ferry-secure
//!
//! TLS and authentication for ferry's blocking adapters. The protocol crate stays sans-IO:
//! this crate only turns a byte transport (a `TcpStream`, or an adapter's wrapper around one,
//! see [`Transport`]) into a [`Stream`] (`Read + Write`) that `ferry_proto::Driver` runs
//! over, and checks tokens and failed attempts.
//!
//! - **TLS 1.3 only**, rustls with the `ring` provider (builds with a C compiler alone).
//!   Server: [`ServerTls::from_pem_files`] (`--tls-cert`/`--tls-key`) or
//!   [`ServerTls::self_signed`] (`--tls-self-signed`, kept in a state folder), then [`accept`]
//!   or [`accept_any`]. Client: [`ClientTls::new`] with a [`Trust`] (Mozilla roots, a CA
//!   file, a pinned [`Fingerprint`], or a known-hosts file for trust on first use), then
//!   [`connect`].
//! - **One port for plain and TLS**: a TLS connection starts with `0x16`
//!   ([`looks_like_tls`]), which neither ferry framing (magic `0x00`) nor a seed name can.
//!   When TLS is required, [`detect`]/[`accept_any`] refuse plain connections
//!   ([`SecureError::PlainRefused`]); the server logs that and closes.
//! - **Fingerprints** are `SHA256:` and 64 lowercase hex digits of the leaf certificate's DER
//!   (`openssl x509 -noout -fingerprint -sha256` shows the same digits with colons, which
//!   `--pin` also accepts).
//! - **Tokens** ([`Token`]): from a file no one else can read, or `FERRY_TOKEN`; compared in
//!   constant time; never printed.
//! - **Failed attempts** are limited per source ([`FailureLimiter`]), with time passed in.
//! - **Bounded waits** for an adapter's own [`Transport`] around a `TcpStream`: [`timed`] runs
//!   each socket call within a [`timed::Budget`] (the client's per-wait budget, the server's
//!   deadlines and stop checks).
//!
//! ## Server recipe
//!
//! ```text
//! startup:
//!   --tls-cert C --tls-key K  -> tls = Some(ServerTls::from_pem_files(C, K)?)
//!   --tls-self-signed         -> tls = Some(ServerTls::self_signed(&state_dir)?)
//!                                (default_state_dir() suggests one); print
//!                                "TLS certificate fingerprint: {tls.fingerprint()}" (and whether
//!                                tls.generated()) so clients can --pin it
//!   --token-file F            -> token = Some(Token::from_file(F)?)   (refuses a group/other-
//!                                readable file; never accept a token on the command line)
//!   limiter = SharedFailureLimiter::default()  (5 failures/min per IPv4 or IPv6 /64, 80
//!                                per IPv6 /48, a global bound past 4096 counters)
//!   require_tls = tls.is_some()  (or a flag: plain allowed only if the operator says so)
//! per connection (before a byte reaches the disk):
//!   if !limiter.check(peer.ip(), Instant::now()) -> log, close
//!   set a read timeout; match detect(tls.is_some(), require_tls, &tcp):
//!     Err(e)            -> log e (PlainRefused is the "seed framing refused" line), close
//!     Ok(Detected::Tls) -> stream = accept(tls, tcp or the Guarded wrapper)?
//!                          (on Err: log; optionally limiter.record_failure)
//!     Ok(Plain)         -> stream = Stream::plain(..)
//!   Driver::new(stream, Connection::server()); on Event::Hello { token: offered, .. }:
//!     if let Some(t) = &token, !t.verify(offered.as_deref()):
//!        limiter.record_failure(ip, Instant::now());
//!        conn.close_with_error(Code::Denied, "authentication failed"); flush; close
//!     else limiter.record_success(ip); conn.welcome()
//!   with a token configured, a seed-framing connection (no HELLO) is refused and logged
//!   at end: stream.shutdown_write() (TLS close_notify), then close.
//! ```
//!
//! ## Client recipe
//!
//! ```text
//!   --tls               -> ClientTls::new(Trust::WebPkiRoots)
//!   --ca FILE           -> ClientTls::new(Trust::CaFile(FILE))           (implies --tls)
//!   --pin SHA256:...    -> ClientTls::new(Trust::Pin(arg.parse()?))      (implies --tls)
//!   --known-hosts FILE  -> ClientTls::new(Trust::KnownHosts(FILE))       (implies --tls;
//!                          default_known_hosts_path() suggests a FILE)
//!   token = Token::for_client(--token-file)?   (the file wins over FERRY_TOKEN)
//!   tcp = connect with timeouts; stream = connect(&tls, host, tcp)?  (or Stream::plain(tcp))
//!   if stream.newly_trusted(): tell the user "trusted HOST:PORT on first use: {fingerprint}"
//!   Connection::client(token.as_ref().map(Token::as_bytes)); use the Driver as usual;
//!   when done sending: stream.shutdown_write(); read to the end.
//!   Warn if a token is sent without TLS.
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]
// A `PathBuf` is a word longer on Windows, which takes `SecureError` just past clippy's size
// threshold there; the errors are as on Unix and are returned once per connection.
#![cfg_attr(windows, allow(clippy::result_large_err))]

mod client;
mod error;
mod fingerprint;
mod handshake;
mod limiter;
mod record;
mod server;
mod stream;
pub mod timed;
mod tls;
mod token;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use client::{connect, host_key, ClientTls, KnownHosts, Trust};
pub use error::SecureError;
pub use fingerprint::Fingerprint;
pub use limiter::{
    source_key, FailureLimiter, SharedFailureLimiter, OVERFLOW_BUCKETS, OVERFLOW_FACTOR,
    SITE_FACTOR,
};
pub use server::{
    accept, accept_any, detect, looks_like_tls, peek_first_byte, Detected, ServerTls, CERT_FILE,
    KEY_FILE, TLS_HANDSHAKE_BYTE,
};
pub use stream::{Stream, Transport};
pub use token::{
    check_private_secret_file, Token, TokenDigest, MAX_TOKEN_LEN, TOKEN_DIGEST_PREFIX, TOKEN_ENV,
};

/// Re-exported so callers can name rustls types without a version mismatch.
pub use rustls;

/// A per-user folder for the server's self-signed certificate: `$XDG_STATE_HOME/ferry/tls`,
/// else `$HOME/.local/state/ferry/tls`; `None` without either variable.
pub fn default_state_dir() -> Option<PathBuf> {
    base_dir("XDG_STATE_HOME", ".local/state").map(|d| d.join("ferry").join("tls"))
}

/// A per-user known-hosts file: `$XDG_CONFIG_HOME/ferry/known_hosts`, else
/// `$HOME/.config/ferry/known_hosts`; `None` without either variable.
pub fn default_known_hosts_path() -> Option<PathBuf> {
    base_dir("XDG_CONFIG_HOME", ".config").map(|d| d.join("ferry").join("known_hosts"))
}

fn base_dir(xdg_var: &str, home_rel: &str) -> Option<PathBuf> {
    let absolute = |v: std::ffi::OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    std::env::var_os(xdg_var).and_then(absolute).or_else(|| {
        std::env::var_os("HOME")
            .and_then(absolute)
            .map(|h| h.join(home_rel))
    })
}

/// The crypto provider used everywhere: rustls's `ring` provider, preferring AES-128-GCM.
///
/// ring's default order puts AES-256-GCM first; AES-128-GCM (ten rounds instead of fourteen)
/// seals and opens bulk data about a quarter faster with AES-NI and is what OpenSSH and Go
/// prefer too. The other suites stay, in their order, for peers that want them.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    let aes128 = rustls::CipherSuite::TLS13_AES_128_GCM_SHA256;
    provider.cipher_suites.sort_by_key(|s| s.suite() != aes128);
    Arc::new(provider)
}

/// Refuses a secret file that group or others can access (Unix permission bits). On Windows
/// nothing is checked: access there is ruled by the file's ACL, which the standard library
/// cannot read; keep the file in your own profile folder, which others cannot read.
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

#[cfg(test)]
mod tests {
    use rustls::CipherSuite as S;

    /// Both sides offer AES-128-GCM first (a rustls server follows the client's order); every
    /// TLS 1.3 suite of the provider stays on offer.
    #[test]
    fn aes_128_gcm_is_preferred_and_nothing_is_dropped() {
        let suites: Vec<S> = super::provider()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        assert_eq!(suites[0], S::TLS13_AES_128_GCM_SHA256);
        for s in [
            S::TLS13_AES_256_GCM_SHA384,
            S::TLS13_CHACHA20_POLY1305_SHA256,
        ] {
            assert!(suites.contains(&s), "{s:?} is still offered");
        }
    }
}
