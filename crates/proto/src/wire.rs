//! Frame encoding and decoding for the ferry framing (PROTOCOL.md §3-§4). Pure functions.

use crate::code::Code;
use crate::digest::{Digest, DIGEST_LEN};
use crate::entry::{Entry, EntryKind};
use crate::error::ProtocolError;
use crate::name::{Name, MAX_NAME_LEN};

/// The eight bytes that open a ferry-framing connection. The NUL first byte can never start a
/// seed-framing name, which is how a server tells the framings apart (PROTOCOL.md §2).
pub const MAGIC: [u8; 8] = *b"\0ferry\r\n";
/// The highest protocol version this crate speaks (PROTOCOL.md §4.1).
pub const VERSION: u16 = 3;
/// The lowest protocol version this crate speaks.
pub const MIN_VERSION: u16 = 1;
/// Bytes in a frame header: kind (1) and payload length (4, big-endian).
pub const FRAME_HEADER_LEN: usize = 5;
/// Largest payload of any control frame (every frame but DATA).
pub const MAX_CONTROL_PAYLOAD: u32 = 8 * 1024;
/// Longest REFUSE reason, RESULT detail or ERROR reason, in bytes.
pub const MAX_REASON_LEN: usize = 1024;
/// Longest authentication token, in bytes.
pub const MAX_TOKEN_LEN: usize = 1024;
/// Largest payload of one DATA frame.
pub const MAX_DATA_PAYLOAD: u32 = u32::MAX;
/// Largest file an early OFFER may announce: its body follows the OFFER without waiting for
/// ACCEPT (version 3, PROTOCOL.md §4.14).
pub const EARLY_MAX: u64 = 64 * 1024;
/// Bytes of an ENTRIES payload before its entries: the LIST's id.
pub(crate) const ENTRIES_HEADER_LEN: usize = 8;

/// An ACCEPT frame: header, id, offset, prefix digest.
const ACCEPT_LEN: usize = FRAME_HEADER_LEN + 8 + 8 + DIGEST_LEN;
/// A REFUSE or RESULT frame without its text: header, id, code, text length.
const ANSWER_FIXED_LEN: usize = FRAME_HEADER_LEN + 8 + 2 + 2;
/// An OFFER frame without its name, digest included: header, id, flags, size, mtime (12),
/// mode, name length, digest.
const OFFER_FIXED_LEN: usize = FRAME_HEADER_LEN + 8 + 1 + 8 + 12 + 4 + 2 + DIGEST_LEN;

/// The most control-frame bytes a peer sends about one file besides one text field (a name,
/// a reason or a stored name, at most [`MAX_NAME_LEN`] bytes): for an upload its ACCEPT and
/// RESULT (or a REFUSE), for a GET its OFFER with a digest (or a REFUSE). A client that
/// writes without reading budgets its files' replies with it (the peer's replies must fit in
/// the socket buffers).
pub const REPLY_OVERHEAD: usize = max(ACCEPT_LEN + ANSWER_FIXED_LEN, OFFER_FIXED_LEN);

const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

/// Frame kinds (PROTOCOL.md §4).
pub mod kind {
    /// Client opens: versions and token.
    pub const HELLO: u8 = 0x01;
    /// Server accepts the connection.
    pub const WELCOME: u8 = 0x02;
    /// Sender announces a file.
    pub const OFFER: u8 = 0x03;
    /// Receiver accepts an offer, with a resume offset.
    pub const ACCEPT: u8 = 0x04;
    /// Receiver refuses an offer, or server refuses a GET.
    pub const REFUSE: u8 = 0x05;
    /// Sender starts a body.
    pub const BEGIN: u8 = 0x06;
    /// Raw body bytes.
    pub const DATA: u8 = 0x07;
    /// Sender ends a body with its digest.
    pub const END: u8 = 0x08;
    /// Receiver's final word on a file.
    pub const RESULT: u8 = 0x09;
    /// Client asks for a file.
    pub const GET: u8 = 0x0A;
    /// Sender abandons an accepted file.
    pub const CANCEL: u8 = 0x0B;
    /// Fatal error; the sender closes after it.
    pub const ERROR: u8 = 0x0C;
    /// Client asks what the server holds (version 2).
    pub const LIST: u8 = 0x0D;
    /// Server sends one page of a listing (version 2).
    pub const ENTRIES: u8 = 0x0E;
    /// Server ends a listing (version 2).
    pub const LISTED: u8 = 0x0F;
}

