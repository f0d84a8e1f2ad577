//! `ferry send --legacy`: the seed framing of the lab report's `server.py`. One connection
//! per file, `<basename>\n` then the bytes until close; the seed server never answers, so a
//! file that went out whole is reported [`Status::Sent`], not stored. A ferry-server that
//! refuses the upload says so with one ERROR frame (PROTOCOL.md §2.1), read once the body went
//! out (or once the server stopped taking it) and reported as the refusal it is.

use std::collections::BTreeSet;
use std::io::{self, Read};
use std::time::Instant;

use ferry_proto::name::escape;
use ferry_proto::{wire, Code, Connection, Driver, EntryKind, Hasher, Name};
use ferry_secure::Transport;

use crate::body::{self, PumpError};
use crate::error::ClientError;
use crate::net::{self, Options};
use crate::report::{FileReport, Observer, Outcome, Status};
use crate::sniff::{self, Peer};
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
            Err(Failure::Refused { code, reason, ends }) => {
                report.status = Status::Code(code);
                report.refused = true;
                report.detail = reason;
                ends
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
    /// A ferry-server refused this file: an existing name, say (the next file goes on), or
    /// the seed framing itself (`ends` the run).
    Refused {
        /// The server's code.
        code: Code,
        /// The server's words, as it said them.
        reason: String,
        /// What ends the run, when the refusal is of every file.
        ends: Option<ClientError>,
    },
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
        // A ferry-server that refused the upload stops reading: its ERROR says why.
        Err(PumpError::Drive(e)) => return Err(last_words(target, d, fail(e))),
    }
    let digest = d.conn_mut().end().map_err(ClientError::from)?;
    if let Err(e) = d.flush() {
        return Err(last_words(target, d, fail(e)));
    }
    let (stream, _) = d.into_parts();
    let reply = finish(stream).map_err(|e| ClientError::from_io(target, opts.timeout, e))?;
    answered(target, &reply)?;
    report.status = Status::Sent;
    report.size = Some(report.bytes);
    report.digest = Some(digest);
    report.seconds = started.elapsed().as_secs_f64();
    Ok(())
}

/// Ends the upload (our side closes) and waits, within `--timeout`, for the peer to close its
/// side, which the seed server does once it has read everything. Returns what the peer sent
/// meanwhile, at most [`REPLY_BYTES`]: the seed server sends nothing.
fn finish(mut stream: Timed) -> io::Result<Vec<u8>> {
    stream.shutdown_write()?;
    stream.restart();
    let mut reply = Vec::new();
    let mut buf = [0u8; 512];
    while reply.len() < REPLY_BYTES {
        match body::read_some(&mut stream, &mut buf)? {
            0 => break,
            n => reply.extend_from_slice(&buf[..n]),
        }
    }
    Ok(reply)
}

/// Most bytes of a reply kept: a whole ERROR frame fits, and more is not a seed server anyway.
const REPLY_BYTES: usize = 2 * wire::MAX_REASON_LEN;

/// Whether the peer's `reply` to a finished upload leaves it sent: silence does; a ferry
/// ERROR frame is the server's refusal; anything else is what server.py never sends.
fn answered(target: &Target, reply: &[u8]) -> Result<(), Failure> {
    match sniff::identify(reply) {
        Peer::Silent => Ok(()),
        Peer::FerryError { code, reason } => Err(refusal(target, code, reason)),
        Peer::Foreign(how) => Err(not_seed(target, how)),
        Peer::Tls | Peer::Unknown => Err(not_seed(target, format!("{} bytes", reply.len()))),
    }
}

/// After the body could not go out (`failed`): the refusal the server said before it stopped
/// reading, if it said one, else `failed` itself.
fn last_words(target: &Target, d: Driver<Timed>, failed: ClientError) -> Failure {
    let (mut stream, _) = d.into_parts();
    stream.restart();
    match sniff::last_words(&mut stream) {
        Some((code, reason)) => refusal(target, code, reason),
        None => Failure::Fatal(failed),
    }
}

/// A ferry-server's ERROR to a seed upload: `Unsupported` refuses the seed framing itself
/// (`--no-seed`, or TLS or a token required), so every other file would meet it too, and it
/// ends the run as a refused connection; any other code refuses this one file.
fn refusal(target: &Target, code: Code, reason: String) -> Failure {
    let ends = (code == Code::Unsupported).then(|| ClientError::ServerRefused {
        target: target.clone(),
        code,
        reason: format!("{}; send without --legacy", escape(&reason)),
    });
    Failure::Refused { code, reason, ends }
}

/// The peer answered an upload, which the lab report's server.py never does.
fn not_seed(target: &Target, answer: String) -> Failure {
    Failure::Fatal(ClientError::NotSeed {
        target: target.clone(),
        answer,
    })
}
