//! What the machine tells its caller: events, offers, body checks, and the pieces of a body the
//! caller moves itself (PROTOCOL.md §4-§6).

use crate::code::Code;
use crate::conn::FileId;
use crate::digest::Digest;
use crate::name::{Name, NameError};
use crate::wire::{Timestamp, FRAME_HEADER_LEN};

/// What a sender says about a file it offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// Where the file goes, relative to the receiver's folder.
    pub name: Name,
    /// Size in bytes; `None` for a stream of unknown length (sent in DATA frames until END).
    pub size: Option<u64>,
    /// Modification time, to be restored by the receiver.
    pub mtime: Option<Timestamp>,
    /// Unix permission bits.
    pub mode: Option<u32>,
}

/// A name a peer sent that failed validation; `raw` is escaped for printing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{raw}: {error}")]
pub struct BadName {
    /// The name as received, escaped.
    pub raw: String,
    /// Why it was refused.
    pub error: NameError,
}

/// A file the peer offers to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// File id, to pass to [`Connection::accept`](crate::Connection::accept) or [`Connection::refuse`](crate::Connection::refuse).
    pub id: FileId,
    /// The validated name, or why it is not acceptable (then refuse with [`Code::BadName`]).
    pub name: Result<Name, BadName>,
    /// Size in bytes; `None` for a stream.
    pub size: Option<u64>,
    /// Modification time.
    pub mtime: Option<Timestamp>,
    /// Unix permission bits.
    pub mode: Option<u32>,
}

/// How a received body compares with the sender's digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyCheck {
    /// The digest matches: publish.
    Verified(Digest),
    /// The digest differs: discard.
    Mismatch {
        /// What the sender computed.
        expected: Digest,
        /// What arrived.
        actual: Digest,
    },
    /// Seed framing: nothing to compare against; the digest of what arrived.
    Unverified(Digest),
}

/// Something the peer did, in the order it did it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Server: a client opened in ferry framing. Answer with [`Connection::welcome`](crate::Connection::welcome) or
    /// [`Connection::close_with_error`](crate::Connection::close_with_error) before acting on anything after it.
    Hello {
        /// The version both sides will speak.
        version: u16,
        /// The authentication token, if the client sent one.
        token: Option<Vec<u8>>,
    },
    /// Client: the server accepted the connection.
    Welcome {
        /// The version both sides speak.
        version: u16,
    },
    /// The peer offers a file: accept or refuse it, in order.
    Offer(Offer),
    /// Server: the client asks for a file: [`Connection::serve`](crate::Connection::serve) or [`Connection::refuse`](crate::Connection::refuse).
    Get {
        /// File id.
        id: FileId,
        /// The validated name, or why it is not acceptable.
        name: Result<Name, BadName>,
    },
    /// The peer accepted our offer: call [`Connection::begin`](crate::Connection::begin) with the hashed local prefix.
    Accepted {
        /// File id.
        id: FileId,
        /// Bytes the peer already has.
        offset: u64,
        /// Digest of those bytes.
        prefix: Digest,
    },
    /// The peer refused our offer or our GET.
    Refused {
        /// File id.
        id: FileId,
        /// Why.
        code: Code,
        /// The peer's words.
        reason: String,
    },
    /// A body starts: at 0 (truncate what you kept) or at the accepted offset (append).
    Begin {
        /// File id.
        id: FileId,
        /// Offset of the first body byte.
        from: u64,
    },
    /// A body is complete; answer with [`Connection::finish`](crate::Connection::finish) once it is stored or dropped.
    End {
        /// File id.
        id: FileId,
        /// Total file size.
        size: u64,
        /// Digest comparison.
        check: BodyCheck,
    },
    /// The sender gave up on an accepted file: drop what was received. No RESULT follows.
    Cancelled {
        /// File id.
        id: FileId,
        /// The sender's words.
        reason: String,
    },
    /// The receiver's final word on a file we sent.
    Result {
        /// File id.
        id: FileId,
        /// [`Code::Stored`] or why not.
        code: Code,
        /// Stored name on success, reason otherwise.
        detail: String,
    },
    /// The peer sent a fatal ERROR and will close.
    PeerError {
        /// Why.
        code: Code,
        /// The peer's words.
        reason: String,
    },
    /// The peer closed the stream at a clean point.
    Closed,
}

/// Raw body bytes that come next on the wire, to be moved by the caller and reported through
/// [`Connection::body_received`](crate::Connection::body_received) (PROTOCOL.md §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming {
    /// Exactly this many bytes (the rest of the current DATA frame).
    Bytes(u64),
    /// Everything until the peer closes (seed framing).
    UntilEof,
}

/// The header of a DATA frame the caller writes itself, followed by exactly `len` raw bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "the header must be written before the body bytes"]
pub struct DataHeader {
    pub(crate) bytes: [u8; FRAME_HEADER_LEN],
    pub(crate) len: usize,
}

impl DataHeader {
    /// The bytes to write (empty in seed framing, which has no frames).
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}