/// Bits of an OFFER's `flags` byte (PROTOCOL.md §4.2).
pub mod offer_flag {
    /// `size` is known.
    pub const SIZE: u8 = 1 << 0;
    /// `mtime_*` is present.
    pub const MTIME: u8 = 1 << 1;
    /// `mode` is present.
    pub const MODE: u8 = 1 << 2;
    /// The entry is a folder: no size, no digest, no body (version 2).
    pub const FOLDER: u8 = 1 << 3;
    /// A whole-file digest follows the name (version 2).
    pub const DIGEST: u8 = 1 << 4;
    /// The body follows at once, without waiting for ACCEPT (version 3, PROTOCOL.md §4.14).
    pub const EARLY: u8 = 1 << 5;
    /// Every bit defined so far.
    pub const ALL: u8 = SIZE | MTIME | MODE | FOLDER | DIGEST | EARLY;
}

/// Bits of a LIST's `flags` byte (PROTOCOL.md §4.10).
pub mod list_flag {
    /// List everything under the path, not only its first level.
    pub const RECURSIVE: u8 = 1 << 0;
}

/// A file's modification time: seconds and nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timestamp {
    /// Seconds since 1970-01-01T00:00:00Z (negative before).
    pub secs: i64,
    /// Nanoseconds, below 1,000,000,000.
    pub nanos: u32,
}

/// A decoded control frame.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Frame {
    /// HELLO.
    Hello {
        /// Lowest version the client speaks.
        min: u16,
        /// Highest version the client speaks.
        max: u16,
        /// Authentication token; empty when none.
        token: Vec<u8>,
    },
    /// WELCOME.
    Welcome {
        /// The version chosen.
        version: u16,
    },
    /// OFFER.
    Offer {
        /// File id.
        id: u64,
        /// File or folder (a folder needs version 2).
        kind: EntryKind,
        /// Size in bytes; `None` for a stream of unknown length, or a folder.
        size: Option<u64>,
        /// Modification time.
        mtime: Option<Timestamp>,
        /// Unix permission bits.
        mode: Option<u32>,
        /// Raw name (validated by the caller of the decoder).
        name: String,
        /// BLAKE3 of the whole file, for the receiver's content check (version 2).
        digest: Option<Digest>,
        /// The early flag (version 3, PROTOCOL.md §4.14): a file of a known size of at most
        /// [`EARLY_MAX`] bytes, whose BEGIN (from 0), DATA and END follow at once.
        early: bool,
    },
    /// ACCEPT.
    Accept {
        /// File id.
        id: u64,
        /// Bytes the receiver already has.
        offset: u64,
        /// Digest of those bytes.
        prefix: Digest,
    },
    /// REFUSE.
    Refuse {
        /// File id.
        id: u64,
        /// Why.
        code: Code,
        /// Human-readable reason.
        reason: String,
    },
    /// BEGIN.
    Begin {
        /// File id.
        id: u64,
        /// Offset the body starts at: 0 or the accepted offset.
        from: u64,
    },
    /// DATA header (the payload is raw body bytes, not decoded here).
    Data {
        /// Body bytes that follow.
        len: u32,
    },
    /// END.
    End {
        /// File id.
        id: u64,
        /// Total file size.
        size: u64,
        /// BLAKE3 of the whole file.
        digest: Digest,
    },
    /// RESULT.
    Result {
        /// File id.
        id: u64,
        /// Outcome.
        code: Code,
        /// Stored name on success, reason otherwise.
        detail: String,
    },
    /// GET.
    Get {
        /// File id chosen by the client.
        id: u64,
        /// Raw name.
        name: String,
    },
    /// CANCEL.
    Cancel {
        /// File id.
        id: u64,
        /// Why.
        reason: String,
    },
    /// ERROR.
    Error {
        /// Why.
        code: Code,
        /// Human-readable reason.
        reason: String,
    },
    /// LIST (version 2).
    List {
        /// Request id chosen by the client.
        id: u64,
        /// Everything under the path, not only its first level.
        recursive: bool,
        /// Raw path; empty for the root (validated by the caller of the decoder).
        path: String,
    },
    /// ENTRIES (version 2): one page of a listing, at least one entry.
    Entries {
        /// The LIST's id.
        id: u64,
        /// The entries, with validated names.
        entries: Vec<Entry>,
    },
    /// LISTED (version 2): the end of a listing.
    Listed {
        /// The LIST's id.
        id: u64,
        /// Entries sent in this listing's ENTRIES frames.
        count: u64,
        /// Entries the server left out (special files, unreadable folders, unsafe names).
        skipped: u64,
    },
}

