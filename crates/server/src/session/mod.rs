//! One connection: opens it (plain or TLS, see [`crate::gate`]), drives a
//! [`ferry_proto::Driver`] over it and acts on its events. Never parses bytes itself.
//!
//! This module is the connection loop: events, slots, timeouts, waits for input and the
//! connection's end. What the events mean is policy, kept apart from it and from the
//! [`Storage`] it acts through: who the client is and what it may do ([`auth`]), what an
//! offer, a body, an END or a cancel mean ([`uploads`]: unchanged files, name locks, the
//! batch of RESULTs), and what a GET or a LIST mean ([`downloads`]).
//!
//! RESULTs of stored files wait in a [`Batch`] until one flush has made the batch durable
//! (group commit, see [`crate::commit`]); the flush runs on the connection's [`Pipeline`]
//! thread while the connection goes on receiving, and the connection waits for its input and
//! for the flush's end at once. Small bodies are stored on a second thread too, the
//! [`storer`]'s, while the connection receives the next ones; their RESULTs keep the order of
//! the ENDs.
//!
//! With a version-2 client it also answers unchanged files (REFUSE `Unchanged`), stores folder
//! offers (RESULT) and streams listings page by page (PROTOCOL.md §4.8-§4.11).

mod auth;
mod downloads;
mod storer;
mod uploads;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_proto::{
    Code, Connection, DriveError, Driver, Error, Event, Framing, ProtocolError, Step,
};
use ferry_secure::SharedFailureLimiter;
use rustix::event::{poll, PollFd, PollFlags, Timespec};

use self::downloads::{Sent, Serving};
use self::storer::Storer;
use self::uploads::{Pending, Receiving};
use crate::access::{self, Permissions, Principal};
use crate::commit::{Batch, Pipeline};
use crate::config::Config;
use crate::gate::{self, Conn, REFUSAL_LINGER};
use crate::hooks::Hooks;
use crate::locks::NameLocks;
use crate::logging::{clip, LogBudget};
use crate::metrics::Metrics;
use crate::server::busy_reason;
use crate::slots::{Activity, Slot, Slots, Take};
use crate::storage::{Storage, BUF_LEN};
use crate::stream::{Cut, Guarded, StopFlags, Wait};
use crate::throttle::{Kind, Refusals};
use crate::units::Bytes;

/// What every connection shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: Config,
    pub store: Arc<dyn Storage>,
    pub locks: Arc<NameLocks>,
    pub stop: Arc<StopFlags>,
    /// Connections past their opening message.
    pub slots: Arc<Slots>,
    /// Failed authentications per source.
    pub limiter: SharedFailureLimiter,
    /// Credentials and what clients without a token may do.
    pub access: Arc<access::Access>,
    /// The same, confined to each credential folder (see [`access::Access::folders`]).
    pub spaces: Vec<Shared>,
    /// The `--on-stored` program's workers.
    pub hooks: Option<Arc<Hooks>>,
    /// Counters for `--metrics-listen`.
    pub metrics: Arc<Metrics>,
    /// Lines about refused connections, rate-limited.
    pub refusals: Arc<Refusals>,
}

impl Shared {
    /// This view of the server with `store` (a credential's folder) in place of its own; the
    /// limits are shared, the name locks are the folder's own.
    pub(crate) fn space(&self, store: Arc<dyn Storage>) -> Shared {
        Shared {
            config: self.config.clone(),
            store,
            locks: Arc::new(NameLocks::default()),
            stop: Arc::clone(&self.stop),
            slots: Arc::clone(&self.slots),
            limiter: self.limiter.clone(),
            access: Arc::clone(&self.access),
            spaces: Vec::new(),
            hooks: self.hooks.clone(),
            metrics: Arc::clone(&self.metrics),
            refusals: Arc::clone(&self.refusals),
        }
    }
}

/// Longest wait for input or a flush's end before the connection looks at its state again.
const WAKE_SLICE: Duration = Duration::from_millis(100);

#[derive(Default)]
struct Tally {
    stored: u64,
    /// Files and folders answered Unchanged.
    unchanged: u64,
    failed: u64,
    received: u64,
    sent: u64,
}

