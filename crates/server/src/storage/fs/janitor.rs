//! The janitor: one thread per storage folder that, while the server runs, keeps its state
//! folder in check off the transfer path. Every [`TICK`] it checks that the state folder is
//! still at its name in the root (renaming it back if a local user renamed it) and whether
//! other local users can rename it (see
//! [`State::check_place`](super::state::State::check_place)), and warns when the storage
//! folder's path no longer leads to the folder the server opened; every [`SWEEP_EVERY`] it
//! removes expired partials (see [`State::sweep`](super::state::State::sweep)), so that a
//! server that runs for months does not keep them until its next start.
//!
//! The thread holds the storage folder weakly and stops when its [`Janitor`] is dropped.

use std::io;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::Space;

/// How often the janitor checks the state folder's place.
pub(crate) const TICK: Duration = Duration::from_secs(10);
/// How often expired partials are removed while the server runs: a partial goes at most this
/// long after it expires.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// The janitor of one storage folder; dropping it stops the thread at once (and waits for
/// it).
#[derive(Debug)]
pub(crate) struct Janitor {
    /// Never sent on: dropping it wakes the thread, which then ends.
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Janitor {
    /// Starts the janitor of `space`, looking every `tick` and sweeping every `sweep_every`
    /// ([`TICK`] and [`SWEEP_EVERY`] but in tests).
    pub(crate) fn start(
        space: &Arc<Space>,
        tick: Duration,
        sweep_every: Duration,
    ) -> io::Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let space = Arc::downgrade(space);
        let thread = thread::Builder::new()
            .name("ferry-janitor".into())
            .spawn(move || run(&space, (tick, sweep_every), &stopped))?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it: it no longer holds the space.
    pub(crate) fn stop(&mut self) {
        self.stop = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Janitor {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The janitor's loop (see [`Janitor::start`] for the periods), until `stopped` disconnects
/// or the space is gone.
fn run(
    space: &Weak<Space>,
    (tick, sweep_every): (Duration, Duration),
    stopped: &mpsc::Receiver<()>,
) {
    let mut swept = Instant::now();
    let mut elsewhere = false;
    while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(tick) {
        let Some(space) = space.upgrade() else {
            return;
        };
        space.state.check_place(space.root.fd(), &space.path);
        // Deleted: the state folder's check says so.
        let moved = space.root.is_at(&space.path) == Some(false);
        if moved && !elsewhere {
            let dir = space.path.display();
            log::warn!(
                "{dir} is no longer the folder this server opened at start (it was moved, or \
                 deleted and made again): the server goes on storing into the folder it \
                 opened, wherever that is now; restart it to serve {dir}"
            );
        } else if elsewhere && !moved {
            log::info!(
                "{} is the server's storage folder again",
                space.path.display()
            );
        }
        elsewhere = moved;
        if swept.elapsed() >= sweep_every {
            space.state.sweep();
            swept = Instant::now();
        }
    }
}
