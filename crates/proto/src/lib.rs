//! # ferry-proto
//!
//! Sans-IO state machines for the ferry file-transfer protocol (`docs/PROTOCOL.md`) and for the
//! seed framing it grew from (`<name>\n` then the body until close).
//!
//! A [`Connection`] is a plain value: the caller feeds it received bytes
//! ([`Connection::handle_input`], [`Connection::handle_eof`]), takes [`Event`]s out
//! ([`Connection::poll_event`]), issues commands (offer, accept, begin, end, ...) and writes
//! out what [`Connection::poll_transmit`] holds. There are no sockets, files, threads or clocks
//! inside; timeouts and storage belong to the caller.
//!
//! Body bytes are never forced through the machine in small copies: [`Connection::incoming`]
//! says how many raw body bytes come next, the caller moves them with its own buffers and
//! reports them by reference ([`Connection::body_received`]), which only hashes them. The same
//! holds when sending ([`Connection::data_frame`], [`Connection::body_sent`]).
//!
//! Every length read from the wire is capped before anything is buffered, arithmetic on wire
//! values is checked, and hostile input yields a [`ProtocolError`], never a panic.
//!
//! [`Driver`] runs a connection over any `Read + Write` in one call per step.
//!
//! Two protocol versions are spoken (PROTOCOL.md §4.1): version 1, and version 2, which adds
//! the unchanged-file check (§4.8), folders as entries (§4.9) and LIST (§4.10). Both ends
//! negotiate the highest common version ([`Connection::version`]); a version-2 feature is
//! never sent to, nor accepted from, a peer that negotiated version 1.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod code;
mod conn;
mod digest;
mod driver;
mod entry;
mod error;
mod event;
mod input;
pub mod lifecycle;
pub mod name;
mod parts;
pub mod wire;

pub use code::Code;
pub use conn::{
    BodyQueued, Connection, Framing, Side, WriteParts, FLUSH_AT, INLINE_BODY_MAX, MAX_PIPELINE,
};
pub use digest::{Digest, Hasher, DIGEST_LEN};
pub use driver::{DriveError, Driver, Step, READ_BUF_LEN};
pub use entry::{Entry, EntryKind};
pub use error::{Error, ProtocolError, UsageError};
pub use event::{
    BadName, BodyCheck, DataHeader, Event, FileId, FileInfo, Incoming, Offer, OfferOptions,
};
pub use input::{BodyRead, Input};
pub use name::{Name, NameError};
pub use parts::{hash_part, PartDigest};
pub use wire::Timestamp;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
