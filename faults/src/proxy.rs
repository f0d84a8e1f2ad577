//! Proxies between `ferry` and `ferry-server` on 127.0.0.1.
//!
//! - [`PauseProxy`] forwards one connection and stops forwarding the direction that carries a
//!   body (client to server for uploads, server to client for downloads) once exactly N
//!   **body** bytes (DATA payload) have gone through, so that a test can kill a process, cut
//!   the connection or fill the disk at an exact point of a transfer.
//! - [`FlakyProxy`] forwards any number of connections, delays bytes and cuts some connections
//!   at random points, from a seeded generator.
//!
//! # How the pause point is found
//!
//! The proxy does not guess the header overhead: it follows the frame layout of
//! `docs/PROTOCOL.md` in the body's direction (client to server: 8 bytes of magic, then
//! frames; server to client: frames only; a frame is `kind: u8 | len: u32 | payload`) and
//! counts only the payload bytes of DATA frames (kind 0x07). For a point N it forwards everything before the (N+1)-th body byte, or, when N is
//! the whole body, everything before the END frame (kind 0x08). So at N = 0 the server has
//! seen HELLO, OFFER, BEGIN and the first DATA header; at N = size it holds the whole body
//! but not END. Nothing else the client sends (more offers, CANCEL) is held back before that
//! point; nothing at all goes through after it until [`PauseProxy::release`].

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ferry_proto::wire::{kind, FRAME_HEADER_LEN, MAGIC};

use crate::{Rng, PATIENCE};

/// Follows a byte stream frame by frame (the client-to-server one starts with the magic),
/// counting body bytes.
#[derive(Debug, Clone)]
pub struct FrameCounter {
    state: State,
    body: u64,
}

#[derive(Debug, Clone)]
enum State {
    Magic(usize),
    Header([u8; FRAME_HEADER_LEN], usize),
    Payload { data: bool, left: u64 },
}

impl Default for FrameCounter {
    fn default() -> Self {
        Self {
            state: State::Magic(MAGIC.len()),
            body: 0,
        }
    }
}

impl FrameCounter {
    /// A counter for the server-to-client direction, which has no magic.
    pub fn without_magic() -> Self {
        Self {
            state: State::Header([0; FRAME_HEADER_LEN], 0),
            body: 0,
        }
    }

    /// Body (DATA payload) bytes seen so far.
    pub fn body(&self) -> u64 {
        self.body
    }

    /// How many bytes of `buf` may pass before the point where exactly `stop_at` body bytes
    /// have passed and the next byte is more body or the start of END; the counter advances
    /// over them. With `None` every byte passes.
    pub fn allow(&mut self, buf: &[u8], stop_at: Option<u64>) -> usize {
        let mut i = 0;
        while i < buf.len() {
            if let Some(stop) = stop_at {
                if self.body == stop {
                    let at_point = match self.state {
                        State::Payload { data: true, left } => left > 0,
                        State::Header(_, 0) => buf[i] == kind::END,
                        _ => false,
                    };
                    if at_point {
                        return i;
                    }
                }
            }
            let rest = &buf[i..];
            match &mut self.state {
                State::Magic(left) => {
                    let n = (*left).min(rest.len());
                    *left -= n;
                    i += n;
                    if *left == 0 {
                        self.state = State::Header([0; FRAME_HEADER_LEN], 0);
                    }
                }
                State::Header(h, have) => {
                    h[*have] = rest[0];
                    *have += 1;
                    i += 1;
                    if *have == FRAME_HEADER_LEN {
                        let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]);
                        self.state = if len == 0 {
                            State::Header([0; FRAME_HEADER_LEN], 0)
                        } else {
                            State::Payload {
                                data: h[0] == kind::DATA,
                                left: u64::from(len),
                            }
                        };
                    }
                }
                State::Payload { data, left } => {
                    let mut n = (*left).min(rest.len() as u64);
                    if *data {
                        if let Some(stop) = stop_at.filter(|s| *s > self.body) {
                            n = n.min(stop - self.body);
                        }
                        self.body += n;
                    }
                    *left -= n;
                    i += n as usize;
                    if *left == 0 {
                        self.state = State::Header([0; FRAME_HEADER_LEN], 0);
                    }
                }
            }
        }
        i
    }
}

