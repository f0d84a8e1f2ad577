//! Bookkeeping of the files of one conversation: which are in flight, since when, the folders
//! set aside until what is under them has landed (or, once nothing is left to offer, has been
//! sent), and the reports of those whose fate is known.

use std::collections::HashMap;
use std::time::Instant;

use ferry_proto::wire::{MAX_REASON_LEN, REPLY_OVERHEAD};
use ferry_proto::{EntryKind, FileId, Name};

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
    /// Not yet wholly sent: the folders set aside above it wait for it (see [`Flights::sent`]).
    unsent: bool,
    /// A folder's answer, held while entries under it are in flight (see [`Flights::land`]).
    held: Option<Answer>,
    pub(crate) extra: T,
}

/// The final word on a file, as [`Flights::land`] takes it.
struct Answer {
    status: Status,
    detail: String,
    refused: bool,
}

/// The most reply bytes the files in flight may have the peer write (their ACCEPT/REFUSE and
/// RESULT frames, or their OFFER), unless the connection's receive buffer was made larger (see
/// [`Flights::with_budget`]). The client writes bodies without reading replies in between, and
/// the peer writes replies without reading: together the replies must fit in the socket
/// buffers (at least 128 KiB on Linux), or both ends would wait on each other until one timed
/// out.
pub(crate) const REPLY_BUDGET: usize = 64 * 1024;

/// A folder set aside until what is under it is stored (storing a file changes its folder's
/// mtime, which the receiver sets when the folder is offered). While more files are to be
/// offered, it waits until everything under it has landed: the receiver then has nothing of
/// it left to store, and the folder costs it no wait. Once nothing is left to offer, it goes
/// as soon as everything under it has been sent: the receiver acts on frames in order and
/// publishes a file at its END (PROTOCOL.md §4.9, §6.3), so it is applied after them, and the
/// last folders cost no round trip per level. See [`Flights::ready_folder`].
struct Waiting {
    /// Its place on the command line.
    order: usize,
    name: Name,
}

/// What is under one folder, among the entries in flight and the folders set aside (see
/// [`Tally`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Under {
    /// Entries in flight (sent or not) or set aside.
    flying: usize,
    /// Of those, the ones unsent or set aside.
    unsent: usize,
    /// Entries in flight.
    in_flight: usize,
}

/// What is under each folder above an entry in flight or set aside: kept by every way in and
/// out ([`Tally::count`]), one map update per level of the entry's name, so that neither
/// sending a file nor setting a folder aside scans the window or the folders set aside.
#[derive(Debug, Default)]
struct Tally(HashMap<String, Under>);

impl Tally {
    /// What is under the folder `name`.
    fn of(&self, name: &Name) -> Under {
        self.0.get(name.as_str()).copied().unwrap_or_default()
    }

    /// An entry named `name` moved: each folder above it adds `unsent`, `flying` and
    /// `in_flight` to those counts (see [`Under`]); a folder with nothing left under it is
    /// forgotten.
    fn count(&mut self, name: &Name, unsent: isize, flying: isize, in_flight: isize) {
        let name = name.as_str();
        for (at, _) in name.match_indices('/') {
            let folder = &name[..at];
            let under = match self.0.get_mut(folder) {
                Some(u) => u,
                None => self.0.entry(folder.to_owned()).or_default(),
            };
            under.unsent = under.unsent.saturating_add_signed(unsent);
            under.flying = under.flying.saturating_add_signed(flying);
            under.in_flight = under.in_flight.saturating_add_signed(in_flight);
            if *under == Under::default() {
                self.0.remove(folder);
            }
        }
    }
}

/// The files of one conversation in flight, and the folders set aside.
pub(crate) struct Flights<T> {
    map: HashMap<FileId, Flight<T>>,
    /// The sum of the flights' `reply_bytes`.
    reply_bytes: usize,
    /// Folders set aside, in the order they were.
    waiting: Vec<Waiting>,
    /// What is under each folder above an entry in flight or set aside.
    under: Tally,
    /// The folders in flight that hold their answer (see [`Flights::land`]).
    holding: Vec<FileId>,
    /// The most reply bytes the files in flight may cause (see [`REPLY_BUDGET`]).
    budget: usize,
    pub(crate) outcome: Outcome,
}

