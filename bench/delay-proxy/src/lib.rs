//! A wide-area link in user space, on 127.0.0.1, for the `wan` case of `bench/run.sh`.
//!
//! Every connection accepted by [`serve`] is forwarded to a target port; each direction is
//! delayed by [`Link::delay`] (the round trip is twice that) and paced at [`Link::rate`], and
//! holds at most [`Link::queue_limit`] bytes in flight (a link with a bounded queue: a sender
//! that outruns it waits, as on a real one). A half-close (EOF) is passed on after the data
//! before it. Each direction runs on two blocking threads that sleep until their next event
//! (see the `direction` module), so the link costs little CPU next to the tools it carries.

mod direction;

use std::io;
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

/// Bytes read from a socket at once: big reads keep the system calls per byte few.
pub const CHUNK: usize = 256 * 1024;

/// Bytes written at once while pacing: the largest burst above the link's rate.
pub const PACE: usize = 64 * 1024;

/// How long connecting to the target may take before the client's connection is dropped.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest one-way delay [`Link::new`] accepts, in milliseconds (an hour): keeps every
/// due time far from `Instant`'s overflow.
pub const DELAY_MS_MAX: u64 = 3_600_000;

/// Pause after a failed `accept` (say, out of descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The emulated link, the same in both directions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    /// One-way delay of every byte.
    pub delay: Duration,
    /// Pace in bytes per second, at least 1.
    pub rate: u64,
}

impl Link {
    /// The link of the command line: `delay_ms` milliseconds each way, `mbit` megabits per
    /// second; `None` if `mbit` is 0, its rate in bytes per second overflows, or `delay_ms`
    /// is above [`DELAY_MS_MAX`].
    pub fn new(delay_ms: u64, mbit: u64) -> Option<Link> {
        if delay_ms > DELAY_MS_MAX {
            return None;
        }
        let rate = mbit.checked_mul(125_000).filter(|&rate| rate > 0)?;
        Some(Link {
            delay: Duration::from_millis(delay_ms),
            rate,
        })
    }

    /// Bytes one direction may hold in flight: twice the bandwidth-delay product, and at
    /// least four [`CHUNK`]s so a short delay still lets big reads through.
    pub fn queue_limit(&self) -> usize {
        let twice_bdp = u128::from(self.rate)
            .saturating_mul(self.delay.as_nanos())
            .saturating_mul(2)
            / 1_000_000_000;
        usize::try_from(twice_bdp)
            .unwrap_or(usize::MAX)
            .max(4 * CHUNK)
    }

    /// The time the link takes to carry `bytes` at its rate.
    fn airtime(&self, bytes: usize) -> Duration {
        let nanos = (bytes as u128).saturating_mul(1_000_000_000) / u128::from(self.rate.max(1));
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

/// Binds `127.0.0.1:port` (0: a free port) for [`serve`]; never another address.
pub fn listen(port: u16) -> io::Result<TcpListener> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port))
}

/// Accepts connections on `listener` for ever, forwarding each to `target` through `link` on
/// threads of its own. A connection whose target cannot be reached is closed (and logged on
/// stderr); the proxy goes on.
pub fn serve(listener: &TcpListener, target: SocketAddr, link: Link) -> ! {
    loop {
        match listener.accept() {
            Ok((client, _)) => forward(client, target, link),
            Err(e) => {
                eprintln!("ferry-delay-proxy: accepting a connection failed: {e}");
                thread::sleep(ACCEPT_BACKOFF);
            }
        }
    }
}

/// Connects `client` to `target` and starts both directions; on failure both sockets are
/// shut down, which ends any thread already started.
fn forward(client: TcpStream, target: SocketAddr, link: Link) {
    let upstream = match TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) {
        Ok(upstream) => upstream,
        Err(e) => {
            eprintln!("ferry-delay-proxy: cannot connect to the target {target}: {e}");
            return;
        }
    };
    let started = client
        .set_nodelay(true)
        .and_then(|()| upstream.set_nodelay(true))
        .and_then(|()| direction::start("up", &client, &upstream, link))
        .and_then(|()| direction::start("down", &upstream, &client, link));
    if let Err(e) = started {
        eprintln!("ferry-delay-proxy: cannot start forwarding to {target}: {e}");
        for socket in [&client, &upstream] {
            // Already closed by the peer is fine: the point is that nothing stays open.
            let _ = socket.shutdown(Shutdown::Both);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_holds_twice_the_bandwidth_delay_product() {
        // 1 Gbit/s = 125 MB/s, 10 ms: 1.25 MB per direction in the pipe, 2.5 MB queued.
        let link = Link::new(10, 1000).unwrap();
        assert_eq!(link.rate, 125_000_000);
        assert_eq!(link.queue_limit(), 2_500_000);
        // No delay: still room for big reads.
        assert_eq!(Link::new(0, 1000).unwrap().queue_limit(), 4 * CHUNK);
        // An hour at 1 Tbit/s: 900 TB, which does not overflow.
        let longest = Link::new(DELAY_MS_MAX, 1_000_000).unwrap();
        assert_eq!(longest.queue_limit(), 900_000_000_000_000);
    }

    #[test]
    fn a_rate_of_zero_or_one_that_overflows_or_a_delay_over_an_hour_is_refused() {
        assert_eq!(Link::new(10, 0), None);
        assert_eq!(Link::new(10, u64::MAX), None);
        assert_eq!(Link::new(DELAY_MS_MAX + 1, 1000), None);
    }

    #[test]
    fn airtime_is_bytes_over_rate() {
        let link = Link::new(0, 8).unwrap(); // 1 MB/s
        assert_eq!(link.airtime(PACE), Duration::from_micros(65_536));
        assert_eq!(link.airtime(0), Duration::ZERO);
    }
}
