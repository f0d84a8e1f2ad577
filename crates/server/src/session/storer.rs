//! The storer: a second thread per connection that stores complete small bodies, in order,
//! while the connection's thread goes on receiving.
//!
//! A body of at most [`MAX_AHEAD`] bytes (ferry framing, known size, from offset 0, nothing
//! held for resume) is gathered in memory as it arrives; only at its END, with a good digest,
//! is it handed over here as a [`Job`] with its upload and name lock. The storer readies its
//! destination, writes it and publishes it ([`Storage::start_body`], [`Incoming::write`],
//! [`Incoming::publish`]), lets go of the name and sends back how it went. A body cut off,
//! cancelled or mismatched never gets here, so nothing of it is ever on disk.
//!
//! The buffers bodies are gathered in come back with their outcomes and are handed out again
//! ([`Storer::buffer`]; kept buffers and held bodies together within [`MAX_BYTES`]): a
//! body's bytes are neither allocated afresh nor freed on the storing thread, where freeing
//! memory the connection's thread allocated would wait for that thread's allocator lock.
//!
//! The queue is bounded ([`MAX_JOBS`] jobs, [`MAX_BYTES`] body bytes): handing over a job
//! to a full queue first waits for the oldest [`RESUME`]th of the jobs held to end
//! (backpressure on the connection, which then stops reading), not for one: the thread then
//! wakes the connection once per so many jobs, not once per job. Outcomes come back in the
//! order the jobs went in; the connection reports them (log line, tally, RESULT in the
//! batch) on its own thread, and waits for the storer to be empty ([`Storer::next`] with
//! `block`) before anything else enters its batch, so RESULTs keep the order of the ENDs. A
//! folder offer, whose RESULT answers the offer rather than an END, waits only for the jobs
//! that touch it (and those before them, [`Storer::held_through`]): its mode and time are set
//! after its files are.
//! Each time it has stored a body, the thread takes every job queued meanwhile and looks up
//! ahead the names of those going into the same folder, through one [`Lookout`] on that
//! folder ([`Storage::lookout`]) kept while bodies go there: a durable file system then
//! answers the publish's lookup from its cache, where it would wait for the folder's block
//! while an earlier batch's flush writes it to disk ([`Ahead`]).
//! The thread starts with the first job and ends with the connection (it finishes the jobs
//! queued before); it is named `ferry-store-PEER`. If it ends early (a bug: a panic), the
//! jobs it held are reported as I/O errors instead of hanging the connection.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ferry_proto::{BodyCheck, Code, Digest, FileId, Name};
use rustix::event::{poll, PollFd, PollFlags, Timespec};

use crate::commit::Touched;
use crate::locks::NameLock;
use crate::paths::{split, Refusal};
use crate::storage::{Incoming, Lookout, Storage, Upload};
use crate::wake::Wake;

/// Largest body stored ahead (the client's early-offer size); larger ones are stored as
/// they arrive, on the connection's thread.
pub(super) const MAX_AHEAD: u64 = 64 << 10;
/// Most jobs the storer holds (queued or being stored).
pub(super) const MAX_JOBS: usize = 256;
/// Most body bytes the storer holds.
pub(super) const MAX_BYTES: usize = 4 << 20;
/// A full queue takes jobs again once this fraction of the jobs it holds has ended.
const RESUME: usize = 4;
/// What the thread's wake-up is set to when no one waits for it.
const NO_ONE: usize = usize::MAX;
/// Longest a wait for the thread sleeps before it looks whether the thread has ended.
const STALL_SLICE: Duration = Duration::from_millis(100);

/// How storing a body went: the name it was stored as and what the flush before its RESULT
/// must cover, or why it was not stored.
pub(super) type Stored = Result<(String, Option<Touched>), Refusal>;