impl<T> Flights<T> {
    /// No file in flight yet, with the [`REPLY_BUDGET`] of default socket buffers.
    pub(crate) fn new(outcome: Outcome) -> Self {
        Self::with_budget(outcome, REPLY_BUDGET)
    }

    /// No file in flight yet; the files in flight may cause at most `budget` reply bytes,
    /// which the connection's buffers are known to hold.
    pub(crate) fn with_budget(outcome: Outcome, budget: usize) -> Self {
        Self {
            map: HashMap::new(),
            reply_bytes: 0,
            waiting: Vec::new(),
            under: Tally::default(),
            holding: Vec::new(),
            budget,
            outcome,
        }
    }

    /// Whether one more file, named with `name_len` bytes, may be put in flight with at most
    /// `window` files in flight: the window has room, and so do the socket buffers for the
    /// replies (always true when nothing is in flight).
    pub(crate) fn has_room(&self, window: usize, name_len: usize) -> bool {
        self.map.is_empty()
            || (self.map.len() < window.max(1)
                && self.reply_bytes + reply_bytes(name_len) <= self.budget)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Sets the folder `name` (at `order` on the command line) aside if an entry under it is
    /// in flight or set aside; `false` if none is, and it may be offered now.
    pub(crate) fn set_aside(&mut self, order: usize, name: &Name) -> bool {
        if self.under.of(name).flying == 0 {
            return false;
        }
        self.under.count(name, 1, 1, 0);
        self.waiting.push(Waiting {
            order,
            name: name.clone(),
        });
        true
    }

    /// The order of the first folder set aside that may go now: nothing under it in flight,
    /// or, at the `tail` (nothing left to offer), nothing under it unsent (see [`Waiting`]).
    pub(crate) fn ready_folder(&self, tail: bool) -> Option<usize> {
        let ready = |w: &&Waiting| {
            let under = self.under.of(&w.name);
            if tail {
                under.unsent == 0
            } else {
                under.flying == 0
            }
        };
        self.waiting.iter().find(ready).map(|w| w.order)
    }

    /// Takes the folder at `order` out of those set aside (it is offered now).
    pub(crate) fn take_folder(&mut self, order: usize) {
        if let Some(at) = self.waiting.iter().position(|w| w.order == order) {
            let w = self.waiting.remove(at);
            self.under.count(&w.name, -1, -1, 0);
        }
    }

    /// The orders of the folders still set aside.
    pub(crate) fn set_aside_orders(&self) -> impl Iterator<Item = usize> + '_ {
        self.waiting.iter().map(|w| w.order)
    }

    /// Puts a file in flight, unsent until [`Flights::sent`]; a folder, whose offer is all
    /// there is to send, as sent.
    pub(crate) fn insert(&mut self, id: FileId, order: usize, report: FileReport, extra: T) {
        let reply_bytes = reply_bytes(report.name.as_str().len());
        let unsent = report.kind != EntryKind::Folder;
        self.under.count(&report.name, isize::from(unsent), 1, 1);
        let flight = Flight {
            order,
            report,
            started: None,
            reply_bytes,
            unsent,
            held: None,
            extra,
        };
        self.reply_bytes += reply_bytes;
        if let Some(old) = self.map.insert(id, flight) {
            self.forget(id, &old);
        }
    }

    /// Everything of file `id` has been sent (its END, or its early body and END): the
    /// folders set aside above it no longer wait for it.
    pub(crate) fn sent(&mut self, id: FileId) {
        let Some(f) = self.map.get_mut(&id) else {
            return;
        };
        if std::mem::take(&mut f.unsent) {
            self.under.count(&f.report.name, -1, 0, 0);
        }
    }

    /// Takes the counts of `f`, out of the map now, off the totals.
    fn forget(&mut self, id: FileId, f: &Flight<T>) {
        self.reply_bytes -= f.reply_bytes;
        self.under
            .count(&f.report.name, -isize::from(f.unsent), -1, -1);
        if f.held.is_some() {
            self.holding.retain(|&h| h != id);
        }
    }

