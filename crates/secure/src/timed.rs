//! Blocking socket calls bounded by a caller's time budget, for the adapters' [`Transport`]
//! wrappers around a `TcpStream` (the client's per-wait budget, the server's deadlines and
//! stop checks): each call gets a socket timeout of what the budget allows, and a call that
//! only timed out is made again until the budget says the wait is over.
//!
//! [`Transport`]: crate::Transport

use std::io::{self, IoSlice, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// What bounds one wait on a socket (a read, a write), asked before every blocking call of it.
pub trait Budget {
    /// How long the next blocking call may wait; an error (the time is up, a stop request)
    /// ends the wait with that error. Never zero: a zero socket timeout means none.
    fn next_wait(&mut self) -> io::Result<Duration>;

    /// A call has returned after waiting `took` (also when it timed out). Does nothing by
    /// default; a budget that counts only the time spent waiting on the socket spends it here.
    fn waited(&mut self, took: Duration) {
        let _ = took;
    }
}

/// Whether `e` only says that a socket call ran out of its timeout (`WouldBlock` on Unix,
/// `TimedOut` on Windows).
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Runs `call` with the wait `budget` allows, again while it only times out, until it returns
/// something else or the budget ends the wait.
pub fn bounded<T>(
    budget: &mut impl Budget,
    mut call: impl FnMut(Duration) -> io::Result<T>,
) -> io::Result<T> {
    loop {
        let wait = budget.next_wait()?;
        let since = Instant::now();
        let result = call(wait);
        budget.waited(since.elapsed());
        match result {
            Err(e) if is_timeout(&e) => {}
            other => return other,
        }
    }
}

/// A `read` on `tcp` within `budget`.
pub fn read(tcp: &TcpStream, budget: &mut impl Budget, buf: &mut [u8]) -> io::Result<usize> {
    bounded(budget, |wait| {
        tcp.set_read_timeout(Some(wait))?;
        let mut tcp = tcp;
        tcp.read(buf)
    })
}

/// A `peek` on `tcp` within `budget`: waits like a read, consumes nothing.
pub fn peek(tcp: &TcpStream, budget: &mut impl Budget, buf: &mut [u8]) -> io::Result<usize> {
    bounded(budget, |wait| {
        tcp.set_read_timeout(Some(wait))?;
        tcp.peek(buf)
    })
}

/// A `write` on `tcp` within `budget`.
pub fn write(tcp: &TcpStream, budget: &mut impl Budget, buf: &[u8]) -> io::Result<usize> {
    bounded(budget, |wait| {
        tcp.set_write_timeout(Some(wait))?;
        let mut tcp = tcp;
        tcp.write(buf)
    })
}

/// A `write_vectored` on `tcp` within `budget`.
pub fn write_vectored(
    tcp: &TcpStream,
    budget: &mut impl Budget,
    bufs: &[IoSlice<'_>],
) -> io::Result<usize> {
    bounded(budget, |wait| {
        tcp.set_write_timeout(Some(wait))?;
        let mut tcp = tcp;
        tcp.write_vectored(bufs)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// Allows `slices` waits of 20 ms, then ends the wait.
    struct Slices {
        slices: u32,
        calls: u32,
    }

    impl Budget for Slices {
        fn next_wait(&mut self) -> io::Result<Duration> {
            if self.slices == 0 {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "budget spent"));
            }
            self.slices -= 1;
            Ok(Duration::from_millis(20))
        }

        fn waited(&mut self, _took: Duration) {
            self.calls += 1;
        }
    }

    #[test]
    fn timeouts_are_retried_until_the_budget_ends_the_wait() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let tcp = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut peer, _) = listener.accept().unwrap();
        let mut budget = Slices {
            slices: 3,
            calls: 0,
        };
        let err = read(&tcp, &mut budget, &mut [0u8; 4]).unwrap_err();
        assert_eq!(err.to_string(), "budget spent");
        assert_eq!(
            budget.calls, 3,
            "every slice was waited, then the budget said stop"
        );
        // Bytes that are there end the wait; a peek leaves them for the read.
        peer.write_all(b"k").unwrap();
        let mut budget = Slices {
            slices: 250,
            calls: 0,
        };
        let mut buf = [0u8; 4];
        assert_eq!(peek(&tcp, &mut budget, &mut buf).unwrap(), 1);
        assert_eq!(read(&tcp, &mut budget, &mut buf).unwrap(), 1);
        assert_eq!(buf[0], b'k');
    }
}