impl Frame {
    /// The frame kind byte.
    #[must_use]
    pub fn kind(&self) -> u8 {
        match self {
            Frame::Hello { .. } => kind::HELLO,
            Frame::Welcome { .. } => kind::WELCOME,
            Frame::Offer { .. } => kind::OFFER,
            Frame::Accept { .. } => kind::ACCEPT,
            Frame::Refuse { .. } => kind::REFUSE,
            Frame::Begin { .. } => kind::BEGIN,
            Frame::Data { .. } => kind::DATA,
            Frame::End { .. } => kind::END,
            Frame::Result { .. } => kind::RESULT,
            Frame::Get { .. } => kind::GET,
            Frame::Cancel { .. } => kind::CANCEL,
            Frame::Error { .. } => kind::ERROR,
            Frame::List { .. } => kind::LIST,
            Frame::Entries { .. } => kind::ENTRIES,
            Frame::Listed { .. } => kind::LISTED,
        }
    }

    /// The version-2 feature this frame uses, if any, named for messages: such a frame is
    /// valid only once version 2 is negotiated (PROTOCOL.md §4.1). `None` for a frame every
    /// version defines.
    #[must_use]
    pub fn version_2_feature(&self) -> Option<&'static str> {
        match self {
            Frame::List { .. } => Some("the LIST frame"),
            Frame::Entries { .. } => Some("the ENTRIES frame"),
            Frame::Listed { .. } => Some("the LISTED frame"),
            Frame::Offer {
                kind: EntryKind::Folder,
                ..
            } => Some("a folder OFFER"),
            Frame::Offer {
                digest: Some(_), ..
            } => Some("an OFFER digest"),
            Frame::Refuse { code, .. } | Frame::Result { code, .. } if *code == Code::Unchanged => {
                Some("the code Unchanged")
            }
            _ => None,
        }
    }

    /// The feature of a later version this frame uses, if any, named for messages, and the
    /// version it needs: such a frame is valid only once that version is negotiated
    /// (PROTOCOL.md §4.1). `None` for a frame every version defines.
    #[must_use]
    pub fn needs_version(&self) -> Option<(&'static str, u16)> {
        match self {
            Frame::Offer { early: true, .. } => Some(("an early OFFER", 3)),
            _ => self.version_2_feature().map(|f| (f, 2)),
        }
    }

    /// Appends the encoded frame (header and payload; for DATA the header only) to `out`.
    ///
    /// Text fields must already respect their caps; the [`Connection`](crate::Connection)
    /// checks them before encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        if let Frame::Data { len } = self {
            out.extend_from_slice(&data_header(*len));
            return;
        }
        framed(out, self.kind(), |out| self.encode_payload(out));
    }

    fn encode_payload(&self, out: &mut Vec<u8>) {
        match self {
            Frame::Hello { min, max, token } => {
                put_u16(out, *min);
                put_u16(out, *max);
                put_bytes16(out, token);
            }
            Frame::Welcome { version } => put_u16(out, *version),
            Frame::Offer {
                id,
                kind,
                size,
                mtime,
                mode,
                name,
                digest,
                early,
            } => {
                put_u64(out, *id);
                out.push(
                    flag(*kind == EntryKind::Folder, offer_flag::FOLDER)
                        | flag(*early, offer_flag::EARLY)
                        | flag(size.is_some(), offer_flag::SIZE)
                        | flag(mtime.is_some(), offer_flag::MTIME)
                        | flag(mode.is_some(), offer_flag::MODE)
                        | flag(digest.is_some(), offer_flag::DIGEST),
                );
                put_u64(out, size.unwrap_or(0));
                put_timestamp(out, mtime.unwrap_or(Timestamp { secs: 0, nanos: 0 }));
                put_u32(out, mode.unwrap_or(0));
                put_bytes16(out, name.as_bytes());
                if let Some(d) = digest {
                    out.extend_from_slice(&d.0);
                }
            }
            Frame::Accept { id, offset, prefix } => {
                put_u64(out, *id);
                put_u64(out, *offset);
                out.extend_from_slice(&prefix.0);
            }
            Frame::Refuse { id, code, reason }
            | Frame::Result {
                id,
                code,
                detail: reason,
            } => {
                put_u64(out, *id);
                put_u16(out, code.to_u16());
                put_bytes16(out, reason.as_bytes());
            }
            Frame::Begin { id, from } => {
                put_u64(out, *id);
                put_u64(out, *from);
            }
            Frame::Data { .. } => {}
            Frame::End { id, size, digest } => {
                put_u64(out, *id);
                put_u64(out, *size);
                out.extend_from_slice(&digest.0);
            }
            Frame::Get { id, name } | Frame::Cancel { id, reason: name } => {
                put_u64(out, *id);
                put_bytes16(out, name.as_bytes());
            }
            Frame::Error { code, reason } => {
                put_u16(out, code.to_u16());
                put_bytes16(out, reason.as_bytes());
            }
            Frame::List {
                id,
                recursive,
                path,
            } => {
                put_u64(out, *id);
                out.push(if *recursive { list_flag::RECURSIVE } else { 0 });
                put_bytes16(out, path.as_bytes());
            }
            Frame::Entries { id, entries } => {
                put_u64(out, *id);
                put_entries(out, entries);
            }
            Frame::Listed { id, count, skipped } => {
                put_u64(out, *id);
                put_u64(out, *count);
                put_u64(out, *skipped);
            }
        }
    }

    /// Decodes the payload of a control frame of kind `kind` (DATA is not decoded here).
    pub fn decode(kind: u8, payload: &[u8]) -> Result<Frame, ProtocolError> {
        let name = frame_name(kind).ok_or(ProtocolError::UnknownFrame(kind))?;
        let mut r = Reader {
            buf: payload,
            frame: name,
        };
        let frame = match kind {
            kind::HELLO => Frame::Hello {
                min: r.u16()?,
                max: r.u16()?,
                token: r.bytes16(MAX_TOKEN_LEN)?.to_vec(),
            },
            kind::WELCOME => Frame::Welcome { version: r.u16()? },
            kind::OFFER => {
                let id = r.u64()?;
                let flags = r.u8()?;
                let on = |bit: u8| flags & bit != 0;
                if flags & !offer_flag::ALL != 0 {
                    return Err(r.malformed("unknown flag bits"));
                }
                if on(offer_flag::FOLDER) && on(offer_flag::SIZE | offer_flag::DIGEST) {
                    return Err(r.malformed("a folder has no size and no digest"));
                }
                if on(offer_flag::DIGEST) && !on(offer_flag::SIZE) {
                    return Err(r.malformed("a digest needs a size"));
                }
                let size = r.u64()?;
                let mtime = r.timestamp()?;
                let mode = r.u32()?;
                let name = r.string16(MAX_NAME_LEN)?;
                let digest = if on(offer_flag::DIGEST) {
                    Some(r.digest()?)
                } else {
                    None
                };
                let early = on(offer_flag::EARLY);
                if early {
                    if on(offer_flag::FOLDER) || !on(offer_flag::SIZE) {
                        return Err(r.malformed("an early offer is a file of a known size"));
                    }
                    if size > EARLY_MAX {
                        return Err(ProtocolError::EarlyTooLarge {
                            size,
                            max: EARLY_MAX,
                        });
                    }
                }
                Frame::Offer {
                    id,
                    kind: if on(offer_flag::FOLDER) {
                        EntryKind::Folder
                    } else {
                        EntryKind::File
                    },
                    size: on(offer_flag::SIZE).then_some(size),
                    mtime: on(offer_flag::MTIME).then_some(mtime),
                    mode: on(offer_flag::MODE).then_some(mode),
                    name,
                    digest,
                    early,
                }
            }
            kind::ACCEPT => Frame::Accept {
                id: r.u64()?,
                offset: r.u64()?,
                prefix: r.digest()?,
            },
            kind::REFUSE => Frame::Refuse {
                id: r.u64()?,
                code: Code::from_u16(r.u16()?),
                reason: r.string16(MAX_REASON_LEN)?,
            },
            kind::BEGIN => Frame::Begin {
                id: r.u64()?,
                from: r.u64()?,
            },
            kind::END => Frame::End {
                id: r.u64()?,
                size: r.u64()?,
                digest: r.digest()?,
            },
            kind::RESULT => Frame::Result {
                id: r.u64()?,
                code: Code::from_u16(r.u16()?),
                detail: r.string16(MAX_REASON_LEN)?,
            },
            kind::GET => Frame::Get {
                id: r.u64()?,
                name: r.string16(MAX_NAME_LEN)?,
            },
            kind::CANCEL => Frame::Cancel {
                id: r.u64()?,
                reason: r.string16(MAX_REASON_LEN)?,
            },
            kind::ERROR => Frame::Error {
                code: Code::from_u16(r.u16()?),
                reason: r.string16(MAX_REASON_LEN)?,
            },
            kind::LIST => {
                let id = r.u64()?;
                let flags = r.u8()?;
                if flags & !list_flag::RECURSIVE != 0 {
                    return Err(r.malformed("unknown flag bits"));
                }
                Frame::List {
                    id,
                    recursive: flags & list_flag::RECURSIVE != 0,
                    path: r.string16(MAX_NAME_LEN)?,
                }
            }
            kind::ENTRIES => {
                let id = r.u64()?;
                // Each entry takes at least ENTRY_FIXED_LEN + 1 bytes of a payload capped at
                // MAX_CONTROL_PAYLOAD, so this vector stays small whatever the peer claims.
                let mut entries = Vec::new();
                while !r.buf.is_empty() {
                    entries.push(r.entry()?);
                }
                if entries.is_empty() {
                    return Err(r.malformed("a page without entries"));
                }
                Frame::Entries { id, entries }
            }
            kind::LISTED => Frame::Listed {
                id: r.u64()?,
                count: r.u64()?,
                skipped: r.u64()?,
            },
            _ => return Err(ProtocolError::UnknownFrame(kind)),
        };
        if !r.buf.is_empty() {
            return Err(r.malformed("trailing bytes"));
        }
        Ok(frame)
    }
}

