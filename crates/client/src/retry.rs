//! `--retries`: when a connection fails on the network or the server says it is busy, the
//! files whose fate is unknown are offered (or asked for) again on a new connection, after a
//! backoff. Resume does the rest: an interrupted file continues from the offset the server
//! verified, not from zero.
//!
//! Retried: network failures and a server busy with too many connections
//! ([`ClientError::is_retriable`]), and files the server refuses as busy (another connection,
//! perhaps our own cut one, is uploading them; the server lets go of a stale one after a few
//! seconds). Never retried: other refusals, trust failures, digest mismatches, protocol
//! errors, and standard input or output once bytes went through them (they cannot be read or
//! unwritten twice).

use std::collections::HashSet;

use ferry_proto::{Code, Name};
use ferry_secure::Fingerprint;

use crate::net::Options;
use crate::report::{FileReport, Observer, Outcome, Retry, Status};
use crate::target::Target;

/// What one attempt (one connection) came to.
pub(crate) struct Attempt {
    pub(crate) outcome: Outcome,
    /// The server said WELCOME: it is a ferry server that lets us in.
    pub(crate) welcomed: bool,
}

/// Runs `attempt` on `items`, then again on those whose fate is unknown, as long as the
/// failure is worth retrying and [`Options::retries`] allows; each later attempt also gets the
/// reports the failed one left for them. Reports of files retried are kept from `obs` until
/// their last attempt.
pub(crate) fn run<T: Clone>(
    items: Vec<T>,
    name_of: impl Fn(&T) -> &Name,
    resumable: impl Fn(&T) -> bool,
    opts: &Options,
    obs: &mut dyn Observer,
    mut attempt: impl FnMut(Vec<T>, &[FileReport], &mut dyn Observer) -> Attempt,
) -> Outcome {
    let mut total = Outcome::default();
    // The first attempt takes the items themselves (a walked file's descriptor goes with it,
    // see `walk::Source`); later ones take copies, made only when there may be any.
    let mut pending = items;
    let items = if opts.retries > 0 {
        pending.clone()
    } else {
        Vec::new()
    };
    let mut proven = false;
    let mut retries = 0;
    // The reports of the files retried, as the failed attempt left them.
    let mut before: Vec<FileReport> = Vec::new();
    loop {
        let more = retries < opts.retries;
        let mut watch = Holding {
            inner: &mut *obs,
            hold: more,
            held: Vec::new(),
            started: HashSet::new(),
        };
        if !more {
            // The last attempt: what it comes to is the outcome, with no bookkeeping for
            // another.
            let Attempt { outcome, .. } = attempt(pending, &before, &mut watch);
            if total.files.is_empty() {
                total.files = outcome.files;
            } else {
                total.files.extend(outcome.files);
            }
            total.error = outcome.error;
            total.retries = retries;
            return total;
        }
        let asked: Vec<Name> = pending.iter().map(|i| name_of(i).clone()).collect();
        let Attempt { outcome, welcomed } = attempt(pending, &before, &mut watch);
        let Holding { held, started, .. } = watch;
        proven |= welcomed;
        // Files never reported at all (the connection failed before anything) are open too.
        let reported: HashSet<&Name> = outcome.files.iter().map(|r| &r.name).collect();
        let mut open: Vec<Name> = asked
            .into_iter()
            .filter(|n| !reported.contains(n))
            .collect();
        let (again, done): (Vec<_>, Vec<_>) = outcome.files.into_iter().partition(unknown);
        total.files.extend(done);
        open.extend(again.iter().map(|r| r.name.clone()));
        let error = outcome.error;
        let worth = error.as_ref().is_none_or(|e| e.is_retriable(proven));
        let replayable = open.iter().all(|n| {
            !started.contains(n)
                || items
                    .iter()
                    .find(|i| name_of(i) == n)
                    .is_some_and(&resumable)
        });
        if open.is_empty() || !worth || !replayable {
            if !replayable {
                log::warn!("standard input or output cannot be replayed: not retrying");
            }
            for r in &held {
                obs.finished(r);
            }
            total.files.extend(again);
            total.error = error;
            total.retries = retries;
            return total;
        }
        retries += 1;
        let delay = opts.backoff.delay(retries);
        let reason = error.map_or_else(
            || "the server is busy with some of the files".to_owned(),
            |e| e.to_string(),
        );
        obs.retrying(&Retry {
            retry: retries,
            of: opts.retries,
            delay,
            reason,
            files_left: open.len(),
        });
        (opts.backoff.sleep)(delay);
        // What is known of each open file: a report that knows the whole body went out
        // stays until the file is settled, even across attempts that failed sooner.
        before = open
            .iter()
            .filter_map(|n| {
                let now = again.iter().find(|r| &r.name == n);
                let then = before.iter().find(|r| &r.name == n);
                match (now, then) {
                    (Some(r), _) if r.digest.is_some() => Some(r.clone()),
                    (_, Some(r)) if r.digest.is_some() => Some(r.clone()),
                    (r, t) => r.or(t).cloned(),
                }
            })
            .collect();
        let open: HashSet<Name> = open.into_iter().collect();
        pending = items
            .iter()
            .filter(|i| open.contains(name_of(i)))
            .cloned()
            .collect();
    }
}