struct Session<'a> {
    d: Driver<Conn<'a>>,
    shared: &'a Shared,
    peer: SocketAddr,
    pending: VecDeque<Pending>,
    body: Option<Receiving>,
    serving: VecDeque<Serving>,
    sent: VecDeque<Sent>,
    tally: Tally,
    /// RESULTs waiting for the flush that makes their files durable.
    batch: Batch,
    /// The flush of the batch before, off this thread.
    pipeline: Pipeline,
    /// Stores complete small bodies, off this thread.
    storer: Storer,
    /// Moves file bytes; empty until the first body, hash or prefix needs it (see
    /// [`body_buf`]): a connection that never moves a file costs no megabyte.
    buf: Vec<u8>,
    /// When the connection was accepted.
    connected: Instant,
    /// Taken when the opening message (HELLO, or the seed name line) arrives.
    slot: Option<Slot>,
    /// Opened when the server was full: a slot is claimed on the first progress.
    probation: bool,
    /// An ERROR went out (a refusal, a limit, a rule broken, a stop): let the client read it
    /// before closing (see [`gate::linger`]).
    linger: bool,
    /// When this connection last made progress; whether it is asked to close.
    activity: Arc<Activity>,
    /// Lines about refusals this connection may still cause.
    log: LogBudget,
    /// The credential's name; `None` when anonymous.
    user: Option<String>,
    /// What this client may do.
    permissions: Permissions,
    /// Whom its uploads belong to: what is kept of one that is cut is resumed by it alone.
    principal: Principal,
    /// When the last progress line about the body in flight was logged.
    progress_logged: Instant,
}

/// Serves one accepted connection (`io`, set to open by the header deadline counted from
/// `started`; `peer` is the client, as a PROXY header named it) to its end, logging one line
/// for it and one per file.
pub(crate) fn serve_connection(
    io: Guarded<'_>,
    peer: SocketAddr,
    started: Instant,
    shared: &Shared,
) {
    let _counted = shared.metrics.connection();
    let c = &shared.config;
    let Some(stream) = gate::open(io, peer, c.tls.as_ref()) else {
        return;
    };
    let tls = if stream.is_tls() { "TLS, " } else { "" };
    let mut s = Session {
        d: Driver::new(stream, Connection::server()),
        shared,
        peer,
        pending: VecDeque::new(),
        body: None,
        serving: VecDeque::new(),
        sent: VecDeque::new(),
        tally: Tally::default(),
        batch: Batch::new(shared.store.durable()),
        pipeline: Pipeline::new(Arc::clone(&shared.store)),
        storer: Storer::new(peer),
        buf: Vec::new(),
        connected: started,
        slot: None,
        probation: false,
        linger: false,
        activity: Activity::new(),
        log: LogBudget::new(c.max_refusal_logs),
        user: None,
        permissions: shared.access.anonymous(),
        principal: Principal::of(None, shared.access.anonymous(), peer.ip()),
        progress_logged: started,
    };
    let tcp = s.d.stream().get_ref().tcp().as_fd();
    s.activity.watch_peer(tcp);
    let outcome = s.run();
    // From now on, an offer of a name this connection holds waits for it (see
    // `Activity::winding_down`).
    s.activity.wind_down();
    // Names are free for others first: the body cut off is kept for resume, and accepted
    // uploads that never began let go of their partials.
    let cut = s.interrupt_body(outcome.as_ref().err());
    // Files published before the connection failed are made durable; their RESULTs go out
    // if the client can still read them.
    let _ = s.commit();
    // From here on, the last flush, the TLS close and the linger share one short deadline.
    s.io().close_within(REFUSAL_LINGER);
    let outcome_ok = outcome.is_ok();
    let how = match outcome {
        Ok(()) => "done".to_owned(),
        Err(e) => clip(&s.close_after(&e, cut)),
    };
    gate::shutdown(s.d.stream_mut());
    if s.linger {
        gate::linger(s.d.stream_mut());
    }
    let framing = match s.d.conn().framing() {
        Some(Framing::Seed) => "seed",
        Some(Framing::Ferry) => "ferry",
        None => "no framing",
    };
    let t = &s.tally;
    // A connection closed cleanly before it said anything (a port probe, a balancer's health
    // check, a flood of them) is not worth a line by default.
    let level = if s.d.conn().framing().is_none() && outcome_ok {
        log::Level::Debug
    } else {
        log::Level::Info
    };
    log::log!(
        level,
        "{peer}: connection closed ({how}) after {:.1?}, {tls}{framing}: {} stored, {} unchanged, {} failed, {} received, {} sent{}",
        started.elapsed(),
        t.stored,
        t.unchanged,
        t.failed,
        Bytes(t.received),
        Bytes(t.sent),
        s.log.summary(),
    );
}

