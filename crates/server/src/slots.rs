//! Connection slots that never wait, and what each connection has done lately.
//!
//! A slot is taken at once when one is free. When all are taken but some connection has gone
//! without progress (no completed file, fewer than [`PROGRESS_BYTES`] body bytes) for longer
//! than a grace, a newcomer may
//! go on without a slot, for at most that grace, and claims the slot of the stalest connection
//! when it makes progress itself; that connection is asked to close (see
//! [`Activity::evict`]). Else the newcomer is refused. So connections that only chatter (a
//! small frame now and then to stay clear of the idle timeout) cannot lock real clients out,
//! and reconnecting ones cannot win their slots back from each other either: only progress
//! evicts.

use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};

/// Why another part of the server asks a connection to close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Evict {
    /// The server is full and a newcomer took this connection's slot.
    Newcomer,
    /// Another connection resumes a file this one holds.
    Takeover,
}

/// Body bytes that count as progress only together: moved since the last progress mark, at
/// least this many mark progress (a completed file always does). A link at 50 KiB/s marks it
/// three times a second; one byte a second never does, so a trickled body is stalled (and,
/// when the server is full, evicted) like a silent one. In rates: 8 KiB/s keeps a slot past
/// the default `--evict-after` (2 s), 273 B/s stays clear of the default `--stall-timeout`.
pub(crate) const PROGRESS_BYTES: u64 = 16 * 1024;

/// One connection's progress clock, its eviction flag and whether it is winding down, shared
/// with the slot table and the name locks (so that other connections can see how stale it is
/// and ask it to close, or see that it is about to let go of what it holds).
#[derive(Debug)]
pub(crate) struct Activity {
    born: Instant,
    /// Milliseconds from `born` to the last progress.
    last: AtomicU64,
    /// Body bytes moved since the last progress mark, short of [`PROGRESS_BYTES`].
    unmarked: AtomicU64,
    /// 0, or an [`Evict`] as 1 + its index.
    evict: AtomicU8,
    /// Where the connection is in its life, as others see it (see [`Activity::winding_down`]).
    life: Mutex<Life>,
}

/// See [`Activity::life`].
#[derive(Debug)]
enum Life {
    /// Serving, its socket not watched (yet).
    Serving,
    /// Serving, with a duplicate of its socket, on which others see its peer hang up.
    Watched(OwnedFd),
    /// Its loop has ended: it lets go of what it holds, and closes.
    Ending,
}

impl Activity {
    /// A new connection's: progress counted from now.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            born: Instant::now(),
            last: AtomicU64::new(0),
            unmarked: AtomicU64::new(0),
            evict: AtomicU8::new(0),
            life: Mutex::new(Life::Serving),
        })
    }

    /// Lets other connections watch `socket`, the connection's own (through a duplicate
    /// descriptor, given up by [`Activity::wind_down`]), for its peer hanging up: that shows
    /// there at once, while the connection's thread may be busy elsewhere (in a disk write).
    /// Without a descriptor to spare, nothing is watched.
    pub(crate) fn watch_peer(&self, socket: BorrowedFd<'_>) {
        let Ok(fd) = socket.try_clone_to_owned() else {
            return;
        };
        let mut life = self.life.lock().unwrap_or_else(PoisonError::into_inner);
        if matches!(*life, Life::Serving) {
            *life = Life::Watched(fd);
        }
    }

    /// The connection's loop has ended: what it still does is let go of what it holds
    /// (its body kept for resume, its names, its last flush) and close.
    pub(crate) fn wind_down(&self) {
        *self.life.lock().unwrap_or_else(PoisonError::into_inner) = Life::Ending;
    }

    /// Whether the connection is winding down: its loop has ended, or its peer has hung up
    /// (closed its side of the connection, or reset it) and what the connection does now is
    /// finish the last bytes the peer sent, find the connection's end and let go.
    pub(crate) fn winding_down(&self) -> bool {
        let life = self.life.lock().unwrap_or_else(PoisonError::into_inner);
        let fd = match &*life {
            Life::Serving => return false,
            Life::Watched(fd) => fd,
            Life::Ending => return true,
        };
        let mut fds = [PollFd::new(fd, PollFlags::RDHUP)];
        // Without waiting; POLLHUP and POLLERR are reported whatever was asked.
        poll(&mut fds, Some(&Timespec::default())).is_ok_and(|n| n > 0)
    }

    fn since_born(&self, now: Instant) -> u64 {
        let ms = now.saturating_duration_since(self.born).as_millis();
        u64::try_from(ms).unwrap_or(u64::MAX)
    }

    /// Records progress now: a file completed, or enough body bytes moved (see
    /// [`Activity::moved`]).
    pub(crate) fn progress(&self) {
        self.unmarked.store(0, Ordering::Relaxed);
        self.last
            .fetch_max(self.since_born(Instant::now()), Ordering::Relaxed);
    }

    /// Counts `n` body bytes moved (either way): progress once [`PROGRESS_BYTES`] have moved
    /// since the last mark.
    pub(crate) fn moved(&self, n: usize) {
        let n = u64::try_from(n).unwrap_or(u64::MAX);
        let before = self.unmarked.fetch_add(n, Ordering::Relaxed);
        if before.saturating_add(n) >= PROGRESS_BYTES {
            self.progress();
        }
    }

    /// How long the connection has gone without progress at `now`.
    pub(crate) fn idle_for(&self, now: Instant) -> Duration {
        let idle = self
            .since_born(now)
            .saturating_sub(self.last.load(Ordering::Relaxed));
        Duration::from_millis(idle)
    }

    /// Asks the connection to close; the first reason given stays.
    pub(crate) fn evict(&self, why: Evict) {
        let code = match why {
            Evict::Newcomer => 1,
            Evict::Takeover => 2,
        };
        let _ = self
            .evict
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Whether, and why, the connection was asked to close.
    pub(crate) fn evicted(&self) -> Option<Evict> {
        match self.evict.load(Ordering::Acquire) {
            1 => Some(Evict::Newcomer),
            2 => Some(Evict::Takeover),
            _ => None,
        }
    }
}

