//! One connection: opens it (plain or TLS, see [`crate::gate`]), drives a
//! [`ferry_proto::Driver`] over it, checks the token on HELLO and acts on the events with the
//! [`Storage`]. Never parses bytes itself.
//!
//! RESULTs of stored files wait in a [`Batch`] until one flush has made the batch durable
//! (group commit, see [`crate::commit`]).
//!
//! With a version-2 client it also answers unchanged files (REFUSE `Unchanged`), stores folder
//! offers (RESULT) and streams listings page by page (PROTOCOL.md §4.8-§4.11).

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_proto::{
    BadName, BodyCheck, Code, Connection, DriveError, Driver, Entry, EntryKind, Error, Event,
    FileId, Framing, Hasher, Name, Offer, OfferOptions, Step,
};
use ferry_secure::SharedFailureLimiter;
use rustix::event::{poll, PollFd, PollFlags, Timespec};

use crate::access::{self, Action, Permissions, Verdict};
use crate::commit::{Batch, Reply};
use crate::config::Config;
use crate::gate::{self, Conn, REFUSAL_LINGER};
use crate::hooks::{self, Hooks};
use crate::locks::{NameLock, NameLocks};
use crate::logging::{clip, LogBudget};
use crate::metrics::Metrics;
use crate::paths::Refusal;
use crate::server::busy_reason;
use crate::slots::{Activity, Evict, Slot, Slots, Take};
use crate::storage::{
    FileMeta, Incoming, Listing, Offered, Storage, Upload, BUF_LEN, MAX_RESERVATIONS,
};
use crate::stream::{Cut, Guarded, StopFlags, Wait};
use crate::units::{Bytes, Rate};

/// How long an upload taking over a stale connection's name waits for that connection to let
/// go of it (it notices within a tenth of a second, then keeps its partial for resume).
const TAKEOVER_WAIT: Duration = Duration::from_secs(2);
/// How often that wait looks at the lock.
const TAKEOVER_TICK: Duration = Duration::from_millis(20);

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
        }
    }
}

/// An accepted upload waiting for its BEGIN.
struct Pending {
    id: FileId,
    upload: Upload,
    _lock: NameLock,
}

/// The upload whose body is arriving.
struct Receiving {
    id: FileId,
    upload: Upload,
    _lock: NameLock,
    /// `None` once writing failed; the rest of the body is read and dropped.
    work: Option<Box<dyn Incoming>>,
    failure: Option<Refusal>,
    from: u64,
    started: Instant,
}

/// Most downloads one connection may have offered and not yet accepted or refused (each
/// costs memory, not a descriptor: the file is opened again on ACCEPT); more GETs are refused
/// as busy. The protocol's own pipeline limit does not count these.
const MAX_OFFERED_DOWNLOADS: usize = ferry_proto::MAX_PIPELINE;

/// A download whose OFFER was sent; its body is sent on ACCEPT.
struct Serving {
    id: FileId,
    offered: Offered,
}

/// A download whose body was sent; its RESULT is due.
struct Sent {
    id: FileId,
    name: Name,
    bytes: u64,
    started: Instant,
}

