//! # ferry-client
//!
//! The client side of ferry: upload files and folders ([`upload::send`]), download them
//! ([`download::get`]) and speak the seed framing to the lab report's server
//! ([`legacy::send`]). Every function here drives a [`ferry_proto::Driver`] over a
//! [`ferry_secure::Stream`] (TCP, with TLS 1.3 when [`Options::tls`] is set) and acts on its
//! events; no byte is parsed in this crate. With [`Options::retries`], uploads and downloads
//! that fail on the network are taken up again on new connections and resume.
//!
//! Results come back as an [`Outcome`]: one [`FileReport`] per file and, when the whole
//! conversation failed, the [`ClientError`] that ended it. Progress and per-file results are
//! also passed to an [`Observer`] as they happen (the `ferry` binary draws progress bars and
//! prints JSON lines from it).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod body;
pub mod cli;
mod completions;
pub mod download;
mod error;
mod flights;
mod folders;
mod interrupt;
mod landing;
pub mod legacy;
pub mod list;
mod net;
mod output;
mod plan;
mod platform;
mod precheck;
mod progress;
mod read_ahead;
mod report;
mod retry;
mod session;
mod shell;
mod sniff;
mod stdout;
mod target;
mod timed;
pub mod upload;
pub mod walk;

pub use error::{exit, ClientError};
pub use net::{Backoff, Options, KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_PROBES};
pub use report::{FileReport, Observer, Outcome, Retry, Skipped, Status};
pub use target::{Target, TargetError, DEFAULT_PORT};

/// Size of the buffer files are read into and written from: one DATA frame per chunk.
const CHUNK: usize = 1 << 20;