/// Whether a file's fate is still open: the connection ended first, or the server refuses it
/// as busy for now.
fn unknown(r: &FileReport) -> bool {
    r.status == Status::Incomplete || (r.refused && r.status == Status::Code(Code::Busy))
}

/// Passes everything on, except the reports of files that may yet be retried.
struct Holding<'a> {
    inner: &'a mut dyn Observer,
    hold: bool,
    held: Vec<FileReport>,
    /// Files whose body started moving in this attempt (kept only when `hold`: another
    /// attempt may follow).
    started: HashSet<Name>,
}

impl Observer for Holding<'_> {
    fn started(&mut self, name: &Name, size: Option<u64>, from: u64) {
        if self.hold {
            self.started.insert(name.clone());
        }
        self.inner.started(name, size, from);
    }

    fn verifying(&mut self, name: &Name, bytes: u64) {
        self.inner.verifying(name, bytes);
    }

    fn advanced(&mut self, bytes: u64) {
        self.inner.advanced(bytes);
    }

    fn finished(&mut self, report: &FileReport) {
        if self.hold && unknown(report) {
            self.held.push(report.clone());
        } else {
            self.inner.finished(report);
        }
    }

    fn trusted(&mut self, target: &Target, fingerprint: &Fingerprint) {
        self.inner.trusted(target, fingerprint);
    }

    fn retrying(&mut self, retry: &Retry) {
        self.inner.retrying(retry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Status;

    /// An item that must not be copied: only a retry needs copies.
    struct Walked(Name);

    impl Clone for Walked {
        fn clone(&self) -> Self {
            panic!("{} copied for a retry that cannot happen", self.0)
        }
    }

    #[test]
    fn without_retries_the_one_attempt_takes_the_items_and_nothing_is_copied() {
        let items: Vec<Walked> = ["a", "b/c"]
            .iter()
            .map(|n| Walked(Name::parse(n).unwrap()))
            .collect();
        let opts = Options::default();
        assert_eq!(opts.retries, 0, "the default");
        let mut attempts = 0;
        let outcome = run(
            items,
            |w| &w.0,
            |_| true,
            &opts,
            &mut (),
            |items, before, obs| {
                attempts += 1;
                assert!(before.is_empty());
                let files = items
                    .into_iter()
                    .map(|w| {
                        obs.started(&w.0, Some(1), 0);
                        FileReport::new(w.0, None, Some(1), Status::Incomplete)
                    })
                    .collect();
                Attempt {
                    outcome: Outcome {
                        files,
                        ..Outcome::default()
                    },
                    welcomed: true,
                }
            },
        );
        assert_eq!(attempts, 1);
        let names: Vec<_> = outcome.files.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            ["a", "b/c"],
            "every report, in order, even unsettled ones"
        );
        assert_eq!(outcome.retries, 0);
    }
}
