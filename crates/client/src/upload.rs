//! `ferry send`: many files over one connection, offers pipelined, resume verified by hashing
//! the local prefix the server says it holds.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{Shutdown, TcpStream};
use std::time::Instant;

use ferry_proto::{Code, Connection, DriveError, Driver, Event, FileId, Hasher, Step};

use crate::error::ClientError;
use crate::net::{self, Options};
use crate::report::{FileReport, Observer, Outcome, Status};
use crate::target::Target;
use crate::walk::{Origin, Source};
use crate::CHUNK;

/// Uploads `sources` to the ferry server at `target` over one connection.
pub fn send(
    target: &Target,
    sources: Vec<Source>,
    opts: &Options,
    obs: &mut dyn Observer,
) -> Outcome {
    let stream = match net::connect(target, opts) {
        Ok(s) => s,
        Err(e) => return Outcome::failed(e),
    };
    let conn = match Connection::client(opts.token.as_deref()) {
        Ok(c) => c,
        Err(e) => return Outcome::failed(e.into()),
    };
    let mut up = Upload {
        target,
        opts,
        driver: Driver::new(stream, conn),
        sources,
        next: 0,
        flights: HashMap::new(),
        welcomed: false,
        outcome: Outcome::default(),
        obs,
        buf: vec![0; CHUNK],
    };
    if let Err(e) = up.run() {
        up.abandon(e);
    }
    up.outcome
}

/// A file offered and not yet finished.
struct Flight {
    index: usize,
    report: FileReport,
    started: Option<Instant>,
}

struct Upload<'a> {
    target: &'a Target,
    opts: &'a Options,
    driver: Driver<TcpStream>,
    sources: Vec<Source>,
    next: usize,
    flights: HashMap<FileId, Flight>,
    welcomed: bool,
    outcome: Outcome,
    obs: &'a mut dyn Observer,
    buf: Vec<u8>,
}