impl<'a> Session<'a> {
    fn run(&mut self) -> Result<(), DriveError> {
        loop {
            // The RESULTs of a batch whose flush ended are queued at once; stored bodies join
            // the batch.
            self.reap()?;
            self.collect_stored();
            // Replies go out before waiting (so that a connection with nothing in flight
            // counts as idle, and a drain request can close it), but not while more input
            // is at hand: the replies to a burst of small files then share one write, and
            // their files one flush. The batch closes once no input is at hand and no flush
            // runs; while a flush runs, the next batch keeps gathering.
            if !self.d.input_pending() {
                if !self.pipeline.busy() {
                    self.close_batch()?;
                }
                self.d.flush()?;
                if self.pipeline.busy() && !self.input_or_flushed() {
                    continue;
                }
                // Bodies still being stored: their RESULTs go out as they end, and input is
                // read as it comes.
                if !self.storer.is_empty() && !self.input_or_stored() {
                    continue;
                }
            }
            let idle = self.d.conn().is_idle()
                && self.body.is_none()
                && self.storer.is_empty()
                && !self.d.conn().frame_in_progress();
            if idle && self.shared.stop.draining.load(Ordering::Relaxed) {
                self.d
                    .conn_mut()
                    .close_with_error(Code::ShuttingDown, "the server is shutting down");
                self.d.flush()?;
                return Ok(());
            }
            let wait = self.next_wait();
            self.io().set_wait(wait, idle);
            let step = self.d.next_step()?;
            if !self.opened() && !self.take_slot(&step) {
                return Ok(());
            }
            // Progress: body bytes moved either way (an ACCEPT of ours starts a download's
            // body), or a file completed at either end.
            let body = matches!(step, Step::Body(_) | Step::Event(Event::Accepted { .. }));
            let completed = matches!(step, Step::Event(Event::End { .. } | Event::Result { .. }));
            if self.probation && (body || completed) && !self.claim_slot() {
                return Ok(());
            }
            self.io().set_body(body);
            let go_on = match step {
                Step::Body(_) => self.receive_body()?,
                Step::Event(event) => self.on_event(event)?,
            };
            self.io().set_body(false);
            if completed {
                self.activity.progress();
            }
            if self.batch.is_full() {
                // A full batch waits for the flush before it, then starts its own.
                self.reap_waiting()?;
                self.close_batch()?;
            } else if self.batch.is_ripe() {
                // Flushed while the next batch arrives, if no flush runs.
                self.close_batch()?;
            }
            if !go_on {
                // The last RESULTs, if the conversation still takes them (not after the
                // client's ERROR, say).
                let _ = self.commit();
                self.d.flush()?;
                return Ok(());
            }
        }
    }

    /// Waits until input arrives or the flush that runs ends, for at most [`WAKE_SLICE`];
    /// whether input (or the connection's end, or an error) is at hand.
    fn input_or_flushed(&self) -> bool {
        // None: the flush ran on this thread, it has ended.
        self.pipeline
            .wake_fd()
            .is_some_and(|wake| self.input_or_woken(wake))
    }

    /// Waits until input arrives or the oldest body the storer holds is stored, for at most
    /// [`WAKE_SLICE`]; whether input (or the connection's end, or an error) is at hand.
    fn input_or_stored(&self) -> bool {
        // None: a body is stored already, to be taken now.
        let input = self
            .storer
            .wake_fd()
            .is_some_and(|wake| self.input_or_woken(wake));
        self.storer.woken();
        input
    }

    /// Waits until input arrives or `wake` is readable, for at most [`WAKE_SLICE`]; whether
    /// input (or the connection's end, or an error) is at hand.
    fn input_or_woken(&self, wake: BorrowedFd<'_>) -> bool {
        let tcp = self.d.stream().get_ref().tcp();
        let mut fds = [
            PollFd::new(tcp, PollFlags::IN),
            PollFd::from_borrowed_fd(wake, PollFlags::IN),
        ];
        let timeout = Timespec::try_from(WAKE_SLICE).unwrap_or_default();
        match poll(&mut fds, Some(&timeout)) {
            Ok(0) => false,
            Ok(_) => !fds[0].revents().is_empty(),
            // Interrupted: look again.
            Err(e) => e != rustix::io::Errno::INTR,
        }
    }

