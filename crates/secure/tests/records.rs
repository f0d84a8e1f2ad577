//! The TLS stream after the handshake: big transfers through few transport calls, transports
//! that move a few bytes at a time or are not ready (`WouldBlock`), tampering, and key updates
//! with a plain rustls peer. Most run over an in-memory pipe, so call counts are exact.

use std::collections::VecDeque;
use std::io::{self, ErrorKind, IoSlice, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use ferry_secure::{accept, connect, ClientTls, ServerTls, Stream, Transport, Trust};

/// A safety net so a broken test fails instead of hanging; no test asserts on time.
const SAFETY_TIMEOUT: Duration = Duration::from_secs(30);

/// The bytes in flight and whether the writer has finished.
type Flight = Mutex<(VecDeque<u8>, bool)>;

/// One direction of an in-memory pipe: unbounded, so a writer never waits.
#[derive(Clone, Default)]
struct Pipe(Arc<(Flight, Condvar)>);

impl Pipe {
    fn push(&self, data: &[u8]) {
        let (lock, cv) = &*self.0;
        lock.lock().unwrap().0.extend(data);
        cv.notify_all();
    }

    fn close(&self) {
        let (lock, cv) = &*self.0;
        lock.lock().unwrap().1 = true;
        cv.notify_all();
    }

    /// Blocks until bytes or the end are there.
    fn pull(&self, out: &mut [u8]) -> io::Result<usize> {
        let (lock, cv) = &*self.0;
        let guard = lock.lock().unwrap();
        let (mut state, timeout) = cv
            .wait_timeout_while(guard, SAFETY_TIMEOUT, |(buf, closed)| {
                buf.is_empty() && !*closed
            })
            .unwrap();
        if timeout.timed_out() {
            return Err(ErrorKind::TimedOut.into());
        }
        state.0.read(out)
    }
}

/// How an [`End`] misbehaves: at most `max_chunk` bytes per call (0: no limit), and every
/// `stall_every`th call fails with `WouldBlock` having done nothing (0: never).
#[derive(Clone, Copy, Default)]
struct Quirks {
    max_chunk: usize,
    stall_every: usize,
}

/// One end of an in-memory connection, counting its calls.
struct End {
    rx: Pipe,
    tx: Pipe,
    quirks: Quirks,
    calls: usize,
    reads: usize,
    writes: usize,
    stalls: usize,
}

impl End {
    fn pair() -> (End, End) {
        let (a, b) = (Pipe::default(), Pipe::default());
        let end = |rx: &Pipe, tx: &Pipe| End {
            rx: rx.clone(),
            tx: tx.clone(),
            quirks: Quirks::default(),
            calls: 0,
            reads: 0,
            writes: 0,
            stalls: 0,
        };
        (end(&a, &b), end(&b, &a))
    }

    /// Applies the quirks to one call: `None` to fail it with `WouldBlock`, else how many bytes
    /// of `len` it may move (varying, so records are cut everywhere).
    fn allow(&mut self, len: usize) -> Option<usize> {
        self.calls += 1;
        let q = self.quirks;
        if q.stall_every > 0 && self.calls % q.stall_every == 0 {
            self.stalls += 1;
            return None;
        }
        if q.max_chunk == 0 {
            return Some(len);
        }
        Some(len.min(1 + (self.calls * 7919) % q.max_chunk))
    }
}

impl Read for End {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.allow(buf.len()).ok_or(ErrorKind::WouldBlock)?;
        self.reads += 1;
        self.rx.pull(&mut buf[..n])
    }
}

impl Write for End {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.allow(buf.len()).ok_or(ErrorKind::WouldBlock)?;
        self.writes += 1;
        self.tx.push(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport for End {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        Ok(SocketAddr::from(([127, 0, 0, 1], 1)))
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        self.tx.close();
        Ok(())
    }
}

/// Bytes that differ from position to position (so a reordering or a lost chunk shows).
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + i / 251) as u8).collect()
}

/// Retries `f` while the transport is not ready (as a caller with its own deadline would).
fn again<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    for _ in 0..1_000_000 {
        match f() {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
            other => return other,
        }
    }
    panic!("the stream never made progress");
}

