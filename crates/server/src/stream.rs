//! A `TcpStream` whose waits are bounded: a message must start within the idle timeout and,
//! once begun, end by an absolute deadline (so trickling bytes cannot stretch it); a body may
//! not go silent for longer than the idle timeout; a connection with a slot that makes no
//! progress for the stall timeout is cut however many small frames it sends; stop and
//! eviction requests cut waits short; once the connection is closing, every wait shares one
//! last deadline. The TLS handshake (a [`ferry_secure::Transport`]) and the proto
//! [`Driver`](ferry_proto::Driver) run on top of it.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_secure::timed::{self, Budget};
use ferry_secure::Transport;

use crate::openings::Opening;
use crate::slots::{Activity, Evict};

/// Longest single blocking wait, so that stop requests are noticed promptly.
const SLICE: Duration = Duration::from_millis(100);

/// Stop requests shared by the accept loop and every connection.
#[derive(Debug, Default)]
pub(crate) struct StopFlags {
    /// No new connections or files; connections with nothing in flight close now.
    pub draining: AtomicBool,
    /// The grace period is over: every connection stops now.
    pub abort: AtomicBool,
}

/// Why an I/O call on a [`Guarded`] stream gave up on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Cut {
    /// The server is shutting down.
    #[error("the server is shutting down")]
    Stopping,
    /// The peer moved no byte (either way) for too long, or trickled a message past its deadline.
    #[error("the client moved no byte for too long, or did not finish a message in time")]
    Timeout,
    /// The connection moved no file bytes and finished no file for this long.
    #[error("the client made no progress (no finished file, under 16 KiB of file data) for {0:?}")]
    Stalled(Duration),
    /// The server is full and a newcomer took the slot of this stalled connection.
    #[error(
        "the server is full and this connection made no progress; its slot went to another client"
    )]
    Evicted,
    /// Another connection resumes a file this stalled connection was uploading.
    #[error("another connection took over an upload this connection made no progress with")]
    TakenOver,
}

impl Cut {
    fn into_io(self) -> io::Error {
        let kind = match self {
            Cut::Stopping | Cut::Evicted | Cut::TakenOver => io::ErrorKind::ConnectionAborted,
            Cut::Timeout | Cut::Stalled(_) => io::ErrorKind::TimedOut,
        };
        io::Error::new(kind, self)
    }

    /// The cut behind an I/O error, if the error is one.
    pub(crate) fn of(e: &io::Error) -> Option<Cut> {
        e.get_ref()?.downcast_ref::<Cut>().copied()
    }
}

/// How long a read may wait.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Wait {
    /// Until this instant, however many bytes trickle in before it.
    Until(Instant),
    /// Until this much time passes with no byte at all.
    Idle(Duration),
    /// For the next message: its first byte by `first_by`, then the rest within `rest`
    /// (an absolute deadline set when the first bytes arrive).
    Message {
        /// Deadline for the first byte.
        first_by: Instant,
        /// Time allowed from the first byte to the end of the message.
        rest: Duration,
    },
}

/// A socket with bounded waits; see the module docs.
#[derive(Debug)]
pub(crate) struct Guarded<'a> {
    stream: TcpStream,
    stop: &'a StopFlags,
    wait: Wait,
    /// Set by the first bytes read under [`Wait::Message`].
    message_by: Option<Instant>,
    /// When the last read that returned bytes did.
    last_read: Option<Instant>,
    idle: Duration,
    /// Whether a drain request may cut the current wait (nothing in flight).
    interruptible: bool,
    /// Once the connection holds a slot: its activity (progress, eviction) and stall timeout.
    watch: Option<(Arc<Activity>, Duration)>,
    /// Whether bytes written now are a body's, and so count towards progress.
    body: bool,
    /// Set once the connection is closing: the deadline every wait shares from then on.
    closing_by: Option<Instant>,
    /// A write timed out: the peer does not read.
    write_timed_out: bool,
    /// Until the connection holds a slot: its place among the connections a newcomer may
    /// displace (see [`crate::openings`]); given up by [`Guarded::seated`].
    opening: Option<Opening>,
}

