//! Connections open per source (an IPv4 address, an IPv6 /64), counted from accept to close,
//! so that one address cannot take every slot or every handshake place.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// The open connections of every source, at most `max` each.
#[derive(Debug)]
pub(crate) struct Sources {
    open: Mutex<HashMap<IpAddr, usize>>,
    max: usize,
}

/// One open connection of a source, given back on drop.
#[derive(Debug)]
pub(crate) struct SourceTicket {
    sources: Arc<Sources>,
    key: IpAddr,
}

impl Sources {
    /// At most `max` connections per source.
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            open: Mutex::new(HashMap::new()),
            max,
        })
    }

    /// The limit.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// Counts a connection from `ip`, or `None` when its source has `max` open already.
    pub(crate) fn try_open(self: &Arc<Self>, ip: IpAddr) -> Option<SourceTicket> {
        let key = ferry_secure::source_key(ip);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(key).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(SourceTicket {
            sources: Arc::clone(self),
            key,
        })
    }
}

impl Drop for SourceTicket {
    fn drop(&mut self) {
        let mut open = self
            .sources
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_an_ipv4_address_or_an_ipv6_slash_64() {
        let sources = Sources::new(2);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let a = sources.try_open(ip("192.0.2.1")).expect("first");
        let _b = sources.try_open(ip("192.0.2.1")).expect("second");
        assert!(sources.try_open(ip("192.0.2.1")).is_none());
        assert!(sources.try_open(ip("192.0.2.2")).is_some());
        drop(a);
        assert!(sources.try_open(ip("192.0.2.1")).is_some());

        let _c = sources.try_open(ip("2001:db8::1")).expect("first");
        let _d = sources.try_open(ip("2001:db8::ffff:1")).expect("second");
        assert!(sources.try_open(ip("2001:db8::2")).is_none(), "same /64");
        assert!(sources.try_open(ip("2001:db8:0:1::1")).is_some());
    }

    #[test]
    fn closed_sources_are_forgotten() {
        let sources = Sources::new(1);
        drop(sources.try_open("192.0.2.1".parse().unwrap()));
        assert!(sources.open.lock().unwrap().is_empty());
    }
}
