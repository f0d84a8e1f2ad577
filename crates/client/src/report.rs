//! What happened to each file, how a run ended, and the hooks through which callers watch.

use std::path::PathBuf;
use std::time::Duration;

use ferry_proto::{Code, Digest, EntryKind, Name};
use ferry_secure::Fingerprint;
use serde::Serialize;

use crate::error::{exit, ClientError};
use crate::target::Target;

/// How one file ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The server's (or, for downloads, our own) code: [`Code::Stored`] is success.
    Code(Code),
    /// Seed framing: every byte was sent, but the seed server never confirms anything.
    Sent,
    /// The connection ended before the file's fate was known.
    Incomplete,
    /// A folder the server could not be sent: it speaks protocol 1, which has no folders
    /// (its files are sent all the same). Not a failure.
    NotSent,
}

impl Status {
    /// The stable identifier used in JSON output: a [`Code::as_str`] value (`"stored"`,
    /// `"unchanged"`, `"exists"`, ...), `"sent"`, `"incomplete"` or `"not_sent"`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Code(c) => c.as_str(),
            Status::Sent => "sent",
            Status::Incomplete => "incomplete",
            Status::NotSent => "not_sent",
        }
    }

    /// Whether the file arrived, or was already there ([`Code::Unchanged`]).
    #[must_use]
    pub fn is_success(self) -> bool {
        matches!(
            self,
            Status::Code(Code::Stored | Code::Unchanged) | Status::Sent | Status::NotSent
        )
    }
}

/// The fate of one file or folder.
#[derive(Debug, Clone, PartialEq)]
pub struct FileReport {
    /// The name on the wire.
    pub name: Name,
    /// A file or a folder (folders travel as entries of their own in protocol 2).
    pub kind: EntryKind,
    /// The local file read or written (`None` for standard input or output).
    pub path: Option<PathBuf>,
    /// The file's size, when known.
    pub size: Option<u64>,
    /// How it ended.
    pub status: Status,
    /// The server declined it: REFUSE, a RESULT `Exists` (a folder offer's answer, or a
    /// publish that found the name taken) or, for a stream, it stopped reading the body over
    /// its size limit; as opposed to failing while taking or storing it (no space left, a
    /// digest mismatch, ...).
    pub refused: bool,
    /// It failed on this side (the local file could not be read, or shrank while it was sent),
    /// not on the server's.
    pub local: bool,
    /// On success, the name the server stored it under (uploads); otherwise why it failed.
    /// As the server or the system said it, not escaped: escape it before printing it
    /// ([`ferry_proto::name::escape`]).
    pub detail: String,
    /// BLAKE3 of the whole file, once known.
    pub digest: Option<Digest>,
    /// Bytes of body moved over the network in this run.
    pub bytes: u64,
    /// Where the body started: above 0 when a transfer resumed.
    pub offset: u64,
    /// Seconds from the first body byte to the final word.
    pub seconds: f64,
}

impl FileReport {
    /// A report with nothing transferred yet.
    #[must_use]
    pub fn new(name: Name, path: Option<PathBuf>, size: Option<u64>, status: Status) -> Self {
        Self {
            name,
            kind: EntryKind::File,
            path,
            size,
            status,
            refused: false,
            local: false,
            detail: String::new(),
            digest: None,
            bytes: 0,
            offset: 0,
            seconds: 0.0,
        }
    }

    /// A report of a folder.
    #[must_use]
    pub fn folder(name: Name, path: Option<PathBuf>, status: Status) -> Self {
        Self {
            kind: EntryKind::Folder,
            ..Self::new(name, path, None, status)
        }
    }

    /// The report as one JSON object (`"type": "file"` or `"folder"`; see the README's schema).
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        Record {
            r#type: kind_str(self.kind),
            name: self.name.as_str(),
            path: self.path.as_ref().map(|p| p.display().to_string()),
            size: self.size,
            status: self.status.as_str(),
            ok: self.status.is_success(),
            detail: &self.detail,
            digest: self.digest.map(|d| d.to_hex()),
            bytes: self.bytes,
            offset: self.offset,
            seconds: self.seconds,
        }
        .to_json()
    }
}

/// The fields of every file and folder record, in one place so that they stay alike.
#[derive(Serialize)]
struct Record<'a> {
    r#type: &'static str,
    name: &'a str,
    path: Option<String>,
    size: Option<u64>,
    status: &'static str,
    ok: bool,
    detail: &'a str,
    digest: Option<String>,
    bytes: u64,
    offset: u64,
    seconds: f64,
}

impl Record<'_> {
    fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// `1 entry`, `3 entries`.
pub(crate) fn entries(n: u64) -> String {
    let s = if n == 1 { "entry" } else { "entries" };
    format!("{n} {s}")
}

