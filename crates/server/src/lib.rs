//! # ferry-server
//!
//! A blocking TCP server for the ferry protocol (and the lab report's seed framing), built on
//! [`ferry_proto`]: every byte is framed and parsed by the proto crate; this crate owns the
//! sockets, threads, timeouts and files.
//!
//! ```no_run
//! use ferry_server::{Config, Server};
//!
//! let mut config = Config::default();
//! config.listen = "127.0.0.1:0".parse().unwrap();
//! config.dir = "/tmp/inbox".into();
//! let server = Server::bind(config)?.spawn()?;
//! println!("listening on {}", server.addr());
//! // ... clients connect ...
//! server.shutdown()?;
//! # Ok::<(), ferry_server::ServerError>(())
//! ```
//!
//! What it guarantees: names are validated by the proto crate and land only under the storage
//! folder without following a symbolic link (every name is resolved relative to a descriptor of
//! that folder); each upload is written to a temp or partial file in the server's private
//! `.ferry-state` folder and published atomically once its size and BLAKE3 digest are
//! verified, so a failed, truncated or aborted transfer never shows under its final name; an
//! interrupted ferry upload is kept and resumed from where it stopped.
//!
//! With a client speaking protocol version 2 it also answers files it already holds as
//! unchanged (same size and mtime, or the same digest, with a bounded digest cache), stores
//! folder offers with their mode and mtime, and streams listings in bounded pages; see the
//! crate's README. [`Config::portable_names`] refuses names Windows cannot store.
//!
//! TLS and authentication come from [`ferry_secure`]: with [`Config::tls`] set, every
//! connection must open with a TLS 1.3 handshake (plain ferry and seed connections are refused
//! with a log line), and the handshake must be done within [`Config::header_timeout`]; with
//! [`Config::token`] set, a HELLO without the right token is answered with
//! [`ferry_proto::Code::Denied`] and the connection closed before anything reaches the disk,
//! the seed framing is refused, and a source with [`Config::max_auth_failures`] failures
//! within [`Config::auth_window`] is refused before its handshake for that long.
//!
//! ```no_run
//! use ferry_server::{Config, Server};
//! use ferry_secure::{ServerTls, Token};
//!
//! let tls = ServerTls::self_signed("/var/lib/ferry/tls".as_ref())?;
//! println!("pin {}", tls.fingerprint());
//! let config = Config {
//!     listen: "0.0.0.0:8386".parse().unwrap(),
//!     tls: Some(tls),
//!     token: Some(Token::from_file("/etc/ferry/token".as_ref())?),
//!     ..Config::default()
//! };
//! Server::bind(config)?.run()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod access;
mod commit;
mod config;
pub mod config_file;
mod error;
mod gate;
pub mod hooks;
mod locks;
pub mod logger;
pub mod logging;
mod metrics;
mod openings;
mod paths;
pub mod proxy;
mod server;
mod session;
mod slots;
mod sources;
mod storage;
mod stream;
mod throttle;
pub mod units;
mod wake;

pub use access::{Credential, Permissions};
pub use config::{Config, ObjectStore, Overwrite, DEFAULT_PORT};
pub use error::ServerError;
pub use server::{Server, ServerHandle, ShutdownHandle};
