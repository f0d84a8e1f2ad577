//! `ferry get`: downloads by name into a folder (or standard output). A file is written to a
//! hidden partial file beside its final place (`.NAME.ferry-partial`), published by rename only
//! once its digest verified, and the partial is kept when the connection breaks so that the
//! next run resumes from it.

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, UNIX_EPOCH};

use ferry_proto::{
    BodyCheck, Code, Connection, DriveError, Driver, Event, FileId, Hasher, Name, Offer, Step,
    Timestamp,
};

use crate::error::ClientError;
use crate::net::{self, Options};
use crate::report::{FileReport, Observer, Outcome, Status};
use crate::target::Target;
use crate::CHUNK;

/// Where downloaded files go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    /// Into this folder, under each file's relative name.
    Dir(PathBuf),
    /// To standard output, one after the other, as the bytes arrive.
    Stdout,
}

/// Where `name` lands under `dir`: its components joined one by one. A [`Name`] has no root,
/// no `..` and no separator but `/`, so the result is always inside `dir`.
#[must_use]
pub fn local_path(dir: &Path, name: &Name) -> PathBuf {
    name.components().fold(dir.to_owned(), |p, c| p.join(c))
}

/// The partial file kept beside `path` while it downloads: `.NAME.ferry-partial`.
#[must_use]
pub fn partial_path(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!(".{name}.ferry-partial"))
}

/// Downloads `names` from the server at `target` over one connection.
pub fn get(
    target: &Target,
    names: Vec<Name>,
    dest: &Dest,
    opts: &Options,
    obs: &mut dyn Observer,
) -> Outcome {
    let mut outcome = Outcome::default();
    let unique: BTreeSet<&Name> = names.iter().collect();
    if unique.len() != names.len() {
        return Outcome::failed(ClientError::Usage("a name is given twice".into()));
    }
    let mut wanted = Vec::new();
    for name in names {
        let path = match dest {
            Dest::Stdout => None,
            Dest::Dir(dir) => Some(local_path(dir, &name)),
        };
        if let Some(p) = path.as_ref().filter(|p| !opts.force && exists(p)) {
            let mut r = FileReport::new(name, path.clone(), None, Status::Code(Code::Exists));
            r.detail = format!("{} exists here; use --force to replace it", p.display());
            obs.finished(&r);
            outcome.files.push(r);
            continue;
        }
        wanted.push((name, path));
    }
    if wanted.is_empty() {
        return outcome;
    }
    if let Dest::Dir(dir) = dest {
        if let Err(source) = fs::create_dir_all(dir) {
            outcome.error = Some(ClientError::Destination {
                path: dir.clone(),
                source,
            });
            return outcome;
        }
    }
    let stream = match net::connect(target, opts) {
        Ok(s) => s,
        Err(e) => {
            outcome.error = Some(e);
            return outcome;
        }
    };
    let conn = match Connection::client(opts.token.as_deref()) {
        Ok(c) => c,
        Err(e) => return Outcome::failed(e.into()),
    };
    let mut down = Download {
        target,
        opts,
        force: opts.force,
        driver: Driver::new(stream, conn),
        wanted,
        next: 0,
        wants: HashMap::new(),
        current: None,
        welcomed: false,
        outcome,
        obs,
        buf: vec![0; CHUNK],
    };
    if let Err(e) = down.run() {
        down.abandon(e);
    }
    down.outcome
}

fn exists(p: &Path) -> bool {
    p.symlink_metadata().is_ok()
}

/// A file asked for and not yet finished.
struct Want {
    order: usize,
    report: FileReport,
    /// The partial file, once the offer came (`None` for standard output).
    file: Option<File>,
    mtime: Option<Timestamp>,
    started: Option<Instant>,
    /// A local write failed: the rest of the body is drained and the file dropped.
    write_error: Option<io::Error>,
}

struct Download<'a> {
    target: &'a Target,
    opts: &'a Options,
    force: bool,
    driver: Driver<TcpStream>,
    wanted: Vec<(Name, Option<PathBuf>)>,
    next: usize,
    wants: HashMap<FileId, Want>,
    current: Option<FileId>,
    welcomed: bool,
    outcome: Outcome,
    obs: &'a mut dyn Observer,
    buf: Vec<u8>,
}