/// The frame's name for messages, or `None` for an unknown kind.
#[must_use]
pub fn frame_name(kind: u8) -> Option<&'static str> {
    Some(match kind {
        kind::HELLO => "HELLO",
        kind::WELCOME => "WELCOME",
        kind::OFFER => "OFFER",
        kind::ACCEPT => "ACCEPT",
        kind::REFUSE => "REFUSE",
        kind::BEGIN => "BEGIN",
        kind::DATA => "DATA",
        kind::END => "END",
        kind::RESULT => "RESULT",
        kind::GET => "GET",
        kind::CANCEL => "CANCEL",
        kind::ERROR => "ERROR",
        kind::LIST => "LIST",
        kind::ENTRIES => "ENTRIES",
        kind::LISTED => "LISTED",
        _ => return None,
    })
}

/// The header of a DATA frame carrying `len` raw body bytes.
#[must_use]
pub fn data_header(len: u32) -> [u8; FRAME_HEADER_LEN] {
    let mut h = [kind::DATA, 0, 0, 0, 0];
    h[1..].copy_from_slice(&len.to_be_bytes());
    h
}

/// Parses a frame header: kind and payload length, checked against the kind's cap.
pub fn parse_header(h: [u8; FRAME_HEADER_LEN]) -> Result<(u8, u32), ProtocolError> {
    let kind = h[0];
    let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]);
    frame_name(kind).ok_or(ProtocolError::UnknownFrame(kind))?;
    if kind != kind::DATA && len > MAX_CONTROL_PAYLOAD {
        return Err(ProtocolError::FrameTooLarge {
            kind,
            len,
            max: MAX_CONTROL_PAYLOAD,
        });
    }
    Ok((kind, len))
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}
fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}
fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}
/// `bit` when `on`, else no bit.
fn flag(on: bool, bit: u8) -> u8 {
    if on {
        bit
    } else {
        0
    }
}