/// A complete body to store.
#[derive(Debug)]
pub(super) struct Job {
    /// Where to store it (the connection's, or its credential's folder).
    pub store: Arc<dyn Storage>,
    /// The accepted upload (name, size, time, mode), with nothing held for resume.
    pub upload: Upload,
    /// The name's lock, dropped once the body is published (or failed).
    pub lock: NameLock,
    /// The whole body.
    pub bytes: Vec<u8>,
    /// Its BLAKE3 digest, checked against the sender's when it sent one.
    pub digest: Digest,
    /// Whether the batch its RESULT joins tracks descriptors (see
    /// [`Batch::tracks`](crate::commit::Batch::tracks)).
    pub track: bool,
}

/// What the connection keeps of a received body to report it once stored (or not).
#[derive(Debug)]
pub(super) struct Ticket {
    /// The upload's id.
    pub id: FileId,
    /// The offered name.
    pub name: Name,
    /// The file's size.
    pub size: u64,
    /// Where the body started (a resume offset; 0 for bodies stored ahead).
    pub from: u64,
    /// What the digest check at END said.
    pub check: BodyCheck,
    /// When the body began.
    pub started: Instant,
}

/// A job that ended: its ticket and how it went.
#[derive(Debug)]
pub(super) struct Done {
    /// What the connection kept of it.
    pub ticket: Ticket,
    /// How it went.
    pub result: Stored,
}

/// What stores one job (the storage, or a test's stand-in); with the outcome, the job's
/// buffer, to be used again.
type Runner = Arc<dyn Fn(Job) -> (Stored, Vec<u8>) + Send + Sync>;

/// What opens a lookout on a folder of a store (the storage's own, or a test's stand-in).
type OpenLookout = dyn Fn(&dyn Storage, &str) -> Option<Box<dyn Lookout>> + Send + Sync;

/// A shared [`OpenLookout`].
type Looker = Arc<OpenLookout>;

/// One connection's storer: a bounded, ordered queue of jobs in front of a thread.
pub(super) struct Storer {
    run: Runner,
    look: Looker,
    /// Most jobs and body bytes held.
    caps: (usize, usize),
    /// Names the thread after the connection.
    peer: SocketAddr,
    /// Started with the first job; `None` before it, or when no thread could be started
    /// (jobs are then stored on the connection's thread).
    worker: Option<Worker>,
    /// The tickets of the jobs handed over and not yet collected, oldest first, with their
    /// body sizes.
    held: VecDeque<(Ticket, usize)>,
    /// Body bytes held.
    bytes: usize,
    /// Buffers of bodies stored, to gather the next ones in.
    spare: Vec<Vec<u8>>,
    /// Their capacity, in bytes: with the body bytes held, at most the cap on those.
    spare_bytes: usize,
    /// Outcomes taken from the thread so far.
    collected: usize,
}

/// The thread that stores, and what links it to the connection.
struct Worker {
    jobs: Option<SyncSender<Job>>,
    done: Receiver<(Stored, Vec<u8>)>,
    /// Outcomes the thread has sent so far.
    ended: Arc<AtomicUsize>,
    /// How many outcomes the connection waits for on `wake`: the thread rings it once
    /// `ended` reaches that count ([`NO_ONE`]: no one waits).
    ring_at: Arc<AtomicUsize>,
    /// An `eventfd` the connection polls with its socket.
    wake: Arc<Wake>,
    thread: Option<JoinHandle<()>>,
}

impl Storer {
    /// An idle storer for the connection from `peer`.
    pub(super) fn new(peer: SocketAddr) -> Self {
        let look: Looker = Arc::new(|store: &dyn Storage, folder: &str| store.lookout(folder));
        Self::with_runner(Arc::new(store_job), look, (MAX_JOBS, MAX_BYTES), peer)
    }

    /// An idle storer that stores with `run` and looks names up ahead with `look`, holding
    /// at most `caps` (jobs, bytes).
    fn with_runner(run: Runner, look: Looker, caps: (usize, usize), peer: SocketAddr) -> Self {
        Self {
            run,
            look,
            caps,
            peer,
            worker: None,
            held: VecDeque::new(),
            bytes: 0,
            spare: Vec::new(),
            spare_bytes: 0,
            collected: 0,
        }
    }

