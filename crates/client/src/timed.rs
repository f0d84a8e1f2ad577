//! The client's socket: a `TcpStream` whose blocking calls share one time budget, so that
//! `--timeout` bounds each message and each wait for a reply rather than each `read` (a server
//! trickling one byte at a time cannot stretch it). Only time spent waiting on the socket is
//! counted: local work between calls (hashing a large file to resume it, `fsync`) is not the
//! server's delay. TLS ([`ferry_secure::Transport`]) and the protocol driver run on top of it.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use ferry_secure::timed::{self, Budget};
use ferry_secure::Transport;

use crate::sniff::FirstBytes;

/// Bytes moved either way that count as progress on a body and renew the budget: a body must
/// move this much within each timeout (1 KiB/s at the default 60 s).
pub(crate) const PROGRESS_BYTES: u64 = 64 * 1024;

/// A socket whose waits share a budget; see the module docs.
#[derive(Debug)]
pub(crate) struct Timed {
    tcp: TcpStream,
    timeout: Duration,
    left: Left,
    /// Bytes moved since the budget was last renewed.
    moved: u64,
    /// The first bytes received, to tell what the server is when it is not ferry.
    first: FirstBytes,
}

/// Time the socket calls may still wait before the current wait fails.
#[derive(Debug)]
struct Left(Duration);

impl Budget for Left {
    fn next_wait(&mut self) -> io::Result<Duration> {
        if self.0.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the server did not complete a message in time",
            ));
        }
        Ok(self.0)
    }

    fn waited(&mut self, took: Duration) {
        self.0 = self.0.saturating_sub(took);
    }
}

impl Timed {
    /// Wraps `tcp`; everything until the first [`Timed::restart`] (the TLS handshake, say) is
    /// due within `timeout`.
    pub(crate) fn new(tcp: TcpStream, timeout: Duration) -> Self {
        Self {
            tcp,
            timeout,
            left: Left(timeout),
            moved: 0,
            first: FirstBytes::default(),
        }
    }

    /// The first bytes received on this socket (kept as they arrive).
    pub(crate) fn first_bytes(&self) -> FirstBytes {
        self.first.clone()
    }

    /// The socket, to inspect or tune its options (never to read or write it).
    pub(crate) fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// A new wait begins (for a message or a reply): it gets the whole timeout.
    pub(crate) fn restart(&mut self) {
        self.restart_within(self.timeout);
    }

    /// Like [`Timed::restart`], but only `limit` if that is shorter than the timeout.
    pub(crate) fn restart_within(&mut self, limit: Duration) {
        self.left = Left(limit.min(self.timeout));
        self.moved = 0;
    }

    fn progress(&mut self, n: usize) {
        self.moved = self.moved.saturating_add(n as u64);
        if self.moved >= PROGRESS_BYTES {
            self.restart();
        }
    }
}

impl Read for Timed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = timed::read(&self.tcp, &mut self.left, buf)?;
        self.first.record(&buf[..n]);
        self.progress(n);
        Ok(n)
    }
}

impl Write for Timed {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = timed::write(&self.tcp, &mut self.left, buf)?;
        self.progress(n);
        Ok(n)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let n = timed::write_vectored(&self.tcp, &mut self.left, bufs)?;
        self.progress(n);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

impl Transport for Timed {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.peer_addr()
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        // A server that is gone already is not an error here.
        self.tcp.shutdown_write()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;
    use std::time::Instant;

    /// A peer that sends one byte every 50 ms, forever (until the reader hangs up).
    fn trickler() -> (TcpStream, thread::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let t = thread::spawn(move || {
            for _ in 0..400 {
                if server.write_all(b"x").is_err() {
                    return;
                }
                thread::sleep(Duration::from_millis(50));
            }
        });
        (client, t)
    }

    #[test]
    fn trickled_bytes_do_not_stretch_the_budget() {
        let (tcp, t) = trickler();
        // Long enough for the trickler's bytes to come on a loaded machine; a read that
        // restarted the budget at each byte would never end.
        let mut s = Timed::new(tcp, Duration::from_secs(1));
        let start = Instant::now();
        let mut got = 0;
        let err = loop {
            match s.read(&mut [0u8; 16]) {
                Ok(n) => got += n,
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(got > 0, "bytes arrived in time");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        // A new wait gets a new budget.
        s.restart();
        assert!(s.read(&mut [0u8; 1]).is_ok());
        drop(s);
        t.join().unwrap();
    }
}
