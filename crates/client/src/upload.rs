//! `ferry send`: many files over one connection, offers pipelined, resume verified by hashing
//! the local prefix the server says it holds.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

use std::time::Duration;

use ferry_proto::wire::EARLY_MAX;
use ferry_proto::{
    BodyCheck, Code, Digest, DriveError, EntryKind, Event, FileId, Hasher, OfferOptions, Step,
};

use crate::body::{self, PumpError};
use crate::error::{describe, ClientError};
use crate::flights::Flights;
use crate::net::{self, Options};
use crate::read_ahead::{ReadAhead, READ_AHEAD_BYTES, READ_AHEAD_STEP};
use crate::report::{FileReport, Observer, Outcome, Status};
use crate::retry::{self, Attempt};
use crate::session::Session;
use crate::sniff;
use crate::target::Target;
use crate::walk::{open_regular, Origin, Source};
use crate::CHUNK;

/// Longest wait for a server's last words after a write to it failed.
const LAST_WORDS_WAIT: Duration = Duration::from_secs(2);

/// Uploads `sources` to the ferry server at `target` over one connection; with
/// [`Options::retries`], over new ones while the network fails, each resuming where the server's
/// verified offset says.
pub fn send(
    target: &Target,
    sources: Vec<Source>,
    opts: &Options,
    obs: &mut dyn Observer,
) -> Outcome {
    retry::run(
        sources,
        |s| &s.name,
        |s| matches!(s.origin, Origin::File(_)),
        opts,
        obs,
        |sources, before, obs| send_once(target, sources, before, opts, obs),
    )
}

/// One connection's worth of uploading. `before` holds the reports a failed connection left
/// for these files: one whose whole body went out (its digest is known) may have been stored
/// with the RESULT lost, so it is confirmed first ([`confirm`]) rather than offered again.
fn send_once(
    target: &Target,
    mut sources: Vec<Source>,
    before: &[FileReport],
    opts: &Options,
    obs: &mut dyn Observer,
) -> Attempt {
    let sent_whole: Vec<&Source> = sources
        .iter()
        .filter(|s| {
            matches!(s.origin, Origin::File(_))
                && before
                    .iter()
                    .any(|r| r.name == s.name && r.digest.is_some())
        })
        .collect();
    let mut confirmed = Vec::new();
    let mut welcomed = false;
    if !sent_whole.is_empty() {
        match confirm(target, &sent_whole, opts, obs) {
            Ok(c) => confirmed = c,
            Err(e) => {
                return Attempt {
                    outcome: Outcome::failed(e),
                    welcomed: false,
                }
            }
        }
        welcomed = true;
        sources.retain(|s| !confirmed.iter().any(|r| r.name == s.name));
    }
    let so_far = |error| Outcome {
        files: confirmed,
        error,
        ..Outcome::default()
    };
    if sources.is_empty() {
        return Attempt {
            outcome: so_far(None),
            welcomed,
        };
    }
    let session = match Session::open(target, opts, obs) {
        Ok(s) => s,
        Err(e) => {
            return Attempt {
                outcome: so_far(Some(e)),
                welcomed,
            }
        }
    };
    let budget = net::reply_budget(session.driver.stream().get_ref().tcp());
    let mut up = Upload {
        session,
        sources,
        version: 1,
        next: 0,
        flights: Flights::with_budget(so_far(None), budget),
        obs,
        buf: vec![0; CHUNK],
        answers: Answers::default(),
        over: false,
        last_body: None,
        ahead: ReadAhead::new(READ_AHEAD_BYTES, READ_AHEAD_STEP),
    };
    let result = up.run();
    let welcomed = welcomed || up.session.welcomed();
    let outcome = match result {
        Ok(()) => up.flights.outcome,
        // Before WELCOME the server acted on no offer (PROTOCOL.md §4.1), the probe's neither:
        // the run failed as a whole, as when it cannot connect, and the error says why (not a
        // ferry server, the connection refused, ...). No file has a fate of its own to tell.
        Err(e) if !up.session.welcomed() => Outcome {
            error: Some(e),
            ..up.flights.outcome
        },
        Err(e) => {
            let unsent: Vec<FileReport> = up
                .flights
                .set_aside_orders()
                .map(|i| &up.sources[i])
                .chain(&up.sources[up.next..])
                .map(report_for)
                .collect();
            up.flights.abandon(e, unsent.into_iter(), up.obs)
        }
    };
    Attempt { outcome, welcomed }
}