/// The connections holding a slot, at most `max`.
#[derive(Debug)]
pub(crate) struct Slots {
    held: Mutex<Vec<Arc<Activity>>>,
    max: usize,
    grace: Duration,
}

/// What a newcomer gets.
#[derive(Debug)]
pub(crate) enum Take {
    /// A free slot.
    Slot(Slot),
    /// None free, but one may be [claimed](Slots::claim) on progress: a holder is stale.
    Probation,
    /// None: every slot holder made progress within the grace.
    Full,
}

/// One taken slot, given back on drop.
#[derive(Debug)]
pub(crate) struct Slot {
    slots: Arc<Slots>,
    who: Arc<Activity>,
}

impl Slots {
    /// `max` slots; a connection without progress for longer than `grace` may lose its slot
    /// to a newcomer when all are taken.
    pub(crate) fn new(max: usize, grace: Duration) -> Arc<Self> {
        Arc::new(Self {
            held: Mutex::new(Vec::new()),
            max,
            grace,
        })
    }

    /// The limit.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// The grace: how long a slot holder may go without progress before a newcomer that
    /// makes progress takes its slot, and how long a newcomer on probation may wait for that.
    pub(crate) fn grace(&self) -> Duration {
        self.grace
    }

    /// A newcomer's slot: a free one (`who`'s progress clock starts now); else probation if
    /// some holder is stale; else full.
    pub(crate) fn try_take(self: &Arc<Self>, who: &Arc<Activity>) -> Take {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if held.len() < self.max {
            return Take::Slot(self.push(&mut held, who));
        }
        match self.stalest(&held) {
            Some(_) => Take::Probation,
            None => Take::Full,
        }
    }

