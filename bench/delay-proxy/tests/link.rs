//! The link's guarantees, through a proxy on 127.0.0.1: bytes and EOF pass intact both ways,
//! a round trip takes at least twice the delay, and the pace stays under the rate plus one
//! burst. Every bound here follows from the design; none is a performance threshold.

use ferry_delay_proxy::{listen, serve, Link, PACE};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long any read or write in these tests may block before the test fails.
const STALL: Duration = Duration::from_secs(10);

/// Starts a proxy to `target` through `link` on a free port (its thread ends with the test
/// process) and returns its address.
fn proxy(target: SocketAddr, link: Link) -> SocketAddr {
    let listener = listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || serve(&listener, target, link));
    addr
}

/// A target on a free port that runs `handle` on its first connection; returns its address
/// and the thread's result.
fn target<T: Send + 'static>(
    handle: impl FnOnce(TcpStream) -> T + Send + 'static,
) -> (SocketAddr, JoinHandle<T>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = thread::spawn(move || handle(bounded(listener.accept().unwrap().0)));
    (addr, peer)
}

/// `stream` with every read and write bounded by [`STALL`].
fn bounded(stream: TcpStream) -> TcpStream {
    stream.set_read_timeout(Some(STALL)).unwrap();
    stream.set_write_timeout(Some(STALL)).unwrap();
    stream
}

/// Connects to `addr`, bounded.
fn connect(addr: SocketAddr) -> TcpStream {
    bounded(TcpStream::connect(addr).unwrap())
}

/// `len` pseudo-random bytes from `seed` (xorshift), so a lost, doubled or reordered piece
/// shows.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

/// Sends `data` then EOF on `stream`, on a thread of its own.
fn send_then_eof(mut stream: TcpStream, data: Vec<u8>) -> JoinHandle<()> {
    thread::spawn(move || {
        stream.write_all(&data).unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
    })
}

/// Reads `stream` to its EOF.
fn read_all(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    stream.read_to_end(&mut got).unwrap();
    got
}

#[test]
fn bytes_pass_both_ways_intact() {
    const LEN: usize = 4 << 20;
    let (target_addr, peer) = target(|mut stream| {
        let sending = send_then_eof(stream.try_clone().unwrap(), pattern(2, LEN));
        let got = read_all(&mut stream);
        sending.join().unwrap();
        got
    });
    let mut client = connect(proxy(target_addr, Link::new(5, 1000).unwrap()));
    let sending = send_then_eof(client.try_clone().unwrap(), pattern(1, LEN));
    let down = read_all(&mut client);
    sending.join().unwrap();
    let up = peer.join().unwrap();
    assert!(
        up == pattern(1, LEN),
        "client to target: {} bytes",
        up.len()
    );
    assert!(
        down == pattern(2, LEN),
        "target to client: {} bytes",
        down.len()
    );
}

#[test]
fn eof_is_passed_on_after_the_data_and_half_closes_only() {
    let (target_addr, peer) = target(|mut stream| {
        // read_to_end returns only once the client's EOF has come through.
        let request = read_all(&mut stream);
        // The other direction is still open after that half-close.
        stream.write_all(b"reply").unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        request
    });
    let mut client = connect(proxy(target_addr, Link::new(5, 100).unwrap()));
    client.write_all(b"request").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_all(&mut client), b"reply");
    assert_eq!(peer.join().unwrap(), b"request");
}

#[test]
fn a_round_trip_takes_at_least_twice_the_delay() {
    const DELAY: Duration = Duration::from_millis(50);
    let (target_addr, peer) = target(|mut stream| {
        let mut buf = [0; 64];
        for _ in 0..10 {
            let n = stream.read(&mut buf).unwrap();
            if n == 0 {
                return;
            }
            stream.write_all(&buf[..n]).unwrap();
        }
    });
    let mut client = connect(proxy(target_addr, Link::new(50, 1000).unwrap()));
    for round in 0..3u8 {
        let start = Instant::now();
        client.write_all(&[round]).unwrap();
        let mut echo = [0];
        client.read_exact(&mut echo).unwrap();
        let took = start.elapsed();
        assert_eq!(echo, [round]);
        assert!(took >= 2 * DELAY, "round trip {round} took {took:?}");
    }
    client.shutdown(Shutdown::Write).unwrap();
    peer.join().unwrap();
}

#[test]
fn the_pace_never_exceeds_the_rate_by_more_than_a_burst() {
    // 8 Mbit/s = 1,000,000 bytes/s; the client offers more than the window can carry.
    const RATE: f64 = 1_000_000.0;
    const WINDOW: Duration = Duration::from_millis(1500);
    // Nothing can reach the target before this instant, taken before the client connects.
    let start = Instant::now();
    let (target_addr, peer) = target(move |mut stream| {
        let end = start + WINDOW;
        let mut buf = vec![0; 1 << 16];
        let mut within = 0usize;
        for _ in 0..100_000 {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            stream.set_read_timeout(Some(left)).unwrap();
            match stream.read(&mut buf) {
                // Bytes a read returns by the window's end arrived within it.
                Ok(n) if Instant::now() <= end => within += n,
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => panic!("reading the paced stream: {e}"),
            }
        }
        within
    });
    let client = connect(proxy(target_addr, Link::new(1, 8).unwrap()));
    let sender = thread::spawn(move || {
        // Fails once the target stops reading and goes away: that ends the test's traffic.
        let _ = (&client).write_all(&pattern(3, 3_000_000));
    });
    let within = peer.join().unwrap();
    let cap = RATE * WINDOW.as_secs_f64() + PACE as f64;
    assert!(within > 0, "nothing came through the link in {WINDOW:?}");
    assert!(
        within as f64 <= cap,
        "{within} bytes in {WINDOW:?}, cap {cap}"
    );
    sender.join().unwrap();
}
