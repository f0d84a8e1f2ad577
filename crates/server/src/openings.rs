//! Connections without a slot: accepted and still opening (the PROXY header, the TLS
//! handshake, then HELLO or the seed name line), or past that but on probation for a slot
//! (every slot taken, a holder stale: see [`crate::slots`]) and not yet moving a file. When the
//! server holds as many connections as it allows (`--max-connections` plus
//! `--max-handshakes`), a newcomer takes the place of the oldest of them that has been
//! connected for at least [`DISPLACE_AFTER`]: that connection's socket is shut down, which
//! ends its thread at once. So connections that stay silent, before or after their HELLO,
//! cannot shut clients out for a whole `--header-timeout` or probation, and a real client,
//! whose opening and first file take milliseconds, is only displaced when more than the whole
//! pool of connections arrived after it within that time.

use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long a connection must have been connected, without a slot, before a newcomer may take
/// its place.
pub(crate) const DISPLACE_AFTER: Duration = Duration::from_secs(1);

/// The connections without a slot, oldest first.
#[derive(Debug)]
pub(crate) struct Openings {
    list: Mutex<Vec<Entry>>,
    min_age: Duration,
    next_id: AtomicU64,
}

#[derive(Debug)]
struct Entry {
    id: u64,
    born: Instant,
    peer: SocketAddr,
    /// A duplicate of the connection's socket, to shut it down from the accept loop.
    socket: TcpStream,
    /// Shut down already; its thread is ending.
    displaced: bool,
}

/// One connection's place in [`Openings`], held by its thread until the connection takes a
/// slot (or ends); given back on drop.
#[derive(Debug)]
pub(crate) struct Opening {
    openings: Arc<Openings>,
    id: u64,
}

impl Openings {
    /// No connection yet; a newcomer may displace one opening for at least `min_age`.
    pub(crate) fn new(min_age: Duration) -> Arc<Self> {
        Arc::new(Self {
            list: Mutex::new(Vec::new()),
            min_age,
            next_id: AtomicU64::new(0),
        })
    }

    /// Counts `stream` (from `peer`) as without a slot from now; fails when its socket cannot
    /// be duplicated (out of descriptors).
    pub(crate) fn register(
        self: &Arc<Self>,
        stream: &TcpStream,
        peer: SocketAddr,
    ) -> std::io::Result<Opening> {
        let socket = stream.try_clone()?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().push(Entry {
            id,
            born: Instant::now(),
            peer,
            socket,
            displaced: false,
        });
        Ok(Opening {
            openings: Arc::clone(self),
            id,
        })
    }

    /// Shuts down the socket of the oldest connection without a slot for at least the
    /// minimum age and not displaced yet; its peer and how long it had been connected. `None`
    /// when there is no such connection.
    pub(crate) fn displace(&self) -> Option<(SocketAddr, Duration)> {
        let now = Instant::now();
        let mut list = self.lock();
        // Oldest first: entries are pushed in order of arrival.
        let victim = list
            .iter_mut()
            .find(|e| !e.displaced && now.saturating_duration_since(e.born) >= self.min_age)?;
        victim.displaced = true;
        // Already closed by the peer is fine: the thread ends either way.
        let _ = victim.socket.shutdown(Shutdown::Both);
        Some((victim.peer, now.saturating_duration_since(victim.born)))
    }

    /// Connections displaced whose threads have not ended yet.
    pub(crate) fn leaving(&self) -> usize {
        self.lock().iter().filter(|e| e.displaced).count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.list.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Opening {
    fn drop(&mut self) {
        self.openings.lock().retain(|e| e.id != self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;

    /// A connected pair: (the server's end, the client's end).
    fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (server, client)
    }

    #[test]
    fn the_oldest_opening_past_the_minimum_age_is_displaced_once() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let openings = Openings::new(Duration::from_millis(50));
        let peer = listener.local_addr().unwrap();
        let (old, mut old_client) = pair(&listener);
        let old_ticket = openings.register(&old, peer).unwrap();
        std::thread::sleep(Duration::from_millis(80));
        let (young, _young_client) = pair(&listener);
        let _young_ticket = openings.register(&young, peer).unwrap();

        assert!(openings.displace().is_some(), "the old one");
        assert_eq!(openings.leaving(), 1);
        // Its peer sees the end of the stream.
        let mut buf = [0u8; 1];
        assert_eq!(old_client.read(&mut buf).unwrap(), 0);
        // The young one is not old enough, and the old one is not displaced twice.
        assert_eq!(openings.displace(), None);
        drop(old_ticket);
        assert_eq!(openings.leaving(), 0);
    }

    #[test]
    fn a_connection_that_holds_a_slot_cannot_be_displaced() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let openings = Openings::new(Duration::ZERO);
        let (server, _client) = pair(&listener);
        drop(
            openings
                .register(&server, listener.local_addr().unwrap())
                .unwrap(),
        );
        assert_eq!(openings.displace(), None);
    }
}