fn write_all<T: Transport>(s: &mut Stream<T>, mut data: &[u8], chunk: usize) {
    while !data.is_empty() {
        let n = again(|| s.write(&data[..chunk.min(data.len())])).unwrap();
        assert!(n > 0);
        data = &data[n..];
    }
    again(|| s.flush()).unwrap();
}

/// Reads to the end, into a buffer of `buf_len` bytes at a time.
fn read_all<T: Transport>(s: &mut Stream<T>, buf_len: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = vec![0; buf_len];
    loop {
        let n = again(|| s.read(&mut buf)).unwrap();
        if n == 0 {
            return got;
        }
        got.extend_from_slice(&buf[..n]);
    }
}

fn server_tls() -> (tempfile::TempDir, ServerTls, ClientTls) {
    let dir = tempfile::tempdir().unwrap();
    let tls = ServerTls::self_signed(dir.path()).unwrap();
    let client = ClientTls::new(Trust::Pin(tls.fingerprint())).unwrap();
    (dir, tls, client)
}

/// Handshakes over an in-memory pair with the given quirks; returns (server, client).
fn handshake_pair(quirks: Quirks) -> (Stream<End>, Stream<End>, tempfile::TempDir) {
    let (dir, tls, client_tls) = server_tls();
    let (mut s_end, mut c_end) = End::pair();
    s_end.quirks = quirks;
    c_end.quirks = quirks;
    let server = thread::spawn(move || accept(&tls, s_end).unwrap());
    let client = connect(&client_tls, "localhost", c_end).unwrap();
    (server.join().unwrap(), client, dir)
}

/// 8 MiB each way through 1 MiB buffers: the receiver reads many records per transport call
/// (ciphertext straight into the caller's buffer) and the sender writes many records per call.
#[test]
fn big_transfers_take_few_transport_calls() {
    const LEN: usize = 8 << 20;
    const BUF: usize = 1 << 20;
    let (mut server, mut client, _dir) = handshake_pair(Quirks::default());
    let data = pattern(LEN);
    write_all(&mut client, &data, BUF);
    client.shutdown_write().unwrap();

    let (reads, writes) = (server.get_ref().reads, server.get_ref().writes);
    let got = read_all(&mut server, BUF);
    assert!(got == data, "the server received other bytes");
    let reads = server.get_ref().reads - reads;
    // A 16 KiB record per read would take 512 reads; the buffer holds 1 MiB.
    assert!(
        reads <= 2 * LEN / BUF + 4,
        "{reads} transport reads for 8 MiB"
    );

    write_all(&mut server, &got, BUF);
    server.shutdown_write().unwrap();
    let writes = server.get_ref().writes - writes;
    // 16 records (256 KiB) per write: 32 for 8 MiB, plus close_notify.
    assert!(
        writes <= LEN / (200 << 10) + 4,
        "{writes} transport writes for 8 MiB"
    );
    let back = read_all(&mut client, BUF);
    assert!(back == data, "the client received other bytes");
}

/// A transport that moves a few bytes per call during and after the handshake, and afterwards
/// also fails every third call with `WouldBlock`: retried calls carry on exactly, through
/// small reads (the inbox) and large ones (in place), small writes and large ones.
#[test]
fn partial_and_would_block_transport_calls_keep_state() {
    let trickle = Quirks {
        max_chunk: 64,
        stall_every: 0,
    };
    let (mut server, mut client, _dir) = handshake_pair(trickle);
    assert!(server.get_ref().calls > 10 && client.get_ref().calls > 10);
    let stalling = Quirks {
        max_chunk: 40_000,
        stall_every: 3,
    };
    server.get_mut().quirks = stalling;
    client.get_mut().quirks = stalling;

    let data = pattern(3 << 20);
    let expected = data.clone();
    let sender = thread::spawn(move || {
        write_all(&mut client, &data[..1000], 7);
        write_all(&mut client, &data[1000..], 300_000);
        again(|| client.shutdown_write()).unwrap();
        client
    });
    // The first megabyte in small reads (through the inbox), the rest in large ones.
    let mut got = vec![0; 1 << 20];
    for chunk in got.chunks_mut(100) {
        let mut filled = 0;
        while filled < chunk.len() {
            let n = again(|| server.read(&mut chunk[filled..])).unwrap();
            assert!(n > 0, "early end");
            filled += n;
        }
    }
    let rest = read_all(&mut server, 1 << 20);
    got.extend_from_slice(&rest);
    assert!(got == expected, "bytes lost or reordered");
    let client = sender.join().unwrap();
    assert!(server.get_ref().stalls > 0 && client.get_ref().stalls > 0);
}

