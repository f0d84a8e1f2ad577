//! Limits on failed authentication attempts per source, per network and in all, with time as a
//! parameter.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How many times a source's allowance an IPv6 /48 (a site: 65,536 /64s) gets.
pub const SITE_FACTOR: u32 = 16;

/// How many overflow buckets count the failures of sources the table has no room for.
pub const OVERFLOW_BUCKETS: usize = 64;

/// How many times a source's allowance each overflow bucket gets.
pub const OVERFLOW_FACTOR: u32 = 16;

/// Counts failed attempts and refuses sources after too many, so that the guesses an attacker
/// can make per window stay bounded however many addresses it has.
///
/// - **Sources.** A source is an IPv4 address or an IPv6 /64 network (one host often owns a
///   whole /64); IPv4-mapped IPv6 addresses count as IPv4. After `max_failures` failures within
///   `window` of the first one, [`FailureLimiter::check`] refuses the source until `window`
///   has passed since the failure that blocked it.
/// - **Sites.** Each IPv6 failure also counts against its /48, which is refused after
///   [`SITE_FACTOR`] × `max_failures` failures: one site's 65,536 /64s cannot each take a
///   fresh allowance. Other /48s and IPv4 sources are not affected.
/// - **A global bound.** At most `capacity` counters (sources and sites) are kept, and one is
///   never forgotten while it counts (within its window or block): an attacker cannot make the
///   limiter forget it by failing from more sources. When the table is full, the failures of a
///   source or site it has no counter for are counted in one of [`OVERFLOW_BUCKETS`] buckets
///   (chosen by a keyed hash of the IPv4 /24 or IPv6 /48, so an attacker cannot aim at another
///   network's bucket), each refused after [`OVERFLOW_FACTOR`] × `max_failures` failures. The
///   buckets are never evicted. Every failure counts against its source's counter or bucket,
///   so the guesses allowed per window stay below a fixed number, about `max_failures` ×
///   (`capacity` + [`OVERFLOW_BUCKETS`] × [`OVERFLOW_FACTOR`]), whatever the number of
///   sources. The price: while the table is full, a new source whose bucket an attacker
///   filled waits for the window like the attacker.
///
/// The caller supplies the time, so it is testable.
#[derive(Debug)]
pub struct FailureLimiter {
    max_failures: u32,
    window: Duration,
    capacity: usize,
    entries: HashMap<Key, Counter>,
    /// The tracked counters by the time they stop counting, to drop them then.
    expiry: BTreeMap<(Instant, u64), Key>,
    seq: u64,
    overflow: [Option<Counter>; OVERFLOW_BUCKETS],
    hasher: RandomState,
}

/// What a counter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    /// An IPv4 address or IPv6 /64 (see [`source_key`]).
    Source(IpAddr),
    /// An IPv6 /48.
    Site(Ipv6Addr),
}

/// Failures within one window.
#[derive(Debug, Clone, Copy)]
struct Counter {
    window_start: Instant,
    failures: u32,
    blocked_since: Option<Instant>,
    /// Its key in [`FailureLimiter::expiry`] (unused for overflow buckets).
    expiry_key: (Instant, u64),
}

impl Counter {
    fn fresh(now: Instant) -> Self {
        Counter {
            window_start: now,
            failures: 0,
            blocked_since: None,
            expiry_key: (now, 0),
        }
    }

    /// When it stops counting: a window after its block, or after its first failure.
    fn expires(&self, window: Duration) -> Instant {
        self.blocked_since.unwrap_or(self.window_start) + window
    }

    fn live(&self, window: Duration, now: Instant) -> bool {
        now < self.expires(window)
    }

    fn blocked(&self, window: Duration, now: Instant) -> bool {
        self.blocked_since.is_some() && self.live(window, now)
    }

    /// Counts one failure at `now` against `allowance`; true if that blocked it.
    fn fail(&mut self, allowance: u32, window: Duration, now: Instant) -> bool {
        if !self.live(window, now) {
            *self = Counter {
                expiry_key: self.expiry_key,
                ..Counter::fresh(now)
            };
        }
        if self.blocked_since.is_some() {
            return false;
        }
        self.failures = self.failures.saturating_add(1);
        if self.failures >= allowance {
            self.blocked_since = Some(now);
            return true;
        }
        false
    }
}

impl Default for FailureLimiter {
    /// 5 failures per minute, 4096 counters.
    fn default() -> Self {
        FailureLimiter::new(5, Duration::from_secs(60), 4096)
    }
}

impl FailureLimiter {
    /// A limiter refusing a source after `max_failures` (at least 1) failures within `window`,
    /// keeping at most `capacity` (at least 1) counters besides the overflow buckets.
    pub fn new(max_failures: u32, window: Duration, capacity: usize) -> Self {
        FailureLimiter {
            max_failures: max_failures.max(1),
            window,
            capacity: capacity.max(1),
            entries: HashMap::new(),
            expiry: BTreeMap::new(),
            seq: 0,
            overflow: [None; OVERFLOW_BUCKETS],
            hasher: RandomState::new(),
        }
    }

    /// Whether `ip` may try now; call it before the handshake and before checking a token.
    pub fn check(&mut self, ip: IpAddr, now: Instant) -> bool {
        self.drop_expired(now);
        self.retry_after(ip, now).is_none()
    }

    /// How long `ip` must still wait, if it is refused now.
    pub fn retry_after(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        keys(ip)
            .into_iter()
            .flatten()
            .filter_map(|key| self.counter(key, ip, now))
            .filter(|c| c.blocked(self.window, now))
            .map(|c| c.expires(self.window).saturating_duration_since(now))
            .filter(|d| !d.is_zero())
            .max()
    }

