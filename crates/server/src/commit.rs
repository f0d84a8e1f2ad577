//! Group commit: the RESULTs of received files wait in a [`Batch`] until the files they
//! report are durable, and one flush makes a whole batch durable.
//!
//! A connection publishes each file when its END arrives (renamed to its name, not yet
//! flushed) and keeps its RESULT in the batch. The batch closes when the connection has no more
//! input at hand (none arrives within what the last flush took, at most [`MAX_LINGER`]: a
//! client streaming small files sends more within microseconds), or when it holds
//! [`MAX_BATCH_FILES`] files, [`MAX_BATCH_BYTES`] bytes of bodies or [`MAX_BATCH_TEXT`] bytes
//! of replies; then the batch is flushed ([`Durability::flush`]) and only then are the RESULTs
//! queued. So RESULT `Stored` still means that the file and its name survive a power cut.
//!
//! How a batch is flushed ([`Flusher`]) depends on its size, measured on ext4 here: each
//! `fsync` costs a cache flush of the disk (5,000 files of 4 KiB: 4 s of `fsync`s of each file
//! and folder), where one `syncfs` of the whole file system costs 0.05-0.08 s after 5,000
//! files, but waits for every dirty byte on that file system, other programs' too (seconds
//! while a build writes to it). So a batch of at most [`MAX_TRACKED`] files and folders is
//! flushed item by item (`fsync` of each file, then of each folder whose entries changed: the
//! one it landed in and those made for it), immune to other writers, and a larger batch by
//! one `syncfs`, shared by concurrent connections (a `syncfs` that starts after a connection's
//! request covers it, see [`Coalesced`]). For one 1 GiB file both wait for the disk alike.
//! `syncfs` reports write-back errors of the whole file system (Linux 5.8 and later), so a
//! failure anywhere on it fails the batch: RESULTs then say the file may not be durable.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use ferry_proto::{Code, FileId};
use rustix::fs as rfs;

/// Most files one batch holds before it is flushed, even while more input is at hand.
pub(crate) const MAX_BATCH_FILES: usize = 1024;
/// Most body bytes one batch holds before it is flushed (write-behind has sent most of them
/// to the disk already; see [`crate::storage::fs`]).
pub(crate) const MAX_BATCH_BYTES: u64 = 256 << 20;
/// Most bytes of reply text (stored names, reasons) one batch holds in memory.
pub(crate) const MAX_BATCH_TEXT: usize = 256 << 10;
/// Longest a batch with stored files waits for more input before it is flushed.
pub(crate) const MAX_LINGER: Duration = Duration::from_millis(1);
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

/// What makes published files durable.
pub(crate) trait Durability: fmt::Debug + Send + Sync {
    /// Makes `what` survive a power cut.
    fn flush(&self, what: &Flush) -> io::Result<()>;

    /// How long the last flush took (zero before the first).
    fn cost(&self) -> Duration {
        Duration::ZERO
    }
}

/// The server's flushes: item by item for a small batch, else `syncfs` of the storage's file
/// system, shared by every connection (see [`Coalesced`]).
pub(crate) struct Flusher {
    syncfs: Coalesced<Box<dyn Fn() -> io::Result<()> + Send + Sync>>,
    /// Nanoseconds the last flush took.
    last: AtomicU64,
}

impl Flusher {
    /// Flushes the file system that holds `fd` (the storage folder's descriptor).
    pub(crate) fn new(fd: OwnedFd) -> Self {
        Self {
            syncfs: Coalesced::new(Box::new(move || Ok(rfs::syncfs(&fd)?))),
            last: AtomicU64::new(0),
        }
    }
}

impl fmt::Debug for Flusher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Flusher")
    }
}

impl Durability for Flusher {
    fn flush(&self, what: &Flush) -> io::Result<()> {
        let started = Instant::now();
        let result = match what {
            Flush::Items(items) => flush_each(items),
            Flush::All => self.syncfs.flush(),
        };
        let took = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last.store(took, Ordering::Relaxed);
        result
    }

