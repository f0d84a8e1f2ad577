//! Group commit: the RESULTs of received files wait in a [`Batch`] until the files they
//! report are durable, and one flush makes a whole batch durable.
//!
//! A connection publishes each file when its END arrives (renamed to its name, not yet
//! flushed) and keeps its RESULT in the batch. The batch closes when the connection has no more
//! input at hand (it does not linger for more: the files that come while it is flushed gather
//! in the next batch), or when it holds [`MAX_BATCH_FILES`] files, [`MAX_BATCH_BYTES`] bytes of
//! bodies or [`MAX_BATCH_TEXT`] bytes of replies; then the batch is flushed
//! ([`Storage::flush`](crate::storage::Storage::flush)) and only then are the RESULTs queued.
//! So RESULT `Stored` still means that the file and its name survive a power cut.
//!
//! The flushes are pipelined ([`Pipeline`]): a closed batch is flushed on a thread of the
//! connection's own while the connection goes on receiving and publishing the files of the
//! next batch, and its RESULTs are queued the moment that flush returns (the connection polls
//! the flush's end with its socket). One flush runs at a time: a batch that closes while the
//! one before is still flushing keeps gathering files, and is flushed when that flush ends
//! (its flush then covers everything that arrived meanwhile); a batch that reaches a cap
//! meanwhile stops the reading until then. A batch that holds a quarter of a cap closes as
//! soon as no flush runs, more input or not, so that the next one arrives while it is flushed
//! (the client keeps as many files in flight as a full batch holds, and would otherwise wait
//! at each flush). So at most one batch is flushing and one filling,
//! and the RESULTs leave in the order their files ended. A failed flush reports the files of
//! its batch as not durable.
//!
//! How the file-system backend flushes a batch (item by item, or one `syncfs` shared by the
//! connections) is its own business: see `storage/fs/flush.rs`.

use std::fs::File;
use std::os::fd::OwnedFd;

use ferry_proto::{Code, FileId};

pub(crate) use self::pipeline::{Flushed, Pipeline};

mod pipeline;

/// Most files one batch holds before it is flushed, even while more input is at hand.
pub(crate) const MAX_BATCH_FILES: usize = 1024;
/// Most body bytes one batch holds before it is flushed (write-behind has sent most of them
/// to the disk already; see [`crate::storage::fs`]).
pub(crate) const MAX_BATCH_BYTES: u64 = 256 << 20;
/// Most bytes of reply text (stored names, reasons) one batch holds in memory.
pub(crate) const MAX_BATCH_TEXT: usize = 256 << 10;
/// A batch holding this fraction of a cap closes as soon as no flush runs (see
/// [`Batch::is_ripe`]).
pub(crate) const RIPE: usize = 4;
/// Most descriptors (files and folders) a batch holds to flush them one by one; a batch that
/// touches more is flushed by one `syncfs`.
pub(crate) const MAX_TRACKED: usize = 32;

/// What one stored file or made folder needs flushed: the file (if any) and the folders
/// whose entries it changed.
#[derive(Debug)]
pub(crate) struct Touched {
    pub file: Option<File>,
    pub folders: Vec<OwnedFd>,
}

/// What a flush must cover.
#[derive(Debug)]
pub(crate) enum Flush {
    /// These files and folders.
    Items(Vec<Touched>),
    /// Every file and folder published before it (too many to track one by one).
    All,
}

/// The final word on one received file, or on one folder offer, waiting for its batch.
#[derive(Debug)]
pub(crate) struct Reply {
    pub id: FileId,
    pub code: Code,
    pub detail: String,
}

/// The RESULTs of one connection that wait for the next flush, in the order they are due.
#[derive(Debug)]
pub(crate) struct Batch {
    replies: Vec<Reply>,
    /// What to flush, item by item; `None` once more than [`MAX_TRACKED`] descriptors.
    touched: Option<Vec<Touched>>,
    /// Descriptors in `touched`.
    tracked: usize,
    /// Files published (and folders made) since the last flush (their RESULT says `Stored`).
    stored: usize,
    bytes: u64,
    text: usize,
    /// Whether replies wait for a flush at all (`--no-fsync`: they go out at once).
    durable: bool,
    caps: (usize, u64, usize),
}