    /// Counts one failed attempt (a wrong or missing token, a failed handshake) from `ip`,
    /// against its source, its site and, for those the table has no room for, its overflow
    /// bucket (once).
    pub fn record_failure(&mut self, ip: IpAddr, now: Instant) {
        self.drop_expired(now);
        let mut overflowed = false;
        for key in keys(ip).into_iter().flatten() {
            let allowance = self.allowance(key);
            if self.entries.contains_key(&key) || self.entries.len() < self.capacity {
                self.count_tracked(key, allowance, now);
            } else if !overflowed {
                overflowed = true;
                let bucket = self.bucket(ip);
                let window = self.window;
                let counter = self.overflow[bucket].get_or_insert_with(|| Counter::fresh(now));
                let allowance = self.max_failures.saturating_mul(OVERFLOW_FACTOR);
                if counter.fail(allowance, window, now) {
                    log::warn!(
                        "{key}: the failure table is full and {} failed attempts came from \
                         sources sharing its bucket; refusing them for {:?}",
                        counter.failures,
                        window
                    );
                }
            }
        }
    }

    /// Forgets `ip`'s own failures after a successful authentication (not those of its site,
    /// which others may share).
    pub fn record_success(&mut self, ip: IpAddr) {
        if let Some(c) = self.entries.remove(&Key::Source(source_key(ip))) {
            self.expiry.remove(&c.expiry_key);
        }
    }

    /// How many counters (sources and sites) are tracked now.
    pub fn tracked(&self) -> usize {
        self.entries.len()
    }

    fn allowance(&self, key: Key) -> u32 {
        match key {
            Key::Source(_) => self.max_failures,
            Key::Site(_) => self.max_failures.saturating_mul(SITE_FACTOR),
        }
    }

    fn count_tracked(&mut self, key: Key, allowance: u32, now: Instant) {
        let window = self.window;
        let mut counter = self
            .entries
            .get(&key)
            .copied()
            .unwrap_or_else(|| Counter::fresh(now));
        self.expiry.remove(&counter.expiry_key);
        if counter.fail(allowance, window, now) {
            log::warn!(
                "{key}: {} failed attempts; refusing it for {window:?}",
                counter.failures
            );
        }
        self.seq += 1;
        counter.expiry_key = (counter.expires(window), self.seq);
        self.expiry.insert(counter.expiry_key, key);
        self.entries.insert(key, counter);
    }

    /// The counter `key` of `ip` answers to: its own, else (when the table is full) its
    /// overflow bucket's.
    fn counter(&self, key: Key, ip: IpAddr, now: Instant) -> Option<Counter> {
        if let Some(c) = self.entries.get(&key) {
            return Some(*c);
        }
        if self.entries.len() < self.capacity {
            return None;
        }
        self.overflow[self.bucket(ip)].filter(|c| c.live(self.window, now))
    }

    /// The overflow bucket of `ip`: a keyed hash of its IPv4 /24 or IPv6 /48.
    fn bucket(&self, ip: IpAddr) -> usize {
        let network = match source_key(ip) {
            IpAddr::V4(v4) => u128::from(u32::from(v4) & 0xffff_ff00),
            IpAddr::V6(v6) => site_of(v6),
        };
        (self.hasher.hash_one(network) % OVERFLOW_BUCKETS as u64) as usize
    }

    /// Drops the counters that no longer count.
    fn drop_expired(&mut self, now: Instant) {
        while let Some(entry) = self.expiry.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            self.entries.remove(&key);
        }
    }
}

/// The counters a failure from `ip` counts against: its source and, for IPv6, its site.
fn keys(ip: IpAddr) -> [Option<Key>; 2] {
    match source_key(ip) {
        IpAddr::V4(v4) => [Some(Key::Source(IpAddr::V4(v4))), None],
        IpAddr::V6(v6) => [
            Some(Key::Source(IpAddr::V6(v6))),
            Some(Key::Site(Ipv6Addr::from(site_of(v6)))),
        ],
    }
}

/// The /48 of an IPv6 address, as a number.
fn site_of(v6: Ipv6Addr) -> u128 {
    u128::from(v6) & !((1u128 << 80) - 1)
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Key::Source(IpAddr::V4(v4)) => write!(f, "{v4}"),
            Key::Source(IpAddr::V6(v6)) => write!(f, "{v6}/64"),
            Key::Site(v6) => write!(f, "{v6}/48"),
        }
    }
}

/// The key a source is counted under: IPv4 as is, IPv6 reduced to its /64.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// A [`FailureLimiter`] behind a mutex, shareable between connection threads. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct SharedFailureLimiter(Arc<Mutex<FailureLimiter>>);

impl SharedFailureLimiter {
    /// Wraps a limiter.
    pub fn new(limiter: FailureLimiter) -> Self {
        SharedFailureLimiter(Arc::new(Mutex::new(limiter)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FailureLimiter> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// See [`FailureLimiter::check`].
    pub fn check(&self, ip: IpAddr, now: Instant) -> bool {
        self.lock().check(ip, now)
    }

    /// See [`FailureLimiter::retry_after`].
    pub fn retry_after(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        self.lock().retry_after(ip, now)
    }

    /// See [`FailureLimiter::record_failure`].
    pub fn record_failure(&self, ip: IpAddr, now: Instant) {
        self.lock().record_failure(ip, now)
    }

    /// See [`FailureLimiter::record_success`].
    pub fn record_success(&self, ip: IpAddr) {
        self.lock().record_success(ip)
    }

    /// See [`FailureLimiter::tracked`].
    pub fn tracked(&self) -> usize {
        self.lock().tracked()
    }
}