    /// Whether no job is held.
    pub(super) fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Hands `job` (reported as `ticket`) over. When the queue is full, first waits for the
    /// oldest jobs to end: their outcomes are returned, to be reported before this one.
    pub(super) fn submit(&mut self, job: Job, ticket: Ticket) -> Vec<Done> {
        let len = job.bytes.len();
        let mut done = Vec::new();
        let full = |s: &Self| {
            !s.held.is_empty()
                && (s.held.len() >= s.caps.0 || s.bytes.saturating_add(len) > s.caps.1)
        };
        if full(self) {
            self.wait_for((self.held.len() / RESUME).max(1));
            while let Some(d) = self.next(false) {
                done.push(d);
            }
        }
        while full(self) {
            done.extend(self.next(true));
        }
        if self.worker.is_none() {
            self.worker = Worker::start(Arc::clone(&self.run), Arc::clone(&self.look), self.peer)
                .inspect_err(|e| {
                    log::warn!("cannot start a storing thread ({e}); storing on the connection's")
                })
                .ok();
        }
        let Some(jobs) = self.worker.as_ref().and_then(|w| w.jobs.as_ref()) else {
            // No thread (and so nothing held): store here.
            let (result, buffer) = (self.run)(job);
            self.keep(buffer);
            done.push(Done { ticket, result });
            return done;
        };
        // Never blocks: the channel holds as many jobs as the queue.
        if jobs.send(job).is_ok() {
            self.held.push_back((ticket, len));
            self.bytes += len;
        } else {
            // The thread ended (a bug): what it held, then this job, fail.
            while let Some(d) = self.next(true) {
                done.push(d);
            }
            let result = Err(gone());
            done.push(Done { ticket, result });
        }
        done
    }

    /// An empty buffer for a body of `len` bytes: one a stored body came back in, else a new
    /// one.
    pub(super) fn buffer(&mut self, len: usize) -> Vec<u8> {
        let mut buffer = self.spare.pop().unwrap_or_default();
        self.spare_bytes -= buffer.capacity();
        buffer.reserve_exact(len);
        buffer
    }

    /// Keeps `buffer`, emptied, for a body to come, unless the buffers kept and the bodies
    /// held would then take more than the cap on body bytes (else it is freed here, on the
    /// thread that allocated it).
    fn keep(&mut self, mut buffer: Vec<u8>) {
        let room = self.caps.1.saturating_sub(self.spare_bytes + self.bytes);
        if buffer.capacity() > 0 && buffer.capacity() <= room {
            buffer.clear();
            self.spare_bytes += buffer.capacity();
            self.spare.push(buffer);
        }
    }

    /// How many of the jobs held, oldest first, must end before none touching `name` is
    /// left: one storing `name` itself, something under it, or a folder above it.
    pub(super) fn held_through(&self, name: &Name) -> usize {
        self.held
            .iter()
            .rposition(|(t, _)| t.name == *name || t.name.is_under(name) || name.is_under(&t.name))
            .map_or(0, |at| at + 1)
    }

    /// The oldest job's outcome, once it has ended; `None` when no job is held, or (without
    /// `block`) when the oldest has not ended yet.
    pub(super) fn next(&mut self, block: bool) -> Option<Done> {
        if self.held.is_empty() {
            return None;
        }
        if block {
            self.wait_for(1);
        }
        let got = match &self.worker {
            Some(w) if block => w.done.recv().map_err(|_| TryRecvError::Disconnected),
            Some(w) => w.done.try_recv(),
            None => Err(TryRecvError::Disconnected),
        };
        let (result, buffer) = match got {
            Ok((r, buffer)) => {
                self.collected += 1;
                (r, Some(buffer))
            }
            Err(TryRecvError::Empty) => return None,
            Err(TryRecvError::Disconnected) => (Err(gone()), None),
        };
        let (ticket, len) = self.held.pop_front()?;
        self.bytes -= len;
        if let Some(buffer) = buffer {
            self.keep(buffer);
        }
        Some(Done { ticket, result })
    }
}