    /// The guarded socket under the (maybe TLS) stream.
    pub(super) fn io(&mut self) -> &mut Guarded<'a> {
        self.d.stream_mut().get_mut()
    }

    /// How long the next message may take: the opening (HELLO or the seed name line) is due
    /// within the header timeout of connecting; later ones may start after up to the idle
    /// timeout, and must then end within the header timeout of their first byte.
    fn next_wait(&self) -> Wait {
        let c = &self.shared.config;
        if !self.opened() {
            return Wait::Until(self.connected + c.header_timeout);
        }
        if self.d.conn().frame_in_progress() {
            // The last read brought the end of one message and the start of this one.
            let began = self.d.stream().get_ref().last_read();
            return Wait::Until(began.unwrap_or_else(Instant::now) + c.header_timeout);
        }
        Wait::Message {
            first_by: Instant::now() + c.idle_timeout,
            rest: c.header_timeout,
        }
    }

    /// Whether the opening message has come (a slot is taken, or probation granted).
    fn opened(&self) -> bool {
        self.slot.is_some() || self.probation
    }

    /// Counts the connection against the limit once it has opened. When the server is full
    /// but a connection there is stale, goes on without a slot (for at most the grace) and
    /// claims one on its first progress; else refuses it as busy. `false` ends the connection.
    fn take_slot(&mut self, step: &Step) -> bool {
        if matches!(step, Step::Event(Event::Closed | Event::PeerError { .. })) {
            return true;
        }
        match self.shared.slots.try_take(&self.activity) {
            Take::Slot(slot) => self.hold(slot),
            Take::Probation => {
                self.probation = true;
                self.activity.progress();
                let (activity, grace) = (Arc::clone(&self.activity), self.shared.slots.grace());
                self.io().watch(activity, grace);
            }
            Take::Full => {
                self.refuse_busy("none of them stalled");
                return false;
            }
        }
        true
    }

    /// On probation and making progress: claims a slot. `false` ends the connection.
    fn claim_slot(&mut self) -> bool {
        match self.shared.slots.claim(&self.activity) {
            Some(slot) => {
                self.hold(slot);
                true
            }
            None => {
                self.refuse_busy("the stalled one went to another client");
                false
            }
        }
    }

    /// Holds `slot`; the stall timeout counts from now, and no newcomer displaces the
    /// connection any more.
    fn hold(&mut self, slot: Slot) {
        self.slot = Some(slot);
        self.probation = false;
        let (activity, stall) = (Arc::clone(&self.activity), self.shared.config.stall_timeout);
        self.io().watch(activity, stall);
        self.io().seated();
    }

    /// Tells the client the server is full, and logs `why`.
    fn refuse_busy(&mut self, why: &str) {
        let max = self.shared.slots.max();
        self.shared.refusals.warn(
            Kind::Busy,
            format_args!(
                "{}: refused, the server is at its limit of {max} connections ({why})",
                self.peer
            ),
        );
        self.d
            .conn_mut()
            .close_with_error(Code::Busy, &busy_reason(max));
        let _ = self.d.flush();
    }

    /// Acts on one event; `false` ends the connection.
    fn on_event(&mut self, event: Event) -> Result<bool, DriveError> {
        let upload = matches!(
            event,
            Event::Offer(_) | Event::Begin { .. } | Event::End { .. } | Event::Cancelled { .. }
        );
        if !upload {
            // Any other request waits until the bodies stored ahead are reported.
            self.drain_storer();
        }
        match event {
            Event::Hello { token, .. } => {
                if !self.authenticate(token.as_deref()) {
                    return Ok(false);
                }
                self.d.conn_mut().welcome()?;
            }
            Event::Offer(o) => return self.on_offer(o),
            Event::Begin { id, from } => self.on_begin(id, from),
            Event::End { id, size, check } => self.on_end(id, size, check)?,
            Event::Cancelled { id, reason } => self.on_cancel(id, &reason),
            Event::Get { id, name } => self.on_get(id, name)?,
            Event::List {
                id,
                path,
                recursive,
            } => self.on_list(id, path, recursive)?,
            Event::Accepted { id, offset, .. } => self.send_download(id, offset)?,
            Event::Refused { id, code, reason } => self.on_refused(id, code, &reason),
            Event::Result { id, code, detail } => self.on_result(id, code, &detail),
            Event::PeerError { code, reason } => {
                log::warn!(
                    "{}: the client reported an error: {code}: {}",
                    self.peer,
                    clip(&ferry_proto::name::escape(&reason))
                );
                return Ok(false);
            }
            Event::Closed => return Ok(false),
            other => {
                let shown = clip(&format!("{other:?}"));
                self.note(
                    log::Level::Warn,
                    format_args!("ignoring an event a server never expects: {shown}"),
                );
            }
        }
        Ok(true)
    }

    /// Whether a version-2 conversation is open (PROTOCOL.md §4.1).
    pub(super) fn v2(&self) -> bool {
        self.d.conn().version().is_some_and(|v| v >= 2)
    }

    /// Logs a line about a refusal or an unexpected event at `level`, within the
    /// connection's budget.
    pub(super) fn note(&mut self, level: log::Level, line: std::fmt::Arguments<'_>) {
        if let Some(last) = self.log.spend() {
            log::log!(level, "{}: {line}", self.peer);
            if last {
                log::warn!(
                    "{}: further refusals on this connection are not logged, only counted",
                    self.peer
                );
            }
        }
    }

    /// Tells the client why the connection ends when it still can; returns the words for the
    /// log. `cut`: the end cut a body off (a client that went away did so mid-body; the body's
    /// own log line says where, see [`Session::interrupt_body`]).
    fn close_after(&mut self, e: &DriveError, cut: bool) -> String {
        if let Some(how) = went_away(e) {
            // Best effort: a client that only closed its sending side still reads the ERROR
            // the machine queued.
            let _ = self.d.flush();
            let how = if cut { "mid-body".to_owned() } else { how };
            return format!("the client went away {how}");
        }
        let (code, why) = match e {
            DriveError::Io(io)
                if self.probation && matches!(Cut::of(io), Some(Cut::Stalled(_))) =>
            {
                (
                    Code::Busy,
                    format!(
                        "no progress within {:?} while waiting for a slot: {}",
                        self.shared.slots.grace(),
                        busy_reason(self.shared.slots.max())
                    ),
                )
            }
            DriveError::Io(io) => match Cut::of(io) {
                Some(Cut::Timeout | Cut::Stalled(_)) => (Code::Timeout, format!("timed out: {io}")),
                Some(Cut::Stopping) => (Code::ShuttingDown, io.to_string()),
                Some(Cut::Evicted | Cut::TakenOver) => (Code::Busy, format!("evicted: {io}")),
                None => return format!("connection lost: {io}"),
            },
            // The machine has queued an ERROR frame already.
            DriveError::Proto(Error::Protocol(p)) => (p.code(), format!("protocol error: {p}")),
            DriveError::Proto(other) => (Code::Io, format!("internal error: {other}")),
            other => (Code::Io, format!("error: {other}")),
        };
        self.d.conn_mut().close_with_error(code, &why);
        // Best effort: the client may be gone already. If the ERROR went out, what the client
        // still sends is read and dropped before the close: closing with unread bytes would
        // reset the connection, and the reset can discard the ERROR before the client reads it.
        self.linger = self.d.flush().is_ok();
        why
    }
}