    /// Whether an entry under the folder `name` is in flight.
    fn holds_under(&self, name: &Name) -> bool {
        self.under.of(name).in_flight > 0
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

    /// Records the final word on a file (`detail` comes from the peer or the system, as it
    /// is: it is escaped where it is printed).
    ///
    /// A folder's answer may come while files under it are still in flight (it was offered
    /// once they were sent, not stored): it is held, and the folder stays in flight, until
    /// they land, so that a connection cut before leaves it open and offered again after them.
    pub(crate) fn land(
        &mut self,
        id: FileId,
        status: Status,
        detail: &str,
        refused: bool,
        obs: &mut dyn Observer,
    ) {
        let answer = Answer {
            status,
            detail: detail.to_owned(),
            refused,
        };
        match self.map.get(&id) {
            None => return,
            Some(f) if f.report.kind == EntryKind::Folder && self.holds_under(&f.report.name) => {
                if let Some(f) = self.map.get_mut(&id) {
                    if f.held.replace(answer).is_none() {
                        self.holding.push(id);
                    }
                }
                return;
            }
            Some(_) => self.finish(id, answer, obs),
        }
        // Folders holding their answer for this entry land now (the outermost last).
        while let Some(at) = self.holding.iter().position(|h| {
            self.map
                .get(h)
                .is_none_or(|f| !self.holds_under(&f.report.name))
        }) {
            let ready = self.holding.remove(at);
            if let Some(answer) = self.map.get_mut(&ready).and_then(|f| f.held.take()) {
                self.finish(ready, answer, obs);
            }
        }
    }

    /// Takes file `id` out of flight with `answer` and reports it.
    fn finish(&mut self, id: FileId, answer: Answer, obs: &mut dyn Observer) {
        let Some(mut f) = self.map.remove(&id) else {
            return;
        };
        self.forget(id, &f);
        f.report.status = answer.status;
        f.report.refused = answer.refused;
        f.report.detail = answer.detail;
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
        self.holding.clear();
        self.waiting.clear();
        self.under.0.clear();
        let mut left: Vec<_> = self.map.drain().map(|(_, f)| f).collect();
        left.sort_by_key(|f| f.order);
        let why = match e {
            ClientError::ServerRefused { .. } | ClientError::Denied { .. } => {
                "not sent: the server refused the connection"
            }
            ClientError::Stdout(_) => "standard output could not be written",
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

    /// While more is to be offered, a folder set aside is ready once nothing under it is in
    /// flight or set aside: the counts kept as entries come and go match what a scan would
    /// find.
    #[test]
    fn a_folder_set_aside_waits_for_what_is_under_it() {
        let name = |n: &str| Name::parse(n).unwrap();
        let mut f: Flights<()> = Flights::new(Outcome::default());
        f.insert(1, 0, report("d/sub/a"), ());
        f.insert(2, 1, report("d/b"), ());
        f.insert(3, 2, report("dd/c"), ());
        assert!(
            !f.set_aside(9, &name("e")),
            "nothing under e: offered at once"
        );
        assert!(f.set_aside(3, &name("d/sub")));
        assert!(f.set_aside(4, &name("d")));
        assert_eq!(f.ready_folder(false), None);
        f.land(3, Status::Incomplete, "", false, &mut ());
        assert_eq!(f.ready_folder(false), None, "dd/c is not under d");
        f.land(1, Status::Incomplete, "", false, &mut ());
        assert_eq!(
            f.ready_folder(false),
            Some(3),
            "d/sub is ready, d still waits"
        );
        f.take_folder(3);
        f.insert(4, 3, report("d/sub"), ());
        f.land(2, Status::Incomplete, "", false, &mut ());
        assert_eq!(f.ready_folder(false), None, "d waits for d/sub in flight");
        f.land(4, Status::Incomplete, "", false, &mut ());
        assert_eq!(f.ready_folder(false), Some(4));
        assert_eq!(f.set_aside_orders().collect::<Vec<_>>(), [4]);
        f.take_folder(4);
        assert_eq!(f.set_aside_orders().count(), 0);
        assert!(f.is_empty());
    }

    /// At the tail, a folder is offered once what is under it is sent; its answer, if it comes
    /// first, is held until they land, and a connection lost before leaves it open (to be
    /// offered again).
    #[test]
    fn a_folder_goes_once_its_files_are_sent_and_lands_after_them() {
        let name = |n: &str| Name::parse(n).unwrap();
        let folder = |n: &str| FileReport {
            kind: EntryKind::Folder,
            ..report(n)
        };
        let stored = Status::Code(ferry_proto::Code::Stored);
        let mut f: Flights<()> = Flights::new(Outcome::default());
        f.insert(1, 0, report("d/a"), ());
        f.insert(2, 1, report("d/s/b"), ());
        assert!(f.set_aside(2, &name("d/s")));
        assert!(f.set_aside(3, &name("d")));
        f.sent(2);
        assert_eq!(
            f.ready_folder(false),
            None,
            "mid-stream, d/s waits for d/s/b to land"
        );
        assert_eq!(
            f.ready_folder(true),
            Some(2),
            "at the tail, d/s/b sent: d/s goes"
        );
        f.take_folder(2);
        f.insert(3, 2, folder("d/s"), ());
        assert_eq!(f.ready_folder(true), None, "d waits for d/a");
        f.sent(1);
        assert_eq!(
            f.ready_folder(true),
            Some(3),
            "a subfolder offered counts as sent"
        );
        f.take_folder(3);
        f.insert(4, 3, folder("d"), ());
        f.land(4, stored, "d", false, &mut ());
        f.land(3, stored, "d/s", false, &mut ());
        assert!(
            f.outcome.files.is_empty(),
            "the folders wait for their files"
        );
        f.land(2, stored, "d/s/b", false, &mut ());
        let landed: Vec<_> = f.outcome.files.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(landed, ["d/s/b", "d/s"], "d still holds d/a");
        let left = f.abandon(
            ClientError::Usage("cut".into()),
            std::iter::empty(),
            &mut (),
        );
        let open: Vec<_> = left.files[2..]
            .iter()
            .map(|r| (r.name.as_str(), r.status))
            .collect();
        assert_eq!(
            open,
            [("d/a", Status::Incomplete), ("d", Status::Incomplete)],
            "a held folder is offered again after its files"
        );
    }

    /// What a scan of the window and of the folders set aside finds under each folder.
    fn scanned<T>(f: &Flights<T>) -> HashMap<String, Under> {
        let mut found: HashMap<String, Under> = HashMap::new();
        let entries = f.map.values().map(|x| (&x.report.name, x.unsent, true));
        let aside = f.waiting.iter().map(|w| (&w.name, true, false));
        for (name, unsent, in_flight) in entries.chain(aside) {
            let name = name.as_str();
            for (at, _) in name.match_indices('/') {
                let u = found.entry(name[..at].to_owned()).or_default();
                u.flying += 1;
                u.unsent += usize::from(unsent);
                u.in_flight += usize::from(in_flight);
            }
        }
        found
    }

    /// Entries in and out in a mixed order over a small tree: after every step, the counts
    /// kept match a scan, and nothing is left once all is done.
    #[test]
    fn the_counts_under_each_folder_match_a_scan_at_every_step() {
        let names = ["a/b/c/f", "a/b/g", "a/h", "a/b/c", "a/b", "i/j", "a", "i"];
        let mut f: Flights<()> = Flights::new(Outcome::default());
        let mut seed = 7_u64;
        let mut id = 0;
        for round in 0..400 {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let pick = (seed >> 33) as usize;
            let name = Name::parse(names[pick % names.len()]).unwrap();
            match pick % 5 {
                0 | 1 => {
                    id += 1;
                    f.insert(id, round, report(name.as_str()), ());
                }
                2 => {
                    if let Some(&any) = f.map.keys().nth(pick % f.map.len().max(1)) {
                        f.sent(any);
                    }
                }
                3 => {
                    if let Some(&any) = f.map.keys().nth(pick % f.map.len().max(1)) {
                        f.land(any, Status::Incomplete, "", false, &mut ());
                    }
                }
                _ => match f.ready_folder(pick % 2 == 0) {
                    Some(order) => f.take_folder(order),
                    None => {
                        f.set_aside(round, &name);
                    }
                },
            }
            assert_eq!(f.under.0, scanned(&f), "after step {round}");
        }
        let ids: Vec<FileId> = f.map.keys().copied().collect();
        for any in ids {
            f.land(any, Status::Incomplete, "", false, &mut ());
        }
        while let Some(order) = f.ready_folder(false) {
            f.take_folder(order);
        }
        assert!(f.waiting.is_empty() && f.under.0.is_empty());
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