// ----- the pausing proxy -----------------------------------------------------------------------

#[derive(Debug, Default)]
struct PauseState {
    stop_at: Option<u64>,
    paused: bool,
    cut: bool,
    body: u64,
    streams: Vec<TcpStream>,
}

#[derive(Debug, Default)]
struct PauseShared {
    state: Mutex<PauseState>,
    cv: Condvar,
}

/// Which direction carries the body a [`PauseProxy`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to server: an upload (`ferry send`).
    Up,
    /// Server to client: a download (`ferry get`).
    Down,
}

/// Forwards one connection to `upstream`, holding the body direction at an exact body byte
/// count (see the module documentation).
pub struct PauseProxy {
    addr: SocketAddr,
    shared: Arc<PauseShared>,
    thread: Option<JoinHandle<()>>,
}

impl PauseProxy {
    /// Listens on 127.0.0.1 port 0; the first connection is forwarded to `upstream` and the
    /// upload held once `stop_at` body bytes went through.
    pub fn start(upstream: SocketAddr, stop_at: u64) -> Self {
        Self::start_dir(upstream, stop_at, Direction::Up)
    }

    /// Same, with the body flowing in direction `dir`.
    pub fn start_dir(upstream: SocketAddr, stop_at: u64, dir: Direction) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(PauseShared {
            state: Mutex::new(PauseState {
                stop_at: Some(stop_at),
                ..PauseState::default()
            }),
            cv: Condvar::new(),
        });
        let sh = Arc::clone(&shared);
        let thread = thread::spawn(move || pause_main(&listener, upstream, &sh, dir));
        Self {
            addr,
            shared,
            thread: Some(thread),
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT`, for the client's command line.
    pub fn target(&self) -> String {
        self.addr.to_string()
    }

    /// Waits until the pause point is reached; returns the body bytes forwarded (the point).
    /// Panics after [`PATIENCE`].
    pub fn wait_paused(&self) -> u64 {
        let deadline = Instant::now() + PATIENCE;
        let mut st = self.shared.state.lock().expect("proxy state");
        while !st.paused {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero() && !st.cut,
                "the proxy never reached its pause point ({} body bytes forwarded, aiming \
                 at {:?})",
                st.body,
                st.stop_at
            );
            st = self.shared.cv.wait_timeout(st, left).expect("proxy").0;
        }
        st.body
    }

    /// Forwards everything from now on.
    pub fn release(&self) {
        let mut st = self.shared.state.lock().expect("proxy state");
        st.stop_at = None;
        st.paused = false;
        self.shared.cv.notify_all();
    }

    /// Cuts the connection: both sockets are shut down, nothing more goes through.
    pub fn cut(&self) {
        let mut st = self.shared.state.lock().expect("proxy state");
        st.cut = true;
        for s in &st.streams {
            let _ = s.shutdown(Shutdown::Both);
        }
        self.shared.cv.notify_all();
    }

    /// Waits until the forwarding threads ended (after a cut, or both sides closing).
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            t.join().expect("proxy thread");
        }
    }
}

impl Drop for PauseProxy {
    fn drop(&mut self) {
        self.cut();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn pause_main(listener: &TcpListener, upstream: SocketAddr, sh: &Arc<PauseShared>, dir: Direction) {
    let Some(client) = accept_one(listener, || sh.state.lock().expect("state").cut) else {
        return;
    };
    let Ok(server) = TcpStream::connect(upstream) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    {
        let mut st = sh.state.lock().expect("state");
        for s in [&client, &server] {
            if let Ok(c) = s.try_clone() {
                st.streams.push(c);
            }
        }
        if st.cut {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
            return;
        }
    }
    let (body_from, body_to, counter) = match dir {
        Direction::Up => (client, server, FrameCounter::default()),
        Direction::Down => (server, client, FrameCounter::without_magic()),
    };
    let other = {
        let (from, to) = (
            body_to.try_clone().expect("clone"),
            body_from.try_clone().expect("clone"),
        );
        thread::spawn(move || copy_plain(from, to))
    };
    pump_counted(body_from, body_to, sh, counter);
    let _ = other.join();
}

/// The body direction, held at the pause point.
fn pump_counted(from: TcpStream, to: TcpStream, sh: &PauseShared, mut counter: FrameCounter) {
    let mut writer = &to;
    pump(&from, &to, |chunk| {
        let mut off = 0;
        while off < chunk.len() {
            let stop_at = sh.state.lock().expect("state").stop_at;
            let allowed = counter.allow(&chunk[off..], stop_at);
            if allowed > 0 && writer.write_all(&chunk[off..off + allowed]).is_err() {
                return ControlFlow::Break(());
            }
            off += allowed;
            let mut st = sh.state.lock().expect("state");
            st.body = counter.body();
            if off < chunk.len() {
                st.paused = true;
                sh.cv.notify_all();
                let deadline = Instant::now() + PATIENCE * 4;
                while st.stop_at.is_some() && !st.cut && Instant::now() < deadline {
                    st = sh
                        .cv
                        .wait_timeout(st, Duration::from_millis(100))
                        .expect("state")
                        .0;
                }
                if st.cut || st.stop_at.is_some() {
                    return ControlFlow::Break(());
                }
            }
        }
        ControlFlow::Continue(())
    });
}

/// Copies until either side ends, then passes the end on.
fn copy_plain(from: TcpStream, to: TcpStream) {
    let mut writer = &to;
    let failed = pump(&from, &to, |chunk| match writer.write_all(chunk) {
        Ok(()) => ControlFlow::Continue(()),
        Err(_) => ControlFlow::Break(()),
    });
    if failed.is_some() {
        let _ = to.shutdown(Shutdown::Write);
    }
}

/// Copies what `from` sends to `to`, a read at a time: `forward` writes what it lets through
/// of each read to `to`, and may end the copy (`Break`, with its outcome). When the sender
/// ends (or reading it fails) instead, its end is passed on to `to`, and `None` returned.
fn pump<B>(
    from: &TcpStream,
    to: &TcpStream,
    mut forward: impl FnMut(&[u8]) -> ControlFlow<B>,
) -> Option<B> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut reader = from;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let ControlFlow::Break(outcome) = forward(&buf[..n]) {
            return Some(outcome);
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    None
}

/// Accepts one connection, polling so that `stop` can end the wait; bounded by [`PATIENCE`].
fn accept_one(listener: &TcpListener, stop: impl Fn() -> bool) -> Option<TcpStream> {
    listener.set_nonblocking(true).ok()?;
    let deadline = Instant::now() + PATIENCE * 2;
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).ok()?;
                return Some(s);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if stop() || Instant::now() > deadline {
                    return None;
                }
                thread::sleep(Duration::from_millis(2));
            }
            Err(_) => return None,
        }
    }
}

// ----- the flaky proxy -------------------------------------------------------------------------

/// How a [`FlakyProxy`] misbehaves.
#[derive(Debug, Clone)]
pub struct Flakiness {
    /// Seed of every random choice (print it; replay with it).
    pub seed: u64,
    /// Most connections cut over the proxy's life; later ones only get delays.
    pub max_cuts: u64,
    /// Chance, in percent, that a connection (while cuts remain) is cut.
    pub cut_percent: u64,
    /// Chance, in percent, that a cut is counted in the server-to-client direction (losing
    /// an ACCEPT or a RESULT) rather than the client-to-server one.
    pub down_percent: u64,
    /// A client-to-server cut comes after a number of bytes in this range.
    pub cut_after: (u64, u64),
    /// A server-to-client cut comes after a number of bytes in this range.
    pub cut_after_down: (u64, u64),
    /// On the first connection, no cut comes before the server has sent this many bytes
    /// (WELCOME is 7): `ferry` takes a first connection closed before WELCOME for a peer that
    /// is not a ferry server, and does not retry it.
    pub first_min: u64,
    /// Chance, in percent, that a forwarded piece is delayed.
    pub delay_percent: u64,
    /// Longest delay of one piece, in milliseconds.
    pub max_delay_ms: u64,
    /// Longest piece forwarded at once (bytes are split into pieces of random sizes).
    pub max_piece: usize,
}

/// Forwards every connection to an upstream, with random delays and cuts.
pub struct FlakyProxy {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    cuts: Arc<AtomicU64>,
    conns: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

/// Where a connection is to be cut: after so many bytes in one direction.
#[derive(Debug, Clone, Copy)]
enum CutAt {
    Up(u64),
    Down(u64),
}

impl FlakyProxy {
    /// Listens on 127.0.0.1 port 0 and forwards to `upstream`.
    pub fn start(upstream: SocketAddr, how: Flakiness) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("proxy address");
        let stop = Arc::new(AtomicBool::new(false));
        let cuts = Arc::new(AtomicU64::new(0));
        let conns = Arc::new(AtomicU64::new(0));
        let (st, cu, co) = (Arc::clone(&stop), Arc::clone(&cuts), Arc::clone(&conns));
        let mut planned = 0;
        let thread = thread::spawn(move || {
            let mut workers = Vec::new();
            let mut n = 0u64;
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        n += 1;
                        co.store(n, Ordering::Relaxed);
                        let mut rng = Rng::new(how.seed ^ n.wrapping_mul(0x2545_F491_4F6C_DD1D));
                        let cut_at = if planned < how.max_cuts && rng.chance(how.cut_percent) {
                            planned += 1;
                            if rng.chance(how.down_percent) {
                                let (lo, hi) = how.cut_after_down;
                                let min = if n == 1 { how.first_min } else { 0 };
                                Some(CutAt::Down(rng.range(lo.max(min), hi.max(min + 1))))
                            } else {
                                Some(CutAt::Up(rng.range(how.cut_after.0, how.cut_after.1)))
                            }
                        } else {
                            None
                        };
                        let (how, cu) = (how.clone(), Arc::clone(&cu));
                        let gate = if n == 1 { how.first_min } else { 0 };
                        workers.push(thread::spawn(move || {
                            if flaky_conn(client, upstream, &how, rng, cut_at, gate) {
                                cu.fetch_add(1, Ordering::Relaxed);
                            }
                        }));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(2));
                    }
                    Err(_) => break,
                }
            }
            for w in workers {
                let _ = w.join();
            }
        });
        Self {
            addr,
            stop,
            cuts,
            conns,
            thread: Some(thread),
        }
    }

    /// `127.0.0.1:PORT`, for the client's command line.
    pub fn target(&self) -> String {
        self.addr.to_string()
    }

    /// Connections actually cut so far (a planned cut past the connection's end never
    /// happens).
    pub fn cuts(&self) -> u64 {
        self.cuts.load(Ordering::Relaxed)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.conns.load(Ordering::Relaxed)
    }
}

impl Drop for FlakyProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Forwards one connection; `true` when it was cut. A client-to-server cut waits until the
/// server has sent `gate` bytes.
fn flaky_conn(
    client: TcpStream,
    upstream: SocketAddr,
    how: &Flakiness,
    mut rng: Rng,
    cut_at: Option<CutAt>,
    gate: u64,
) -> bool {
    let Ok(server) = TcpStream::connect(upstream) else {
        let _ = client.shutdown(Shutdown::Both);
        return false;
    };
    // Bounded life: a connection the peers abandoned does not keep the test alive.
    for s in [&client, &server] {
        let _ = s.set_read_timeout(Some(PATIENCE));
    }
    let (up_at, down_at) = match cut_at {
        Some(CutAt::Up(n)) => (Some(n), None),
        Some(CutAt::Down(n)) => (None, Some(n)),
        None => (None, None),
    };
    let down_moved = Arc::new(AtomicU64::new(0));
    let down = {
        let (from, to) = (
            server.try_clone().expect("clone"),
            client.try_clone().expect("clone"),
        );
        let (how, rng, moved) = (
            how.clone(),
            Rng::new(rng.next_u64()),
            Arc::clone(&down_moved),
        );
        thread::spawn(move || flaky_copy(from, to, &how, rng, down_at, &moved, None))
    };
    let up_moved = AtomicU64::new(0);
    let cut_up = flaky_copy(
        client,
        server,
        how,
        rng,
        up_at,
        &up_moved,
        Some((&down_moved, gate)),
    );
    let cut_down = down.join().unwrap_or(false);
    cut_up || cut_down
}

/// Copies in random pieces with random delays, counting into `moved`; cuts (returns `true`)
/// after `cut_at` bytes, or, if the other direction's count has not reached the `gate` by
/// then, after the first piece that follows once it has (forwarding goes on meanwhile, so
/// that the peers can get there).
fn flaky_copy(
    from: TcpStream,
    to: TcpStream,
    how: &Flakiness,
    mut rng: Rng,
    cut_at: Option<u64>,
    moved: &AtomicU64,
    gate: Option<(&AtomicU64, u64)>,
) -> bool {
    let mut count = 0u64;
    let mut writer = &to;
    let cut = pump(&from, &to, |chunk| {
        let n = chunk.len();
        let mut off = 0;
        while off < n {
            let piece = rng.range(1, how.max_piece as u64 + 1) as usize;
            let mut end = (off + piece).min(n);
            if let Some(c) = cut_at.filter(|c| *c > count) {
                end = end.min(off + usize::try_from(c - count).unwrap_or(usize::MAX));
            }
            if rng.chance(how.delay_percent) {
                thread::sleep(Duration::from_millis(rng.range(0, how.max_delay_ms + 1)));
            }
            if end > off && writer.write_all(&chunk[off..end]).is_err() {
                return ControlFlow::Break(false);
            }
            count += (end - off) as u64;
            moved.store(count, Ordering::Relaxed);
            off = end;
            let open = gate.is_none_or(|(other, min)| other.load(Ordering::Relaxed) >= min);
            if cut_at.is_some_and(|c| count >= c) && open {
                let _ = from.shutdown(Shutdown::Both);
                let _ = to.shutdown(Shutdown::Both);
                return ControlFlow::Break(true);
            }
        }
        ControlFlow::Continue(())
    });
    cut.unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// magic, a control frame, then DATA frames of 3 and 2 bytes, then END.
    fn stream() -> Vec<u8> {
        let mut s = MAGIC.to_vec();
        s.extend_from_slice(&[kind::HELLO, 0, 0, 0, 2, 9, 9]);
        s.extend_from_slice(&[kind::DATA, 0, 0, 0, 3, 1, 2, 3]);
        s.extend_from_slice(&[kind::DATA, 0, 0, 0, 2, 4, 5]);
        s.extend_from_slice(&[kind::END, 0, 0, 0, 1, 7]);
        s
    }

    fn stop_offset(stop: u64, chunk: usize) -> usize {
        let s = stream();
        let mut c = FrameCounter::default();
        let mut passed = 0;
        for part in s.chunks(chunk) {
            let n = c.allow(part, Some(stop));
            passed += n;
            if n < part.len() {
                break;
            }
        }
        assert_eq!(c.body(), stop);
        passed
    }

    #[test]
    fn pauses_at_exact_body_counts_however_the_bytes_arrive() {
        for chunk in [1, 2, 3, 7, 100] {
            // magic 8 + HELLO 7 + DATA header 5 = 20: the first body byte.
            assert_eq!(stop_offset(0, chunk), 20, "chunk {chunk}");
            assert_eq!(stop_offset(1, chunk), 21, "chunk {chunk}");
            // 3 bytes in: the second DATA header passes, its payload waits.
            assert_eq!(stop_offset(3, chunk), 28, "chunk {chunk}");
            assert_eq!(stop_offset(4, chunk), 29, "chunk {chunk}");
            // The whole body: everything before END.
            assert_eq!(stop_offset(5, chunk), 30, "chunk {chunk}");
        }
        let mut c = FrameCounter::default();
        assert_eq!(c.allow(&stream(), None), stream().len());
        assert_eq!(c.body(), 5);
        // The server's direction has no magic.
        let mut c = FrameCounter::without_magic();
        assert_eq!(c.allow(&stream()[MAGIC.len()..], Some(4)), 29 - MAGIC.len());
        assert_eq!(c.body(), 4);
    }
}