/// Encoded bytes of entries gathered before a listing page is queued: one ENTRIES frame's
/// worth, so that a page is full and at most one more entry waits in memory.
const PAGE_BYTES: usize = ferry_proto::wire::MAX_CONTROL_PAYLOAD as usize;
/// Bytes of an encoded entry besides its name: kind, size, mtime, mode, name length
/// (PROTOCOL.md §3).
const ENTRY_FIXED: usize = 1 + 8 + 12 + 4 + 2;

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
    buf: Vec<u8>,
    /// When the connection was accepted.
    connected: Instant,
    /// Taken when the opening message (HELLO, or the seed name line) arrives.
    slot: Option<Slot>,
    /// Opened when the server was full: a slot is claimed on the first progress.
    probation: bool,
    /// The connection is refused: let the client read why before closing.
    linger: bool,
    /// When this connection last made progress; whether it is asked to close.
    activity: Arc<Activity>,
    /// Lines about refusals this connection may still cause.
    log: LogBudget,
    /// The credential's name; `None` when anonymous.
    user: Option<String>,
    /// What this client may do.
    permissions: Permissions,
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
        buf: vec![0; BUF_LEN],
        connected: started,
        slot: None,
        probation: false,
        linger: false,
        activity: Activity::new(),
        log: LogBudget::new(c.max_refusal_logs),
        user: None,
        permissions: shared.access.anonymous(),
        progress_logged: started,
    };
    let outcome = s.run();
    // Files published before the connection failed are made durable; their RESULTs go out
    // if the client can still read them.
    let _ = s.commit();
    s.interrupt_body();
    // Names are free for others (a takeover waits for this) before the goodbye.
    s.pending.clear();
    // From here on, the last flush, the TLS close and the linger share one short deadline.
    s.io().close_within(REFUSAL_LINGER);
    let how = match outcome {
        Ok(()) => "done".to_owned(),
        Err(e) => clip(&s.close_after(&e)),
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
    log::info!(
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
            // Replies go out before waiting (so that a connection with nothing in flight
            // counts as idle, and a drain request can close it), but not while more input
            // is at hand: the replies to a burst of small files then share one write, and
            // their files one flush.
            if !self.d.input_pending() && !self.input_soon() {
                self.commit()?;
                self.d.flush()?;
            }
            let idle = self.d.conn().is_idle()
                && self.body.is_none()
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
                self.commit()?;
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

    /// Whether the batch holds files waiting for a flush and more input arrives within
    /// [`Storage::linger`]: then the batch stays open, and shares its flush with the files that
    /// input brings.
    fn input_soon(&self) -> bool {
        let linger = self.shared.store.linger();
        if !self.batch.waits_for_flush() || linger.is_zero() {
            return false;
        }
        let tcp = self.d.stream().get_ref().tcp();
        let mut fds = [PollFd::new(tcp, PollFlags::IN)];
        let timeout = Timespec::try_from(linger).unwrap_or_default();
        poll(&mut fds, Some(&timeout)).is_ok_and(|n| n > 0)
    }

    /// The guarded socket under the (maybe TLS) stream.
    fn io(&mut self) -> &mut Guarded<'a> {
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

    /// Holds `slot`; the stall timeout counts from now.
    fn hold(&mut self, slot: Slot) {
        self.slot = Some(slot);
        self.probation = false;
        let (activity, stall) = (Arc::clone(&self.activity), self.shared.config.stall_timeout);
        self.io().watch(activity, stall);
    }

    /// Tells the client the server is full, and logs `why`.
    fn refuse_busy(&mut self, why: &str) {
        let max = self.shared.slots.max();
        log::warn!(
            "{}: refused, the server is at its limit of {max} connections ({why})",
            self.peer
        );
        self.d
            .conn_mut()
            .close_with_error(Code::Busy, &busy_reason(max));
        let _ = self.d.flush();
    }

    /// Acts on one event; `false` ends the connection.
    fn on_event(&mut self, event: Event) -> Result<bool, DriveError> {
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
            Event::Refused { id, code, reason } => {
                self.serving.retain(|s| s.id != id);
                let reason = clip(&ferry_proto::name::escape(&reason));
                self.note(
                    log::Level::Info,
                    format_args!("download #{id} declined by the client: {code}: {reason}"),
                );
            }
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

    /// Checks the token of a HELLO against the credentials, counting failures per source;
    /// `false`: denied, the error is queued and the connection ends before anything else.
    /// A credential with a folder confines the rest of the connection to it.
    fn authenticate(&mut self, offered: Option<&[u8]>) -> bool {
        let root: &'a Shared = self.shared;
        let (ip, limiter) = (self.peer.ip(), &root.limiter);
        let verdict = match root.access.check(offered) {
            Verdict::Anonymous(p) => Ok((None, p, root)),
            // Checked again here: connections opened before this source reached its limit.
            _ if !limiter.check(ip, Instant::now()) => {
                Err("too many failed attempts from this address")
            }
            Verdict::User(c, folder) => {
                let space = folder.and_then(|i| root.spaces.get(i)).unwrap_or(root);
                Ok((Some(c.name.clone()), c.permissions, space))
            }
            v => {
                limiter.record_failure(ip, Instant::now());
                Err(if matches!(v, Verdict::Missing) {
                    "no token"
                } else {
                    "wrong token"
                })
            }
        };
        match verdict {
            Ok((user, permissions, space)) => {
                if user.is_some() {
                    limiter.record_success(ip);
                    log::info!(
                        "{}: authenticated as {:?} ({permissions}{})",
                        self.peer,
                        user.as_deref().unwrap_or_default(),
                        if std::ptr::eq(space, root) {
                            String::new()
                        } else {
                            format!(", in {}", space.store.describe())
                        }
                    );
                }
                self.user = user;
                self.permissions = permissions;
                self.shared = space;
                true
            }
            Err(why) => {
                root.metrics.auth_failure();
                log::warn!(
                    "{}: authentication failed ({why}); closing before anything is stored",
                    self.peer
                );
                self.d
                    .conn_mut()
                    .close_with_error(Code::Denied, "authentication failed");
                self.linger = true;
                false
            }
        }
    }

    fn on_offer(&mut self, o: Offer) -> Result<bool, DriveError> {
        let seed = self.d.conn().framing() == Some(Framing::Seed);
        let c = &self.shared.config;
        if seed && !c.seed_allowed() {
            let why = if !c.accept_seed {
                "seed framing is disabled (--no-seed)"
            } else if c.has_tokens() {
                "seed framing refused: it carries no token and this server requires one"
            } else {
                "seed framing refused: this server requires TLS"
            };
            log::warn!("{}: {why}; closing", self.peer);
            self.d
                .conn_mut()
                .close_with_error(Code::Unsupported, "seed framing is disabled");
            return Ok(false);
        }
        if o.kind == EntryKind::Folder {
            self.on_folder(&o)?;
            return Ok(true);
        }
        let decision = self.decide_offer(&o);
        match decision {
            Ok(None) => {
                // A file completed, as if sent: a re-run of a large tree is not a stall.
                self.activity.progress();
                self.tally.unchanged += 1;
                let name = o.name.as_ref().map(Name::as_str).unwrap_or_default();
                log::debug!("{}: {} unchanged", self.peer, clip(name));
                self.d.conn_mut().refuse(o.id, Code::Unchanged, name)?;
                Ok(true)
            }
            Ok(Some((upload, lock, prefix))) => {
                let offset = prefix.len();
                self.d.conn_mut().accept(o.id, prefix)?;
                if offset > 0 {
                    log::info!(
                        "{}: {} resumes at {}",
                        self.peer,
                        upload.name,
                        Bytes(offset)
                    );
                }
                self.pending.push_back(Pending {
                    id: o.id,
                    upload,
                    _lock: lock,
                });
                Ok(true)
            }
            Err(r) => {
                self.refuse_offer(&o, &r)?;
                // The seed framing has no reply: a refusal ends the connection.
                Ok(!seed)
            }
        }
    }

    /// Refuses the offer `o` for the reason `r`, logging it within the budget.
    fn refuse_offer(&mut self, o: &Offer, r: &Refusal) -> Result<(), DriveError> {
        let shown = match &o.name {
            Ok(n) => n.to_string(),
            Err(bad) => bad.raw.clone(),
        };
        let (shown, reason) = (clip(&shown), clip(&r.reason));
        self.note(
            log::Level::Warn,
            format_args!("refused {shown}: {}: {reason}", r.code),
        );
        self.tally.failed += 1;
        self.shared.metrics.refused(r.code);
        self.d.conn_mut().refuse(o.id, r.code, &r.reason)?;
        Ok(())
    }

    /// Whether a version-2 conversation is open (PROTOCOL.md §4.1).
    fn v2(&self) -> bool {
        self.d.conn().version().is_some_and(|v| v >= 2)
    }

    /// The offered name, if the server takes it: valid, not shutting down, and (with
    /// [`Config::portable_names`]) storable on Windows.
    fn admit_name(&self, name: &Result<Name, BadName>) -> Result<Name, Refusal> {
        if self.shared.stop.draining.load(Ordering::Relaxed) {
            return Err(Refusal::new(
                Code::ShuttingDown,
                "the server is shutting down",
            ));
        }
        self.allow(Action::Upload)?;
        let name = name
            .clone()
            .map_err(|bad| Refusal::new(Code::BadName, bad.to_string()))?;
        if self.shared.config.portable_names {
            name.portable().map_err(|e| {
                Refusal::new(
                    Code::BadName,
                    format!("{name}: {e}; this server keeps names portable (--portable-names)"),
                )
            })?;
        }
        Ok(name)
    }

    /// Refuses `action` unless this client's credential (or anonymity) allows it.
    fn allow(&self, action: Action) -> Result<(), Refusal> {
        if self.permissions.allows(action) {
            Ok(())
        } else {
            Err(access::denied(action, self.user.as_deref()))
        }
    }

    /// Stores a folder offer (version 2, PROTOCOL.md §4.9): RESULT `Stored` or `Unchanged`,
    /// a failure in RESULT, or REFUSE for a name the server does not take.
    fn on_folder(&mut self, o: &Offer) -> Result<(), DriveError> {
        let made = self.admit_name(&o.name).and_then(|name| {
            let made = self.shared.store.make_folder(&name, o.mode, o.mtime)?;
            Ok((name, made))
        });
        match made {
            Ok((name, (code, touched))) => {
                // A folder made now is flushed before its RESULT, with the batch's files.
                let flush_first = code == Code::Stored && self.batch.touch(touched);
                if flush_first && !self.commit()? {
                    self.tally.failed += 1;
                    let why = format!(
                        "{name} was made, but the server could not flush it to disk; it may not \
                         survive a power cut"
                    );
                    self.d.conn_mut().finish(o.id, Code::Io, &why)?;
                    return Ok(());
                }
                // A folder completed, as a file stored is.
                self.activity.progress();
                if code == Code::Stored {
                    self.tally.stored += 1;
                    log::info!("{}: made the folder {name}", self.peer);
                } else {
                    self.tally.unchanged += 1;
                }
                self.d.conn_mut().finish(o.id, code, name.as_str())?;
            }
            Err(r) if matches!(r.code, Code::BadName | Code::Denied | Code::ShuttingDown) => {
                self.refuse_offer(o, &r)?;
            }
            Err(r) => {
                let shown = o.name.as_ref().map(Name::to_string).unwrap_or_default();
                let (shown, reason) = (clip(&shown), clip(&r.reason));
                self.note(
                    log::Level::Warn,
                    format_args!("folder {shown} not stored: {}: {reason}", r.code),
                );
                self.tally.failed += 1;
                self.d.conn_mut().finish(o.id, r.code, &r.reason)?;
            }
        }
        Ok(())
    }

    /// Decides on a file offer: `None` when the file held is unchanged (version 2), else the
    /// accepted upload, its name lock and the hasher over the bytes held for resume.
    fn decide_offer(&mut self, o: &Offer) -> Result<Option<(Upload, NameLock, Hasher)>, Refusal> {
        let name = self.admit_name(&o.name)?;
        let store = &self.shared.store;
        if self.v2() {
            let unchanged = store.unchanged(&name, o, &mut self.buf)?;
            if o.digest.is_some() {
                // Hashing a large file is work done, not a stall.
                self.activity.progress();
            }
            if unchanged {
                return Ok(None);
            }
        }
        let lock = self.lock_name(&name)?;
        // Past the cap on held partials, a resumable offer is taken as a plain upload.
        let held = self.pending.iter().filter(|p| p.upload.holds_reservation());
        let resumable =
            self.d.conn().framing() == Some(Framing::Ferry) && held.count() < MAX_RESERVATIONS;
        let meta = FileMeta {
            size: o.size,
            mtime: o.mtime,
            mode: o.mode,
        };
        let (upload, prefix) = store.prepare_upload(name, meta, resumable)?;
        Ok(Some((upload, lock, prefix)))
    }

    /// Takes the lock on `name` for this connection. If another connection holds it and has
    /// made no progress for [`Config::takeover_after`] (cut off by the network, say), that one
    /// is asked to close and the lock is awaited for up to [`TAKEOVER_WAIT`].
    fn lock_name(&self, name: &Name) -> Result<NameLock, Refusal> {
        let locks = &self.shared.locks;
        let holder = match locks.try_lock(name.as_str(), &self.activity) {
            Ok(lock) => return Ok(lock),
            Err(holder) => holder,
        };
        let stale = holder.idle_for(Instant::now());
        if Arc::ptr_eq(&holder, &self.activity) || stale < self.shared.config.takeover_after {
            return Err(Refusal::busy(name));
        }
        holder.evict(Evict::Takeover);
        drop(holder);
        let until = Instant::now() + TAKEOVER_WAIT;
        while Instant::now() < until {
            std::thread::sleep(TAKEOVER_TICK);
            if let Ok(lock) = locks.try_lock(name.as_str(), &self.activity) {
                log::info!(
                    "{}: {name} taken over from a connection without progress for {stale:.1?}",
                    self.peer
                );
                return Ok(lock);
            }
        }
        Err(Refusal::busy(name))
    }

    /// Logs a line about a refusal or an unexpected event at `level`, within the
    /// connection's budget.
    fn note(&mut self, level: log::Level, line: std::fmt::Arguments<'_>) {
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

    fn on_begin(&mut self, id: FileId, from: u64) {
        let Some(mut p) = self.pending.pop_front().filter(|p| p.id == id) else {
            // The machine checks BEGIN against the accepted order; this cannot happen.
            log::error!(
                "{}: BEGIN for #{id} does not match the accepted uploads",
                self.peer
            );
            return;
        };
        let (work, failure) = match self.shared.store.start_body(&mut p.upload, from) {
            Ok(w) => (Some(w), None),
            Err(e) => (None, Some(Refusal::io("cannot create the file", &e))),
        };
        self.body = Some(Receiving {
            id,
            upload: p.upload,
            _lock: p._lock,
            work,
            failure,
            from,
            started: Instant::now(),
        });
    }

    /// Moves the next body bytes into the file; `false` ends the connection.
    fn receive_body(&mut self) -> Result<bool, DriveError> {
        let idle = self.shared.config.idle_timeout;
        self.io().set_wait(Wait::Idle(idle), false);
        let n = self.d.read_body(&mut self.buf)?;
        self.tally.received += n as u64;
        self.shared.metrics.received(n);
        let Some(r) = self.body.as_mut() else {
            return Ok(true);
        };
        let since = self.progress_logged.max(r.started);
        if since.elapsed() >= self.shared.config.progress_interval {
            self.progress_logged = Instant::now();
            let got = r.work.as_ref().map_or(0, |w| w.len());
            let rate = Rate {
                bytes: got.saturating_sub(r.from),
                elapsed: r.started.elapsed(),
            };
            log::info!(
                "{}: {}: {} so far, {rate}",
                self.peer,
                r.upload.name,
                Bytes(got)
            );
        }
        if let Some(w) = r.work.as_mut() {
            let too_large = self
                .shared
                .config
                .max_file_size
                .filter(|max| w.len() + n as u64 > *max);
            let failed = match too_large {
                Some(max) => Some(Refusal::new(
                    Code::TooLarge,
                    format!("{} is over {} per file", r.upload.name, Bytes(max)),
                )),
                None => w
                    .write(&self.buf[..n])
                    .err()
                    .map(|e| Refusal::io("cannot write the file", &e)),
            };
            if let Some(f) = failed {
                let fatal =
                    f.code == Code::TooLarge || self.d.conn().framing() == Some(Framing::Seed);
                log::warn!("{}: {}: {}: {}", self.peer, r.upload.name, f.code, f.reason);
                r.work = None;
                if fatal {
                    // A stream with no end in sight (or a seed upload, which has no reply):
                    // stop reading it.
                    self.d.conn_mut().close_with_error(f.code, &f.reason);
                    self.tally.failed += 1;
                    self.body = None;
                    return Ok(false);
                }
                r.failure = Some(f);
            }
        }
        Ok(true)
    }

    fn on_end(&mut self, id: FileId, size: u64, check: BodyCheck) -> Result<(), DriveError> {
        let Some(r) = self.body.take().filter(|r| r.id == id) else {
            log::error!("{}: END for #{id} without a body", self.peer);
            return Ok(());
        };
        let name = &r.upload.name;
        let result = match (r.failure, r.work, check) {
            (Some(f), _, _) => Err(f),
            (None, _, BodyCheck::Mismatch { .. }) => Err(Refusal::new(
                Code::DigestMismatch,
                format!("{name}: the bytes received do not match the sender's digest; nothing was stored"),
            )),
            (None, Some(work), BodyCheck::Verified(d) | BodyCheck::Unverified(d)) => {
                work.publish(&r.upload, d)
            }
            (None, None, _) => Err(Refusal::new(Code::Io, "internal error: no file")),
        };
        let moved = size.saturating_sub(r.from);
        let rate = Rate {
            bytes: moved,
            elapsed: r.started.elapsed(),
        };
        match result {
            Ok((stored, touched)) => {
                self.after_store(&stored, size, check);
                self.shared.metrics.stored(r.started.elapsed());
                self.tally.stored += 1;
                let shown = ferry_proto::name::escape(&stored);
                log::info!(
                    "{}: stored {name} as {shown} ({}, {rate}{})",
                    self.peer,
                    Bytes(size),
                    resumed(r.from)
                );
                self.batch.stored(id, stored, moved, touched);
            }
            Err(f) => {
                self.tally.failed += 1;
                let (shown, reason) = (clip(&name.to_string()), clip(&f.reason));
                self.note(
                    log::Level::Warn,
                    format_args!("{shown} not stored ({}): {}: {reason}", Bytes(size), f.code),
                );
                self.batch.push(Reply {
                    id,
                    code: f.code,
                    detail: f.reason,
                });
            }
        }
        Ok(())
    }

    /// Runs the `--on-stored` hook (queued; it never delays or changes the reply) for the
    /// file just stored as `stored`.
    fn after_store(&self, stored: &str, size: u64, check: BodyCheck) {
        let Some(h) = &self.shared.hooks else {
            return;
        };
        // Only a storage in a local folder runs the hook; the others have no path to give.
        let Some(folder) = self.shared.store.local_folder() else {
            return;
        };
        let digest = match check {
            BodyCheck::Verified(d) | BodyCheck::Unverified(d) => Some(d),
            BodyCheck::Mismatch { .. } => None,
        };
        h.stored(hooks::Stored {
            path: folder.join(stored),
            name: stored.to_owned(),
            size,
            digest,
            client: self.peer,
            user: self.user.clone(),
        });
    }

    /// Closes the batch: flushes what its files and folders touched, then queues its
    /// RESULTs. A file whose flush failed is reported as not durable, though it was published
    /// under its name. `false`: the flush failed.
    fn commit(&mut self) -> Result<bool, DriveError> {
        let (replies, flush) = self.batch.close();
        let flushed = flush.map_or(Ok(()), |f| self.shared.store.flush(&f));
        if let Err(e) = &flushed {
            log::error!(
                "{}: cannot flush {} stored file(s) to disk: {e}; reported as not durable",
                self.peer,
                replies.iter().filter(|r| r.code == Code::Stored).count()
            );
        }
        for r in replies {
            match &flushed {
                Err(e) if r.code == Code::Stored => {
                    self.tally.stored = self.tally.stored.saturating_sub(1);
                    self.tally.failed += 1;
                    let why = format!(
                        "{} was stored, but the server could not flush it to disk ({e}); it may \
                         not survive a power cut: send it again",
                        r.detail
                    );
                    self.d.conn_mut().finish(r.id, Code::Io, &why)?;
                }
                _ => self.d.conn_mut().finish(r.id, r.code, &r.detail)?,
            }
        }
        Ok(flushed.is_ok())
    }

    fn on_cancel(&mut self, id: FileId, reason: &str) {
        let name = if self.body.as_ref().is_some_and(|r| r.id == id) {
            self.body.take().map(|r| r.upload.name)
        } else {
            let at = self.pending.iter().position(|p| p.id == id);
            at.and_then(|i| self.pending.remove(i))
                .map(|p| p.upload.name)
        };
        if let Some(name) = name {
            self.tally.failed += 1;
            let (shown, reason) = (
                clip(&name.to_string()),
                clip(&ferry_proto::name::escape(reason)),
            );
            self.note(
                log::Level::Info,
                format_args!("{shown} cancelled by the client: {reason}"),
            );
        }
    }

    fn on_get(
        &mut self,
        id: FileId,
        name: Result<Name, ferry_proto::BadName>,
    ) -> Result<(), DriveError> {
        let opened = if self.shared.stop.draining.load(Ordering::Relaxed) {
            Err(Refusal::new(
                Code::ShuttingDown,
                "the server is shutting down",
            ))
        } else if self.serving.len() >= MAX_OFFERED_DOWNLOADS {
            Err(Refusal::new(
                Code::Busy,
                format!(
                    "{MAX_OFFERED_DOWNLOADS} downloads on this connection wait for an answer \
                     to their offer; accept or refuse them first"
                ),
            ))
        } else {
            self.allow(Action::Download)
                .and_then(|()| name.map_err(|bad| Refusal::new(Code::BadName, bad.to_string())))
                .and_then(|n| self.shared.store.offer_download(n))
        };
        match opened {
            Ok(offered) => {
                let opts = match offered.digest {
                    Some(d) if self.v2() => OfferOptions::with_digest(d),
                    _ => OfferOptions::default(),
                };
                self.d
                    .conn_mut()
                    .serve_with(id, offered.info.clone(), opts)?;
                self.serving.push_back(Serving { id, offered });
            }
            Err(r) => {
                let reason = clip(&r.reason);
                self.note(
                    log::Level::Warn,
                    format_args!("download #{id} refused: {}: {reason}", r.code),
                );
                self.d.conn_mut().refuse(id, r.code, &r.reason)?;
            }
        }
        Ok(())
    }

    /// Answers a LIST (version 2): its pages go out one at a time, each written before the
    /// next is read from the storage, so that a listing is never held whole (see
    /// [`Listing`]); the bytes of the pages count as progress.
    fn on_list(
        &mut self,
        id: FileId,
        path: Result<Option<Name>, BadName>,
        recursive: bool,
    ) -> Result<(), DriveError> {
        let opened = if self.shared.stop.draining.load(Ordering::Relaxed) {
            Err(Refusal::new(
                Code::ShuttingDown,
                "the server is shutting down",
            ))
        } else {
            self.allow(Action::List)
                .and_then(|()| path.map_err(|bad| Refusal::new(Code::BadName, bad.to_string())))
                .and_then(|p| self.shared.store.list(p, recursive))
        };
        let mut lister = match opened {
            Ok(l) => l,
            Err(r) => {
                let reason = clip(&r.reason);
                self.note(
                    log::Level::Warn,
                    format_args!("listing #{id} refused: {}: {reason}", r.code),
                );
                self.d.conn_mut().refuse(id, r.code, &r.reason)?;
                return Ok(());
            }
        };
        self.io().set_body(true);
        let count = self.send_pages(id, lister.as_mut())?;
        let skipped = lister.skipped();
        self.d.conn_mut().listed(id, skipped)?;
        log::info!(
            "{}: listed {count} entries ({skipped} skipped) for #{id}",
            self.peer
        );
        Ok(())
    }

    /// Sends the entries of `lister` as ENTRIES pages of the listing `id`, each written out
    /// before the next is gathered; returns how many were sent.
    fn send_pages(&mut self, id: FileId, lister: &mut dyn Listing) -> Result<u64, DriveError> {
        let cost = |e: &Entry| ENTRY_FIXED + e.name.as_str().len();
        let mut page: Vec<Entry> = Vec::new();
        let mut sent = 0u64;
        loop {
            let mut bytes: usize = page.iter().map(cost).sum();
            while bytes < PAGE_BYTES {
                let Some(e) = lister.next_entry() else {
                    break;
                };
                bytes += cost(&e);
                page.push(e);
            }
            if page.is_empty() {
                return Ok(sent);
            }
            let taken = self.d.conn_mut().list_page(id, &page)?;
            page.drain(..taken);
            sent += taken as u64;
            self.d.flush()?;
        }
    }

    fn send_download(&mut self, id: FileId, offset: u64) -> Result<(), DriveError> {
        let Some(Serving { offered, .. }) = self.serving.pop_front().filter(|s| s.id == id) else {
            log::error!(
                "{}: ACCEPT for #{id} does not match the served files",
                self.peer
            );
            return Ok(());
        };
        let mut file = match self.shared.store.open_download(offered) {
            Ok(d) => d,
            Err(why) => {
                log::warn!("{}: download #{id} cancelled: {why}", self.peer);
                self.d.conn_mut().cancel(id, &why)?;
                return Ok(());
            }
        };
        let name = file.info().name.clone();
        let size = file.info().size.unwrap_or(0);
        let started = Instant::now();
        let prefix = file.prefix(offset, &mut self.buf);
        let from = self.d.conn_mut().begin(id, prefix)?;
        let mut at = from;
        while at < size {
            let want = usize::try_from(size - at)
                .unwrap_or(usize::MAX)
                .min(self.buf.len());
            let n = match file.read_at(at, &mut self.buf[..want]) {
                Ok(0) => {
                    log::warn!("{}: {name} shrank while being sent; cancelled", self.peer);
                    self.d
                        .conn_mut()
                        .cancel(id, "the file changed on the server while being sent")?;
                    return Ok(());
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("{}: reading {name} failed: {e}", self.peer);
                    self.d
                        .conn_mut()
                        .cancel(id, &format!("the server cannot read the file: {e}"))?;
                    return Ok(());
                }
            };
            self.d.send_body(&self.buf[..n])?;
            self.tally.sent += n as u64;
            self.shared.metrics.sent(n);
            at += n as u64;
        }
        self.d.conn_mut().end()?;
        self.sent.push_back(Sent {
            id,
            name,
            bytes: size.saturating_sub(from),
            started,
        });
        Ok(())
    }

    fn on_result(&mut self, id: FileId, code: Code, detail: &str) {
        let at = self.sent.iter().position(|s| s.id == id);
        let Some(s) = at.and_then(|i| self.sent.remove(i)) else {
            return;
        };
        let rate = Rate {
            bytes: s.bytes,
            elapsed: s.started.elapsed(),
        };
        if code == Code::Stored {
            log::info!(
                "{}: sent {} ({}, {rate})",
                self.peer,
                s.name,
                Bytes(s.bytes)
            );
        } else {
            let detail = clip(&ferry_proto::name::escape(detail));
            self.note(
                log::Level::Warn,
                format_args!("sent {} but the client says {code}: {detail}", s.name),
            );
        }
    }

    /// Keeps (or drops) the file whose body was cut off; accepted uploads that never began
    /// let go of their partials (an empty one is removed) before the connection is logged
    /// as closed.
    fn interrupt_body(&mut self) {
        self.pending.clear();
        let Some(r) = self.body.take() else {
            return;
        };
        self.tally.failed += 1;
        let got = r.work.as_ref().map_or(0, |w| w.len());
        let kept = r.work.is_some_and(|w| w.interrupt());
        let fate = if kept { "kept for resume" } else { "discarded" };
        log::warn!(
            "{}: {} interrupted after {} of {}; {fate}",
            self.peer,
            r.upload.name,
            Bytes(got),
            r.upload
                .size
                .map_or("an unknown size".to_owned(), |s| Bytes(s).to_string()),
        );
    }

    /// Tells the client why the connection ends when it still can; returns the words for the log.
    fn close_after(&mut self, e: &DriveError) -> String {
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
        // Best effort: the client may be gone already.
        let _ = self.d.flush();
        why
    }
}

fn resumed(from: u64) -> String {
    if from == 0 {
        String::new()
    } else {
        format!(", resumed at {}", Bytes(from))
    }
}