impl Download<'_> {
    fn run(&mut self) -> Result<(), ClientError> {
        self.refill()?;
        while !self.wants.is_empty() {
            let step = self.driver.next_step().map_err(|e| self.drive_err(e))?;
            match step {
                Step::Event(Event::Welcome { .. }) => self.welcomed = true,
                Step::Event(Event::Offer(o)) => self.on_offer(o)?,
                Step::Event(Event::Begin { id, from }) => self.on_begin(id, from)?,
                Step::Body(_) => self.on_body()?,
                Step::Event(Event::End { id, size, check }) => self.on_end(id, size, check)?,
                Step::Event(Event::Refused { id, code, reason }) => {
                    self.land(id, Status::Code(code), &reason, true);
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
            }
            self.refill()?;
        }
        self.driver.flush().map_err(|e| self.drive_err(e))?;
        let _ = self.driver.stream().shutdown(Shutdown::Write);
        Ok(())
    }

    /// Asks for more files while the window has room.
    fn refill(&mut self) -> Result<(), ClientError> {
        while self.next < self.wanted.len()
            && self.wants.len() < self.opts.window.max(1)
            && self.driver.conn().pipeline_room() > 0
        {
            let (name, path) = self.wanted[self.next].clone();
            let id = self.driver.conn_mut().get(name.clone())?;
            let report = FileReport::new(name, path, None, Status::Incomplete);
            self.wants.insert(
                id,
                Want {
                    order: self.next,
                    report,
                    file: None,
                    mtime: None,
                    started: None,
                    write_error: None,
                },
            );
            self.next += 1;
        }
        Ok(())
    }

    /// The server offers a file we asked for (the machine checked id and name): accept it,
    /// offering the partial we hold as the resume prefix.
    fn on_offer(&mut self, o: Offer) -> Result<(), ClientError> {
        let want = self
            .wants
            .get_mut(&o.id)
            .ok_or_else(|| ClientError::unexpected(self.target, "OFFER"))?;
        want.report.size = o.size;
        want.mtime = o.mtime;
        let Some(path) = want.report.path.clone() else {
            self.driver.conn_mut().accept(o.id, Hasher::new())?;
            return Ok(());
        };
        match open_partial(&partial_path(&path), o.size, &mut self.buf) {
            Ok((file, prefix)) => {
                if !prefix.is_empty() {
                    log::debug!("{}: offering {} bytes held", path.display(), prefix.len());
                }
                want.file = Some(file);
                self.driver.conn_mut().accept(o.id, prefix)?;
            }
            Err(e) => {
                let reason = format!("cannot write {}: {e}", path.display());
                self.driver.conn_mut().refuse(o.id, Code::Io, &reason)?;
                self.land(o.id, Status::Code(Code::Io), &reason, false);
            }
        }
        Ok(())
    }

    fn on_begin(&mut self, id: FileId, from: u64) -> Result<(), ClientError> {
        let want = self
            .wants
            .get_mut(&id)
            .ok_or_else(|| ClientError::unexpected(self.target, "BEGIN"))?;
        self.current = Some(id);
        want.started = Some(Instant::now());
        want.report.offset = from;
        if let Some(file) = want.file.as_mut() {
            // From 0: the server did not recognise our partial, so it goes.
            let placed = if from == 0 { file.set_len(0) } else { Ok(()) }
                .and_then(|()| file.seek(SeekFrom::Start(from)));
            if let Err(e) = placed {
                want.write_error = Some(e);
            }
        }
        self.obs.started(&want.report.name, want.report.size, from);
        Ok(())
    }

    fn on_body(&mut self) -> Result<(), ClientError> {
        let id = self
            .current
            .ok_or_else(|| ClientError::unexpected(self.target, "file body"))?;
        let n = self
            .driver
            .read_body(&mut self.buf)
            .map_err(|e| ClientError::from_drive(self.target, self.opts.timeout, e))?;
        let data = &self.buf[..n];
        let want = self
            .wants
            .get_mut(&id)
            .ok_or_else(|| ClientError::unexpected(self.target, "file body"))?;
        want.report.bytes += n as u64;
        match want.file.as_mut() {
            None => io::stdout().write_all(data).map_err(ClientError::Stdout)?,
            Some(file) if want.write_error.is_none() => {
                if let Err(e) = file.write_all(data) {
                    want.write_error = Some(e);
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
        let want = self
            .wants
            .get_mut(&id)
            .ok_or_else(|| ClientError::unexpected(self.target, "END"))?;
        want.report.size = Some(size);
        let path = want.report.path.clone();
        let (code, detail) = match check {
            BodyCheck::Verified(digest) => {
                want.report.digest = Some(digest);
                match (want.file.take(), path, want.write_error.take()) {
                    (None, _, _) | (_, None, _) => match io::stdout().flush() {
                        Ok(()) => (Code::Stored, String::new()),
                        Err(e) => return Err(ClientError::Stdout(e)),
                    },
                    (Some(_), Some(path), Some(e)) => {
                        let _ = fs::remove_file(partial_path(&path));
                        (Code::Io, format!("cannot write {}: {e}", path.display()))
                    }
                    (Some(file), Some(path), None) => {
                        match publish(file, &path, want.mtime, self.force) {
                            Ok(()) => (Code::Stored, String::new()),
                            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => (
                                Code::Exists,
                                format!(
                                    "{} appeared meanwhile; use --force to replace it",
                                    path.display()
                                ),
                            ),
                            Err(e) => (Code::Io, format!("cannot save {}: {e}", path.display())),
                        }
                    }
                }
            }
            BodyCheck::Mismatch { .. } | BodyCheck::Unverified(_) => {
                want.file = None;
                if let Some(path) = &path {
                    let _ = fs::remove_file(partial_path(path));
                }
                (
                    Code::DigestMismatch,
                    "the received bytes do not match the server's digest; discarded".to_owned(),
                )
            }
        };
        let answer = if code == Code::Stored { "" } else { &detail };
        self.driver.conn_mut().finish(id, code, answer)?;
        self.land(id, Status::Code(code), &detail, false);
        Ok(())
    }

    /// Records the final word on a file.
    fn land(&mut self, id: FileId, status: Status, detail: &str, refused: bool) {
        let Some(mut w) = self.wants.remove(&id) else {
            return;
        };
        w.report.status = status;
        w.report.refused = refused;
        w.report.detail = ferry_proto::name::escape(detail);
        w.report.seconds = w.started.map_or(0.0, |t| t.elapsed().as_secs_f64());
        self.obs.finished(&w.report);
        self.outcome.files.push(w.report);
    }

    /// The connection failed: every file still wanted is reported incomplete; partial files
    /// stay for the next run to resume from.
    fn abandon(&mut self, e: ClientError) {
        let mut left: Vec<_> = self.wants.drain().map(|(_, w)| w).collect();
        left.sort_by_key(|w| w.order);
        let unasked = self.wanted[self.next..].iter().map(|(name, path)| {
            FileReport::new(name.clone(), path.clone(), None, Status::Incomplete)
        });
        for mut r in left.into_iter().map(|w| w.report).chain(unasked) {
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

/// Opens (or creates) the partial file and hashes what it holds, if that can be a prefix of a
/// file of `size` bytes; otherwise empties it.
fn open_partial(partial: &Path, size: Option<u64>, buf: &mut [u8]) -> io::Result<(File, Hasher)> {
    if let Some(dir) = partial.parent() {
        fs::create_dir_all(dir)?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(partial)?;
    let held = file.metadata()?.len();
    let mut prefix = Hasher::new();
    if held > 0 && size.is_some_and(|s| held <= s) {
        loop {
            match file.read(buf) {
                Ok(0) => break,
                Ok(n) => prefix.update(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    } else {
        file.set_len(0)?;
    }
    Ok((file, prefix))
}

/// Makes the verified partial file visible under its final name, atomically. Without
/// `force`, an existing file is never replaced (a hard link fails if the name is taken).
fn publish(file: File, path: &Path, mtime: Option<Timestamp>, force: bool) -> io::Result<()> {
    if let Some(t) = mtime.and_then(to_system_time) {
        // Best effort: the data is what matters.
        let _ = file.set_modified(t);
    }
    file.sync_all()?;
    drop(file);
    let partial = partial_path(path);
    if force {
        return fs::rename(&partial, path);
    }
    match fs::hard_link(&partial, path) {
        Ok(()) => fs::remove_file(&partial),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(e),
        // No hard links on this file system: check, then rename.
        Err(_) if exists(path) => Err(io::ErrorKind::AlreadyExists.into()),
        Err(_) => fs::rename(&partial, path),
    }
}

fn to_system_time(t: Timestamp) -> Option<std::time::SystemTime> {
    let secs = u64::try_from(t.secs).ok()?;
    UNIX_EPOCH.checked_add(Duration::new(secs, t.nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_folder() {
        let dir = Path::new("/out");
        let name = Name::parse("a/b/c.txt").unwrap();
        assert_eq!(local_path(dir, &name), Path::new("/out/a/b/c.txt"));
        assert_eq!(
            partial_path(&local_path(dir, &name)),
            Path::new("/out/a/b/.c.txt.ferry-partial")
        );
    }

    #[test]
    fn partial_is_a_prefix_only_when_it_fits() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("sub/.x.ferry-partial");
        let mut buf = vec![0; 4];
        let (_, h) = open_partial(&p, Some(10), &mut buf).unwrap();
        assert!(h.is_empty());
        fs::write(&p, b"hello").unwrap();
        let (_, h) = open_partial(&p, Some(10), &mut buf).unwrap();
        assert_eq!(h.finalize(), ferry_proto::Digest::of(b"hello"));
        let (_, h) = open_partial(&p, Some(3), &mut buf).unwrap();
        assert!(h.is_empty());
        assert_eq!(fs::metadata(&p).unwrap().len(), 0);
    }

    #[test]
    fn publish_never_replaces_without_force() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        for (content, force, want) in [
            ("one", false, "one"),
            ("two", false, "one"),
            ("three", true, "three"),
        ] {
            fs::write(partial_path(&path), content).unwrap();
            let file = File::open(partial_path(&path)).unwrap();
            let r = publish(file, &path, None, force);
            assert_eq!(r.is_ok(), content != "two", "{content}");
            assert_eq!(fs::read_to_string(&path).unwrap(), want);
        }
    }
}