fn put_bytes16(out: &mut Vec<u8>, b: &[u8]) {
    // Callers cap every text field far below u16::MAX; saturate rather than wrap regardless.
    let len = b.len().min(usize::from(u16::MAX));
    put_u16(out, len as u16);
    out.extend_from_slice(&b[..len]);
}
fn put_timestamp(out: &mut Vec<u8>, t: Timestamp) {
    out.extend_from_slice(&t.secs.to_be_bytes());
    put_u32(out, t.nanos);
}

/// Appends the encoded entries of an ENTRIES payload (after its id).
fn put_entries(out: &mut Vec<u8>, entries: &[Entry]) {
    for e in entries {
        out.push(e.kind.to_u8());
        put_u64(out, e.size);
        put_timestamp(out, e.mtime);
        put_u32(out, e.mode);
        put_bytes16(out, e.name.as_str().as_bytes());
    }
}

/// Encodes an ENTRIES frame for `id` holding `entries`, which must fit the control payload cap.
pub(crate) fn encode_entries(out: &mut Vec<u8>, id: u64, entries: &[Entry]) {
    framed(out, kind::ENTRIES, |out| {
        put_u64(out, id);
        put_entries(out, entries);
    });
}

/// Appends a control frame of `kind` whose payload `payload` writes; fills in its length.
fn framed(out: &mut Vec<u8>, kind: u8, payload: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.push(kind);
    out.extend_from_slice(&[0; 4]);
    payload(out);
    let len = (out.len() - start - FRAME_HEADER_LEN) as u32;
    out[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
}

struct Reader<'a> {
    buf: &'a [u8],
    frame: &'static str,
}

