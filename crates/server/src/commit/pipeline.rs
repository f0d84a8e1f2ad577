//! The flushes of one connection, run on a thread of their own (pipelined group commit): while
//! the flush of one batch runs, the connection goes on reading, writing and publishing the files
//! of the next. At most one flush runs at a time; the connection learns that it ended through
//! an `eventfd` it polls together with its socket ([`Pipeline::wake_fd`]), so that the
//! flushed batch's RESULTs go out at once even while it waits for input.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use super::{Flush, Reply};
use crate::storage::Storage;
use crate::wake::Wake;

/// A batch whose flush has ended: its replies, in order, and how the flush went.
#[derive(Debug)]
pub(crate) struct Flushed {
    pub replies: Vec<Reply>,
    pub result: io::Result<()>,
}

/// One connection's flushes, one at a time, off the connection's thread.
#[derive(Debug)]
pub(crate) struct Pipeline {
    store: Arc<dyn Storage>,
    /// Started at the first flush; `None` before it, or when no thread could be started
    /// (flushes then run on the connection's thread).
    worker: Option<Worker>,
    /// The replies of the batch whose flush runs (or ran, until collected).
    flushing: Option<Vec<Reply>>,
    /// How a flush run on the connection's thread went (no worker).
    ran: Option<io::Result<()>>,
}

/// The thread that flushes, and what links it to the connection.
#[derive(Debug)]
struct Worker {
    jobs: Option<SyncSender<Flush>>,
    done: Receiver<io::Result<()>>,
    /// Counts flushes that ended and were not yet collected; readable while it is not zero.
    wake: Arc<Wake>,
    thread: Option<JoinHandle<()>>,
}

impl Pipeline {
    /// No flush yet; flushes will go through `store`.
    pub(crate) fn new(store: Arc<dyn Storage>) -> Self {
        Self {
            store,
            worker: None,
            flushing: None,
            ran: None,
        }
    }

    /// Whether a flush runs (or ended and waits to be collected).
    pub(crate) fn busy(&self) -> bool {
        self.flushing.is_some()
    }

    /// Starts `flush`, whose batch holds `replies`; the pipeline must not be
    /// [`busy`](Pipeline::busy).
    pub(crate) fn submit(&mut self, replies: Vec<Reply>, flush: Flush) {
        debug_assert!(!self.busy(), "one flush at a time");
        if self.worker.is_none() {
            self.worker = Worker::start(Arc::clone(&self.store))
                .inspect_err(|e| {
                    log::warn!("cannot start a flush thread ({e}); flushing on the connection's")
                })
                .ok();
        }
        let flush = match self.worker.as_ref().and_then(|w| w.jobs.as_ref()) {
            // Never blocks: the worker is idle and the channel holds one job.
            Some(jobs) => jobs.send(flush).err().map(|e| e.0),
            None => Some(flush),
        };
        if let Some(flush) = flush {
            // No worker (or it is gone): flush here.
            self.ran = Some(self.store.flush(&flush));
        }
        self.flushing = Some(replies);
    }

    /// The batch whose flush has ended, if it has; never waits.
    pub(crate) fn try_done(&mut self) -> Option<Flushed> {
        self.collect(false)
    }

    /// The batch whose flush runs, once it has ended (`None`: none runs).
    pub(crate) fn wait(&mut self) -> Option<Flushed> {
        self.collect(true)
    }

    /// What to poll, with the connection's socket, to learn that a flush ended (`None`: no
    /// flush runs on a thread).
    pub(crate) fn wake_fd(&self) -> Option<BorrowedFd<'_>> {
        self.worker
            .as_ref()
            .filter(|_| self.busy())
            .map(|w| w.wake.as_fd())
    }

    fn collect(&mut self, block: bool) -> Option<Flushed> {
        self.flushing.as_ref()?;
        let result = match (self.ran.take(), &self.worker) {
            (Some(r), _) => r,
            (None, Some(w)) => w.result(block)?,
            (None, None) => Err(io::Error::other("internal error: a flush without a thread")),
        };
        let replies = self.flushing.take().unwrap_or_default();
        Some(Flushed { replies, result })
    }
}

impl Worker {
    /// Starts a thread that flushes through `store`.
    fn start(store: Arc<dyn Storage>) -> io::Result<Self> {
        let wake = Arc::new(Wake::new()?);
        let (jobs, inbox) = mpsc::sync_channel::<Flush>(1);
        let (outbox, done) = mpsc::channel();
        let ring = Arc::clone(&wake);
        let thread = thread::Builder::new()
            .name("ferry-flush".into())
            .spawn(move || {
                for flush in inbox {
                    let result = store.flush(&flush);
                    // Closes the descriptors here too, off the connection's thread.
                    drop(flush);
                    if outbox.send(result).is_err() {
                        return;
                    }
                    ring.ring();
                }
            })?;
        Ok(Self {
            jobs: Some(jobs),
            done,
            wake,
            thread: Some(thread),
        })
    }

    /// How the flush went, once it ended (`None`: not yet, and `block` is false).
    fn result(&self, block: bool) -> Option<io::Result<()>> {
        let got = if block {
            self.done.recv().map_err(|_| TryRecvError::Disconnected)
        } else {
            self.done.try_recv()
        };
        let result = match got {
            Ok(r) => r,
            Err(TryRecvError::Empty) => return None,
            Err(TryRecvError::Disconnected) => {
                Err(io::Error::other("internal error: the flush thread ended"))
            }
        };
        self.wake.reset();
        Some(result)
    }
}

impl Drop for Worker {
    /// Lets the thread finish the flush it runs (if any), and waits for it.
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