    fn cost(&self) -> Duration {
        Duration::from_nanos(self.last.load(Ordering::Relaxed))
    }
}

/// `fsync` of each file (its data, size and times), then of each folder (its entries) once.
fn flush_each(items: &[Touched]) -> io::Result<()> {
    for file in items.iter().filter_map(|t| t.file.as_ref()) {
        rfs::fsync(file)?;
    }
    let mut done = Vec::new();
    for folder in items.iter().flat_map(|t| &t.folders) {
        let st = rfs::fstat(folder)?;
        if !done.contains(&(st.st_dev, st.st_ino)) {
            rfs::fsync(folder)?;
            done.push((st.st_dev, st.st_ino));
        }
    }
    Ok(())
}

/// A flush operation shared by concurrent callers: each call takes a ticket, and returns once
/// a run of the operation that *started* after its ticket was taken has ended; one run serves
/// every caller waiting meanwhile. A failed run fails every ticket it covered.
pub(crate) struct Coalesced<F> {
    op: F,
    /// Tickets handed out.
    issued: AtomicU64,
    runs: Mutex<Runs>,
}

/// What the runs so far covered.
#[derive(Default)]
struct Runs {
    /// Every ticket up to this one is covered by a finished run.
    done: u64,
    /// Tickets above `.0` up to `.1` were covered by failed runs (their hull: a ticket a
    /// successful run covered in between is failed too, which only over-reports).
    failed: Option<(u64, u64, io::ErrorKind, String)>,
}

impl<F: Fn() -> io::Result<()>> Coalesced<F> {
    /// Shares `op`.
    pub(crate) fn new(op: F) -> Self {
        Self {
            op,
            issued: AtomicU64::new(0),
            runs: Mutex::new(Runs::default()),
        }
    }

    /// Returns once everything done before this call is covered by a run of the operation.
    pub(crate) fn flush(&self) -> io::Result<()> {
        let ticket = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
        let mut runs = self.runs.lock().unwrap_or_else(PoisonError::into_inner);
        if runs.done < ticket {
            // This run starts after every ticket handed out so far: it covers them all.
            let covers = self.issued.load(Ordering::SeqCst);
            if let Err(e) = (self.op)() {
                let from = runs
                    .failed
                    .as_ref()
                    .map_or(runs.done, |f| f.0.min(runs.done));
                runs.failed = Some((from, covers, e.kind(), e.to_string()));
            }
            runs.done = covers;
        }
        match &runs.failed {
            Some((from, to, kind, why)) if *from < ticket && ticket <= *to => {
                Err(io::Error::new(*kind, why.clone()))
            }
            _ => Ok(()),
        }
    }
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
    /// Files published since the last flush (their RESULT says `Stored`).
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

    /// Adds the reply to a file of `bytes` bytes that was published (and needs the flush of
    /// what it `touched`; `None`: untracked, the flush covers everything).
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
    pub(crate) fn touch(&mut self, touched: Option<Touched>) -> bool {
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

    /// Adds a reply that needs no flush (a failure), to keep the order of RESULTs.
    pub(crate) fn push(&mut self, reply: Reply) {
        self.text = self.text.saturating_add(reply.detail.len());
        self.replies.push(reply);
    }

    /// Whether the batch holds files (or folders) that wait for a flush.
    pub(crate) fn waits_for_flush(&self) -> bool {
        self.durable && (self.stored > 0 || self.tracked > 0 || self.touched.is_none())
    }

    /// Whether the batch must close now, more input or not: it reached a cap, or replies do
    /// not wait for flushes.
    pub(crate) fn is_full(&self) -> bool {
        let (files, bytes, text) = self.caps;
        !self.replies.is_empty()
            && (!self.durable || self.stored >= files || self.bytes >= bytes || self.text >= text)
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