impl<'a> Reader<'a> {
    fn malformed(&self, what: &'static str) -> ProtocolError {
        ProtocolError::Malformed {
            frame: self.frame,
            what,
        }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        if self.buf.len() < n {
            return Err(self.malformed("payload too short"));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], ProtocolError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, ProtocolError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, ProtocolError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, ProtocolError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, ProtocolError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    fn digest(&mut self) -> Result<Digest, ProtocolError> {
        Ok(Digest(self.array::<DIGEST_LEN>()?))
    }
    fn bytes16(&mut self, max: usize) -> Result<&'a [u8], ProtocolError> {
        let len = usize::from(self.u16()?);
        if len > max {
            return Err(self.malformed("text field over its cap"));
        }
        self.take(len)
    }
    fn string16(&mut self, max: usize) -> Result<String, ProtocolError> {
        let b = self.bytes16(max)?;
        String::from_utf8(b.to_vec()).map_err(|_| self.malformed("text is not UTF-8"))
    }
    fn timestamp(&mut self) -> Result<Timestamp, ProtocolError> {
        let secs = i64::from_be_bytes(self.array()?);
        let nanos = self.u32()?;
        if nanos >= 1_000_000_000 {
            return Err(self.malformed("nanoseconds out of range"));
        }
        Ok(Timestamp { secs, nanos })
    }
    fn entry(&mut self) -> Result<Entry, ProtocolError> {
        let kind = EntryKind::from_u8(self.u8()?).ok_or(self.malformed("unknown entry kind"))?;
        let size = self.u64()?;
        let mtime = self.timestamp()?;
        let mode = self.u32()?;
        let name = Name::parse(&self.string16(MAX_NAME_LEN)?)?;
        Ok(Entry {
            kind,
            name,
            size,
            mtime,
            mode,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::Name;

    /// REPLY_OVERHEAD covers the fixed bytes of every reply a file causes.
    #[test]
    fn the_reply_overhead_covers_every_reply_to_a_file() {
        let name = Name::parse("n").unwrap();
        let len = |f: Frame| {
            let mut out = Vec::new();
            f.encode(&mut out);
            out.len()
        };
        let accept = len(Frame::Accept {
            id: u64::MAX,
            offset: u64::MAX,
            prefix: Digest::of_empty(),
        });
        let answer = |text: &str| {
            let refuse = Frame::Refuse {
                id: 1,
                code: Code::Io,
                reason: text.to_owned(),
            };
            let result = Frame::Result {
                id: 1,
                code: Code::Stored,
                detail: text.to_owned(),
            };
            len(refuse).max(len(result))
        };
        let offer = len(Frame::Offer {
            id: 1,
            kind: EntryKind::File,
            size: Some(1),
            mtime: Some(Timestamp { secs: 1, nanos: 1 }),
            mode: Some(0o644),
            name: name.as_str().to_owned(),
            digest: Some(Digest::of_empty()),
            early: false,
        });
        let offer_fixed = offer - name.as_str().len();
        assert_eq!(REPLY_OVERHEAD, (accept + answer("")).max(offer_fixed));
    }

    fn round_trip(f: Frame) {
        let mut out = Vec::new();
        f.encode(&mut out);
        let (kind, len) = parse_header(out[..5].try_into().unwrap()).unwrap();
        assert_eq!(kind, f.kind());
        if let Frame::Data { len: n } = f {
            assert_eq!((out.len(), len), (5, n));
            return;
        }
        assert_eq!(len as usize, out.len() - 5);
        assert_eq!(Frame::decode(kind, &out[5..]).unwrap(), f);
    }

    /// PROTOCOL.md §4: every frame kind encodes and decodes to itself.
    #[test]
    fn every_frame_round_trips() {
        let d = Digest::of(b"x");
        for f in [
            Frame::Hello {
                min: 1,
                max: 3,
                token: b"secret".to_vec(),
            },
            Frame::Welcome { version: 1 },
            Frame::Offer {
                id: 7,
                size: Some(1 << 40),
                mtime: Some(Timestamp {
                    secs: -5,
                    nanos: 999_999_999,
                }),
                mode: Some(0o644),
                name: "a/b.txt".into(),
                kind: EntryKind::File,
                digest: None,
                early: false,
            },
            Frame::Offer {
                id: 8,
                size: None,
                mtime: None,
                mode: None,
                name: "s".into(),
                kind: EntryKind::File,
                digest: None,
                early: false,
            },
            Frame::Offer {
                id: 10,
                size: None,
                mtime: Some(Timestamp { secs: 1, nanos: 2 }),
                mode: Some(0o755),
                name: "photos".into(),
                kind: EntryKind::Folder,
                digest: None,
                early: false,
            },
            Frame::Offer {
                id: 11,
                size: Some(1),
                mtime: None,
                mode: None,
                name: "x".into(),
                kind: EntryKind::File,
                digest: Some(d),
                early: false,
            },
            Frame::List {
                id: 12,
                recursive: true,
                path: String::new(),
            },
            Frame::Entries {
                id: 12,
                entries: vec![
                    Entry {
                        kind: EntryKind::Folder,
                        name: Name::parse("a").unwrap(),
                        size: 0,
                        mtime: Timestamp {
                            secs: -1,
                            nanos: 999_999_999,
                        },
                        mode: 0o755,
                    },
                    Entry {
                        kind: EntryKind::File,
                        name: Name::parse("a/b:c?.txt").unwrap(),
                        size: u64::MAX,
                        mtime: Timestamp { secs: 0, nanos: 0 },
                        mode: 0o644,
                    },
                ],
            },
            Frame::Listed {
                id: 12,
                count: 2,
                skipped: 7,
            },
            Frame::Accept {
                id: 1,
                offset: 42,
                prefix: d,
            },
            Frame::Refuse {
                id: 2,
                code: Code::Exists,
                reason: "exists".into(),
            },
            Frame::Begin { id: 3, from: 0 },
            Frame::Data { len: u32::MAX },
            Frame::End {
                id: 4,
                size: 5,
                digest: d,
            },
            Frame::Result {
                id: 5,
                code: Code::Stored,
                detail: "a (1).txt".into(),
            },
            Frame::Get {
                id: 6,
                name: "x".into(),
            },
            Frame::Cancel {
                id: 9,
                reason: "vanished".into(),
            },
            Frame::Error {
                code: Code::Denied,
                reason: "bad token".into(),
            },
        ] {
            round_trip(f);
        }
    }

    /// PROTOCOL.md §4.14: an early OFFER is a plain OFFER with bit 5 of its flags set, and
    /// differs from it on the wire in nothing else; both round-trip.
    #[test]
    fn an_early_offer_differs_from_a_plain_one_only_in_bit_5() {
        let t = Timestamp { secs: -5, nanos: 7 };
        for (size, mtime, mode, digest) in [
            (0, None, None, None),
            (EARLY_MAX, Some(t), Some(0o600), Some(Digest::of(b"x"))),
        ] {
            let offer = |early| Frame::Offer {
                id: 7,
                kind: EntryKind::File,
                size: Some(size),
                mtime,
                mode,
                name: "a/b.txt".into(),
                digest,
                early,
            };
            let (mut plain, mut early) = (Vec::new(), Vec::new());
            offer(false).encode(&mut plain);
            offer(true).encode(&mut early);
            let flags = FRAME_HEADER_LEN + 8;
            assert_eq!(offer_flag::EARLY, 1 << 5);
            assert_eq!(plain[flags] & offer_flag::EARLY, 0);
            plain[flags] |= offer_flag::EARLY;
            assert_eq!(plain, early);
            round_trip(offer(false));
            round_trip(offer(true));
        }
    }

    /// PROTOCOL.md §3: control frames are capped before their payload is buffered.
    #[test]
    fn header_caps_and_unknown_kinds() {
        assert_eq!(
            parse_header([0x55, 0, 0, 0, 0]),
            Err(ProtocolError::UnknownFrame(0x55))
        );
        assert!(matches!(
            parse_header([kind::OFFER, 0xff, 0xff, 0xff, 0xff]),
            Err(ProtocolError::FrameTooLarge { .. })
        ));
        assert_eq!(
            parse_header([kind::DATA, 0xff, 0xff, 0xff, 0xff]),
            Ok((kind::DATA, u32::MAX))
        );
    }

    /// PROTOCOL.md §4.2, §4.10: impossible flag combinations, entry kinds and empty pages.
    #[test]
    fn version_2_payloads_are_checked() {
        let offer = |flags: u8| {
            let mut p = vec![0; 8];
            p.push(flags);
            p.extend_from_slice(&[0; 24]);
            p.extend_from_slice(&[0, 1, b'x']);
            p
        };
        let malformed =
            |k: u8, p: &[u8]| matches!(Frame::decode(k, p), Err(ProtocolError::Malformed { .. }));
        assert!(malformed(
            kind::OFFER,
            &offer(offer_flag::FOLDER | offer_flag::SIZE)
        ));
        assert!(malformed(kind::OFFER, &offer(offer_flag::DIGEST)));
        assert!(malformed(
            kind::OFFER,
            &offer(offer_flag::SIZE | offer_flag::DIGEST)
        ));
        assert!(matches!(
            Frame::decode(kind::OFFER, &offer(offer_flag::FOLDER)),
            Ok(Frame::Offer {
                kind: EntryKind::Folder,
                size: None,
                ..
            })
        ));
        assert!(malformed(kind::ENTRIES, &[0; 8]), "a page without entries");
        let mut bad_kind = vec![0; 8];
        bad_kind.push(2);
        bad_kind.extend_from_slice(&[0; 24]);
        bad_kind.extend_from_slice(&[0, 1, b'x']);
        assert!(malformed(kind::ENTRIES, &bad_kind));
        let mut bad_name = vec![0; 8 + 25];
        bad_name.extend_from_slice(&[0, 2, b'.', b'.']);
        assert!(matches!(
            Frame::decode(kind::ENTRIES, &bad_name),
            Err(ProtocolError::BadName(_))
        ));
        assert!(malformed(kind::LIST, &[0, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0]));
        assert!(malformed(kind::LISTED, &[0; 23]));
    }

    #[test]
    fn malformed_payloads_are_typed_errors() {
        assert!(matches!(
            Frame::decode(kind::BEGIN, &[0; 3]),
            Err(ProtocolError::Malformed { .. })
        ));
        assert!(matches!(
            Frame::decode(kind::BEGIN, &[0; 17]),
            Err(ProtocolError::Malformed { .. })
        ));
        let mut bad_utf8 = vec![0; 8];
        bad_utf8.extend_from_slice(&[0, 2, 0xff, 0xfe]);
        assert!(matches!(
            Frame::decode(kind::GET, &bad_utf8),
            Err(ProtocolError::Malformed { .. })
        ));
        let mut bad_flags = vec![0; 8];
        bad_flags.push(0x80);
        bad_flags.extend_from_slice(&[0; 26]);
        assert!(matches!(
            Frame::decode(kind::OFFER, &bad_flags),
            Err(ProtocolError::Malformed { .. })
        ));
    }
}
