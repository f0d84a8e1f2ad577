//! What a file or folder offer, a body, an END and a cancel mean: which names are taken,
//! whether the file held is unchanged, the name locks between connections (and the takeover
//! of a stale holder), what is kept for resume, and the batch of RESULTs that waits for one
//! flush (group commit). Small bodies are gathered in memory and stored ahead by the
//! connection's [`Storer`](super::storer::Storer); the others are written as they arrive.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_proto::name::Escaped;
use ferry_proto::{BadName, BodyCheck, Code, DriveError, EntryKind, FileId, Framing, Name, Offer};

use super::storer::{self, Done, Job, Ticket, MAX_AHEAD};
use super::{body_buf, Session};
use crate::access::Action;
use crate::commit::{Flushed, Reply};
use crate::hooks;
use crate::locks::NameLock;
use crate::logging::clip;
use crate::paths::Refusal;
use crate::slots::{Activity, Evict};
use crate::storage::{FileMeta, Incoming, Prepared, Upload, MAX_RESERVATIONS};
use crate::stream::Wait;
use crate::units::{Bytes, Rate};

/// How long an upload taking over a stale connection's name waits for that connection to let
/// go of it (it notices within a tenth of a second, then keeps its partial for resume).
const TAKEOVER_WAIT: Duration = Duration::from_secs(2);
/// Most an upload waits for a name another connection holds (not stale: see
/// [`TAKEOVER_WAIT`]) before it is answered busy, in case that connection's client went away
/// (a client run again at once after a Ctrl-C): the connection then still writes the body
/// bytes that were on their way (the socket buffers' worth, tens of MiB) and may be in a disk
/// wait it cannot cut short (the write-behind's flush), before it keeps its partial for
/// resume and lets go.
const LET_GO_WAIT: Duration = Duration::from_secs(5);
/// Part of [`LET_GO_WAIT`] after which the wait goes on only while the holder is winding down
/// (see [`Activity::winding_down`](crate::slots::Activity::winding_down)). A client that went
/// away shows it to the holder only behind the bytes it sent before (its close comes after
/// them), so it takes the holder a while, as long as writing those bytes, to see it; a holder
/// serving a live client shows nothing, and the offer is answered busy.
const GONE_WITHIN: Duration = Duration::from_secs(2);
/// How often those waits look at the lock.
const LOCK_TICK: Duration = Duration::from_millis(20);

/// An accepted upload waiting for its BEGIN.
pub(super) struct Pending {
    id: FileId,
    upload: Upload,
    _lock: NameLock,
}

/// The upload whose body is arriving.
pub(super) struct Receiving {
    id: FileId,
    upload: Upload,
    _lock: NameLock,
    /// `None` once writing failed; the rest of the body is read and dropped.
    work: Option<Sink>,
    failure: Option<Refusal>,
    from: u64,
    started: Instant,
}

/// Where the bytes of a body go as they arrive.
enum Sink {
    /// Into its destination in the store (the body is stored inline).
    File(Box<dyn Incoming>),
    /// Into memory, up to the offered size: the complete body is stored ahead, by the
    /// connection's storer.
    Memory(Vec<u8>),
}

impl Sink {
    /// Bytes held, including a resumed prefix.
    fn len(&self) -> u64 {
        match self {
            Sink::File(w) => w.len(),
            Sink::Memory(b) => b.len() as u64,
        }
    }

    /// Appends `data` to the body of `up`. Bytes past the offered size (the END then tells)
    /// move the body to its destination in the store, to be stored inline.
    fn write(
        &mut self,
        store: &dyn crate::storage::Storage,
        up: &mut Upload,
        data: &[u8],
    ) -> Result<(), Refusal> {
        let held = match self {
            Sink::File(w) => return storer::write_body(&mut **w, data),
            Sink::Memory(held) => held,
        };
        let fits = held.len().checked_add(data.len());
        if fits.is_some_and(|n| up.size.is_some_and(|s| n as u64 <= s)) {
            held.extend_from_slice(data);
            return Ok(());
        }
        let mut work = storer::open_body(store, up, 0)?;
        storer::write_body(&mut *work, held)?;
        storer::write_body(&mut *work, data)?;
        *self = Sink::File(work);
        Ok(())
    }
}

/// The end of a stored file's log line: `, resumed at 1.0 MiB` when its body was resumed at
/// that offset, nothing when it started at 0.
struct Resumed(u64);