impl Batch {
    /// An empty batch; with `durable` false, it closes on every reply.
    pub(crate) fn new(durable: bool) -> Self {
        Self::with_caps(durable, (MAX_BATCH_FILES, MAX_BATCH_BYTES, MAX_BATCH_TEXT))
    }

    /// An empty batch closing at `caps`: files, body bytes, reply text bytes.
    fn with_caps(durable: bool, caps: (usize, u64, usize)) -> Self {
        Self {
            replies: Vec::new(),
            touched: Some(Vec::new()),
            tracked: 0,
            stored: 0,
            bytes: 0,
            text: 0,
            durable,
            caps,
        }
    }

    /// Adds the reply to a file of `bytes` bytes that was published, or to a folder made now
    /// (and needs the flush of what it `touched`; `None`: untracked, the flush covers
    /// everything).
    pub(crate) fn stored(
        &mut self,
        id: FileId,
        stored_as: String,
        bytes: u64,
        touched: Option<Touched>,
    ) {
        self.touch(touched);
        self.stored += 1;
        self.bytes = self.bytes.saturating_add(bytes);
        self.push(Reply {
            id,
            code: Code::Stored,
            detail: stored_as,
        });
    }

    /// Adds what a folder made now (or a file) needs flushed at the next flush (`None`:
    /// untracked, the flush covers everything). Whether the batch is durable (it waits for a
    /// flush at all).
    fn touch(&mut self, touched: Option<Touched>) -> bool {
        if !self.durable {
            return false;
        }
        let Some(t) = touched else {
            self.touched = None;
            return true;
        };
        self.tracked += usize::from(t.file.is_some()) + t.folders.len();
        if self.tracked > MAX_TRACKED {
            // Closes the descriptors: the flush is a syncfs.
            self.touched = None;
        } else if let Some(items) = &mut self.touched {
            items.push(t);
        }
        true
    }

    /// Whether the batch still tracks what to flush item by item (at most [`MAX_TRACKED`]
    /// descriptors so far): once not, its flush is a `syncfs`, and a file stored into it
    /// needs no descriptor kept (duplicated) for it.
    pub(crate) fn tracks(&self) -> bool {
        self.touched.is_some()
    }

    /// Adds a reply that needs no flush (a failure), to keep the order of RESULTs.
    pub(crate) fn push(&mut self, reply: Reply) {
        self.text = self.text.saturating_add(reply.detail.len());
        self.replies.push(reply);
    }

    /// Whether the batch holds files (or folders) that wait for a flush.
    fn waits_for_flush(&self) -> bool {
        self.durable && (self.stored > 0 || self.tracked > 0 || self.touched.is_none())
    }

    /// Whether the batch must close now, more input or not: it reached a cap, or replies do
    /// not wait for flushes.
    pub(crate) fn is_full(&self) -> bool {
        let (files, bytes, text) = self.caps;
        !self.replies.is_empty()
            && (!self.durable || self.stored >= files || self.bytes >= bytes || self.text >= text)
    }

    /// Whether the batch holds a [`RIPE`]th of a cap: then it closes when no flush runs, even
    /// with more input at hand, so that the next batch arrives while it is flushed (a batch
    /// as large as the client's window of files in flight would leave the client waiting for
    /// every flush).
    pub(crate) fn is_ripe(&self) -> bool {
        let (files, bytes, text) = self.caps;
        self.durable
            && (self.stored >= files / RIPE
                || self.bytes >= bytes / RIPE as u64
                || self.text >= text / RIPE)
    }

    /// Closes the batch: its replies, and the flush they wait for (`None`: none).
    pub(crate) fn close(&mut self) -> (Vec<Reply>, Option<Flush>) {
        let flush = self
            .waits_for_flush()
            .then(|| self.touched.take().map_or(Flush::All, Flush::Items));
        self.touched = Some(Vec::new());
        self.tracked = 0;
        self.stored = 0;
        self.bytes = 0;
        self.text = 0;
        (std::mem::take(&mut self.replies), flush)
    }
}

#[cfg(test)]
mod tests;
