//! What the machine tells its caller: events, offers, body checks, and the pieces of a body the
//! caller moves itself (PROTOCOL.md §4-§6).

use crate::code::Code;
use crate::digest::Digest;
use crate::entry::{Entry, EntryKind};
use crate::name::{Name, NameError};
use crate::wire::{Timestamp, FRAME_HEADER_LEN};

/// Identifies one file (upload or download) or listing within a connection; chosen by the
/// client.
pub type FileId = u64;

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

/// The version-2 parts of an OFFER, beyond its [`FileInfo`] (PROTOCOL.md §4.2). The default
/// is a plain file offer, which every version carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct OfferOptions {
    /// A folder (no size, no digest, no body; PROTOCOL.md §4.9) or a file.
    pub kind: EntryKind,
    /// The whole file's BLAKE3, so that the receiver compares contents rather than size and
    /// mtime (`--checksum`; PROTOCOL.md §4.8). Needs a known size.
    pub digest: Option<Digest>,
    /// Version 3: an early offer (PROTOCOL.md §4.14), whose body follows at once without
    /// waiting for ACCEPT. A file of a known size of at most
    /// [`EARLY_MAX`](crate::wire::EARLY_MAX) bytes.
    pub early: bool,
}

impl OfferOptions {
    /// A folder offer: the receiver creates the folder and answers with RESULT.
    #[must_use]
    pub fn folder() -> Self {
        Self {
            kind: EntryKind::Folder,
            digest: None,
            early: false,
        }
    }

    /// A file offer that carries its whole-file digest.
    #[must_use]
    pub fn with_digest(digest: Digest) -> Self {
        Self {
            kind: EntryKind::File,
            digest: Some(digest),
            early: false,
        }
    }

    /// The same file offer, early (version 3, PROTOCOL.md §4.14):
    /// [`Connection::offer_with`](crate::Connection::offer_with) queues the OFFER and BEGIN
    /// (from 0) at once, and the caller sends the whole body and END without waiting for
    /// [`Event::Accepted`], for which it then does nothing.
    #[must_use]
    pub fn early(self) -> Self {
        Self {
            early: true,
            ..self
        }
    }
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

/// A file or folder the peer offers to send.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
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
    /// File or folder (version 2). A folder is answered with
    /// [`Connection::finish`](crate::Connection::finish) or a refusal, never accepted.
    pub kind: EntryKind,
    /// The sender's whole-file digest, if it sent one (version 2, `--checksum`).
    pub digest: Option<Digest>,
    /// An early offer (version 3, PROTOCOL.md §4.14): its body follows at once. The machine
    /// reads no further until it is answered; on a refusal it drops the body itself, and an
    /// acceptance always starts at 0 (a resume prefix is ignored).
    pub early: bool,
}

impl Offer {
    /// The unchanged-file check of PROTOCOL.md §4.8 against a file the receiver holds under
    /// this name, of `size` bytes modified at `mtime`: with a digest in the offer, compares it
    /// with `digest()` (called only when the sizes agree: the caller hashes its file, or
    /// takes a cached digest); otherwise the size and mtime must both be offered and equal.
    /// `Ok(true)` means: answer [`Code::Unchanged`] (version 2 only).
    pub fn unchanged<E>(
        &self,
        size: u64,
        mtime: Timestamp,
        digest: impl FnOnce() -> Result<Digest, E>,
    ) -> Result<bool, E> {
        if self.kind != EntryKind::File || self.size != Some(size) {
            return Ok(false);
        }
        match self.digest {
            Some(d) => Ok(digest()? == d),
            None => Ok(self.mtime == Some(mtime)),
        }
    }
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
    /// The peer accepted our offer: call [`Connection::begin`](crate::Connection::begin) with the hashed local prefix
    /// (an early offer: nothing to do, its body went out already, offset 0).
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
    /// Server (version 2): the client asks what the server holds. Answer with
    /// [`Connection::list_page`](crate::Connection::list_page) as often as needed, then
    /// [`Connection::listed`](crate::Connection::listed), or [`Connection::refuse`](crate::Connection::refuse).
    List {
        /// Request id.
        id: FileId,
        /// The validated path (`None`: the root), or why it is not acceptable.
        path: Result<Option<Name>, BadName>,
        /// Everything under the path, not only its first level.
        recursive: bool,
    },
    /// Client (version 2): one page of a listing, already checked against the rules of
    /// PROTOCOL.md §4.11 (the path itself first, then only what lies under it).
    Entries {
        /// The LIST's id.
        id: FileId,
        /// At most one control frame's worth of entries.
        entries: Vec<Entry>,
    },
    /// Client (version 2): the listing is complete.
    Listed {
        /// The LIST's id.
        id: FileId,
        /// Entries delivered in [`Event::Entries`] for this listing.
        count: u64,
        /// Entries the server left out (special files, unreadable folders, unsafe names).
        skipped: u64,
    },
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