/// Asks the server whether it already holds `sources`, byte for byte: a GET for each, offering
/// the whole local file as the resume prefix. The server checks that prefix against its copy
/// and, if it matches, sends no byte of body, only the END whose digest proves it. Returns the
/// files so confirmed, reported stored; the others are to be offered again.
fn confirm(
    target: &Target,
    sources: &[&Source],
    opts: &Options,
    obs: &mut dyn Observer,
) -> Result<Vec<FileReport>, ClientError> {
    let mut session = Session::open(target, opts, obs)?;
    let mut asked = HashMap::new();
    for src in sources {
        if session.driver.conn().pipeline_room() == 0 {
            break;
        }
        let id = session.driver.conn_mut().get(src.name.clone())?;
        asked.insert(id, *src);
    }
    let mut confirmed = Vec::new();
    let mut buf = vec![0; CHUNK];
    while !asked.is_empty() {
        match session.next()? {
            Step::Event(Event::Offer(o)) => {
                let src = asked.get(&o.id).copied();
                let whole = match src.map(|s| (&s.origin, s.size)) {
                    Some((Origin::File(path), size)) if o.size.is_some() && o.size == size => {
                        open_regular(path).and_then(|mut f| body::hash_all(&mut f, &mut buf))
                    }
                    _ => Err(io::ErrorKind::InvalidData.into()),
                };
                match whole {
                    Ok(prefix) => session.driver.conn_mut().accept(o.id, prefix)?,
                    Err(_) => {
                        // Not ours (another size), or unreadable here: offer it again.
                        session.driver.conn_mut().refuse(
                            o.id,
                            Code::Exists,
                            "not the file this client sent",
                        )?;
                        asked.remove(&o.id);
                    }
                }
            }
            Step::Event(Event::Begin { id, from }) => {
                let size = asked.get(&id).and_then(|s| s.size);
                if Some(from) != size {
                    // The server's copy differs: its bytes are not wanted. Hang up; the files
                    // not confirmed are offered again.
                    log::debug!("file #{id}: the server's copy differs from ours");
                    return Ok(confirmed);
                }
            }
            Step::Event(Event::End { id, size, check }) => {
                let Some(src) = asked.remove(&id) else {
                    return Err(ClientError::unexpected(target, "END"));
                };
                if let BodyCheck::Verified(digest) = check {
                    session.driver.conn_mut().finish(id, Code::Stored, "")?;
                    let mut r = report_for(src);
                    r.status = Status::Code(Code::Stored);
                    r.size = Some(size);
                    r.offset = size;
                    r.digest = Some(digest);
                    r.detail = src.name.as_str().to_owned();
                    log::debug!("{}: already stored, confirmed after reconnecting", src.name);
                    obs.finished(&r);
                    confirmed.push(r);
                } else {
                    session
                        .driver
                        .conn_mut()
                        .finish(id, Code::DigestMismatch, "not ours")?;
                }
            }
            Step::Event(Event::Refused { id, .. }) => {
                // Most likely not found: it was never stored.
                asked.remove(&id);
            }
            // Body bytes are never wanted here (BEGIN was at the end): hang up.
            Step::Body(_) => return Ok(confirmed),
            other => return Err(session.unexpected(&other)),
        }
    }
    session.close()?;
    Ok(confirmed)
}

fn report_for(src: &Source) -> FileReport {
    FileReport {
        kind: src.kind(),
        ..FileReport::new(
            src.name.clone(),
            src.path().map(ToOwned::to_owned),
            src.size,
            Status::Incomplete,
        )
    }
}

struct Upload<'a> {
    session: Session<'a>,
    sources: Vec<Source>,
    /// The protocol version the server speaks (folders and digests need 2).
    version: u16,
    /// The next source to offer.
    next: usize,
    /// The files in flight; `true` for an early one, whose body went out with its offer.
    flights: Flights<bool>,
    obs: &'a mut dyn Observer,
    /// Body bytes on their way: a chunk of a file, or the whole body of an early one.
    buf: Vec<u8>,
    /// Files the server accepted and refused (Unchanged included) on this connection: small
    /// files go early only while it accepts more than it refuses (see [`Upload::read_early`]).
    answers: Answers,
    /// The server ended the conversation (after saying why): nothing more can be said.
    over: bool,
    /// The file whose body went out last, until its RESULT: the one a server's last words
    /// about a body (too large, no space) are about.
    last_body: Option<FileId>,
    /// How far the sources have been read ahead (see [`crate::read_ahead`]).
    ahead: ReadAhead,
}