/// Flipping one bit of a record on the way is an error for the reader (never a panic, never
/// the altered bytes), and stays one.
#[test]
fn a_tampered_record_is_an_error() {
    let (mut server, mut client, _dir) = handshake_pair(Quirks::default());
    let tx = client.get_ref().tx.clone();
    // Seal a record, then corrupt it in the pipe before the server reads it.
    client.write_all(b"secret payload").unwrap();
    client.flush().unwrap();
    {
        let (lock, _) = &*tx.0;
        let mut state = lock.lock().unwrap();
        let last = state.0.len() - 1;
        state.0[last] ^= 0x40;
    }
    let mut buf = vec![0; 64 << 10];
    for _ in 0..2 {
        let err = server.read(&mut buf).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData, "{err}");
        assert!(err.to_string().contains("tampered"), "{err}");
    }
}

/// A plain rustls server (its own record layer) asks for key updates; this stream answers
/// with its own and both sides keep reading each other; its session tickets are accepted.
#[test]
fn key_updates_with_a_rustls_peer() {
    let (_dir, tls, client_tls) = server_tls();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = tls.config().clone();
    let server = thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
        let conn = rustls::ServerConnection::new(config).unwrap();
        let mut s = rustls::StreamOwned::new(conn, tcp);
        while s.conn.is_handshaking() {
            s.conn.complete_io(&mut s.sock).unwrap();
        }
        let mut total = Vec::new();
        let mut buf = [0u8; 1 << 16];
        for round in 0..4u8 {
            // Each round: ask for a key update, send a marker, read 1 MiB back.
            s.conn.refresh_traffic_keys().unwrap();
            s.write_all(&[round; 5000]).unwrap();
            s.flush().unwrap();
            let mut got = 0;
            while got < 1 << 20 {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0);
                total.extend_from_slice(&buf[..n]);
                got += n;
            }
        }
        s.conn.send_close_notify();
        s.flush().unwrap();
        total
    });
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    let mut s = connect(&client_tls, "localhost", tcp).unwrap();
    let data = pattern(4 << 20);
    for (round, chunk) in data.chunks(1 << 20).enumerate() {
        let mut marker = [0u8; 5000];
        s.read_exact(&mut marker).unwrap();
        assert!(marker.iter().all(|&b| usize::from(b) == round));
        let n = s.write_vectored(&[IoSlice::new(&chunk[..10])]).unwrap();
        assert_eq!(n, 10);
        s.write_all(&chunk[10..]).unwrap();
        s.flush().unwrap();
    }
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    assert!(
        server.join().unwrap() == data,
        "the rustls server read other bytes"
    );
}

/// 32 MiB over loopback TCP and back, between this crate's server and client streams.
#[test]
fn loopback_round_trip() {
    let (_dir, tls, client_tls) = server_tls();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
        tcp.set_write_timeout(Some(SAFETY_TIMEOUT)).unwrap();
        let mut s = accept(&tls, tcp).unwrap();
        let got = read_all(&mut s, 1 << 20);
        write_all(&mut s, &got, 1 << 20);
        s.shutdown_write().unwrap();
        got.len()
    });
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    tcp.set_write_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    let mut s = connect(&client_tls, "localhost", tcp).unwrap();
    let data = pattern(32 << 20);
    write_all(&mut s, &data, 1 << 20);
    s.shutdown_write().unwrap();
    let back = read_all(&mut s, 256 << 10);
    assert_eq!(server.join().unwrap(), data.len());
    assert!(back == data, "other bytes came back");
}
