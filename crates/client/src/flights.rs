//! Bookkeeping of the files of one conversation: which are in flight, since when, and the
//! reports of those whose fate is known.

use std::collections::HashMap;
use std::time::Instant;

use ferry_proto::wire::{MAX_REASON_LEN, REPLY_OVERHEAD};
use ferry_proto::{FileId, Name};

use crate::error::ClientError;
use crate::report::{FileReport, Observer, Outcome, Status};

/// A file offered or asked for and not yet finished; `T` is what the direction needs besides.
pub(crate) struct Flight<T> {
    /// Its place on the command line.
    pub(crate) order: usize,
    pub(crate) report: FileReport,
    started: Option<Instant>,
    /// The most reply bytes the peer may send about this file (see [`Flights::has_room`]).
    reply_bytes: usize,
    pub(crate) extra: T,
}

/// The most reply bytes the files in flight may have the peer write (their ACCEPT/REFUSE and
/// RESULT frames, or their OFFER). The client writes bodies without reading replies in between,
/// and the peer writes replies without reading: together the replies must fit in the socket
/// buffers (at least 128 KiB on Linux), or both ends would wait on each other until one timed
/// out.
const REPLY_BUDGET: usize = 64 * 1024;

pub(crate) struct Flights<T> {
    map: HashMap<FileId, Flight<T>>,
    /// The sum of the flights' `reply_bytes`.
    reply_bytes: usize,
    pub(crate) outcome: Outcome,
}

impl<T> Flights<T> {
    pub(crate) fn new(outcome: Outcome) -> Self {
        Self {
            map: HashMap::new(),
            reply_bytes: 0,
            outcome,
        }
    }

    /// Whether one more file, named with `name_len` bytes, may be put in flight with at most
    /// `window` files in flight: the window has room, and so do the socket buffers for the
    /// replies (always true when nothing is in flight).
    pub(crate) fn has_room(&self, window: usize, name_len: usize) -> bool {
        self.map.is_empty()
            || (self.map.len() < window.max(1)
                && self.reply_bytes + reply_bytes(name_len) <= REPLY_BUDGET)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Whether an entry in flight lies under the folder `name`.
    pub(crate) fn any_under(&self, name: &Name) -> bool {
        self.map.values().any(|f| f.report.name.is_under(name))
    }

    pub(crate) fn insert(&mut self, id: FileId, order: usize, report: FileReport, extra: T) {
        let reply_bytes = reply_bytes(report.name.as_str().len());
        let flight = Flight {
            order,
            report,
            started: None,
            reply_bytes,
            extra,
        };
        self.reply_bytes += reply_bytes;
        if let Some(old) = self.map.insert(id, flight) {
            self.reply_bytes -= old.reply_bytes;
        }
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
        self.reply_bytes -= f.reply_bytes;
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
        self.reply_bytes = 0;
        let mut left: Vec<_> = self.map.drain().map(|(_, f)| f).collect();
        left.sort_by_key(|f| f.order);
        let why = match e {
            ClientError::ServerRefused { .. } | ClientError::Denied { .. } => {
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

/// The reply bytes one file named with `name_len` bytes may cause (a name stored under another
/// policy may be a few bytes longer: the budget is half the socket buffers, which absorbs that).
fn reply_bytes(name_len: usize) -> usize {
    name_len.min(MAX_REASON_LEN) + REPLY_OVERHEAD
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(name: &str) -> FileReport {
        FileReport::new(Name::parse(name).unwrap(), None, None, Status::Incomplete)
    }

    #[test]
    fn the_window_counts_files() {
        let mut f: Flights<()> = Flights::new(Outcome::default());
        for id in 1..=3 {
            assert!(f.has_room(3, 1));
            f.insert(id, 0, report("a"), ());
        }
        assert!(!f.has_room(3, 1), "three in flight fill a window of three");
        f.land(2, Status::Incomplete, "", false, &mut ());
        assert!(f.has_room(3, 1), "a landed file frees its place");
    }

    #[test]
    fn long_names_close_the_window_before_the_replies_can_fill_the_socket_buffers() {
        // 16 components of 250 bytes: a long but valid name.
        let long = vec!["n".repeat(250); 16].join("/");
        let mut f: Flights<()> = Flights::new(Outcome::default());
        let mut id = 0;
        while f.has_room(usize::MAX, long.len()) {
            id += 1;
            f.insert(id, 0, report(&long), ());
        }
        let per_file = MAX_REASON_LEN + REPLY_OVERHEAD;
        assert_eq!(id as usize, REPLY_BUDGET / per_file);
        for n in 1..=id {
            f.land(n, Status::Incomplete, "", false, &mut ());
        }
        assert_eq!(f.reply_bytes, 0);
        // One file always fits, however long its name.
        assert!(f.has_room(1, usize::MAX));
    }
}
