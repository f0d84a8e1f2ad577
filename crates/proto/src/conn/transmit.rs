//! Outbound bytes (PROTOCOL.md §6.1): the queue of encoded frames and the body fast path.
//!
//! The machine hands out what to write next, in order: the queued frames, then the header of
//! a DATA frame opened for a body slice the caller writes from its own buffer, then that
//! slice. The caller writes any prefix of it and reports the length with one `advance(n)`, so
//! a partial or would-block write leaves the machine exact. The batching limits live here
//! too, so every driver (blocking, async, in memory) sends the same bytes.

use std::io::IoSlice;

use crate::wire::FRAME_HEADER_LEN;

/// Body slices up to this size are copied into the transmit queue so that many small files
/// share one write; larger ones are written directly from the caller's buffer.
pub const INLINE_BODY_MAX: usize = 16 * 1024;
/// The transmit queue is written out before it would grow past this many bytes of inline
/// body: a burst of small files then streams to the peer, which starts storing them while
/// the rest are read, instead of arriving as one late batch.
pub const FLUSH_AT: usize = 64 * 1024;

/// What [`Connection::queue_body`](crate::Connection::queue_body) did with a body slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum BodyQueued {
    /// The first `n` bytes were copied into the transmit queue; nothing must be written yet.
    Inline(usize),
    /// A DATA frame was opened for the first `n` bytes, to be written from the caller's
    /// buffer: write [`poll_write`](crate::Connection::poll_write)`(&data[..n])` and report
    /// each write with [`advance`](crate::Connection::advance) until
    /// [`body_pending`](crate::Connection::body_pending) is false. Nothing else can be queued
    /// until then.
    Direct(usize),
    /// Nothing was taken: write out the queue first ([`poll_transmit`](crate::Connection::poll_transmit),
    /// [`advance`](crate::Connection::advance)), then call again.
    Flush,
}

/// What to write next: up to three slices, in order (queued frames, a DATA header, body
/// bytes). Write any prefix of their concatenation, then report its length with
/// [`Connection::advance`](crate::Connection::advance).
#[derive(Debug, Clone, Copy)]
pub struct WriteParts<'a> {
    parts: [&'a [u8]; 3],
}

impl<'a> WriteParts<'a> {
    /// The slices, in order; some may be empty.
    #[must_use]
    pub fn parts(&self) -> [&'a [u8]; 3] {
        self.parts
    }

    /// The slices for a vectored write.
    #[must_use]
    pub fn io_slices(&self) -> [IoSlice<'a>; 3] {
        self.parts.map(IoSlice::new)
    }

    /// The first non-empty slice (for a plain `write`), or an empty one.
    #[must_use]
    pub fn first(&self) -> &'a [u8] {
        self.parts
            .iter()
            .find(|p| !p.is_empty())
            .copied()
            .unwrap_or(&[])
    }

    /// Bytes in all the slices.
    #[must_use]
    pub fn len(&self) -> usize {
        self.parts.iter().map(|p| p.len()).sum()
    }

    /// True when nothing is to be written.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A DATA frame written straight from the caller's buffer, and how much of it went out.
#[derive(Debug)]
struct Direct {
    header: [u8; FRAME_HEADER_LEN],
    /// Header bytes to write: 0 in seed framing, which has no frames.
    header_len: usize,
    header_done: usize,
    /// The length of the caller's slice.
    body_len: usize,
    body_done: usize,
}

impl Direct {
    fn remaining(&self) -> usize {
        (self.header_len - self.header_done) + (self.body_len - self.body_done)
    }
}

/// The outbound half: queued bytes and the direct body being written, if any.
#[derive(Debug, Default)]
pub(super) struct Transmit {
    /// Encoded frames (and inline bodies); `buf[pos..]` is still to be written.
    pub(super) buf: Vec<u8>,
    pos: usize,
    direct: Option<Direct>,
}

impl Transmit {
    /// Queued bytes not yet written.
    pub(super) fn queued(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Reports `n` queued bytes written (at most what is queued).
    pub(super) fn transmitted(&mut self, n: usize) -> usize {
        let n = n.min(self.buf.len() - self.pos);
        self.pos += n;
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        n
    }

    /// Whether inline bytes of `len` should wait until the queue is written out.
    pub(super) fn full_for(&self, len: usize) -> bool {
        let queued = self.buf.len() - self.pos;
        queued > 0 && queued.saturating_add(len) > FLUSH_AT
    }

    /// Plans a direct DATA frame of `body_len` bytes after what is queued.
    pub(super) fn open_direct(
        &mut self,
        header: [u8; FRAME_HEADER_LEN],
        header_len: usize,
        body_len: usize,
    ) {
        self.direct = Some(Direct {
            header,
            header_len,
            header_done: 0,
            body_len,
            body_done: 0,
        });
    }

    /// The length of the caller's slice of the direct body being written, if one is.
    pub(super) fn direct_len(&self) -> Option<usize> {
        self.direct.as_ref().map(|d| d.body_len)
    }

    /// Header and body bytes of the direct body still to be written.
    pub(super) fn direct_remaining(&self) -> Option<usize> {
        self.direct.as_ref().map(Direct::remaining)
    }

    /// What to write next; `body` is the caller's slice of the direct body (its length
    /// checked by the caller of this function).
    pub(super) fn parts<'a>(&'a self, body: &'a [u8]) -> WriteParts<'a> {
        let (header, body) = match &self.direct {
            Some(d) => (
                &d.header[d.header_done..d.header_len],
                body.get(d.body_done..d.body_len).unwrap_or_default(),
            ),
            None => (&[][..], &[][..]),
        };
        WriteParts {
            parts: [self.queued(), header, body],
        }
    }

    /// Reports `n` bytes of [`Self::parts`] written: queued bytes first, then the header,
    /// then the body. Returns how many were due (at most `n`).
    pub(super) fn advance(&mut self, n: usize) -> usize {
        let mut done = self.transmitted(n);
        if let Some(d) = &mut self.direct {
            let h = (n - done).min(d.header_len - d.header_done);
            d.header_done += h;
            let b = (n - done - h).min(d.body_len - d.body_done);
            d.body_done += b;
            done += h + b;
            if d.remaining() == 0 {
                self.direct = None;
            }
        }
        done
    }
}