/// `"file"` or `"folder"`, as records and listings say.
pub(crate) fn kind_str(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::Folder => "folder",
        _ => "file",
    }
}

/// A local entry that was not sent, or a listed one not downloaded: a special file, a dangling
/// link, something unreadable, or a name that cannot travel (or, on Windows, be stored). The
/// rest of the run goes on; the exit code says something was skipped (1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The local path (for downloads, where the entry would have landed).
    pub path: PathBuf,
    /// The name it would travel under (`--to` and its folders included), as it is: lossy when
    /// not UTF-8, not escaped (escape it before printing it).
    pub name: String,
    /// A file (anything that is not a folder) or a folder.
    pub kind: EntryKind,
    /// Why, in words.
    pub reason: String,
}

impl Skipped {
    /// The record as one JSON object: the fields of a file record, `"status": "skipped"`.
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        Record {
            r#type: kind_str(self.kind),
            name: &self.name,
            path: Some(self.path.display().to_string()),
            size: None,
            status: "skipped",
            ok: false,
            detail: &self.reason,
            digest: None,
            bytes: 0,
            offset: 0,
            seconds: 0.0,
        }
        .to_json()
    }
}

/// Watches a transfer as it happens. Every method has a default that does nothing.
pub trait Observer {
    /// A body starts moving: `from` is above 0 when it resumes.
    fn started(&mut self, name: &Name, size: Option<u64>, from: u64) {
        let _ = (name, size, from);
    }
    /// A resumed upload checks its first `bytes`, which the server holds, by hashing them
    /// here (before [`Observer::started`]); this can take a while for a large prefix.
    fn verifying(&mut self, name: &Name, bytes: u64) {
        let _ = (name, bytes);
    }
    /// More body bytes moved.
    fn advanced(&mut self, bytes: u64) {
        let _ = bytes;
    }
    /// A file's fate is known.
    fn finished(&mut self, report: &FileReport) {
        let _ = report;
    }
    /// An entry is skipped (not sent, or not downloaded).
    fn skipped(&mut self, skipped: &Skipped) {
        let _ = skipped;
    }
    /// The server left `count` entries out of the listing of `name`, a folder being
    /// downloaded (links, special files, unreadable folders, names the protocol cannot
    /// carry): they are not downloaded, and count as skipped.
    fn left_out(&mut self, name: &Name, count: u64) {
        let _ = (name, count);
    }
    /// TLS trust on first use: the server's certificate was just recorded as the one to
    /// expect from now on. Tell the user, as ssh does.
    fn trusted(&mut self, target: &Target, fingerprint: &Fingerprint) {
        let _ = (target, fingerprint);
    }
    /// A connection failed on the network and the transfer is about to be taken up again.
    fn retrying(&mut self, retry: &Retry) {
        let _ = retry;
    }
}

/// One retry of a transfer (`--retries`), as announced to [`Observer::retrying`].
#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    /// Which retry this is, from 1.
    pub retry: u32,
    /// How many retries are allowed in all.
    pub of: u32,
    /// The wait before reconnecting.
    pub delay: Duration,
    /// What went wrong with the previous connection.
    pub reason: String,
    /// Files whose fate is still unknown, to be offered or asked for again.
    pub files_left: usize,
}

impl Retry {
    /// The retry as one JSON object (`"type": "retry"`).
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "type": "retry",
            "retry": self.retry,
            "of": self.of,
            "delay": self.delay.as_secs_f64(),
            "reason": self.reason,
            "files_left": self.files_left,
        })
    }
}

/// Watches nothing.
impl Observer for () {}

/// How a whole run ended.
#[derive(Debug, Default)]
pub struct Outcome {
    /// One report per file and folder, in the order their fate became known.
    pub files: Vec<FileReport>,
    /// What was skipped, in the order it was found.
    pub skipped: Vec<Skipped>,
    /// Entries the server left out of the listings of folders downloaded, which it does not
    /// serve (see [`Observer::left_out`]): skipped too, but known only by their number.
    pub left_out: u64,
    /// What ended the run early, if anything.
    pub error: Option<ClientError>,
    /// How many times the transfer was taken up again on a new connection (`--retries`).
    pub retries: u32,
}

impl Outcome {
    /// A run that failed before any file moved.
    #[must_use]
    pub fn failed(error: ClientError) -> Self {
        Self {
            error: Some(error),
            ..Self::default()
        }
    }

