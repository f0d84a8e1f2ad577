//! Lines about connections refused (or displaced) before they are served, at most
//! [`BURST`] of each kind per [`PERIOD`]: the rest are counted, and one line sums them up
//! when their period is over ("... and N more like it within a second: ..."), so that a
//! flood of connections cannot flood the log too. Lines about a connection that is served are
//! bounded per connection instead ([`crate::logging::LogBudget`]).

use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Lines of one kind logged per period at most.
pub(crate) const BURST: u32 = 5;
/// The period.
pub(crate) const PERIOD: Duration = Duration::from_secs(1);

/// What happened to a connection, for counting its lines apart from the others'.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Refused at accept: every place (slots and handshakes) is taken.
    Full,
    /// Refused at accept: its address has its share of connections open.
    Source,
    /// Refused at accept: its address failed to authenticate too often.
    Blocked,
    /// Refused after its opening message: every slot is taken by connections making progress.
    Busy,
    /// Closed without a slot, to make room for a newcomer.
    Displaced,
}

impl Kind {
    const COUNT: usize = 5;

    /// The words of the summary line.
    fn what(self) -> &'static str {
        match self {
            Kind::Full => "refused: the server is at its connection limit",
            Kind::Source => "refused: its address has too many connections open",
            Kind::Blocked => "refused before the handshake: too many failed authentications",
            Kind::Busy => "refused: every slot is taken by connections making progress",
            Kind::Displaced => "closed without a slot, to make room for a newcomer",
        }
    }
}

/// One kind's period: when it began, lines logged and lines held back in it.
#[derive(Debug, Clone, Copy, Default)]
struct Window {
    start: Option<Instant>,
    logged: u32,
    held: u64,
}

/// The counting, without logging or clocks (`now` is given).
#[derive(Debug)]
pub(crate) struct Limiter {
    burst: u32,
    period: Duration,
    windows: [Window; Kind::COUNT],
}

impl Limiter {
    /// At most `burst` lines of each kind per `period`.
    pub(crate) fn new(burst: u32, period: Duration) -> Self {
        Self {
            burst,
            period,
            windows: [Window::default(); Kind::COUNT],
        }
    }

    /// Whether a line of `kind` may be logged at `now` (else it is counted), and, when the
    /// period before has just ended with lines held back, how many (to be summed up first).
    pub(crate) fn admit(&mut self, kind: Kind, now: Instant) -> (bool, Option<u64>) {
        let summary = self.end(kind, now);
        let w = &mut self.windows[kind as usize];
        if w.start.is_none() {
            w.start = Some(now);
        }
        if w.logged < self.burst {
            w.logged += 1;
            (true, summary)
        } else {
            w.held = w.held.saturating_add(1);
            (false, summary)
        }
    }

    /// The kinds whose period ended by `now` with lines held back, and how many.
    pub(crate) fn ended(&mut self, now: Instant) -> Vec<(Kind, u64)> {
        use Kind::{Blocked, Busy, Displaced, Full, Source};
        [Full, Source, Blocked, Busy, Displaced]
            .into_iter()
            .filter_map(|kind| Some((kind, self.end(kind, now)?)))
            .collect()
    }

    /// Ends `kind`'s period if it is over by `now`; the lines it held back, if any.
    fn end(&mut self, kind: Kind, now: Instant) -> Option<u64> {
        let w = &mut self.windows[kind as usize];
        let over = w
            .start
            .is_some_and(|s| now.saturating_duration_since(s) >= self.period);
        if !over {
            return None;
        }
        let held = w.held;
        *w = Window::default();
        (held > 0).then_some(held)
    }
}

/// The server's refusal lines, shared by the accept loop and the connections.
#[derive(Debug)]
pub(crate) struct Refusals(Mutex<Limiter>);

impl Refusals {
    /// At most [`BURST`] lines of each kind per [`PERIOD`].
    pub(crate) fn new() -> Self {
        Self(Mutex::new(Limiter::new(BURST, PERIOD)))
    }

    /// Logs `line` as a warning about a connection of `kind`, unless that kind has had its
    /// lines for this period (the line is then counted).
    pub(crate) fn warn(&self, kind: Kind, line: fmt::Arguments<'_>) {
        let (log, held) = self.lock().admit(kind, Instant::now());
        if let Some(n) = held {
            sum_up(kind, n);
        }
        if log {
            log::warn!("{line}");
        }
    }

    /// Sums up the periods that are over (the accept loop calls this on every tick).
    pub(crate) fn tick(&self) {
        let ended = self.lock().ended(Instant::now());
        for (kind, n) in ended {
            sum_up(kind, n);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Limiter> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn sum_up(kind: Kind, n: u64) {
    log::warn!(
        "... and {n} more like it within {PERIOD:?}, not logged one by one: {}",
        kind.what()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_logs_a_burst_per_period_then_one_summary() {
        let mut l = Limiter::new(2, Duration::from_secs(1));
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        assert_eq!(l.admit(Kind::Full, at(0)), (true, None));
        assert_eq!(l.admit(Kind::Full, at(10)), (true, None));
        for ms in 20..120 {
            assert_eq!(l.admit(Kind::Full, at(ms)), (false, None));
        }
        // Another kind has lines of its own.
        assert_eq!(l.admit(Kind::Source, at(500)), (true, None));
        assert_eq!(l.ended(at(999)), vec![]);
        // The period is over: the 100 held back are summed up once, on the tick...
        assert_eq!(l.ended(at(1000)), vec![(Kind::Full, 100)]);
        assert_eq!(l.ended(at(1001)), vec![]);
        // ... and a new period logs again.
        assert_eq!(l.admit(Kind::Full, at(1100)), (true, None));
        assert_eq!(l.admit(Kind::Full, at(1101)), (true, None));
        assert_eq!(l.admit(Kind::Full, at(1102)), (false, None));
        // Without a tick, the next line of that kind brings the summary.
        assert_eq!(l.admit(Kind::Full, at(2200)), (true, Some(1)));
    }
}
