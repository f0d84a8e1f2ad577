//! What happened to each file, how a run ended, and the hooks through which callers watch.

use std::path::PathBuf;
use std::time::Duration;

use ferry_proto::{Code, Digest, Name};
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
}

impl Status {
    /// The stable identifier used in JSON output: a [`Code::as_str`] value, `"sent"` or
    /// `"incomplete"`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Code(c) => c.as_str(),
            Status::Sent => "sent",
            Status::Incomplete => "incomplete",
        }
    }

    /// Whether the file arrived.
    #[must_use]
    pub fn is_success(self) -> bool {
        matches!(self, Status::Code(Code::Stored) | Status::Sent)
    }
}

/// The fate of one file.
#[derive(Debug, Clone, PartialEq)]
pub struct FileReport {
    /// The name on the wire.
    pub name: Name,
    /// The local file read or written (`None` for standard input or output).
    pub path: Option<PathBuf>,
    /// The file's size, when known.
    pub size: Option<u64>,
    /// How it ended.
    pub status: Status,
    /// The server refused it outright (REFUSE), as opposed to failing later.
    pub refused: bool,
    /// It failed on this side (the local file could not be read, or shrank while it was sent),
    /// not on the server's.
    pub local: bool,
    /// On success, the name the server stored it under (uploads); otherwise why it failed,
    /// escaped for printing.
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

    /// The report as one JSON object (`"type": "file"`).
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        #[derive(Serialize)]
        struct Line<'a> {
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
        serde_json::to_value(Line {
            r#type: "file",
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
        })
        .unwrap_or_default()
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
    /// One report per file, in the order their fate became known.
    pub files: Vec<FileReport>,
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
            files: Vec::new(),
            error: Some(error),
            retries: 0,
        }
    }

    /// The process exit code (see [`exit`]): the error's if the run ended early; otherwise 0
    /// when every file arrived, 3 when the server refused every one, 1 when some failed.
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        if let Some(e) = &self.error {
            return e.exit_code();
        }
        let failed: Vec<_> = self
            .files
            .iter()
            .filter(|f| !f.status.is_success())
            .collect();
        if failed.is_empty() {
            exit::OK
        } else if failed.len() == self.files.len() && failed.iter().all(|f| f.refused) {
            exit::REFUSED
        } else {
            exit::PARTIAL
        }
    }

    /// The closing JSON object (`"type": "summary"`), given the run's duration.
    #[must_use]
    pub fn summary_json(&self, seconds: f64) -> serde_json::Value {
        let ok = self.files.iter().filter(|f| f.status.is_success()).count();
        serde_json::json!({
            "type": "summary",
            "files": self.files.len(),
            "ok": ok,
            "failed": self.files.len() - ok,
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
        assert_eq!(run(vec![refused, broken]), exit::PARTIAL);
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