    /// The process exit code (see [`exit`]): the error's if the run ended early; otherwise 0
    /// when every file and folder arrived or was already there, 3 when the server refused
    /// every file (and every folder that failed: a folder it held or made does not count
    /// against that, it holds no content of its own), 1 when some failed or were skipped
    /// (left out of a listing too).
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        if let Some(e) = &self.error {
            return e.exit_code();
        }
        let mut failed = self.files.iter().filter(|f| !f.status.is_success());
        let no_file_arrived = self
            .files
            .iter()
            .all(|f| f.kind == EntryKind::Folder || !f.status.is_success());
        if !self.skipped.is_empty() || self.left_out > 0 {
            exit::PARTIAL
        } else if failed.clone().next().is_none() {
            exit::OK
        } else if no_file_arrived && failed.all(|f| f.refused) {
            exit::REFUSED
        } else {
            exit::PARTIAL
        }
    }

    /// The closing JSON object (`"type": "summary"`), given the run's duration.
    #[must_use]
    pub fn summary_json(&self, seconds: f64) -> serde_json::Value {
        let files = || self.files.iter().filter(|f| f.kind != EntryKind::Folder);
        let ok = files().filter(|f| f.status.is_success()).count();
        let refused = files()
            .filter(|f| f.refused && !f.status.is_success())
            .count();
        let unchanged = files()
            .filter(|f| f.status == Status::Code(Code::Unchanged))
            .count();
        let skipped_files = self
            .skipped
            .iter()
            .filter(|s| s.kind != EntryKind::Folder)
            .count();
        let folders = self.files.len() - files().count();
        let folders_failed = self
            .files
            .iter()
            .filter(|f| f.kind == EntryKind::Folder && !f.status.is_success())
            .count();
        serde_json::json!({
            "type": "summary",
            "files": files().count() + skipped_files,
            "ok": ok,
            "unchanged": unchanged,
            "skipped": self.skipped.len() as u64 + self.left_out,
            "failed": files().count() - ok,
            "refused": refused,
            "folders": folders,
            "folders_failed": folders_failed,
            "bytes": self.files.iter().map(|f| f.bytes).sum::<u64>(),
            "seconds": seconds,
            "exit_code": self.exit_code(),
            "retries": self.retries,
            "error": self.error.as_ref().map(ToString::to_string),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(status: Status, refused: bool) -> FileReport {
        let mut r = FileReport::new(Name::parse("a").unwrap(), None, Some(1), status);
        r.refused = refused;
        r
    }

    #[test]
    fn exit_code_tells_all_refused_from_partial() {
        let stored = report(Status::Code(Code::Stored), false);
        let refused = report(Status::Code(Code::Exists), true);
        let broken = report(Status::Code(Code::DigestMismatch), false);
        let run = |files: Vec<FileReport>| {
            Outcome {
                files,
                ..Outcome::default()
            }
            .exit_code()
        };
        assert_eq!(run(vec![stored.clone()]), exit::OK);
        assert_eq!(run(vec![refused.clone()]), exit::REFUSED);
        assert_eq!(run(vec![stored.clone(), refused.clone()]), exit::PARTIAL);
        assert_eq!(run(vec![refused.clone(), broken]), exit::PARTIAL);
        let folder = |status, refused| FileReport {
            kind: EntryKind::Folder,
            ..report(status, refused)
        };
        let unchanged = folder(Status::Code(Code::Unchanged), false);
        let refused_folder = folder(Status::Code(Code::Exists), true);
        let broken_folder = folder(Status::Code(Code::Io), false);
        assert_eq!(
            run(vec![refused.clone(), refused_folder.clone()]),
            exit::REFUSED,
            "a tree refused whole"
        );
        assert_eq!(run(vec![refused_folder]), exit::REFUSED, "an empty folder");
        assert_eq!(
            run(vec![refused.clone(), unchanged]),
            exit::REFUSED,
            "a folder held already holds no content of its own"
        );
        assert_eq!(run(vec![refused, broken_folder]), exit::PARTIAL);
        assert_eq!(
            run(vec![
                stored.clone(),
                folder(Status::Code(Code::Exists), true)
            ]),
            exit::PARTIAL
        );
        assert_eq!(run(vec![report(Status::Sent, false)]), exit::OK);
    }

    #[test]
    fn json_fields_are_stable() {
        let mut r = report(Status::Code(Code::Stored), false);
        r.digest = Some(Digest::of(b"x"));
        let v = r.to_json();
        for key in [
            "type", "name", "size", "status", "digest", "bytes", "seconds", "offset",
        ] {
            assert!(v.get(key).is_some(), "{key} in {v}");
        }
        assert_eq!(v["status"], "stored");
        assert_eq!(v["digest"], Digest::of(b"x").to_hex());
        let s = Outcome {
            files: vec![r],
            ..Outcome::default()
        }
        .summary_json(1.5);
        assert_eq!(s["ok"], 1);
        assert_eq!(s["exit_code"], 0);
    }
}