impl Storer {
    /// What to poll, with the connection's socket, to learn that the oldest job held has
    /// ended: the thread rings it from now on, once. `None` when no job is held on a thread,
    /// or one has ended already (take it with [`Storer::next`] instead of waiting). End the
    /// wait with [`Storer::woken`].
    pub(super) fn wake_fd(&self) -> Option<BorrowedFd<'_>> {
        let w = self.worker.as_ref().filter(|_| !self.held.is_empty())?;
        w.ring_when(self.collected + 1).then(|| w.wake.as_fd())
    }

    /// Ends a wait on [`Storer::wake_fd`]: the thread no longer rings, and a ring is reset.
    pub(super) fn woken(&self) {
        if let Some(w) = &self.worker {
            w.ring_at.store(NO_ONE, SeqCst);
            w.wake.reset();
        }
    }

    /// Waits until the `n` oldest jobs held (all of them, if fewer) have ended, or the
    /// thread has; their outcomes are then waiting in the channel. One wake-up for all `n`,
    /// where waiting on the channel would take one per job.
    fn wait_for(&self, n: usize) {
        let Some(w) = &self.worker else {
            return;
        };
        let count = self.collected + n.min(self.held.len());
        let slice = Timespec::try_from(STALL_SLICE).unwrap_or_default();
        while w.ring_when(count) {
            if w.thread.as_ref().is_none_or(JoinHandle::is_finished) {
                // Ended (a bug): the channel reports it.
                w.ring_at.store(NO_ONE, SeqCst);
                return;
            }
            let mut fds = [PollFd::new(&*w.wake, PollFlags::IN)];
            let _ = poll(&mut fds, Some(&slice));
            w.wake.reset();
        }
    }
}

/// Why a job the thread held (or could no longer take) was not stored.
fn gone() -> Refusal {
    Refusal::new(
        Code::Io,
        "internal error: the server's storing thread ended; the file may not be stored: send it again",
    )
}

impl Worker {
    /// Starts the thread of the connection from `peer`, storing with `run` and looking names
    /// up ahead with `look`.
    fn start(run: Runner, look: Looker, peer: SocketAddr) -> io::Result<Self> {
        let wake = Arc::new(Wake::new()?);
        let (jobs, inbox) = mpsc::sync_channel::<Job>(MAX_JOBS);
        let (outbox, done) = mpsc::channel();
        let ended = Arc::new(AtomicUsize::new(0));
        let ring_at = Arc::new(AtomicUsize::new(NO_ONE));
        let (ring, count, waits) = (Arc::clone(&wake), Arc::clone(&ended), Arc::clone(&ring_at));
        let thread = thread::Builder::new()
            .name(format!("ferry-store-{peer}"))
            .spawn(move || {
                let mut ahead = Ahead::default();
                while let Some(job) = ahead.next(&inbox) {
                    let store = Arc::clone(&job.store);
                    let folder = split(job.upload.name.as_str()).0.to_owned();
                    if outbox.send(run(job)).is_err() {
                        return;
                    }
                    let ended = count.fetch_add(1, SeqCst) + 1;
                    if ended >= waits.load(SeqCst) && waits.swap(NO_ONE, SeqCst) != NO_ONE {
                        ring.ring();
                    }
                    ahead.look_ahead(&inbox, &store, &folder, &*look);
                }
            })?;
        Ok(Self {
            jobs: Some(jobs),
            done,
            ended,
            ring_at,
            wake,
            thread: Some(thread),
        })
    }

