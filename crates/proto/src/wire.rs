//! Frame encoding and decoding for the ferry framing (PROTOCOL.md §3-§4). Pure functions.

use crate::code::Code;
use crate::digest::{Digest, DIGEST_LEN};
use crate::error::ProtocolError;

/// The eight bytes that open a ferry-framing connection. The NUL first byte can never start a
/// seed-framing name, which is how a server tells the framings apart (PROTOCOL.md §2).
pub const MAGIC: [u8; 8] = *b"\0ferry\r\n";
/// The protocol version this crate speaks.
pub const VERSION: u16 = 1;
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
        /// Size in bytes; `None` for a stream of unknown length.
        size: Option<u64>,
        /// Modification time.
        mtime: Option<Timestamp>,
        /// Unix permission bits.
        mode: Option<u32>,
        /// Raw name (validated by the caller of the decoder).
        name: String,
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
        }
    }

    /// Appends the encoded frame (header and payload; for DATA the header only) to `out`.
    ///
    /// Text fields must already respect their caps; the [`Connection`](crate::Connection)
    /// checks them before encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.push(self.kind());
        out.extend_from_slice(&[0; 4]);
        match self {
            Frame::Hello { min, max, token } => {
                put_u16(out, *min);
                put_u16(out, *max);
                put_bytes16(out, token);
            }
            Frame::Welcome { version } => put_u16(out, *version),
            Frame::Offer {
                id,
                size,
                mtime,
                mode,
                name,
            } => {
                put_u64(out, *id);
                let flags = u8::from(size.is_some())
                    | (u8::from(mtime.is_some()) << 1)
                    | (u8::from(mode.is_some()) << 2);
                out.push(flags);
                put_u64(out, size.unwrap_or(0));
                let t = mtime.unwrap_or(Timestamp { secs: 0, nanos: 0 });
                put_u64(out, t.secs as u64);
                put_u32(out, t.nanos);
                put_u32(out, mode.unwrap_or(0));
                put_bytes16(out, name.as_bytes());
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
            Frame::Data { len } => {
                out[start..].copy_from_slice(&data_header(*len));
                return;
            }
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
        }
        let len = (out.len() - start - FRAME_HEADER_LEN) as u32;
        out[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
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
                if flags & !0b111 != 0 {
                    return Err(r.malformed("unknown flag bits"));
                }
                let size = r.u64()?;
                let secs = r.u64()? as i64;
                let nanos = r.u32()?;
                let mode = r.u32()?;
                if nanos >= 1_000_000_000 {
                    return Err(r.malformed("nanoseconds out of range"));
                }
                let name = r.string16(crate::name::MAX_NAME_LEN)?;
                Frame::Offer {
                    id,
                    size: (flags & 1 != 0).then_some(size),
                    mtime: (flags & 2 != 0).then_some(Timestamp { secs, nanos }),
                    mode: (flags & 4 != 0).then_some(mode),
                    name,
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
                name: r.string16(crate::name::MAX_NAME_LEN)?,
            },
            kind::CANCEL => Frame::Cancel {
                id: r.u64()?,
                reason: r.string16(MAX_REASON_LEN)?,
            },
            kind::ERROR => Frame::Error {
                code: Code::from_u16(r.u16()?),
                reason: r.string16(MAX_REASON_LEN)?,
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
fn put_bytes16(out: &mut Vec<u8>, b: &[u8]) {
    // Callers cap every text field far below u16::MAX; saturate rather than wrap regardless.
    let len = b.len().min(usize::from(u16::MAX));
    put_u16(out, len as u16);
    out.extend_from_slice(&b[..len]);
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
            },
            Frame::Offer {
                id: 8,
                size: None,
                mtime: None,
                mode: None,
                name: "s".into(),
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