impl Upload<'_> {
    fn run(&mut self) -> Result<(), ClientError> {
        self.refill()?;
        while !self.flights.is_empty() {
            let step = self.driver.next_step().map_err(|e| self.drive_err(e))?;
            match step {
                Step::Event(Event::Welcome { version }) => {
                    log::debug!("welcomed, protocol v{version}");
                    self.welcomed = true;
                }
                Step::Event(Event::Accepted { id, offset, .. }) => self.send_body(id, offset)?,
                Step::Event(Event::Refused { id, code, reason }) => {
                    self.land(id, Status::Code(code), &reason, true);
                }
                Step::Event(Event::Result { id, code, detail }) => {
                    self.land(id, Status::Code(code), &detail, false);
                }
                Step::Event(Event::PeerError { code, reason }) => {
                    return Err(ClientError::from_peer(
                        self.target,
                        self.welcomed,
                        code,
                        &reason,
                    ))
                }
                Step::Event(Event::Closed) => {
                    return Err(ClientError::Lost {
                        target: self.target.clone(),
                        reason: "the server closed the connection".into(),
                    })
                }
                Step::Event(other) => {
                    return Err(ClientError::unexpected(self.target, &format!("{other:?}")))
                }
                Step::Body(_) => return Err(ClientError::unexpected(self.target, "file body")),
            }
            self.refill()?;
        }
        self.driver.flush().map_err(|e| self.drive_err(e))?;
        // Closing our sending side at a frame boundary ends the conversation cleanly.
        let _ = self.driver.stream().shutdown(Shutdown::Write);
        Ok(())
    }

    /// Offers more files while the window has room.
    fn refill(&mut self) -> Result<(), ClientError> {
        while self.next < self.sources.len()
            && self.flights.len() < self.opts.window.max(1)
            && self.driver.conn().pipeline_room() > 0
        {
            let src = &self.sources[self.next];
            let id = self.driver.conn_mut().offer(src.info())?;
            let report = FileReport::new(
                src.name.clone(),
                src.path().map(ToOwned::to_owned),
                src.size,
                Status::Incomplete,
            );
            self.flights.insert(
                id,
                Flight {
                    index: self.next,
                    report,
                    started: None,
                },
            );
            self.next += 1;
        }
        Ok(())
    }

    /// Streams the body of an accepted file, from the server's offset if our prefix matches.
    fn send_body(&mut self, id: FileId, offset: u64) -> Result<(), ClientError> {
        let Some(flight) = self.flights.get(&id) else {
            return Err(ClientError::unexpected(self.target, "ACCEPT"));
        };
        let src = self.sources[flight.index].clone();
        let mut input: Box<dyn Read> = match &src.origin {
            Origin::Stdin => Box::new(io::stdin().lock()),
            Origin::File(path) => match File::open(path) {
                Ok(f) => match self.resume(id, f, offset)? {
                    Some(f) => Box::new(f),
                    None => return Ok(()),
                },
                Err(e) => return self.give_up(id, &e),
            },
        };
        if matches!(src.origin, Origin::Stdin) {
            self.begin(id, Hasher::new())?;
        }
        let from = self.flights[&id].report.offset;
        self.obs.started(&src.name, src.size, from);
        let mut left = src.size.map(|s| s.saturating_sub(from));
        loop {
            let want = left.map_or(CHUNK, |l| usize::try_from(l).unwrap_or(CHUNK).min(CHUNK));
            if want == 0 {
                break;
            }
            let n = match read_some(&mut input, &mut self.buf[..want]) {
                Ok(0) if left.is_none() => break,
                Ok(0) => {
                    let e = io::Error::new(io::ErrorKind::UnexpectedEof, "it shrank while read");
                    return self.give_up(id, &e);
                }
                Ok(n) => n,
                Err(e) => return self.give_up(id, &e),
            };
            self.driver
                .send_body(&self.buf[..n])
                .map_err(|e| self.drive_err(e))?;
            left = left.map(|l| l - n as u64);
            self.obs.advanced(n as u64);
            if let Some(f) = self.flights.get_mut(&id) {
                f.report.bytes += n as u64;
            }
        }
        let digest = self.driver.conn_mut().end()?;
        if let Some(f) = self.flights.get_mut(&id) {
            f.report.digest = Some(digest);
            f.report.size = Some(f.report.offset + f.report.bytes);
        }
        Ok(())
    }

    /// Hashes the first `offset` bytes of `file` (the prefix the server holds), begins the
    /// body and positions the file where it starts; `None` if that failed and the file was
    /// cancelled.
    fn resume(
        &mut self,
        id: FileId,
        mut file: File,
        offset: u64,
    ) -> Result<Option<File>, ClientError> {
        let mut prefix = Hasher::new();
        if offset > 0 {
            let mut taken = (&mut file).take(offset);
            loop {
                match read_some(&mut taken, &mut self.buf) {
                    Ok(0) => break,
                    Ok(n) => prefix.update(&self.buf[..n]),
                    // A prefix we cannot read is one we cannot vouch for: start over.
                    Err(_) => {
                        prefix = Hasher::new();
                        break;
                    }
                }
            }
        }
        let from = self.begin(id, prefix)?;
        if offset > 0 {
            log::debug!("file #{id}: server holds {offset} bytes, resuming from {from}");
        }
        match file.seek(SeekFrom::Start(from)) {
            Ok(_) => Ok(Some(file)),
            // Nothing of the body is sent yet: cancelling here is clean.
            Err(e) => self.give_up(id, &e).map(|()| None),
        }
    }

    fn begin(&mut self, id: FileId, prefix: Hasher) -> Result<u64, ClientError> {
        let from = self.driver.conn_mut().begin(id, prefix)?;
        if let Some(f) = self.flights.get_mut(&id) {
            f.report.offset = from;
            f.started = Some(Instant::now());
        }
        Ok(from)
    }

    /// The local file failed after the server accepted it: cancel it and go on.
    fn give_up(&mut self, id: FileId, e: &io::Error) -> Result<(), ClientError> {
        let what = self.flights[&id]
            .report
            .path
            .as_ref()
            .map_or_else(|| "standard input".into(), |p| p.display().to_string());
        let reason = format!("cannot read {what}: {e}");
        log::debug!("cancelling file #{id}: {reason}");
        self.driver.conn_mut().cancel(id, &reason)?;
        self.land(id, Status::Code(Code::Io), &reason, false);
        Ok(())
    }

    /// Records the final word on a file.
    fn land(&mut self, id: FileId, status: Status, detail: &str, refused: bool) {
        let Some(mut f) = self.flights.remove(&id) else {
            return;
        };
        f.report.status = status;
        f.report.refused = refused;
        f.report.detail = ferry_proto::name::escape(detail);
        f.report.seconds = f.started.map_or(0.0, |t| t.elapsed().as_secs_f64());
        self.obs.finished(&f.report);
        self.outcome.files.push(f.report);
    }

    /// The connection failed: every file in flight or not yet offered is reported incomplete.
    fn abandon(&mut self, e: ClientError) {
        let mut left: Vec<_> = self.flights.drain().map(|(_, f)| f).collect();
        left.sort_by_key(|f| f.index);
        let unsent = self.sources[self.next..].iter().map(|s| {
            FileReport::new(
                s.name.clone(),
                s.path().map(ToOwned::to_owned),
                s.size,
                Status::Incomplete,
            )
        });
        for mut r in left.into_iter().map(|f| f.report).chain(unsent) {
            r.detail = "the connection ended first".into();
            self.obs.finished(&r);
            self.outcome.files.push(r);
        }
        self.outcome.error = Some(e);
    }

    fn drive_err(&self, e: DriveError) -> ClientError {
        ClientError::from_drive(self.target, self.opts.timeout, e)
    }
}

/// One read, retried on interruption.
fn read_some(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}