    /// Asks the thread to ring `wake` once `count` outcomes have ended; `false` (and nothing
    /// asked) when they have already.
    fn ring_when(&self, count: usize) -> bool {
        self.ring_at.store(count, SeqCst);
        // Set before this look, so a job ending after it rings: no wake-up is lost.
        if self.ended.load(SeqCst) >= count {
            self.ring_at.store(NO_ONE, SeqCst);
            return false;
        }
        true
    }
}

impl Drop for Worker {
    /// Lets the thread finish the jobs queued (if any), and waits for it.
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The jobs the storing thread has taken from its channel and not stored yet, oldest first,
/// how many of the oldest have had their names looked up ahead, and the folder they were
/// looked up in.
#[derive(Default)]
struct Ahead {
    jobs: VecDeque<Job>,
    looked: usize,
    watch: Option<Watch>,
}

/// A folder of a store whose names are looked up ahead, and its lookout (`None`: the store
/// has none), kept while bodies go there and dropped when the thread waits for jobs.
struct Watch {
    store: Arc<dyn Storage>,
    folder: String,
    lookout: Option<Box<dyn Lookout>>,
}

impl Ahead {
    /// The next job to store: the oldest taken, else the next to come (waiting for it);
    /// `None` once none is left and the connection hands over no more.
    fn next(&mut self, inbox: &Receiver<Job>) -> Option<Job> {
        match self.jobs.pop_front() {
            Some(job) => {
                self.looked = self.looked.saturating_sub(1);
                Some(job)
            }
            None => {
                // Nothing to look up while no job comes: the folder is let go.
                self.watch = None;
                inbox.recv().ok()
            }
        }
    }

    /// Takes every job queued in `inbox`, then looks up ahead the names of the oldest jobs not
    /// looked up yet that go into `folder` of `store` (where a body was just stored, so that
    /// it exists: a lookup stopped by a missing folder would leave nothing to find later), up
    /// to the first that goes elsewhere; the folder's lookout is opened with `open` when it is
    /// not the one kept.
    fn look_ahead(
        &mut self,
        inbox: &Receiver<Job>,
        store: &Arc<dyn Storage>,
        folder: &str,
        open: &OpenLookout,
    ) {
        self.jobs.extend(inbox.try_iter());
        while let Some(job) = self.jobs.get(self.looked) {
            let (to, leaf) = split(job.upload.name.as_str());
            if to != folder || !Arc::ptr_eq(&job.store, store) {
                break;
            }
            let watch = match self.watch.take() {
                Some(w) if w.folder == folder && Arc::ptr_eq(&w.store, store) => w,
                _ => Watch {
                    store: Arc::clone(store),
                    folder: folder.to_owned(),
                    lookout: open(&**store, folder),
                },
            };
            if let Some(lookout) = &watch.lookout {
                lookout.look(leaf);
            }
            self.watch = Some(watch);
            self.looked += 1;
        }
    }
}

/// Readies the destination of the body of `up` from offset `from` (see
/// [`Storage::start_body`]).
pub(super) fn open_body(
    store: &dyn Storage,
    up: &mut Upload,
    from: u64,
) -> Result<Box<dyn Incoming>, Refusal> {
    store
        .start_body(up, from)
        .map_err(|e| Refusal::io("cannot create the file", &e))
}

/// Appends `data` to the body being written.
pub(super) fn write_body(work: &mut dyn Incoming, data: &[u8]) -> Result<(), Refusal> {
    work.write(data)
        .map_err(|e| Refusal::io("cannot write the file", &e))
}

/// Stores `job`: destination, bytes, publish; the name is free again after. Returns the
/// job's buffer with the outcome.
fn store_job(job: Job) -> (Stored, Vec<u8>) {
    let Job {
        store,
        mut upload,
        lock,
        bytes,
        digest,
        track,
    } = job;
    let stored = open_body(&*store, &mut upload, 0).and_then(|mut work| {
        write_body(&mut *work, &bytes)?;
        work.publish(&upload, digest, track)
    });
    drop(lock);
    (stored, bytes)
}

#[cfg(test)]
mod tests;
