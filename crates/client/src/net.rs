//! Opening the connection (TCP, then TLS when asked), and the settings every transfer shares.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::TcpStream;
use std::time::Duration;

use ferry_secure::{ClientTls, Stream, Token};

use crate::error::ClientError;
use crate::sniff;
use crate::target::Target;
use crate::timed::Timed;

/// TCP keepalive: idle time before the first probe, so that a server cut off by the network
/// (no FIN ever comes) is noticed even while the client waits within a long `--timeout`.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// TCP keepalive: time between probes.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// TCP keepalive: unanswered probes before the connection is dropped.
pub const KEEPALIVE_PROBES: u32 = 3;

/// Settings shared by uploads and downloads.
#[derive(Debug, Clone)]
pub struct Options {
    /// Longest wait for connecting, for each message and for each reply from the server
    /// (however the bytes trickle in), and for each 64 KiB of a body to move.
    pub timeout: Duration,
    /// Most files offered or requested and not yet finished (pipelining); fewer when their
    /// names are long, so that the replies they cause always fit in the socket buffers (an
    /// upload's reply budget: up to 512 KiB of replies, about 5,500 files with 25-byte
    /// names, where the system grants the receive buffer). The default, 4,096 files (16 MiB of
    /// 4 KiB files), is well above the bandwidth-delay product of 1 Gbit/s over 20 ms
    /// (2.5 MB), so a distant server is not waited on once per window; the protocol's pipeline
    /// limit on offers not yet answered (1,024) holds besides.
    pub window: usize,
    /// The authentication token sent in HELLO, if the server requires one.
    pub token: Option<Token>,
    /// TLS 1.3 and how the server is trusted; `None` for a plain connection.
    pub tls: Option<ClientTls>,
    /// Downloads: replace existing local files.
    pub force: bool,
    /// Uploads to a protocol-2 server: hash each file before offering it and send the digest,
    /// so that the server compares contents rather than size and mtime (`--checksum`).
    pub checksum: bool,
    /// How many times a transfer that failed on the network is taken up again on a new
    /// connection (resuming where the server's verified offset says), 0 for never.
    pub retries: u32,
    /// The waits between those attempts.
    pub backoff: Backoff,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(60),
            window: 4 * ferry_proto::MAX_PIPELINE,
            token: None,
            tls: None,
            force: false,
            checksum: false,
            retries: 0,
            backoff: Backoff::default(),
        }
    }
}

/// Exponential backoff between retries: `first`, doubling, at most `max`, each wait drawn at
/// random between half and all of that (jitter, so that many clients cut at once do not come
/// back at once).
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// The wait before the first retry (before jitter).
    pub first: Duration,
    /// The longest wait.
    pub max: Duration,
    /// Whether waits are randomised.
    pub jitter: bool,
    /// How to wait: `std::thread::sleep`, or something faster in tests.
    pub sleep: fn(Duration),
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            first: Duration::from_millis(200),
            max: Duration::from_secs(5),
            jitter: true,
            sleep: std::thread::sleep,
        }
    }
}

impl Backoff {
    /// The wait before retry number `retry` (1 for the first).
    #[must_use]
    pub fn delay(&self, retry: u32) -> Duration {
        let doublings = retry.saturating_sub(1).min(30);
        let full = self
            .first
            .saturating_mul(1 << doublings)
            .min(self.max.max(self.first));
        if !self.jitter {
            return full;
        }
        // Half to all of it; the standard library's per-process random keys are random enough.
        let mut h = RandomState::new().build_hasher();
        h.write_u32(retry);
        let fraction = 0.5 + (h.finish() % 1000) as f64 / 2000.0;
        full.mul_f64(fraction)
    }
}

/// Connects to `target` and, with [`Options::tls`], completes the TLS handshake: this returns
/// only once the server is trusted, so nothing (no HELLO, no token) is ever sent to another.
pub(crate) fn open(target: &Target, opts: &Options) -> Result<Stream<Timed>, ClientError> {
    let tcp = connect(target, opts)?;
    let first = tcp.first_bytes();
    match &opts.tls {
        None => Ok(Stream::plain(tcp)),
        Some(tls) => ferry_secure::connect(tls, target.host(), tcp).map_err(|e| {
            ClientError::from_handshake(target, opts.timeout, e, &sniff::identify(&first.get()))
        }),
    }
}

/// Connects to the first address of `target` that answers, with `TCP_NODELAY` and TCP
/// keepalive on, and waits bounded by [`Options::timeout`].
pub(crate) fn connect(target: &Target, opts: &Options) -> Result<Timed, ClientError> {
    let addrs = target.resolve().map_err(|source| ClientError::Resolve {
        host: target.host().to_owned(),
        source,
    })?;
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the host has no address");
    for addr in addrs {
        log::debug!("connecting to {addr}");
        match TcpStream::connect_timeout(&addr, opts.timeout) {
            Ok(s) => {
                return match s.set_nodelay(true).and_then(|()| keepalive(&s)) {
                    Ok(()) => Ok(Timed::new(s, opts.timeout)),
                    Err(e) => Err(ClientError::from_io(target, opts.timeout, e)),
                };
            }
            Err(e) => last = e,
        }
    }
    Err(match last.kind() {
        io::ErrorKind::ConnectionRefused => ClientError::ConnectionRefused(target.clone()),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => ClientError::Timeout {
            target: target.clone(),
            after: opts.timeout,
        },
        _ => ClientError::Connect {
            target: target.clone(),
            source: last,
        },
    })
}

