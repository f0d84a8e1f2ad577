//! Per-source limits on failed authentication attempts, with time as a parameter.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Counts failed attempts per source and refuses a source after too many.
///
/// A source is an IPv4 address or an IPv6 /64 network (one host often owns a whole /64);
/// IPv4-mapped IPv6 addresses count as IPv4. After `max_failures` failures within `window`
/// of the first one, [`FailureLimiter::check`] refuses the source until `window` has passed
/// since the last counted failure. At most `capacity` sources are tracked; past that, the
/// least recently failed one is forgotten. The caller supplies the time, so it is testable.
#[derive(Debug)]
pub struct FailureLimiter {
    max_failures: u32,
    window: Duration,
    capacity: usize,
    entries: HashMap<IpAddr, Entry>,
    order: BTreeMap<(Instant, u64), IpAddr>,
    seq: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    window_start: Instant,
    failures: u32,
    blocked_since: Option<Instant>,
    order_key: (Instant, u64),
}

impl Default for FailureLimiter {
    /// 5 failures per minute, 4096 sources.
    fn default() -> Self {
        FailureLimiter::new(5, Duration::from_secs(60), 4096)
    }
}

impl FailureLimiter {
    /// A limiter refusing a source after `max_failures` (at least 1) failures within `window`,
    /// tracking at most `capacity` (at least 1) sources.
    pub fn new(max_failures: u32, window: Duration, capacity: usize) -> Self {
        FailureLimiter {
            max_failures: max_failures.max(1),
            window,
            capacity: capacity.max(1),
            entries: HashMap::new(),
            order: BTreeMap::new(),
            seq: 0,
        }
    }

    /// Whether `ip` may try now; call it before the handshake and before checking a token.
    pub fn check(&mut self, ip: IpAddr, now: Instant) -> bool {
        let key = source_key(ip);
        let Some(entry) = self.entries.get(&key).copied() else {
            return true;
        };
        match entry.blocked_since {
            Some(since) if now.saturating_duration_since(since) < self.window => false,
            Some(_) => {
                self.forget_key(key);
                true
            }
            None => {
                if now.saturating_duration_since(entry.window_start) >= self.window {
                    self.forget_key(key);
                }
                true
            }
        }
    }

    /// How long `ip` must still wait, if it is refused now.
    pub fn retry_after(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let since = self.entries.get(&source_key(ip))?.blocked_since?;
        self.window
            .checked_sub(now.saturating_duration_since(since))
            .filter(|d| !d.is_zero())
    }

    /// Counts one failed attempt (a wrong or missing token, a failed handshake) from `ip`.
    pub fn record_failure(&mut self, ip: IpAddr, now: Instant) {
        let key = source_key(ip);
        self.seq += 1;
        let order_key = (now, self.seq);
        let entry = match self.entries.get(&key).copied() {
            Some(mut e) => {
                self.order.remove(&e.order_key);
                let blocked_active = e
                    .blocked_since
                    .is_some_and(|s| now.saturating_duration_since(s) < self.window);
                if !blocked_active
                    && (e.blocked_since.is_some()
                        || now.saturating_duration_since(e.window_start) >= self.window)
                {
                    e = fresh(now, order_key);
                } else if !blocked_active {
                    e.failures = e.failures.saturating_add(1);
                }
                e.order_key = order_key;
                e
            }
            None => {
                while self.entries.len() >= self.capacity {
                    match self.order.pop_first() {
                        Some((_, oldest)) => {
                            self.entries.remove(&oldest);
                        }
                        None => break,
                    }
                }
                fresh(now, order_key)
            }
        };
        let mut entry = entry;
        if entry.blocked_since.is_none() && entry.failures >= self.max_failures {
            entry.blocked_since = Some(now);
            log::warn!(
                "{key}: {} failed attempts; refusing it for {:?}",
                entry.failures,
                self.window
            );
        }
        self.entries.insert(key, entry);
        self.order.insert(order_key, key);
    }

    /// Forgets `ip`'s failures after a successful authentication.
    pub fn record_success(&mut self, ip: IpAddr) {
        self.forget_key(source_key(ip));
    }

    /// How many sources are tracked now.
    pub fn tracked(&self) -> usize {
        self.entries.len()
    }

    fn forget_key(&mut self, key: IpAddr) {
        if let Some(e) = self.entries.remove(&key) {
            self.order.remove(&e.order_key);
        }
    }
}

fn fresh(now: Instant, order_key: (Instant, u64)) -> Entry {
    Entry {
        window_start: now,
        failures: 1,
        blocked_since: None,
        order_key,
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