impl fmt::Display for Resumed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => Ok(()),
            from => write!(f, ", resumed at {}", Bytes(from)),
        }
    }
}

impl<'a> Session<'a> {
    pub(super) fn on_offer(&mut self, o: Offer) -> Result<bool, DriveError> {
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
            self.d.conn_mut().close_with_error(Code::Unsupported, why);
            return Ok(false);
        }
        if o.kind == EntryKind::Folder {
            self.on_folder(&o)?;
            return Ok(true);
        }
        let decision = self.decide_offer(&o);
        match decision {
            Ok((Prepared::Unchanged(held_as), _lock)) => {
                // A file completed, as if sent: a re-run of a large tree is not a stall.
                self.activity.progress();
                self.tally.unchanged += 1;
                let name = o.name.as_ref().map(Name::as_str).unwrap_or_default();
                log::debug!(
                    "{}: {} unchanged, held as {}",
                    self.peer,
                    clip(name),
                    clip(&held_as)
                );
                // The reason names the file holding it (PROTOCOL.md §4.8).
                self.d.conn_mut().refuse(o.id, Code::Unchanged, &held_as)?;
                Ok(true)
            }
            Ok((Prepared::Upload(upload, prefix), lock)) => {
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

    /// The offered name, if the server takes it: valid, not shutting down, and (with
    /// [`Config::portable_names`](crate::Config::portable_names)) storable on Windows.
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

    /// Stores a folder offer (version 2, PROTOCOL.md §4.9): RESULT `Stored` or `Unchanged`,
    /// a failure in RESULT, or REFUSE for a name the server does not take.
    fn on_folder(&mut self, o: &Offer) -> Result<(), DriveError> {
        // Its mode and time are applied once the files under it are published.
        if let Ok(name) = &o.name {
            self.store_through(name);
        }
        let made = self.admit_name(&o.name).and_then(|name| {
            let restyle = self.permissions.allows(Action::Download);
            let made = self
                .shared
                .store
                .make_folder(&name, o.mode, o.mtime, restyle)?;
            Ok((name, made))
        });
        match made {
            Ok((name, (code, touched))) => {
                // A folder completed, as a file stored is.
                self.activity.progress();
                if code == Code::Stored {
                    self.tally.stored += 1;
                    log::info!("{}: made the folder {name}", self.peer);
                    // A folder made now is flushed before its RESULT, with the batch's files.
                    self.batch.stored(o.id, name.to_string(), 0, touched);
                    // Its RESULT answers its offer (PROTOCOL.md §4.9), before any offer after
                    // it is answered: the batch is made durable and its RESULTs queued now.
                    self.commit()?;
                } else {
                    self.tally.unchanged += 1;
                    self.d.conn_mut().finish(o.id, code, name.as_str())?;
                }
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

    /// Decides on a file offer: whether the file held is unchanged (version 2, and only for a
    /// credential that may download: to one that may not, an answer `Unchanged` would confirm
    /// what a file it cannot read holds, so its offer meets the overwrite policy as a
    /// different file would), else the accepted upload and the hasher over the bytes held for
    /// resume (what this connection's principal kept, never another's); with the name lock.
    /// The lock is taken first, so that the one look at the name
    /// (see [`Storage::prepare_upload`](crate::storage::Storage::prepare_upload)) sees no
    /// upload of this process in flight; it is released at once if the file is unchanged.
    fn decide_offer(&mut self, o: &Offer) -> Result<(Prepared, NameLock), Refusal> {
        let name = self.admit_name(&o.name)?;
        let lock = self.lock_name(&name)?;
        // Past the cap on held partials, a resumable offer is taken as a plain upload.
        let held = self.pending.iter().filter(|p| p.upload.holds_reservation());
        let resumable =
            self.d.conn().framing() == Some(Framing::Ferry) && held.count() < MAX_RESERVATIONS;
        let resume_for = resumable.then_some(&self.principal);
        let meta = FileMeta {
            size: o.size,
            mtime: o.mtime,
            mode: o.mode,
        };
        let compare = (self.v2() && self.permissions.allows(Action::Download)).then_some(o);
        let store = &self.shared.store;
        let prepared =
            store.prepare_upload(name, meta, compare, resume_for, body_buf(&mut self.buf));
        if compare.is_some_and(|o| o.digest.is_some()) {
            // Hashing a large file is work done, not a stall (also when the policy refuses it).
            self.activity.progress();
        }
        Ok((prepared?, lock))
    }

    /// Takes the lock on `name` for this connection. If another connection holds it and has
    /// made no progress for [`Config::takeover_after`](crate::Config::takeover_after) (cut
    /// off by the network, say), that one is asked to close and the lock is awaited for up to
    /// [`TAKEOVER_WAIT`]; else the lock is awaited for up to [`LET_GO_WAIT`], in case the
    /// holder's client went away, as long as the holder shows it did (see [`GONE_WITHIN`]).
    /// If this connection holds it for a body in its storer, that body is stored first (the
    /// offer then sees it, as if stored inline). Nothing is held for the waits but what the
    /// connection holds anyway.
    fn lock_name(&mut self, name: &Name) -> Result<NameLock, Refusal> {
        let locks = &self.shared.locks;
        let mut holder = match locks.try_lock(name.as_str(), &self.activity) {
            Ok(lock) => return Ok(lock),
            Err(holder) => holder,
        };
        if Arc::ptr_eq(&holder, &self.activity) && !self.storer.is_empty() {
            self.drain_storer();
            holder = match locks.try_lock(name.as_str(), &self.activity) {
                Ok(lock) => return Ok(lock),
                Err(holder) => holder,
            };
        }
        if Arc::ptr_eq(&holder, &self.activity) {
            return Err(Refusal::busy(name));
        }
        let stale = holder.idle_for(Instant::now());
        if stale >= self.shared.config.takeover_after {
            holder.evict(Evict::Takeover);
            drop(holder);
            let lock = self.await_lock(name, TAKEOVER_WAIT, |_, _| true);
            if lock.is_some() {
                log::info!(
                    "{}: {name} taken over from a connection without progress for {stale:.1?}",
                    self.peer
                );
            }
            return lock.ok_or_else(|| Refusal::busy(name));
        }
        drop(holder);
        let asked = Instant::now();
        let gone = |holder: &Activity, waited| waited < GONE_WITHIN || holder.winding_down();
        let lock = self.await_lock(name, LET_GO_WAIT, gone);
        if lock.is_some() {
            log::info!(
                "{}: {name} let go by another connection after {:.1?}",
                self.peer,
                asked.elapsed()
            );
        }
        lock.ok_or_else(|| Refusal::busy(name))
    }

    /// Waits up to `within` for the lock on `name`, held by another connection, as long as
    /// `go_on` holds for the holder and the time waited so far.
    fn await_lock(
        &self,
        name: &Name,
        within: Duration,
        go_on: impl Fn(&Activity, Duration) -> bool,
    ) -> Option<NameLock> {
        let asked = Instant::now();
        loop {
            std::thread::sleep(LOCK_TICK);
            let holder = match self.shared.locks.try_lock(name.as_str(), &self.activity) {
                Ok(lock) => return Some(lock),
                Err(holder) => holder,
            };
            let waited = asked.elapsed();
            if waited >= within || !go_on(&holder, waited) {
                return None;
            }
        }
    }

    pub(super) fn on_begin(&mut self, id: FileId, from: u64) {
        let Some(mut p) = self.pending.pop_front().filter(|p| p.id == id) else {
            // The machine checks BEGIN against the accepted order; this cannot happen.
            log::error!(
                "{}: BEGIN for #{id} does not match the accepted uploads",
                self.peer
            );
            return;
        };
        // A small body that starts afresh is gathered in memory and stored ahead at its END.
        let ahead = p.upload.size.filter(|&s| {
            s <= MAX_AHEAD
                && from == 0
                && !p.upload.holds_reservation()
                && self.d.conn().framing() == Some(Framing::Ferry)
        });
        let opened = match ahead {
            // At most MAX_AHEAD: fits in memory.
            Some(size) => Ok(Sink::Memory(self.storer.buffer(size as usize))),
            None => storer::open_body(&*self.shared.store, &mut p.upload, from).map(Sink::File),
        };
        let (work, failure) = match opened {
            Ok(w) => (Some(w), None),
            Err(f) => (None, Some(f)),
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
    pub(super) fn receive_body(&mut self) -> Result<bool, DriveError> {
        let idle = self.shared.config.idle_timeout;
        self.io().set_wait(Wait::Idle(idle), false);
        let n = self.d.read_body(body_buf(&mut self.buf))?;
        // Counted here, not as the socket is read: the bytes may have come with the frame
        // header before them.
        self.activity.moved(n);
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
                    .write(&*self.shared.store, &mut r.upload, &self.buf[..n])
                    .err(),
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

    pub(super) fn on_end(
        &mut self,
        id: FileId,
        size: u64,
        check: BodyCheck,
    ) -> Result<(), DriveError> {
        let Some(r) = self.body.take().filter(|r| r.id == id) else {
            log::error!("{}: END for #{id} without a body", self.peer);
            return Ok(());
        };
        let Receiving {
            upload,
            _lock: lock,
            work,
            failure,
            from,
            started,
            ..
        } = r;
        let ticket = Ticket {
            id,
            name: upload.name.clone(),
            size,
            from,
            check,
            started,
        };
        let digest = match check {
            BodyCheck::Verified(d) | BodyCheck::Unverified(d) => Some(d),
            BodyCheck::Mismatch { .. } => None,
        };
        let work = match (work, digest) {
            (Some(Sink::Memory(bytes)), Some(digest)) if failure.is_none() => {
                let track = self.batch.tracks();
                let job = Job {
                    store: Arc::clone(&self.shared.store),
                    upload,
                    lock,
                    bytes,
                    digest,
                    track,
                };
                for done in self.storer.submit(job, ticket) {
                    self.report(done);
                }
                return Ok(());
            }
            (work, _) => work,
        };
        // Everything else joins the batch after the bodies stored ahead before it.
        self.drain_storer();
        let result = match (failure, work, digest) {
            (Some(f), _, _) => Err(f),
            (None, _, None) => Err(Refusal::new(
                Code::DigestMismatch,
                format!(
                    "{}: the bytes received do not match the sender's digest; nothing was stored",
                    upload.name
                ),
            )),
            (None, Some(Sink::File(work)), Some(d)) => {
                work.publish(&upload, d, self.batch.tracks())
            }
            (None, Some(Sink::Memory(_)) | None, Some(_)) => {
                Err(Refusal::new(Code::Io, "internal error: no file"))
            }
        };
        self.report(Done { ticket, result });
        drop(lock);
        Ok(())
    }

    /// Reports the body of `done` (log line, tally, metrics, `--on-stored` hook) and adds its
    /// RESULT to the batch.
    fn report(&mut self, done: Done) {
        let Done { ticket: t, result } = done;
        let moved = t.size.saturating_sub(t.from);
        let rate = Rate {
            bytes: moved,
            elapsed: t.started.elapsed(),
        };
        match result {
            Ok((stored, touched)) => {
                self.after_store(&stored, t.size, t.check);
                self.shared.metrics.stored(t.started.elapsed());
                self.tally.stored += 1;
                log::info!(
                    "{}: stored {} as {} ({}, {rate}{})",
                    self.peer,
                    t.name,
                    Escaped(&stored),
                    Bytes(t.size),
                    Resumed(t.from)
                );
                self.batch.stored(t.id, stored, moved, touched);
            }
            Err(f) => {
                self.tally.failed += 1;
                let (shown, reason) = (clip(&t.name.to_string()), clip(&f.reason));
                self.note(
                    log::Level::Warn,
                    format_args!(
                        "{shown} not stored ({}): {}: {reason}",
                        Bytes(t.size),
                        f.code
                    ),
                );
                self.batch.push(Reply {
                    id: t.id,
                    code: f.code,
                    detail: f.reason,
                });
            }
        }
    }

    /// Reports the bodies the storer has stored, without waiting.
    pub(super) fn collect_stored(&mut self) {
        while let Some(done) = self.storer.next(false) {
            self.report(done);
        }
    }

    /// Waits for the storer to store every body it holds, and reports them: after this,
    /// what enters the batch follows their RESULTs.
    pub(super) fn drain_storer(&mut self) {
        self.store_oldest(usize::MAX);
    }

    /// Waits for the storer to store every body it holds that touches `name` (see
    /// [`Storer::held_through`](super::storer::Storer::held_through)), and those handed over
    /// before them, and reports them.
    fn store_through(&mut self, name: &Name) {
        self.store_oldest(self.storer.held_through(name));
    }

    /// Waits for the storer to store the `n` oldest bodies it holds (all, if it holds fewer),
    /// and reports them in order.
    fn store_oldest(&mut self, n: usize) {
        for _ in 0..n {
            let Some(done) = self.storer.next(true) else {
                break;
            };
            self.report(done);
        }
    }

    /// Runs the `--on-stored` hook (queued; it never delays or changes the reply) for the
    /// file just stored as `stored`.
    fn after_store(&self, stored: &str, size: u64, check: BodyCheck) {
        let Some(h) = &self.shared.hooks else {
            return;
        };
        let digest = match check {
            BodyCheck::Verified(d) | BodyCheck::Unverified(d) => Some(d),
            BodyCheck::Mismatch { .. } => None,
        };
        h.stored(hooks::Stored {
            path: self.shared.store.locate(stored),
            name: stored.to_owned(),
            size,
            digest,
            client: self.peer,
            user: self.user.clone(),
        });
    }

    /// Closes the batch, unless the flush of the batch before still runs (the batch then
    /// keeps gathering): its flush starts on the [`Pipeline`](crate::commit::Pipeline)'s
    /// thread, or, when it waits for none, its RESULTs are queued now.
    pub(super) fn close_batch(&mut self) -> Result<(), DriveError> {
        if self.pipeline.busy() {
            return Ok(());
        }
        let (replies, flush) = self.batch.close();
        match flush {
            Some(f) => self.pipeline.submit(replies, f),
            None => self.settle(Flushed {
                replies,
                result: Ok(()),
            })?,
        }
        Ok(())
    }

    /// Queues the RESULTs of the batch whose flush has ended, if one has; never waits.
    pub(super) fn reap(&mut self) -> Result<(), DriveError> {
        match self.pipeline.try_done() {
            Some(f) => self.settle(f),
            None => Ok(()),
        }
    }

    /// Waits for the flush that runs, if one does, and queues its batch's RESULTs.
    pub(super) fn reap_waiting(&mut self) -> Result<(), DriveError> {
        match self.pipeline.wait() {
            Some(f) => self.settle(f),
            None => Ok(()),
        }
    }

    /// Makes every file published so far durable and queues every RESULT that waits: stores
    /// what the storer holds, waits for the flush that runs, then flushes the batch and waits
    /// for that too. Both flushes end before a reply is queued, so a connection that can no
    /// longer take replies still leaves its files durable.
    pub(super) fn commit(&mut self) -> Result<(), DriveError> {
        self.drain_storer();
        let earlier = self.pipeline.wait();
        let (replies, flush) = self.batch.close();
        let last = match flush {
            Some(f) => {
                self.pipeline.submit(replies, f);
                self.pipeline.wait()
            }
            None => Some(Flushed {
                replies,
                result: Ok(()),
            }),
        };
        for flushed in earlier.into_iter().chain(last) {
            self.settle(flushed)?;
        }
        Ok(())
    }

    /// Queues the RESULTs of a batch whose flush ended. A file whose flush failed is reported
    /// as not durable, though it was published under its name.
    fn settle(&mut self, flushed: Flushed) -> Result<(), DriveError> {
        let Flushed { replies, result } = flushed;
        if let Err(e) = &result {
            log::error!(
                "{}: cannot flush {} stored file(s) to disk: {e}; reported as not durable",
                self.peer,
                replies.iter().filter(|r| r.code == Code::Stored).count()
            );
        }
        for r in replies {
            match &result {
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
        Ok(())
    }

    pub(super) fn on_cancel(&mut self, id: FileId, reason: &str) {
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

    /// Keeps (or drops) the file whose body was cut off by the connection's end, `ended` (the
    /// error that ended it, if one did), and lets go of its name; accepted uploads that never
    /// began let go of their names and partials (an empty one is removed). Whether a body was
    /// cut off.
    pub(super) fn interrupt_body(&mut self, ended: Option<&DriveError>) -> bool {
        self.pending.clear();
        let Some(r) = self.body.take() else {
            return false;
        };
        self.tally.failed += 1;
        let got = r.work.as_ref().map_or(0, |w| w.len());
        // A body gathered in memory leaves nothing behind.
        let kept = match r.work {
            Some(Sink::File(w)) => w.interrupt(),
            Some(Sink::Memory(_)) | None => false,
        };
        let fate = if kept { "kept for resume" } else { "discarded" };
        let (name, got) = (&r.upload.name, Bytes(got));
        let size = r
            .upload
            .size
            .map_or("an unknown size".to_owned(), |s| Bytes(s).to_string());
        if ended.and_then(super::went_away).is_some() {
            // A client's Ctrl-C, say: nothing wrong with the server or the protocol.
            log::info!(
                "{}: the client went away mid-body of {name} at {got} of {size}; {fate}",
                self.peer
            );
        } else {
            log::warn!(
                "{}: {name} interrupted after {got} of {size}; {fate}",
                self.peer
            );
        }
        true
    }
}
