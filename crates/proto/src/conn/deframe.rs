//! Deframing (PROTOCOL.md §2-§3): received bytes in, whole units out. It tells the framing
//! from the first byte, checks the magic, cuts the seed name line, control frames and DATA
//! headers, and caps every length before a byte is buffered. It knows nothing of ids or
//! states: `inbound` gives the units their meaning.

use super::Framing;
use crate::error::ProtocolError;
use crate::name::MAX_NAME_LEN;
use crate::wire::{self, kind, Frame, FRAME_HEADER_LEN, MAGIC};

/// Where the receiving half of a connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rx {
    /// A server before the first byte, which tells the framing (§2).
    Detect,
    /// Inside the magic: this many bytes matched.
    Magic(usize),
    /// Inside the seed name line (§2.1).
    SeedName,
    /// Seed body bytes, until the end of the stream.
    SeedBody,
    /// Before or inside a frame header.
    Header,
    /// Inside a control frame's payload.
    Payload { kind: u8, len: u32 },
    /// Inside a DATA payload: raw body bytes that the caller moves.
    Body,
    /// Inside a DATA payload of a refused early body: raw bytes the machine drops (§4.14).
    Discard,
    /// Nothing more is read: the peer ended or failed, or this end closed.
    Done,
}

/// A unit of input, complete.
#[derive(Debug)]
pub(super) enum Unit {
    /// The framing: told by the first byte (seed) or by the whole magic (ferry).
    Framing(Framing),
    /// The seed name line without its newline; at most [`MAX_NAME_LEN`] bytes.
    SeedName(Vec<u8>),
    /// A control frame.
    Frame(Frame),
    /// A DATA header announcing this many raw body bytes.
    Data(u32),
}

/// The receiving half's position and the bytes held for an incomplete unit.
#[derive(Debug)]
pub(super) struct Deframer {
    /// Where the input is; `inbound` moves it into and out of bodies and to the end.
    pub(super) rx: Rx,
    buf: Vec<u8>,
}

impl Deframer {
    pub(super) fn new(rx: Rx) -> Self {
        Self {
            rx,
            buf: Vec::new(),
        }
    }

    /// Bytes held for an incomplete control frame or seed name line.
    pub(super) fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// True when part of a unit has arrived and the rest is awaited.
    pub(super) fn in_progress(&self) -> bool {
        match self.rx {
            Rx::Magic(got) => got > 0,
            Rx::SeedName | Rx::Header => !self.buf.is_empty(),
            Rx::Payload { .. } => true,
            Rx::Detect | Rx::SeedBody | Rx::Body | Rx::Discard | Rx::Done => false,
        }
    }

    /// Reads a prefix of `data`: returns how many bytes it used and the unit they completed.
    /// `(0, None)` means: stop here (raw body bytes or the end come next).
    pub(super) fn step(&mut self, data: &[u8]) -> Result<(usize, Option<Unit>), ProtocolError> {
        let Some(&first) = data.first() else {
            return Ok((0, None));
        };
        match self.rx {
            Rx::Detect => match Framing::detect(first) {
                Framing::Ferry => {
                    self.rx = Rx::Magic(0);
                    self.step(data)
                }
                Framing::Seed => {
                    self.rx = Rx::SeedName;
                    Ok((0, Some(Unit::Framing(Framing::Seed))))
                }
            },
            Rx::Magic(got) => {
                let n = (MAGIC.len() - got).min(data.len());
                if data[..n] != MAGIC[got..got + n] {
                    return Err(ProtocolError::BadMagic);
                }
                if got + n < MAGIC.len() {
                    self.rx = Rx::Magic(got + n);
                    return Ok((n, None));
                }
                self.rx = Rx::Header;
                Ok((n, Some(Unit::Framing(Framing::Ferry))))
            }
            Rx::SeedName => self.seed_name(data),
            Rx::Header => {
                let n = take(&mut self.buf, data, FRAME_HEADER_LEN);
                let Ok(header) = <[u8; FRAME_HEADER_LEN]>::try_from(&self.buf[..]) else {
                    return Ok((n, None));
                };
                self.buf.clear();
                let (kind, len) = wire::parse_header(header)?;
                let unit = if kind == kind::DATA {
                    Unit::Data(len)
                } else if len == 0 {
                    Unit::Frame(Frame::decode(kind, &[])?)
                } else {
                    self.rx = Rx::Payload { kind, len };
                    return Ok((n, None));
                };
                Ok((n, Some(unit)))
            }
            Rx::Payload { kind, len } => {
                // `len` is at most MAX_CONTROL_PAYLOAD: parse_header checked it.
                let n = take(&mut self.buf, data, len as usize);
                if self.buf.len() < len as usize {
                    return Ok((n, None));
                }
                let frame = Frame::decode(kind, &self.buf);
                self.buf.clear();
                self.rx = Rx::Header;
                Ok((n, Some(Unit::Frame(frame?))))
            }
            Rx::SeedBody | Rx::Body | Rx::Discard | Rx::Done => Ok((0, None)),
        }
    }

    /// The seed name line: at most [`MAX_NAME_LEN`] bytes, then a newline (§2.1).
    fn seed_name(&mut self, data: &[u8]) -> Result<(usize, Option<Unit>), ProtocolError> {
        let room = MAX_NAME_LEN + 1 - self.buf.len();
        let window = &data[..data.len().min(room)];
        let Some(pos) = window.iter().position(|b| *b == b'\n') else {
            if window.len() == room {
                return Err(ProtocolError::SeedNameTooLong { max: MAX_NAME_LEN });
            }
            self.buf.extend_from_slice(window);
            return Ok((window.len(), None));
        };
        self.buf.extend_from_slice(&window[..pos]);
        self.rx = Rx::SeedBody;
        Ok((pos + 1, Some(Unit::SeedName(std::mem::take(&mut self.buf)))))
    }

    /// The error for a stream that ends inside a unit, if it does.
    pub(super) fn truncated(&self) -> Option<ProtocolError> {
        let truncated = |got: usize, expected: usize| ProtocolError::Truncated {
            got: got as u64,
            expected: expected as u64,
        };
        match self.rx {
            Rx::Magic(got) => Some(truncated(got, MAGIC.len())),
            Rx::SeedName => Some(truncated(self.buf.len(), self.buf.len() + 1)),
            Rx::Header if !self.buf.is_empty() => Some(truncated(self.buf.len(), FRAME_HEADER_LEN)),
            Rx::Payload { len, .. } => Some(truncated(
                FRAME_HEADER_LEN + self.buf.len(),
                FRAME_HEADER_LEN + len as usize,
            )),
            _ => None,
        }
    }
}

/// Moves bytes from `data` into `buf` until it holds `want`; returns how many it moved.
fn take(buf: &mut Vec<u8>, data: &[u8], want: usize) -> usize {
    let n = want.saturating_sub(buf.len()).min(data.len());
    buf.extend_from_slice(&data[..n]);
    n
}