impl<'a> Guarded<'a> {
    pub(crate) fn new(stream: TcpStream, stop: &'a StopFlags, idle: Duration) -> Self {
        Self {
            stream,
            stop,
            wait: Wait::Idle(idle),
            message_by: None,
            last_read: None,
            idle,
            interruptible: false,
            watch: None,
            body: false,
            closing_by: None,
            write_timed_out: false,
            opening: None,
        }
    }

    /// Counts the connection as displaceable by a newcomer when the server is full, until it
    /// is [seated](Guarded::seated) or ends.
    pub(crate) fn set_opening(&mut self, opening: Opening) {
        self.opening = Some(opening);
    }

    /// From now on, cuts the connection when `activity` is evicted or makes no progress for
    /// `stall` (counted from the last [`Activity::progress`]).
    pub(crate) fn watch(&mut self, activity: Arc<Activity>, stall: Duration) {
        self.watch = Some((activity, stall));
    }

    /// The connection holds a slot: no newcomer may displace it any more (see
    /// [`crate::openings`]). One on probation for a slot still may.
    pub(crate) fn seated(&mut self) {
        self.opening = None;
    }

    /// Whether the bytes written from now on are a body's (they then count towards progress,
    /// see [`Activity::moved`]).
    pub(crate) fn set_body(&mut self, body: bool) {
        self.body = body;
    }

    /// The connection is closing: every wait from now on (the last flush, the TLS
    /// `close_notify`, the linger) ends within `within` of the first call, in all, and no
    /// longer ends early for a stop (the server's end of the grace included): the client
    /// still gets the ERROR that says why it was cut off.
    pub(crate) fn close_within(&mut self, within: Duration) {
        let by = Instant::now() + within;
        self.closing_by = Some(self.closing_by.map_or(by, |c| c.min(by)));
    }

    /// A write, bounded by the idle timeout. Once one has timed out (the peer does not read),
    /// every later one fails at once: TLS swallows the first failure of a write, and would
    /// wait a full timeout again on the next.
    fn bounded_write<T>(
        &mut self,
        call: impl FnOnce(&TcpStream, &mut Slices<'_, 'a>) -> io::Result<T>,
    ) -> io::Result<T> {
        if self.write_timed_out {
            return Err(Cut::Timeout.into_io());
        }
        let deadline = Instant::now() + self.idle;
        let result = call(&self.stream, &mut self.slices(deadline, false));
        if let Err(e) = &result {
            self.write_timed_out = Cut::of(e) == Some(Cut::Timeout);
        }
        result
    }

    fn wrote(&self, n: usize) {
        if let (true, Some((activity, _))) = (self.body, &self.watch) {
            activity.moved(n);
        }
    }

    /// The socket (for addresses and peeking; reading or writing it directly would bypass the
    /// deadlines, and corrupt a TLS stream).
    pub(crate) fn tcp(&self) -> &TcpStream {
        &self.stream
    }

    /// When the last read that returned bytes did (`None` before any).
    pub(crate) fn last_read(&self) -> Option<Instant> {
        self.last_read
    }

