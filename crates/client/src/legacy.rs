//! `ferry send --legacy`: the seed framing of the lab report's `server.py`. One connection
//! per file, `<basename>\n` then the bytes until close; the seed server never answers, so a
//! file that went out whole is reported [`Status::Sent`], not stored.

use std::collections::BTreeSet;
use std::io::{self, Read};
use std::time::Instant;

use ferry_proto::{Connection, Driver, EntryKind, Hasher, Name};
use ferry_secure::Transport;

use crate::body::{self, PumpError};
use crate::error::ClientError;
use crate::net::{self, Options};
use crate::report::{FileReport, Observer, Outcome, Status};
use crate::target::Target;
use crate::timed::Timed;
use crate::walk::{Origin, Source};
use crate::CHUNK;

/// Sends each of `sources` under its base name, one connection each. Two files with one base
/// name are refused before connecting: the seed server would store the second over the first.
pub fn send(
    target: &Target,
    sources: Vec<Source>,
    opts: &Options,
    obs: &mut dyn Observer,
) -> Outcome {
    let mut seen = BTreeSet::new();
    let mut named = Vec::new();
    // The seed framing carries files only: a folder's files go, the folder itself cannot.
    for src in sources.into_iter().filter(|s| s.kind() == EntryKind::File) {
        let base = src.name.file_name().to_owned();
        let name = match Name::parse_single(&base) {
            Ok(n) => n,
            Err(source) => return Outcome::failed(ClientError::BadName { name: base, source }),
        };
        if !seen.insert(name.clone()) {
            return Outcome::failed(ClientError::Usage(format!(
                "two files are named {name}; the seed server keeps base names only"
            )));
        }
        named.push(Source { name, ..src });
    }
    let mut outcome = Outcome::default();
    let mut buf = vec![0; CHUNK];
    for src in named {
        let mut report = FileReport::new(
            src.name.clone(),
            src.path().map(ToOwned::to_owned),
            src.size,
            Status::Incomplete,
        );
        let result = send_one(target, &src, opts, obs, &mut buf, &mut report);
        let fatal = match result {
            Ok(()) => None,
            Err(Failure::Local(e)) => {
                report.status = Status::Code(ferry_proto::Code::Io);
                report.detail = format!("cannot read {}: {e}", show(&src));
                None
            }
            Err(Failure::Fatal(e)) => {
                report.detail = "the connection ended first".into();
                Some(e)
            }
        };
        obs.finished(&report);
        outcome.files.push(report);
        if let Some(e) = fatal {
            outcome.error = Some(e);
            break;
        }
    }
    outcome
}

enum Failure {
    /// The local file failed; the connection was closed early and the next file goes on.
    Local(io::Error),
    /// The network failed: stop.
    Fatal(ClientError),
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Failure::Fatal(e)
    }
}

fn show(src: &Source) -> String {
    src.path()
        .map_or_else(|| "standard input".into(), |p| p.display().to_string())
}

fn send_one(
    target: &Target,
    src: &Source,
    opts: &Options,
    obs: &mut dyn Observer,
    buf: &mut [u8],
    report: &mut FileReport,
) -> Result<(), Failure> {
    let mut input: Box<dyn Read> = match &src.origin {
        Origin::Stdin => Box::new(io::stdin().lock()),
        Origin::File(p) | Origin::Folder(p) => {
            Box::new(crate::walk::open_regular(p).map_err(Failure::Local)?)
        }
    };
    let stream = net::connect(target, opts)?;
    let fail = |e| ClientError::from_drive(target, opts.timeout, e);
    let mut d = Driver::new(stream, Connection::seed_client());
    let id = d.conn_mut().offer(src.info()).map_err(ClientError::from)?;
    d.conn_mut()
        .begin(id, Hasher::new())
        .map_err(ClientError::from)?;
    let started = Instant::now();
    obs.started(&src.name, src.size, 0);
    let mut sent = 0;
    let pumped = body::pump(&mut input, src.size, &mut d, buf, |n| {
        sent += n;
        obs.advanced(n);
    });
    report.bytes = sent;
    match pumped {
        Ok(()) => {}
        // Closing without the rest leaves the seed server a short file; nothing better
        // exists in this framing.
        Err(PumpError::Local(e)) => return Err(Failure::Local(e)),
        Err(PumpError::Drive(e)) => return Err(fail(e).into()),
    }
    let digest = d.conn_mut().end().map_err(ClientError::from)?;
    d.flush().map_err(fail)?;
    let (stream, _) = d.into_parts();
    finish(stream).map_err(|e| ClientError::from_io(target, opts.timeout, e))?;
    report.status = Status::Sent;
    report.size = Some(report.bytes);
    report.digest = Some(digest);
    report.seconds = started.elapsed().as_secs_f64();
    Ok(())
}

/// Ends the upload (our side closes) and waits for the seed server to close its side, which
/// it does once it has read everything. It never sends anything; what it might is dropped.
fn finish(mut stream: Timed) -> io::Result<()> {
    stream.shutdown_write()?;
    stream.restart();
    let mut sink = [0u8; 512];
    while body::read_some(&mut stream, &mut sink)? > 0 {}
    Ok(())
}
