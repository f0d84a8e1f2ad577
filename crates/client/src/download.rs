//! `ferry get`: downloads by name into a folder (or standard output). A file is written to a
//! hidden partial file beside its final place (`.NAME.ferry-partial`, shortened for long names:
//! see [`partial_path`]), published by rename only once its digest verified, and the partial is
//! kept when the connection breaks so that the next run resumes from it.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::Path;

use ferry_proto::{BodyCheck, Code, Event, FileId, Hasher, Name, Offer, Step};

use crate::error::ClientError;
use crate::flights::{Flight, Flights};
use crate::folders::Folders;
use crate::landing::{compare, discard, empty, open_partial, room, save, Offered};
pub use crate::landing::{local_path, partial_path};
use crate::net::Options;
use crate::plan::{self, Want};
pub use crate::plan::{Dest, MAX_PLANNED_BYTES};
use crate::report::{FileReport, Observer, Outcome, Status};
use crate::retry::{self, Attempt};
use crate::session::Session;
use crate::target::Target;
use crate::CHUNK;

/// Downloads `names` from the server at `target` into `dest`. On a protocol-2 server each name
/// is listed first: a folder is fetched whole (its files, and its folders with their modes and
/// mtimes, empty ones too), and a local file with the listed size and mtime is reported
/// unchanged rather than fetched again. Everything goes over one connection; with
/// [`Options::retries`], over new ones while the network fails, each resuming from the partial
/// files kept.
pub fn get(
    target: &Target,
    names: Vec<Name>,
    dest: &Dest,
    opts: &Options,
    obs: &mut dyn Observer,
) -> Outcome {
    let unique: BTreeSet<&Name> = names.iter().collect();
    if unique.len() != names.len() {
        return Outcome::failed(ClientError::Usage("a name is given twice".into()));
    }
    let plan::Plan {
        session,
        wants,
        folders,
        mut places,
        outcome: planned,
        ..
    } = match plan::plan(target, &names, dest, opts, obs) {
        Ok(p) => p,
        Err(outcome) => return *outcome,
    };
    let mut first = Some(session);
    let mut outcome = retry::run(
        wants,
        |w| &w.name,
        |_| !matches!(dest, Dest::Stdout),
        opts,
        obs,
        |wants, _, obs| get_once(target, first.take(), wants, &mut places, opts, obs),
    );
    plan::finish_folders(folders);
    let mut files = planned.files;
    files.append(&mut outcome.files);
    outcome.files = files;
    outcome.skipped = planned.skipped;
    outcome.left_out = planned.left_out;
    outcome.retries += planned.retries;
    outcome
}

/// One connection's worth of downloading: on `session` if planning left one open, else on a
/// new one.
fn get_once<'a>(
    target: &'a Target,
    session: Option<Session<'a>>,
    wanted: Vec<Want>,
    places: &'a mut Folders,
    opts: &'a Options,
    obs: &mut dyn Observer,
) -> Attempt {
    let welcomed = session.is_some();
    if wanted.is_empty() {
        let error = session.and_then(|mut s| s.close().err());
        return Attempt {
            outcome: Outcome {
                error,
                ..Outcome::default()
            },
            welcomed,
        };
    }
    let session = match session.map_or_else(|| Session::open(target, opts, obs), Ok) {
        Ok(s) => s,
        Err(e) => {
            return Attempt {
                outcome: Outcome::failed(e),
                welcomed,
            }
        }
    };
    let mut down = Download {
        session,
        wanted,
        places,
        next: 0,
        flights: Flights::new(Outcome::default()),
        current: None,
        obs,
        buf: vec![0; CHUNK],
    };
    let result = down.run();
    let welcomed = down.session.welcomed();
    let outcome = match result {
        Ok(()) => down.flights.outcome,
        Err(e) => {
            let unasked = down.wanted[down.next..]
                .iter()
                .map(|w| FileReport::new(w.name.clone(), w.path.clone(), None, Status::Incomplete));
            down.flights.abandon(e, unasked, down.obs)
        }
    };
    Attempt { outcome, welcomed }
}

/// What a download holds locally while it is in flight.
#[derive(Default)]
struct Local {
    /// The partial file, once the offer came (`None` for standard output).
    file: Option<File>,
    meta: Offered,
    /// A local write failed: the rest of the body is drained and the file dropped.
    write_error: Option<io::Error>,
    /// See [`Want::held`].
    held: bool,
    /// See [`Want::unlisted`].
    unlisted: Option<String>,
}