/// The receive buffer an upload asks for (the system may grant less): the replies its files in
/// flight cause must fit in it, and on a distant link they are many (see [`reply_budget`]).
const UPLOAD_RECV_BUFFER: usize = 1 << 20;
/// The most reply bytes an upload's files in flight may cause, however large its buffer: at
/// 25-byte names, about 5,500 files of 4 KiB, 22 MiB, the bandwidth-delay product of
/// 1 Gbit/s over 170 ms.
const MAX_REPLY_BUDGET: usize = 512 << 10;

/// Asks for a receive buffer of [`UPLOAD_RECV_BUFFER`] on the upload connection `s` (whose
/// replies are small: a fixed buffer costs it nothing) and returns how many reply bytes its
/// files in flight may then cause: a quarter of the buffer granted (the system reports twice
/// what it holds of data, and counts its own overhead in that), between the
/// [`REPLY_BUDGET`](crate::flights::REPLY_BUDGET) of default buffers and [`MAX_REPLY_BUDGET`].
/// A bigger budget keeps more small files in flight, so that a distant server is not waited
/// on once per window.
pub(crate) fn reply_budget(s: &TcpStream) -> usize {
    use rustix::net::sockopt;
    let granted = sockopt::set_socket_recv_buffer_size(s, UPLOAD_RECV_BUFFER)
        .and_then(|()| sockopt::socket_recv_buffer_size(s));
    let least = crate::flights::REPLY_BUDGET;
    granted.map_or(least, |b| (b / 4).clamp(least, MAX_REPLY_BUDGET))
}

/// Turns TCP keepalive on with [`KEEPALIVE_IDLE`], [`KEEPALIVE_INTERVAL`] and
/// [`KEEPALIVE_PROBES`]. Keepalive itself is required; the three settings are not on every
/// system (Windows before 10 version 1703, Wine), where the system's own values are kept.
fn keepalive(s: &TcpStream) -> io::Result<()> {
    use rustix::net::sockopt;
    sockopt::set_socket_keepalive(s, true)?;
    let tuned = sockopt::set_tcp_keepidle(s, KEEPALIVE_IDLE)
        .and_then(|()| sockopt::set_tcp_keepintvl(s, KEEPALIVE_INTERVAL))
        .and_then(|()| sockopt::set_tcp_keepcnt(s, KEEPALIVE_PROBES));
    match tuned {
        Err(rustix::io::Errno::NOPROTOOPT) => {
            log::debug!("TCP keepalive timings are not on this system: keeping its own");
            Ok(())
        }
        other => Ok(other?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_with_jitter_below_it() {
        let b = Backoff {
            jitter: false,
            ..Backoff::default()
        };
        let ms = |n| b.delay(n).as_millis();
        assert_eq!(
            [ms(1), ms(2), ms(3), ms(5), ms(6), ms(100)],
            [200, 400, 800, 3200, 5000, 5000]
        );
        let j = Backoff::default();
        for n in 1..20 {
            let d = j.delay(n);
            assert!(d <= b.delay(n) && d >= b.delay(n) / 2, "{n}: {d:?}");
        }
    }

    /// A connection made by [`connect`] to a listener on 127.0.0.1, which is kept open with it.
    fn loopback() -> (std::net::TcpListener, Timed) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let target = Target::from(listener.local_addr().unwrap());
        let timed = connect(&target, &Options::default()).unwrap();
        (listener, timed)
    }

    #[test]
    fn connections_keep_alive() {
        use rustix::net::sockopt;
        let (_listener, timed) = loopback();
        let s = timed.tcp();
        assert!(sockopt::socket_keepalive(s).unwrap());
        assert_eq!(sockopt::tcp_keepidle(s).unwrap(), KEEPALIVE_IDLE);
        assert_eq!(sockopt::tcp_keepintvl(s).unwrap(), KEEPALIVE_INTERVAL);
        assert_eq!(sockopt::tcp_keepcnt(s).unwrap(), KEEPALIVE_PROBES);
    }

    /// An upload's reply budget grows with the receive buffer it gets, within its bounds, and
    /// never past a quarter of that buffer.
    #[test]
    fn an_upload_budgets_its_replies_by_the_receive_buffer_it_gets() {
        use rustix::net::sockopt;
        let (_listener, timed) = loopback();
        let s = timed.tcp();
        let before = sockopt::socket_recv_buffer_size(s).unwrap();
        let budget = reply_budget(s);
        let granted = sockopt::socket_recv_buffer_size(s).unwrap();
        assert!(
            granted >= before.min(UPLOAD_RECV_BUFFER),
            "{before} -> {granted}"
        );
        assert!(
            (crate::flights::REPLY_BUDGET..=MAX_REPLY_BUDGET).contains(&budget),
            "{budget}"
        );
        assert!(budget == crate::flights::REPLY_BUDGET || budget <= granted / 4);
    }
}
