//! How the file-system backend makes published files durable.
//!
//! How a batch is flushed ([`Flusher`]) depends on its size, measured on ext4 here: each
//! `fsync` costs a cache flush of the disk (5,000 files of 4 KiB: 4 s of `fsync`s of each file
//! and folder), where one `syncfs` of the whole file system costs 0.05-0.08 s after 5,000
//! files, but waits for every dirty byte on that file system, other programs' too (seconds
//! while a build writes to it). So a batch of at most
//! [`MAX_TRACKED`](crate::commit::MAX_TRACKED) files and folders is flushed item by item
//! (`fsync` of each file, then of each folder whose entries changed: the one it landed in and
//! those made for it), immune to other writers, and a larger batch by one `syncfs`, shared by
//! concurrent connections (a `syncfs` that starts after a connection's request covers it, see
//! [`Coalesced`]). For one 1 GiB file both wait for the disk alike.
//! `syncfs` reports write-back errors of the whole file system (Linux 5.8 and later), so a
//! failure anywhere on it fails the batch: RESULTs then say the file may not be durable.
//!
//! These flushes run off the connection's thread, on its
//! [`Pipeline`](crate::commit::Pipeline), while it receives the next batch. A large file is
//! flushed while it arrives too ([`WriteBehind`]: `fdatasync` every [`WRITE_BEHIND`] bytes on a
//! thread of its own), so that the flush of its batch has little left to write.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Mutex, PoisonError};
use std::thread;

use rustix::fs as rfs;

use crate::commit::{Flush, Touched};

/// What makes published files durable.
pub(crate) trait Durability: fmt::Debug + Send + Sync {
    /// Makes `what` survive a power cut.
    fn flush(&self, what: &Flush) -> io::Result<()>;
}

/// The server's flushes: item by item for a small batch, else `syncfs` of the storage's file
/// system, shared by every connection (see [`Coalesced`]).
pub(crate) struct Flusher {
    syncfs: Coalesced<Box<dyn Fn() -> io::Result<()> + Send + Sync>>,
}

impl Flusher {
    /// Flushes the file system that holds `fd` (the storage folder's descriptor).
    pub(crate) fn new(fd: OwnedFd) -> Self {
        Self {
            syncfs: Coalesced::new(Box::new(move || Ok(rfs::syncfs(&fd)?))),
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
        match what {
            Flush::Items(items) => flush_each(items),
            Flush::All => self.syncfs.flush(),
        }
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

/// Body bytes written between two write-behind flushes of a file being received (see
/// [`WriteBehind`]).
pub(crate) const WRITE_BEHIND: u64 = 32 << 20;
/// Most body bytes written since the last write-behind flush started before the writer waits
/// for that flush to end (bounded dirty data when the disk is slower than the network).
const MAX_UNFLUSHED: u64 = 8 * WRITE_BEHIND;

/// Write-behind of one file a durable server receives: every [`WRITE_BEHIND`] bytes, a thread
/// of its own flushes the file (`fdatasync`) while the body goes on arriving, so that the
/// flush before its RESULT finds little left to write. Measured here (a VM whose disk write
/// cache sits in the host): starting write-back alone (`posix_fadvise(DONTNEED)` every 8 MiB,
/// or `sync_file_range`) left 0.25-1.6 s to the final `fsync` of 1 GiB, since the disk's cache
/// flush is what costs; flushes during the transfer overlap it with the transfer, and leave
/// 0.04-0.26 s (32 MiB steps; 64 MiB: 0.13-0.8 s; 16 MiB did as well as 32 at more flushes:
/// docs/BENCHMARKS.md). A flush that is still running when the next step is due is not queued
/// behind: the next starts as soon as it ends.
///
/// The thread flushes its own open file description of the file (reopened through
/// `/proc/self/fd`), never the writer's: a write-back error it sees is then still reported to
/// the final flush (errors are reported once per open file description). Without one, there is
/// no write-behind and the final flush writes everything.
#[derive(Debug)]
pub(crate) struct WriteBehind {
    /// Where the bytes not yet covered by a started flush begin.
    from: u64,
    /// Starts a flush; `None` before the first, or when the thread could not be started.
    kick: Option<SyncSender<()>>,
    /// The thread could not be started: no write-behind for this file.
    off: bool,
}

impl WriteBehind {
    /// Write-behind of a file whose first `from` bytes are written already.
    pub(crate) fn new(from: u64) -> Self {
        Self {
            from,
            kick: None,
            off: false,
        }
    }

    /// `file` now holds `len` bytes: starts a flush every [`WRITE_BEHIND`] bytes, and waits
    /// for the one that runs once [`MAX_UNFLUSHED`] bytes are not covered by a flush.
    pub(crate) fn wrote(&mut self, file: &File, len: u64) {
        if self.off || len.saturating_sub(self.from) < WRITE_BEHIND {
            return;
        }
        if self.kick.is_none() {
            self.kick = flusher_of(file)
                .inspect_err(|e| log::debug!("no write-behind: {e}"))
                .ok();
            self.off = self.kick.is_none();
        }
        let Some(kick) = &self.kick else {
            return;
        };
        // The channel holds nothing: a kick is taken only by the thread waiting for one.
        let started = match kick.try_send(()) {
            Ok(()) => true,
            Err(TrySendError::Full(())) if len - self.from >= MAX_UNFLUSHED => {
                kick.send(()).is_ok()
            }
            Err(TrySendError::Full(())) => false,
            Err(TrySendError::Disconnected(())) => {
                self.off = true;
                false
            }
        };
        if started {
            self.from = len;
        }
    }
}

/// A thread that flushes `file` through an open file description of its own each time it is
/// kicked, until the kicks' sender is dropped.
fn flusher_of(file: &File) -> io::Result<SyncSender<()>> {
    let path = format!("/proc/self/fd/{}", file.as_raw_fd());
    let open = |mode| rfs::open(&path, mode | rfs::OFlags::CLOEXEC, rfs::Mode::empty());
    // Either access does for a flush; the file's mode may allow only one of them.
    let own = open(rfs::OFlags::RDONLY).or_else(|_| open(rfs::OFlags::WRONLY))?;
    let (kick, kicks) = mpsc::sync_channel::<()>(0);
    thread::Builder::new()
        .name("ferry-write-behind".into())
        .spawn(move || {
            for () in kicks {
                // Only a head start: the final flush (another open file description) reports
                // any write-back error.
                let _ = rfs::fdatasync(&own);
            }
        })?;
    Ok(kick)
}

#[cfg(test)]
mod tests;
