//! Bookkeeping of the files of one conversation: which are in flight, since when, and the
//! reports of those whose fate is known.

use std::collections::HashMap;
use std::time::Instant;

use ferry_proto::FileId;

use crate::error::ClientError;
use crate::report::{FileReport, Observer, Outcome, Status};

/// A file offered or asked for and not yet finished; `T` is what the direction needs besides.
pub(crate) struct Flight<T> {
    /// Its place on the command line.
    pub(crate) order: usize,
    pub(crate) report: FileReport,
    started: Option<Instant>,
    pub(crate) extra: T,
}

pub(crate) struct Flights<T> {
    map: HashMap<FileId, Flight<T>>,
    pub(crate) outcome: Outcome,
}

impl<T> Flights<T> {
    pub(crate) fn new(outcome: Outcome) -> Self {
        Self {
            map: HashMap::new(),
            outcome,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub(crate) fn insert(&mut self, id: FileId, order: usize, report: FileReport, extra: T) {
        let flight = Flight {
            order,
            report,
            started: None,
            extra,
        };
        self.map.insert(id, flight);
    }

    pub(crate) fn get_mut(&mut self, id: FileId) -> Option<&mut Flight<T>> {
        self.map.get_mut(&id)
    }

    /// The body starts now, `from` bytes in.
    pub(crate) fn start(&mut self, id: FileId, from: u64) {
        if let Some(f) = self.map.get_mut(&id) {
            f.started = Some(Instant::now());
            f.report.offset = from;
        }
    }

    /// Records the final word on a file (`detail` comes from the peer or the system and is
    /// escaped here).
    pub(crate) fn land(
        &mut self,
        id: FileId,
        status: Status,
        detail: &str,
        refused: bool,
        obs: &mut dyn Observer,
    ) {
        let Some(mut f) = self.map.remove(&id) else {
            return;
        };
        f.report.status = status;
        f.report.refused = refused;
        f.report.detail = ferry_proto::name::escape(detail);
        f.report.seconds = f.started.map_or(0.0, |t| t.elapsed().as_secs_f64());
        obs.finished(&f.report);
        self.outcome.files.push(f.report);
    }

    /// The conversation failed: every file in flight, then every one never offered or asked
    /// for (`unsent`), is reported incomplete.
    pub(crate) fn abandon(
        mut self,
        e: ClientError,
        unsent: impl Iterator<Item = FileReport>,
        obs: &mut dyn Observer,
    ) -> Outcome {
        let mut left: Vec<_> = self.map.drain().map(|(_, f)| f).collect();
        left.sort_by_key(|f| f.order);
        let why = match e {
            ClientError::ServerRefused { .. } | ClientError::Denied(_) => {
                "not sent: the server refused the connection"
            }
            _ => "the connection ended first",
        };
        for mut r in left.into_iter().map(|f| f.report).chain(unsent) {
            r.status = Status::Incomplete;
            r.detail = why.into();
            obs.finished(&r);
            self.outcome.files.push(r);
        }
        self.outcome.error = Some(e);
        self.outcome
    }
}
