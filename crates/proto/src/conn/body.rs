//! Body accounting, in either direction (PROTOCOL.md §6): bytes counted and hashed against
//! the announced size with checked arithmetic, DATA frames opened and filled. A body is never
//! copied here, only hashed.

use crate::digest::{Digest, Hasher};
use crate::error::{ProtocolError, UsageError};
use crate::event::FileId;

/// The body of one file on its way, sent or received.
#[derive(Debug)]
pub(super) struct Body {
    pub(super) id: FileId,
    /// The announced size; `None` for a stream.
    pub(super) size: Option<u64>,
    /// Every body byte so far, the resumed prefix included.
    hasher: Hasher,
    /// Raw bytes still due in the open DATA frame.
    frame_left: u64,
    /// The body of a refused early offer (§4.14): a receiver drops it without an event; a
    /// sender expects no RESULT for it.
    pub(super) discard: bool,
}

impl Body {
    /// A body that starts with what `hasher` has counted (an empty hasher: from 0).
    pub(super) fn new(id: FileId, size: Option<u64>, hasher: Hasher) -> Self {
        Self {
            id,
            size,
            hasher,
            frame_left: 0,
            discard: false,
        }
    }

    /// Bytes counted so far, the resumed prefix included.
    pub(super) fn len(&self) -> u64 {
        self.hasher.len()
    }

    /// Raw bytes still due in the open DATA frame.
    pub(super) fn frame_left(&self) -> u64 {
        self.frame_left
    }

    /// Sending: checks that `more` bytes fit the announced size.
    pub(super) fn room(&self, more: u64) -> Result<(), UsageError> {
        let sent = self.len().checked_add(more).ok_or(UsageError::BodyLength {
            sent: u64::MAX,
            size: self.size.unwrap_or(u64::MAX),
        })?;
        match self.size {
            Some(size) if sent > size => Err(UsageError::BodyLength { sent, size }),
            _ => Ok(()),
        }
    }

    /// Sending: opens a DATA frame of `len` raw bytes, reported with [`Self::take`].
    pub(super) fn open_frame(&mut self, len: u32) -> Result<(), UsageError> {
        self.room(u64::from(len))?;
        self.frame_left = u64::from(len);
        Ok(())
    }

    /// Receiving: a DATA header of `len` bytes, checked against the announced size (§6.1).
    pub(super) fn frame_arrived(&mut self, len: u32) -> Result<(), ProtocolError> {
        let got = self.len().saturating_add(u64::from(len));
        if let Some(size) = self.size.filter(|s| got > *s) {
            return Err(ProtocolError::BodyOverrun {
                got,
                expected: size,
            });
        }
        self.frame_left = u64::from(len);
        Ok(())
    }

    /// Counts raw bytes of the open DATA frame; returns the bytes still due in it.
    pub(super) fn take(&mut self, data: &[u8]) -> Result<u64, UsageError> {
        let left =
            self.frame_left
                .checked_sub(data.len() as u64)
                .ok_or(UsageError::TooManyBodyBytes {
                    got: data.len(),
                    remaining: self.frame_left,
                })?;
        self.hasher.update(data);
        self.frame_left = left;
        Ok(left)
    }

    /// Counts body bytes outside any DATA frame the caller writes: a seed body, a body
    /// slice queued inline, a direct slice planned for writing.
    pub(super) fn add(&mut self, data: &[u8]) {
        self.hasher.update(data);
    }

    /// The digest of every byte counted.
    pub(super) fn digest(&self) -> Digest {
        self.hasher.finalize()
    }

    /// Sending: the whole file's digest once every announced byte was sent.
    pub(super) fn finish(&self) -> Result<Digest, UsageError> {
        let sent = self.len();
        match self.size.filter(|s| *s != sent) {
            Some(size) => Err(UsageError::BodyLength { sent, size }),
            None => Ok(self.digest()),
        }
    }

    /// Receiving: checks END's size against what arrived (§6.2) and returns the digest of it.
    pub(super) fn ended(&self, announced: u64) -> Result<Digest, ProtocolError> {
        let received = self.len();
        if announced != received || self.size.is_some_and(|s| s != received) {
            return Err(ProtocolError::SizeMismatch {
                announced,
                received,
            });
        }
        Ok(self.digest())
    }

    /// The error for a stream that ends inside this body.
    pub(super) fn truncated(&self) -> ProtocolError {
        let got = self.len();
        let expected = self
            .size
            .unwrap_or(got)
            .max(got.saturating_add(self.frame_left));
        ProtocolError::Truncated { got, expected }
    }
}