impl Upload<'_> {
    fn run(&mut self) -> Result<(), ClientError> {
        self.offer_probe()?;
        self.version = self.session.welcome()?;
        if self.version < 2 && self.session.opts.checksum {
            log::warn!(
                "{} speaks protocol 1: --checksum has no effect",
                self.session.target
            );
        }
        self.refill()?;
        while !self.flights.is_empty() {
            let step = match (self.session.next(), self.last_body) {
                (Ok(step), _) => step,
                (
                    Err(ClientError::ServerError {
                        code,
                        reason,
                        target,
                    }),
                    Some(id),
                ) if is_about_a_body(code) => {
                    let cut = ClientError::ServerError {
                        code,
                        reason: reason.clone(),
                        target,
                    };
                    return self.body_refused(id, code, &reason, Err(cut));
                }
                (Err(e), _) => return Err(e),
            };
            match step {
                Step::Event(Event::Accepted { id, offset, .. }) => {
                    self.answers.accepted += 1;
                    self.accepted(id, offset)?;
                }
                // Already there (PROTOCOL.md §4.8): not a refusal, not a failure.
                Step::Event(Event::Refused {
                    id,
                    code: Code::Unchanged,
                    reason,
                }) => {
                    self.answers.refused += 1;
                    self.flights
                        .land(id, Status::Code(Code::Unchanged), &reason, false, self.obs);
                }
                Step::Event(Event::Refused { id, code, reason }) => {
                    self.answers.refused += 1;
                    self.flights
                        .land(id, Status::Code(code), &reason, true, self.obs);
                }
                Step::Event(Event::Result { id, code, detail }) => {
                    if self.last_body == Some(id) {
                        self.last_body = None;
                    }
                    // `Exists` is the server declining the name, as REFUSE `Exists` is: a
                    // folder offer's answer when a file holds it (PROTOCOL.md §4.9), or a
                    // publish that found it taken meanwhile. Other codes are failures.
                    let refused = code == Code::Exists;
                    self.flights
                        .land(id, Status::Code(code), &detail, refused, self.obs);
                }
                other => return Err(self.session.unexpected(&other)),
            }
            self.refill()?;
        }
        if self.over {
            return Ok(());
        }
        self.session.close()
    }

    /// Queues the first file's offer, the probe of [`Upload::read_early`], behind the HELLO,
    /// so that both go in one write and its answer comes one round trip sooner. Before
    /// WELCOME only version-1 bits may go (PROTOCOL.md §2.2, §4.1): not with `--checksum`,
    /// whose digest is a version-2 item, and not a folder. A server that refuses the
    /// connection acts on no frame after the HELLO: the file is reported not sent.
    fn offer_probe(&mut self) -> Result<(), ClientError> {
        let Some(src) = self.sources.first() else {
            return Ok(());
        };
        if self.session.opts.checksum || src.kind() == EntryKind::Folder {
            return Ok(());
        }
        let id = self.session.driver.conn_mut().offer(src.info())?;
        self.flights.insert(id, 0, report_for(src), false);
        self.next = 1;
        Ok(())
    }

    /// Asks the system to read the small files past the next to offer into its cache (see
    /// [`crate::read_ahead`]), while their bodies go with their offers: once the server
    /// accepts more than it refuses, as for [`Upload::read_early`]. A re-run whose files the
    /// server holds unchanged reads none of them.
    fn read_ahead(&mut self) {
        if !self.answers.mostly_accepted() {
            return;
        }
        let sources = &self.sources;
        let len = |i: usize| sources.get(i).map(Source::read_soon_len);
        for i in self.ahead.advance(self.next, len) {
            sources[i].read_soon();
        }
    }

    /// Offers more files while the window has room.
    fn refill(&mut self) -> Result<(), ClientError> {
        self.read_ahead();
        self.offer_folders()?;
        let window = self.session.opts.window;
        while self.next < self.sources.len()
            && self
                .flights
                .has_room(window, self.sources[self.next].name.as_str().len())
            && self.session.driver.conn().pipeline_room() > 0
        {
            let src = &self.sources[self.next];
            let opts = match src.kind() {
                EntryKind::Folder if self.version < 2 => {
                    let mut r = report_for(src);
                    r.status = Status::NotSent;
                    r.detail = "the server speaks protocol 1, which keeps no folders".into();
                    self.obs.finished(&r);
                    self.flights.outcome.files.push(r);
                    self.next += 1;
                    continue;
                }
                // Its files go first: storing one changes the folder's mtime, which the server
                // sets when the folder is offered. It waits aside (see `offer_folders`), and
                // what follows it goes on.
                EntryKind::Folder if self.flights.set_aside(self.next, &src.name) => {
                    self.next += 1;
                    continue;
                }
                EntryKind::Folder => OfferOptions::folder(),
                _ => match self.read_early(self.next) {
                    Early::Ready(len) => {
                        self.send_early(self.next, len)?;
                        self.next += 1;
                        continue;
                    }
                    Early::Wait => break,
                    Early::No => self.digest_of(self.next),
                },
            };
            let src = &self.sources[self.next];
            let id = self
                .session
                .driver
                .conn_mut()
                .offer_with(src.info(), opts)?;
            self.flights.insert(id, self.next, report_for(src), false);
            self.next += 1;
        }
        if self.next >= self.sources.len() {
            // Nothing left to offer: the folders whose files were just sent go now.
            self.offer_folders()?;
        }
        Ok(())
    }

    /// Offers the folders set aside that may go (see [`Flights::ready_folder`]), in their order
    /// (a folder's subfolders come before it), while the window has room: while more is to be
    /// offered, those whose contents have all landed, so that the server has nothing of them
    /// left to store; then those whose contents have all been sent.
    fn offer_folders(&mut self) -> Result<(), ClientError> {
        let window = self.session.opts.window;
        let tail = self.next >= self.sources.len();
        while let Some(i) = self.flights.ready_folder(tail) {
            let src = &self.sources[i];
            if !self.flights.has_room(window, src.name.as_str().len())
                || self.session.driver.conn().pipeline_room() == 0
            {
                break;
            }
            self.flights.take_folder(i);
            let id = self
                .session
                .driver
                .conn_mut()
                .offer_with(src.info(), OfferOptions::folder())?;
            self.flights.insert(id, i, report_for(src), false);
        }
        Ok(())
    }

    /// Whether source `i` goes early (PROTOCOL.md §4.14): a file of at most [`EARLY_MAX`]
    /// bytes to a version-3 server that has accepted more of this connection's files than it
    /// refused. The first file goes the usual way, as a probe, and the small files after it
    /// wait for its answer: a re-run over a tree the server holds sends no body (every offer
    /// refused Unchanged), and a refused early body is never more than the bytes accepted.
    ///
    /// [`Early::Ready`]: its bytes are at the start of `self.buf`, as many as walked.
    /// [`Early::Wait`]: ask again once answers come (the probe's; early bytes in flight; a file
    /// offered before it awaiting its ACCEPT or BEGIN). A file that shrank since the walk or
    /// cannot be read goes the usual way, which reports it; one that grew is sent as walked,
    /// as the usual way sends it.
    fn read_early(&mut self, i: usize) -> Early {
        let src = &mut self.sources[i];
        let (Origin::File(_), Some(size)) = (&src.origin, src.size) else {
            return Early::No;
        };
        if self.version < 3 || size > EARLY_MAX {
            return Early::No;
        }
        if !self.answers.mostly_accepted() {
            let Answers { accepted, refused } = self.answers;
            let probing = accepted + refused == 0 && !self.flights.is_empty();
            return if probing { Early::Wait } else { Early::No };
        }
        if !self.session.driver.conn().can_offer_early(size) {
            // With nothing in flight no answer will make room: the usual way says why.
            return if self.flights.is_empty() {
                Early::No
            } else {
                Early::Wait
            };
        }
        // Exactly the size walked, as the usual way sends (a file that grew since is sent as
        // it was walked); one that shrank goes the usual way, which reports it.
        let Some(body) = usize::try_from(size)
            .ok()
            .and_then(|n| self.buf.get_mut(..n))
        else {
            return Early::No;
        };
        match src.open().and_then(|mut f| f.read_exact(body)) {
            Ok(()) => Early::Ready(body.len()),
            Err(_) => Early::No,
        }
    }

    /// Offers source `i` early and sends its whole body (the first `len` bytes of `self.buf`)
    /// and END at once, without waiting for the server's answer.
    fn send_early(&mut self, i: usize, len: usize) -> Result<(), ClientError> {
        let body = &self.buf[..len];
        let src = &self.sources[i];
        let opts = if self.session.opts.checksum {
            OfferOptions::with_digest(Digest::of(body))
        } else {
            OfferOptions::default()
        };
        let id = self
            .session
            .driver
            .conn_mut()
            .offer_with(src.info(), opts.early())?;
        self.flights.insert(id, i, report_for(src), true);
        self.flights.start(id, 0);
        self.obs.started(&src.name, src.size, 0);
        if let Err(e) = self.session.driver.send_body(body) {
            return self.cut_while_sending(id, e);
        }
        let len = len as u64;
        self.obs.advanced(len);
        let digest = self.session.driver.conn_mut().end()?;
        self.flights.sent(id);
        self.last_body = Some(id);
        if let Some(f) = self.flights.get_mut(id) {
            f.report.bytes = len;
            f.report.digest = Some(digest);
            f.report.size = Some(len);
        }
        Ok(())
    }

    /// The server accepted file `id`: its body goes now, unless it went early.
    fn accepted(&mut self, id: FileId, offset: u64) -> Result<(), ClientError> {
        match self.flights.get_mut(id) {
            Some(f) if f.extra => Ok(()),
            _ => self.send_body(id, offset),
        }
    }

    /// With `--checksum` on a version-2 server, the offer of source `i` carries the whole
    /// file's digest, so that the server compares contents (PROTOCOL.md §4.8). A file that
    /// cannot be hashed as it was walked is offered plainly (and fails when it is read).
    fn digest_of(&mut self, i: usize) -> OfferOptions {
        let src = &mut self.sources[i];
        let (Origin::File(_), Some(size)) = (&src.origin, src.size) else {
            return OfferOptions::default();
        };
        if !self.session.opts.checksum || self.version < 2 {
            return OfferOptions::default();
        }
        let hashed = src.open().and_then(|mut f| {
            let h = body::hash_all(&mut f, &mut self.buf)?;
            f.rewind()?;
            Ok((h, f))
        });
        match hashed {
            Ok((h, f)) if h.len() == size => {
                // Read again from its start to send it.
                src.keep(f);
                OfferOptions::with_digest(h.finalize())
            }
            Ok(_) => OfferOptions::default(),
            Err(e) => {
                if let Some(path) = src.path() {
                    log::debug!("cannot hash {}: {e}", path.display());
                }
                OfferOptions::default()
            }
        }
    }

    /// Streams the body of an accepted file, from the server's offset if our prefix matches.
    fn send_body(&mut self, id: FileId, offset: u64) -> Result<(), ClientError> {
        let Some(flight) = self.flights.get_mut(id) else {
            return Err(ClientError::unexpected(self.session.target, "ACCEPT"));
        };
        let src = &mut self.sources[flight.order];
        let (name, size) = (src.name.clone(), src.size);
        let (mut input, from): (Box<dyn Read>, u64) = match &src.origin {
            Origin::Stdin => (Box::new(io::stdin().lock()), self.begin(id, Hasher::new())?),
            Origin::Folder(_) => {
                return Err(ClientError::unexpected(
                    self.session.target,
                    "ACCEPT of a folder",
                ))
            }
            Origin::File(_) => match src.open() {
                Ok(f) => match self.resume(id, f, offset)? {
                    Some((f, from)) => (Box::new(f), from),
                    None => return Ok(()),
                },
                Err(e) => return self.give_up(id, &e),
            },
        };
        self.obs.started(&name, size, from);
        let mut sent = 0;
        let obs = &mut *self.obs;
        let pumped = body::pump(
            &mut input,
            size.map(|s| s.saturating_sub(from)),
            &mut self.session.driver,
            &mut self.buf,
            |n| {
                sent += n;
                obs.advanced(n);
            },
        );
        if let Some(f) = self.flights.get_mut(id) {
            f.report.bytes = sent;
        }
        match pumped {
            Ok(()) => {}
            Err(PumpError::Local(e)) => return self.give_up(id, &e),
            Err(PumpError::Drive(e)) => return self.cut_while_sending(id, e),
        }
        let digest = self.session.driver.conn_mut().end()?;
        self.flights.sent(id);
        self.last_body = Some(id);
        if let Some(f) = self.flights.get_mut(id) {
            f.report.digest = Some(digest);
            f.report.size = Some(from + sent);
        }
        Ok(())
    }

    /// The connection failed while the body of `id` went out. A server that stops reading a
    /// file (a stream over its size limit, no room left) says why before it closes: that is
    /// the file's fate, refused, and if nothing else is left the run ends there, cleanly.
    fn cut_while_sending(&mut self, id: FileId, e: DriveError) -> Result<(), ClientError> {
        let cut = self.session.drive_err(e);
        let stream = self.session.driver.stream_mut();
        stream.get_mut().restart_within(LAST_WORDS_WAIT);
        match sniff::last_words(stream) {
            Some((code, reason)) if is_about_a_body(code) => {
                self.body_refused(id, code, &reason, Err(cut))
            }
            // The server said why it ended the connection (it is shutting down, say): that,
            // not the broken pipe its close made of our write.
            Some((code, reason)) => Err(ClientError::from_peer(
                self.session.target,
                self.session.welcomed(),
                code,
                &reason,
            )),
            None => Err(cut),
        }
    }

    /// The server ended the connection over the body of `id` (too large, no space): that is
    /// the file's fate, refused, and if nothing else is left the run ends there, cleanly;
    /// else `otherwise`.
    fn body_refused(
        &mut self,
        id: FileId,
        code: Code,
        reason: &str,
        otherwise: Result<(), ClientError>,
    ) -> Result<(), ClientError> {
        let detail = format!("{code}: {reason}");
        self.flights
            .land(id, Status::Code(code), &detail, true, self.obs);
        if self.flights.is_empty() && self.next >= self.sources.len() {
            self.over = true;
            return Ok(());
        }
        otherwise
    }

    /// Hashes the first `offset` bytes of `file` (the prefix the server holds), begins the
    /// body and positions the file where it starts; `None` if that failed and the file was
    /// cancelled.
    fn resume(
        &mut self,
        id: FileId,
        mut file: File,
        offset: u64,
    ) -> Result<Option<(File, u64)>, ClientError> {
        let prefix = if offset > 0 {
            if let Some(f) = self.flights.get_mut(id) {
                self.obs.verifying(&f.report.name, offset);
            }
            // A prefix we cannot read is one we cannot vouch for: start over.
            body::hash_all(&mut (&mut file).take(offset), &mut self.buf).unwrap_or_default()
        } else {
            Hasher::new()
        };
        let from = self.begin(id, prefix)?;
        if offset > 0 {
            log::debug!("file #{id}: the server holds {offset} bytes; resuming from {from}");
        }
        if offset == 0 {
            // Nothing was hashed: the file is still at its start (one system call less).
            return Ok(Some((file, from)));
        }
        match file.seek(SeekFrom::Start(from)) {
            Ok(_) => Ok(Some((file, from))),
            // Nothing of the body is sent yet: cancelling here is clean.
            Err(e) => self.give_up(id, &e).map(|()| None),
        }
    }

    fn begin(&mut self, id: FileId, prefix: Hasher) -> Result<u64, ClientError> {
        let from = self.session.driver.conn_mut().begin(id, prefix)?;
        self.flights.start(id, from);
        Ok(from)
    }

    /// The local file failed after the server accepted it: cancel it and go on.
    fn give_up(&mut self, id: FileId, e: &io::Error) -> Result<(), ClientError> {
        let what = self
            .flights
            .get_mut(id)
            .and_then(|f| f.report.path.as_ref())
            .map_or_else(|| "standard input".into(), |p| p.display().to_string());
        let reason = format!("cannot read {what}: {}", describe(e));
        log::debug!("cancelling file #{id}: {reason}");
        self.session.driver.conn_mut().cancel(id, &reason)?;
        if let Some(f) = self.flights.get_mut(id) {
            f.report.local = true;
        }
        self.flights
            .land(id, Status::Code(Code::Io), &reason, false, self.obs);
        Ok(())
    }
}

/// The server's answers to this connection's file offers so far.
#[derive(Debug, Default, Clone, Copy)]
struct Answers {
    accepted: u64,
    refused: u64,
}

impl Answers {
    /// Whether small bodies go with their offers: the server accepted more of this
    /// connection's files than it refused (see [`Upload::read_early`]).
    fn mostly_accepted(self) -> bool {
        self.accepted > self.refused
    }
}

/// Whether a file goes early (see [`Upload::read_early`]).
enum Early {
    /// Its whole body, of this many bytes, is read: offer it early now.
    Ready(usize),
    /// Not now: wait for answers, then ask again.
    Wait,
    /// Offer it the usual way.
    No,
}

/// Whether a server's ERROR with `code`, after a body went out, is about that body (the server
/// stopped reading it) rather than about the connection.
fn is_about_a_body(code: Code) -> bool {
    matches!(code, Code::TooLarge | Code::NoSpace | Code::Io)
}