    /// For a newcomer on probation that makes progress: a free slot, else the one of the
    /// stalest holder if it went without progress for longer than the grace (that holder is
    /// evicted). `None` when neither.
    pub(crate) fn claim(self: &Arc<Self>, who: &Arc<Activity>) -> Option<Slot> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if held.len() >= self.max {
            let stalest = self.stalest(&held)?;
            held.swap_remove(stalest).evict(Evict::Newcomer);
        }
        Some(self.push(&mut held, who))
    }

    /// The holder that has gone longest without progress, if longer than the grace.
    fn stalest(&self, held: &[Arc<Activity>]) -> Option<usize> {
        let now = Instant::now();
        held.iter()
            .enumerate()
            .map(|(i, a)| (i, a.idle_for(now)))
            .max_by_key(|&(_, idle)| idle)
            .filter(|&(_, idle)| idle > self.grace)
            .map(|(i, _)| i)
    }

    fn push(self: &Arc<Self>, held: &mut Vec<Arc<Activity>>, who: &Arc<Activity>) -> Slot {
        who.progress();
        held.push(Arc::clone(who));
        Slot {
            slots: Arc::clone(self),
            who: Arc::clone(who),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self
            .slots
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Gone already if it was evicted.
        held.retain(|a| !Arc::ptr_eq(a, &self.who));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(t: Take) -> Slot {
        match t {
            Take::Slot(s) => s,
            other => panic!("expected a slot, got {other:?}"),
        }
    }

    #[test]
    fn never_more_than_max() {
        let slots = Slots::new(2, Duration::from_secs(60));
        let a = slot(slots.try_take(&Activity::new()));
        let _b = slot(slots.try_take(&Activity::new()));
        assert!(matches!(slots.try_take(&Activity::new()), Take::Full));
        assert!(slots.claim(&Activity::new()).is_none());
        drop(a);
        slot(slots.try_take(&Activity::new()));
    }

    #[test]
    fn progress_claims_the_slot_of_the_stalest_connection_after_the_grace() {
        let slots = Slots::new(2, Duration::from_millis(50));
        let (old, busy) = (Activity::new(), Activity::new());
        let _a = slot(slots.try_take(&old));
        let _b = slot(slots.try_take(&busy));
        // Within the grace nobody is evicted.
        assert!(matches!(slots.try_take(&Activity::new()), Take::Full));
        std::thread::sleep(Duration::from_millis(120));
        busy.progress();
        let newcomer = Activity::new();
        assert!(matches!(slots.try_take(&newcomer), Take::Probation));
        assert_eq!(old.evicted(), None, "probation evicts nobody");
        let c = slots.claim(&newcomer).expect("the stale connection's slot");
        assert_eq!(old.evicted(), Some(Evict::Newcomer));
        assert_eq!(busy.evicted(), None);
        // The newcomer's clock starts with its slot: it is not the next to go.
        assert!(matches!(slots.try_take(&Activity::new()), Take::Full));
        drop(c);
        slot(slots.try_take(&Activity::new()));
    }

    #[test]
    fn a_connection_winds_down_when_its_peer_hangs_up_or_its_loop_ends() {
        use std::io::Write;
        use std::net::{Shutdown, TcpListener, TcpStream};
        use std::os::fd::AsFd;

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (socket, _) = listener.accept().unwrap();
        let a = Activity::new();
        assert!(!a.winding_down(), "not watched: serving");
        a.watch_peer(socket.as_fd());
        peer.write_all(b"bytes still to read").unwrap();
        assert!(!a.winding_down(), "input to read is not a hang-up");
        peer.shutdown(Shutdown::Write).unwrap();
        let until = Instant::now() + Duration::from_secs(5);
        while !a.winding_down() {
            assert!(Instant::now() < until, "the peer's close is seen");
            std::thread::sleep(Duration::from_millis(5));
        }

        let b = Activity::new();
        b.watch_peer(socket.as_fd());
        b.wind_down();
        assert!(b.winding_down(), "its loop ended");
        b.watch_peer(socket.as_fd());
        assert!(
            b.winding_down(),
            "an ending connection is not watched again"
        );
    }

    #[test]
    fn body_bytes_are_progress_only_in_chunks() {
        let a = Activity::new();
        std::thread::sleep(Duration::from_millis(30));
        // A trickle short of the floor, however long it goes on, is no progress.
        for _ in 0..PROGRESS_BYTES - 1 {
            a.moved(1);
        }
        assert!(a.idle_for(Instant::now()) >= Duration::from_millis(30));
        a.moved(1);
        assert!(a.idle_for(Instant::now()) < Duration::from_millis(30));
        // The count starts again from each mark, a completed file's too.
        std::thread::sleep(Duration::from_millis(30));
        a.moved(usize::try_from(PROGRESS_BYTES).unwrap() - 1);
        a.progress();
        std::thread::sleep(Duration::from_millis(30));
        a.moved(1);
        assert!(a.idle_for(Instant::now()) >= Duration::from_millis(30));
    }

    #[test]
    fn the_first_eviction_reason_stays() {
        let a = Activity::new();
        a.evict(Evict::Takeover);
        a.evict(Evict::Newcomer);
        assert_eq!(a.evicted(), Some(Evict::Takeover));
    }
}