    /// Waits like a read for the first byte, without consuming it; `None` if the peer closed
    /// without sending anything.
    pub(crate) fn peek_first(&mut self) -> io::Result<Option<u8>> {
        let deadline = self.read_deadline();
        let interruptible = self.interruptible;
        let mut b = [0u8; 1];
        loop {
            let peeked = timed::peek(
                &self.stream,
                &mut self.slices(deadline, interruptible),
                &mut b,
            );
            match peeked {
                Ok(0) => return Ok(None),
                Ok(_) => return Ok(Some(b[0])),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn read_deadline(&self) -> Instant {
        match self.wait {
            Wait::Until(t) => t,
            Wait::Idle(d) => Instant::now() + d,
            Wait::Message { first_by, .. } => self.message_by.unwrap_or(first_by),
        }
    }

    /// Bounds the reads that follow.
    pub(crate) fn set_wait(&mut self, wait: Wait, interruptible: bool) {
        self.wait = wait;
        self.message_by = None;
        self.interruptible = interruptible;
    }

    fn check_stop(&self, interruptible: bool) -> io::Result<()> {
        // A closing connection has its own deadline; it is being cut already. Its last words
        // (an ERROR, ShuttingDown included, and the linger that lets the client read it) go
        // out even once the grace is over.
        if self.closing_by.is_some() {
            return Ok(());
        }
        let draining = interruptible && self.stop.draining.load(Ordering::Relaxed);
        if draining || self.stop.abort.load(Ordering::Relaxed) {
            return Err(Cut::Stopping.into_io());
        }
        let Some((activity, stall)) = self.watch.as_ref() else {
            return Ok(());
        };
        let cut = match activity.evicted() {
            Some(Evict::Newcomer) => Some(Cut::Evicted),
            Some(Evict::Takeover) => Some(Cut::TakenOver),
            None => (activity.idle_for(Instant::now()) >= *stall).then_some(Cut::Stalled(*stall)),
        };
        cut.map_or(Ok(()), |c| Err(c.into_io()))
    }

    /// The budget of one wait until `deadline` (or the closing deadline); see [`Slices`].
    fn slices(&self, deadline: Instant, interruptible: bool) -> Slices<'_, 'a> {
        Slices {
            guarded: self,
            deadline: self.closing_by.map_or(deadline, |c| c.min(deadline)),
            interruptible,
        }
    }
}

/// The budget of one wait on a [`Guarded`] socket: blocking calls of at most [`SLICE`] until
/// one makes progress, the deadline passes, or a stop, an eviction or a stall cuts it.
#[derive(Debug)]
struct Slices<'g, 'a> {
    guarded: &'g Guarded<'a>,
    deadline: Instant,
    /// Whether a drain request may cut this wait.
    interruptible: bool,
}

impl Budget for Slices<'_, '_> {
    fn next_wait(&mut self) -> io::Result<Duration> {
        self.guarded.check_stop(self.interruptible)?;
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Cut::Timeout.into_io());
        }
        Ok(left.min(SLICE))
    }
}

impl Read for Guarded<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let deadline = self.read_deadline();
        // Once a message has begun, a drain request waits for it.
        let interruptible = self.interruptible && self.message_by.is_none();
        // Body bytes read are counted as the session takes them (they may have been read
        // with a frame header); only those written are counted here.
        let n = timed::read(&self.stream, &mut self.slices(deadline, interruptible), buf)?;
        if n > 0 {
            let now = Instant::now();
            self.last_read = Some(now);
            if let (Wait::Message { rest, .. }, None) = (self.wait, self.message_by) {
                self.message_by = Some(now + rest);
            }
        }
        Ok(n)
    }
}

impl Write for Guarded<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.bounded_write(|tcp, slices| timed::write(tcp, slices, buf))?;
        self.wrote(n);
        Ok(n)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let n = self.bounded_write(|tcp, slices| timed::write_vectored(tcp, slices, bufs))?;
        self.wrote(n);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // A no-op on a `TcpStream` today; bounded anyway, like every wait on the peer. (Over
        // TLS, `Stream::flush` writes its records through `write` above, also bounded.)
        self.bounded_write(|tcp, slices| {
            timed::bounded(slices, |_| {
                let mut tcp = tcp;
                tcp.flush()
            })
        })
    }
}

impl Transport for Guarded<'_> {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.stream.peer_addr()
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        // A peer that is gone already is not an error here.
        self.stream.shutdown_write()
    }
}
