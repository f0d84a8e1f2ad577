//! The client's socket: a `TcpStream` whose blocking calls share one time budget, so that
//! `--timeout` bounds each message and each wait for a reply rather than each `read` (a server
//! trickling one byte at a time cannot stretch it). Only time spent waiting on the socket is
//! counted: local work between calls (hashing a large file to resume it, `fsync`) is not the
//! server's delay. TLS ([`ferry_secure::Transport`]) and the protocol driver run on top of it.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::sniff::FirstBytes;

/// Bytes moved either way that count as progress on a body and renew the budget: a body must
/// move this much within each timeout (1 KiB/s at the default 60 s).
pub(crate) const PROGRESS_BYTES: u64 = 64 * 1024;

/// A socket whose waits share a budget; see the module docs.
#[derive(Debug)]
pub(crate) struct Timed {
    tcp: TcpStream,
    timeout: Duration,
    /// Time the socket calls may still wait before the current wait fails.
    left: Duration,
    /// Bytes moved since the budget was last renewed.
    moved: u64,
    /// The first bytes received, to tell what the server is when it is not ferry.
    first: FirstBytes,
}

impl Timed {
    /// Wraps `tcp`; everything until the first [`Timed::restart`] (the TLS handshake, say) is
    /// due within `timeout`.
    pub(crate) fn new(tcp: TcpStream, timeout: Duration) -> Self {
        Self {
            tcp,
            timeout,
            left: timeout,
            moved: 0,
            first: FirstBytes::default(),
        }
    }

    /// The first bytes received on this socket (kept as they arrive).
    pub(crate) fn first_bytes(&self) -> FirstBytes {
        self.first.clone()
    }

    /// The socket, to inspect its options.
    #[cfg(test)]
    pub(crate) fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// A new wait begins (for a message or a reply): it gets the whole timeout.
    pub(crate) fn restart(&mut self) {
        self.restart_within(self.timeout);
    }

    /// Like [`Timed::restart`], but only `limit` if that is shorter than the timeout.
    pub(crate) fn restart_within(&mut self, limit: Duration) {
        self.left = limit.min(self.timeout);
        self.moved = 0;
    }

    fn progress(&mut self, n: usize) {
        self.moved = self.moved.saturating_add(n as u64);
        if self.moved >= PROGRESS_BYTES {
            self.restart();
        }
    }

    /// Runs one blocking socket call, given the time left, until it returns something other
    /// than a timeout or the budget is spent.
    fn bounded<T>(
        &mut self,
        mut call: impl FnMut(&mut TcpStream, Duration) -> io::Result<T>,
    ) -> io::Result<T> {
        loop {
            if self.left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the server did not complete a message in time",
                ));
            }
            let since = Instant::now();
            let result = call(&mut self.tcp, self.left);
            self.left = self.left.saturating_sub(since.elapsed());
            match result {
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                other => return other,
            }
        }
    }
}

impl Read for Timed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.bounded(|s, left| {
            s.set_read_timeout(Some(left))?;
            s.read(buf)
        })?;
        self.first.record(&buf[..n]);
        self.progress(n);
        Ok(n)
    }
}

impl Write for Timed {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.bounded(|s, left| {
            s.set_write_timeout(Some(left))?;
            s.write(buf)
        })?;
        self.progress(n);
        Ok(n)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let n = self.bounded(|s, left| {
            s.set_write_timeout(Some(left))?;
            s.write_vectored(bufs)
        })?;
        self.progress(n);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

impl ferry_secure::Transport for Timed {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.peer_addr()
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        match self.tcp.shutdown(Shutdown::Write) {
            // A server that is gone already is not an error here.
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;

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
        let mut s = Timed::new(tcp, Duration::from_millis(400));
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