struct Download<'a> {
    session: Session<'a>,
    /// Every file asked for, with its local path.
    wanted: Vec<Want>,
    /// The folders files land in, made as their offers come.
    places: &'a mut Folders,
    /// The next of `wanted` to ask for.
    next: usize,
    flights: Flights<Local>,
    /// The file whose body is arriving.
    current: Option<FileId>,
    obs: &'a mut dyn Observer,
    buf: Vec<u8>,
}

impl Download<'_> {
    fn run(&mut self) -> Result<(), ClientError> {
        self.refill()?;
        while !self.flights.is_empty() {
            match self.session.next()? {
                Step::Event(Event::Offer(o)) => self.on_offer(o)?,
                Step::Event(Event::Begin { id, from }) => self.on_begin(id, from)?,
                Step::Body(_) => self.on_body()?,
                Step::Event(Event::End { id, size, check }) => self.on_end(id, size, check)?,
                Step::Event(Event::Refused { id, code, reason }) => {
                    self.on_refused(id, code, reason)
                }
                other => return Err(self.session.unexpected(&other)),
            }
            self.refill()?;
        }
        self.session.close()
    }

    /// Asks for more files while the window has room.
    fn refill(&mut self) -> Result<(), ClientError> {
        let window = self.session.opts.window;
        while self.next < self.wanted.len()
            && self
                .flights
                .has_room(window, self.wanted[self.next].name.as_str().len())
            && self.session.driver.conn().pipeline_room() > 0
        {
            let Want {
                name,
                path,
                held,
                unlisted,
            } = self.wanted[self.next].clone();
            let id = self.session.driver.conn_mut().get(name.clone())?;
            let report = FileReport::new(name, path, None, Status::Incomplete);
            let local = Local {
                held,
                unlisted,
                ..Local::default()
            };
            self.flights.insert(id, self.next, report, local);
            self.next += 1;
        }
        Ok(())
    }

    fn flight(&mut self, id: FileId, what: &str) -> Result<&mut Flight<Local>, ClientError> {
        let target = self.session.target;
        self.flights
            .get_mut(id)
            .ok_or_else(|| ClientError::unexpected(target, what))
    }

    /// The server refused a file we asked for. A name it would not list either was asked
    /// for as a file: if it is a folder, the words say that its listing is what is missing.
    fn on_refused(&mut self, id: FileId, code: Code, reason: String) {
        let unlisted = self
            .flights
            .get_mut(id)
            .and_then(|f| f.extra.unlisted.take());
        let reason = match unlisted {
            Some(why) if code == Code::NotFound => format!(
                "{reason} (a folder is fetched through its listing, which the server refuses: \
                 {why})"
            ),
            _ => reason,
        };
        self.flights
            .land(id, Status::Code(code), &reason, true, self.obs);
    }

    /// The server offers a file we asked for (the machine checked id and name): accept it,
    /// offering the partial we hold as the resume prefix, if the rest fits on the disk and
    /// its folder can be made; unless a local file in its place is that file or is kept
    /// (see [`Want::held`]). A download has a known size: an offer without one breaks the
    /// protocol.
    fn on_offer(&mut self, o: Offer) -> Result<(), ClientError> {
        let target = self.session.target;
        let flight = self.flight(o.id, "OFFER")?;
        let Some(size) = o.size else {
            return Err(ClientError::Protocol {
                target: target.clone(),
                reason: format!(
                    "it offered {} without a size (a download must have one)",
                    flight.report.name
                ),
            });
        };
        flight.report.size = Some(size);
        flight.extra.meta = Offered {
            mtime: o.mtime,
            mode: o.mode,
        };
        let held = flight.extra.held;
        let Some(path) = flight.report.path.clone() else {
            self.session.driver.conn_mut().accept(o.id, Hasher::new())?;
            return Ok(());
        };
        let folder = self.places.make(path.parent().unwrap_or(Path::new("")));
        let (code, reason) = match folder {
            Err(b) => (b.code, b.why),
            Ok(_) if held => compare(&path, &o, &mut self.buf),
            Ok(_) => match self.accept(&o, size, &path)? {
                Some(refusal) => refusal,
                None => return Ok(()),
            },
        };
        self.session.driver.conn_mut().refuse(o.id, code, &reason)?;
        self.flights
            .land(o.id, Status::Code(code), &reason, false, self.obs);
        Ok(())
    }

    /// Accepts the offer of a file of `size` bytes that lands at `path`, if it fits; if not,
    /// the code and words to refuse it with.
    fn accept(
        &mut self,
        o: &Offer,
        size: u64,
        path: &Path,
    ) -> Result<Option<(Code, String)>, ClientError> {
        let opened = open_partial(&partial_path(path), size, &mut self.buf)
            .and_then(|(file, prefix)| room(&file).map(|room| (file, prefix, room)));
        let (code, reason) = match opened {
            Ok((file, prefix, room)) if size.saturating_sub(prefix.len()) <= room => {
                if !prefix.is_empty() {
                    log::debug!("{}: offering {} bytes held", path.display(), prefix.len());
                }
                self.flight(o.id, "OFFER")?.extra.file = Some(file);
                self.session.driver.conn_mut().accept(o.id, prefix)?;
                return Ok(None);
            }
            Ok((_, prefix, room)) => {
                if prefix.is_empty() {
                    // Nothing held worth keeping for a later try.
                    discard(path);
                }
                let need = size.saturating_sub(prefix.len());
                let reason = format!(
                    "not enough space for {}: {need} more bytes needed, {room} free",
                    path.display()
                );
                (Code::NoSpace, reason)
            }
            Err(e) => (Code::Io, format!("cannot write {}: {e}", path.display())),
        };
        Ok(Some((code, reason)))
    }

    fn on_begin(&mut self, id: FileId, from: u64) -> Result<(), ClientError> {
        let flight = self.flight(id, "BEGIN")?;
        if let Some(file) = flight.extra.file.as_mut() {
            // From 0: the server did not recognise our partial, so it goes.
            let placed = if from == 0 { empty(file) } else { Ok(()) }
                .and_then(|()| file.seek(SeekFrom::Start(from)));
            if let Err(e) = placed {
                flight.extra.write_error = Some(e);
            }
        }
        let (name, size) = (flight.report.name.clone(), flight.report.size);
        self.flights.start(id, from);
        self.current = Some(id);
        self.obs.started(&name, size, from);
        Ok(())
    }

    fn on_body(&mut self) -> Result<(), ClientError> {
        let id = self
            .current
            .ok_or_else(|| ClientError::unexpected(self.session.target, "file body"))?;
        let n = self
            .session
            .driver
            .read_body(&mut self.buf)
            .map_err(|e| self.session.drive_err(e))?;
        let data = &self.buf[..n];
        let target = self.session.target;
        let flight = self
            .flights
            .get_mut(id)
            .ok_or_else(|| ClientError::unexpected(target, "file body"))?;
        flight.report.bytes += n as u64;
        let local = &mut flight.extra;
        match local.file.as_mut() {
            None => crate::stdout::write(data).map_err(ClientError::Stdout)?,
            Some(file) if local.write_error.is_none() => {
                if let Err(e) = file.write_all(data) {
                    local.write_error = Some(e);
                }
            }
            Some(_) => {}
        }
        self.obs.advanced(n as u64);
        Ok(())
    }

    /// The body is complete: publish it if its digest verified, discard it otherwise, and
    /// tell the server.
    fn on_end(&mut self, id: FileId, size: u64, check: BodyCheck) -> Result<(), ClientError> {
        self.current = None;
        let force = self.session.opts.force;
        let flight = self.flight(id, "END")?;
        flight.report.size = Some(size);
        let path = flight.report.path.clone();
        let local = std::mem::take(&mut flight.extra);
        let (code, detail) = match (check, local.file, path) {
            (BodyCheck::Verified(digest), file, path) => {
                flight.report.digest = Some(digest);
                match (file, path, local.write_error) {
                    (Some(file), Some(path), None) => save(file, &path, &local.meta, force),
                    (Some(_), Some(path), Some(e)) => {
                        discard(&path);
                        (Code::Io, format!("cannot write {}: {e}", path.display()))
                    }
                    _ => (Code::Stored, String::new()),
                }
            }
            (BodyCheck::Mismatch { .. } | BodyCheck::Unverified(_), file, path) => {
                drop(file);
                if let Some(path) = &path {
                    discard(path);
                }
                (
                    Code::DigestMismatch,
                    "the received bytes do not match the server's digest; discarded".to_owned(),
                )
            }
        };
        let answer = if code == Code::Stored { "" } else { &detail };
        self.session.driver.conn_mut().finish(id, code, answer)?;
        self.flights
            .land(id, Status::Code(code), &detail, false, self.obs);
        Ok(())
    }
}