/// How the client went away, when `e` says it did: it closed its side of the connection
/// inside a frame or a body, or while it still owed frames (PROTOCOL.md §9), or the
/// connection was reset. `None` for anything else (a rule broken, a limit of the server's, a
/// failure here).
pub(super) fn went_away(e: &DriveError) -> Option<String> {
    match e {
        DriveError::Proto(Error::Protocol(ProtocolError::Truncated { got, expected })) => Some(
            format!("partway through a frame or body ({got} of {expected} bytes)"),
        ),
        DriveError::Proto(Error::Protocol(ProtocolError::ClosedEarly { waiting_for })) => {
            Some(format!("while the server waited for {waiting_for}"))
        }
        DriveError::Io(io) if Cut::of(io).is_none() => {
            use std::io::ErrorKind as K;
            let lost = matches!(
                io.kind(),
                K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof
            );
            lost.then(|| format!("({io})"))
        }
        _ => None,
    }
}

/// `buf`, allocated ([`BUF_LEN`]) the first time it is needed. Allocating it with the
/// connection made every connection cost about a megabyte of memory once it had sent its HELLO
/// (the allocator zeroes a reused block), moving a file or not.
pub(super) fn body_buf(buf: &mut Vec<u8>) -> &mut [u8] {
    if buf.is_empty() {
        *buf = vec![0; BUF_LEN];
    }
    buf
}
