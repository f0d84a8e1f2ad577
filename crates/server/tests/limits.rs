//! Many clients at once: stalled and trickling connections, the connection limit, timeouts,
//! and graceful shutdown.

mod common;
mod ops;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::*;
use ferry_proto::wire::Frame;
use ferry_proto::{Code, Event, Hasher, Step};
use ferry_server::Config;

#[test]
fn a_hundred_stalled_connections_do_not_stop_a_real_client() {
    // Default limits: the stalled connections count as handshakes, not as clients. (They
    // all come from one address here, so its own cap is lifted.)
    let mut srv = start(Config {
        header_timeout: Duration::from_secs(60),
        max_per_source: 1000,
        ..config()
    });
    assert!(
        Config::default().max_connections < 100,
        "more stalled connections than client slots"
    );
    let mut stalled = Vec::new();
    for i in 0..100 {
        let mut s = TcpStream::connect(srv.addr()).unwrap();
        match i % 4 {
            0 => {}                                          // silent
            1 => s.write_all(b"\0fer").unwrap(),             // half a magic
            2 => s.write_all(b"\0ferry\r\n\x01\0").unwrap(), // half a frame header
            _ => s.write_all(b"seed-name-without-end").unwrap(),
        }
        stalled.push(s);
    }
    let body = data(2 << 20, 3);
    let mut d = connect(srv.addr());
    assert_eq!(upload(&mut d, "real.bin", &body).code, Code::Stored);
    assert!(download(&mut d, "real.bin").unwrap().0 == body);
    drop(d);
    drop(stalled);
    srv.stop();
    assert_eq!(srv.listing(), vec!["real.bin"]);
}

#[test]
fn a_header_trickled_byte_by_byte_still_meets_the_deadline() {
    let srv = start(Config {
        header_timeout: Duration::from_millis(300),
        ..config()
    });
    let s = TcpStream::connect(srv.addr()).unwrap();
    let mut writer = s.try_clone().unwrap();
    let trickle = thread::spawn(move || {
        // A seed name, one byte every 20 ms, never finished: only the deadline ends it.
        for _ in 0..500 {
            if writer.write_all(b"x").is_err() {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        false
    });
    let mut reader = s;
    reader.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut sink = Vec::new();
    let closed = match reader.read_to_end(&mut sink) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    };
    assert!(closed, "the server closed the trickling connection");
    assert!(trickle.join().unwrap(), "the server stopped reading");
}

#[test]
fn a_message_trickled_after_hello_is_cut_but_a_pause_between_messages_is_fine() {
    let mut srv = start(Config {
        header_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_secs(5),
        ..config()
    });
    // Pausing longer than the header timeout between whole messages is allowed.
    let mut d = connect(srv.addr());
    assert_eq!(upload(&mut d, "a.txt", b"a").code, Code::Stored);
    thread::sleep(Duration::from_millis(600));
    assert_eq!(upload(&mut d, "b.txt", b"b").code, Code::Stored);
    drop(d);

    // An OFFER dribbled in one byte every 50 ms is not.
    let mut raw = Raw::connect(srv.addr());
    let mut offer = Vec::new();
    file_offer(1, "slow-loris-name.txt", 1).encode(&mut offer);
    let mut cut = false;
    for b in &offer {
        if raw.s.write_all(&[*b]).is_err() {
            cut = true;
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    match raw.recv() {
        Some(ferry_proto::wire::Frame::Error { code, .. }) => assert_eq!(code, Code::Timeout),
        None => assert!(cut, "the server answered the dribbled offer"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    srv.stop();
    assert_eq!(srv.listing(), vec!["a.txt", "b.txt"]);
}

#[test]
fn a_silent_body_hits_the_idle_timeout_and_is_kept_for_resume() {
    let srv = start(Config {
        idle_timeout: Duration::from_millis(300),
        ..config()
    });
    let mut d = connect(srv.addr());
    // Over the size below which uploads are not kept for resume (1 MiB).
    let size = 2 << 20;
    let id = d.conn_mut().offer(info("slow.bin", size)).unwrap();
    assert!(matches!(
        d.next_step().unwrap(),
        Step::Event(Event::Accepted { .. })
    ));
    d.conn_mut().begin(id, Hasher::new()).unwrap();
    // One DATA frame announcing the whole file, of which only 400 KB come.
    let header = d.conn_mut().data_frame(size as u32).unwrap();
    d.flush().unwrap();
    d.stream_mut().write_all(header.as_bytes()).unwrap();
    d.stream_mut().write_all(&data(400_000, 1)).unwrap();
    let mut sink = Vec::new();
    let _ = d.stream_mut().read_to_end(&mut sink);
    wait_for("the partial", || srv.partials().len() == 1);
    assert!(srv.read("slow.bin").is_none());
}

fn expect_busy(d: &mut Client, limit: usize) {
    match d.next_step() {
        Ok(Step::Event(Event::PeerError { code, reason })) => {
            assert_eq!(code, Code::Busy);
            assert!(reason.contains(&format!("limit of {limit}")), "{reason}");
        }
        other => panic!("expected a BUSY error, got {other:?}"),
    }
}

#[test]
fn a_client_over_the_limit_is_refused_before_anything_is_read() {
    let srv = start(Config {
        max_connections: 1,
        max_handshakes: 0,
        ..config()
    });
    let _held = connect(srv.addr());
    // Refused by the accept loop itself: the ERROR is sent before HELLO is read.
    let s = TcpStream::connect(srv.addr()).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut d = ferry_proto::Driver::new(s, ferry_proto::Connection::client(None).unwrap());
    expect_busy(&mut d, 1);
}

/// SECURITY.md, "Slow, stalled or chattering clients cannot lock others out": past
/// `--max-connections` refusals in flight (each on a thread that lets its client read), a
/// refusal is still told, in one non-blocking write from the accept loop, never a silent
/// close (which a client can only take for a network failure, or for another server).
#[test]
fn a_flood_of_refusals_still_answers_every_one() {
    let srv = start(Config {
        max_connections: 1,
        max_handshakes: 0,
        max_per_source: 100,
        ..config()
    });
    let _held = connect(srv.addr());
    // None of them reads or closes before all are refused: the first refusal's thread waits
    // for its client, so the others are over the budget of refusals in flight.
    let refused: Vec<TcpStream> = (0..8)
        .map(|_| {
            let s = TcpStream::connect(srv.addr()).unwrap();
            s.set_read_timeout(Some(PATIENCE)).unwrap();
            s
        })
        .collect();
    for s in refused {
        match (Raw { s }).recv() {
            Some(Frame::Error { code, reason }) => {
                assert_eq!(code, Code::Busy);
                assert!(reason.contains("limit of 1"), "{reason}");
            }
            other => panic!("expected a BUSY error, got {other:?}"),
        }
    }
}

/// SECURITY.md, "Many connections cannot flood the log": refusals are logged at most 5 a
/// second of each kind; the rest are counted and summed up in one line per second.
#[test]
fn a_flood_of_refused_connections_is_summed_up_in_the_log() {
    const FLOOD: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let bin = ops::Bin::start(&[
        "--dir",
        store.to_str().unwrap(),
        "--max-per-source",
        "2",
        "--header-timeout",
        "60s",
    ]);
    let _held = [0; 2].map(|_| TcpStream::connect(bin.addr).unwrap());
    for _ in 0..FLOOD {
        drop(TcpStream::connect(bin.addr).unwrap());
    }
    let count = || {
        let log = bin.log();
        let lines = log
            .iter()
            .filter(|l| l.contains("connections open already"))
            .count();
        let summed: usize = log
            .iter()
            .filter(|l| l.contains("refused: its address has too many connections open"))
            .filter_map(|l| {
                l.split_once("... and ")?
                    .1
                    .split_once(' ')?
                    .0
                    .parse::<usize>()
                    .ok()
            })
            .sum();
        (lines, summed)
    };
    wait_for("every refusal logged or summed up", || {
        let (lines, summed) = count();
        lines + summed == FLOOD
    });
    let (lines, _) = count();
    assert!(lines * 4 <= FLOOD, "{lines} lines for {FLOOD} refusals");
}

/// A connection that closes before it says anything (a port probe, a balancer's TCP health
/// check, a flood of them) makes no line at the default level; a client that speaks does.
#[test]
fn connections_closed_before_a_word_make_no_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    // All from one address: its cap must not refuse the client that speaks while the
    // server is still counting the others closed.
    let mut bin = ops::Bin::start(&["--dir", store.to_str().unwrap(), "--max-per-source", "64"]);
    for _ in 0..20 {
        drop(TcpStream::connect(bin.addr).unwrap());
    }
    assert_eq!(upload_once(bin.addr, "spoke.txt", b"x").code, Code::Stored);
    let line = bin.wait_line("connection closed");
    assert!(line.contains("ferry: 1 stored"), "{line}");
    let log = bin.log();
    assert!(!log.iter().any(|l| l.contains("no framing")), "{log:#?}");
}

#[test]
fn a_client_over_the_limit_is_told_the_server_is_busy() {
    let srv = start(Config {
        max_connections: 2,
        ..config()
    });
    let held = [connect(srv.addr()), connect(srv.addr())];
    let mut third = connect_unwelcomed(srv.addr());
    expect_busy(&mut third, 2);
    drop(held);
    // Once the others leave, a new client is served again.
    wait_for("a free slot", || {
        let mut d = connect_unwelcomed(srv.addr());
        matches!(d.next_step(), Ok(Step::Event(Event::Welcome { .. })))
    });
}

/// SECURITY.md, "Slow, stalled or chattering clients cannot lock others out": silent
/// connections from several addresses, each within `--max-per-source`, fill every place
/// (`--max-connections` plus `--max-handshakes`); a newcomer takes the place of the oldest
/// connection still opening (past a second), which is closed at once, rather than being
/// refused until `--header-timeout` ends them.
#[test]
fn silent_connections_filling_the_server_give_way_to_a_real_client() {
    let mut srv = start(Config {
        max_connections: 2,
        max_handshakes: 4,
        max_per_source: 2,
        header_timeout: Duration::from_secs(60),
        ..config()
    });
    // Six silent connections, two from each of 127.0.0.2 to 127.0.0.4: the whole pool.
    let silent: Vec<TcpStream> = (0..6u8)
        .map(|i| connect_from([127, 0, 0, 2 + i / 2], srv.addr()))
        .collect();
    // Older than the least age a connection must be opening for before it can be displaced
    // (1 s): a real client's handshake is never the one displaced.
    thread::sleep(Duration::from_millis(1200));
    // Each still holds its place: the next newcomer displaces another silent connection.
    let real = real_clients_displace_the_oldest(&srv, &silent.iter().collect::<Vec<_>>());
    drop((silent, real));
    srv.stop();
    assert_eq!(srv.listing(), vec!["real0.bin", "real1.bin"]);
}

/// SECURITY.md, "Slow, stalled or chattering clients cannot lock others out": connections that
/// say HELLO and then nothing fill every slot and, once those holders are stale, the rest of
/// the pool on probation for their slots; a newcomer takes the place of the oldest connection
/// without a slot (on probation, past a second), then the slot of a stale holder as it moves
/// its file, rather than being refused while the flood lasts.
#[test]
fn connections_silent_after_hello_give_way_to_a_real_client() {
    let evict_after = Duration::from_secs(3);
    let mut srv = start(Config {
        max_connections: 2,
        max_handshakes: 4,
        max_per_source: 2,
        evict_after,
        ..config()
    });
    // Two take the slots, and go stale.
    let holders: Vec<Raw> = (0..2)
        .map(|_| Raw::connect_from([127, 0, 0, 2], srv.addr()))
        .collect();
    thread::sleep(evict_after + Duration::from_millis(200));
    // Four more, from two other addresses, are welcomed on probation: the whole pool.
    let waiting: Vec<Raw> = (0..4u8)
        .map(|i| Raw::connect_from([127, 0, 0, 3 + i / 2], srv.addr()))
        .collect();
    // Past the least age for being displaced (1 s), well within the probation (3 s).
    thread::sleep(Duration::from_millis(1200));
    let crowd: Vec<&TcpStream> = waiting.iter().map(|r| &r.s).collect();
    let real = real_clients_displace_the_oldest(&srv, &crowd);
    drop((holders, waiting, real));
    srv.stop();
    assert_eq!(srv.listing(), vec!["real0.bin", "real1.bin"]);
}

/// Two real clients connect to `srv`, which `crowd` (oldest first, at least three) fills, and
/// each stores a file (`real0.bin`, `real1.bin`): the two oldest of the crowd were closed to
/// make room for them, the next is still open. The clients, still connected.
fn real_clients_displace_the_oldest(srv: &TestServer, crowd: &[&TcpStream]) -> Vec<Client> {
    let real: Vec<Client> = (0..2)
        .map(|i| {
            let mut d = connect(srv.addr());
            assert_eq!(
                upload(&mut d, &format!("real{i}.bin"), b"real").code,
                Code::Stored
            );
            d
        })
        .collect();
    let mut buf = [0u8; 1];
    for &(mut s) in &crowd[..2] {
        assert_eq!(s.read(&mut buf).unwrap(), 0, "closed by the server");
    }
    let mut next = crowd[2];
    next.set_nonblocking(true).unwrap();
    assert_eq!(
        next.read(&mut buf).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "still open"
    );
    real
}

/// SECURITY.md, "Slow, stalled or chattering clients cannot lock others out": body bytes are
/// progress only 16 KiB at a time, so uploads trickled a byte at a time (ferry framing: one
/// DATA frame announcing the whole body; seed framing: a name line, then the body) hold no
/// slot past `--evict-after` once a newcomer needs it.
#[test]
fn trickled_bodies_lose_their_slots_to_a_real_client() {
    let mut srv = start(Config {
        max_connections: 4,
        evict_after: Duration::from_millis(300),
        ..config()
    });
    let size: u32 = 8 << 20;
    let mut tricklers = Vec::new();
    for i in 0..2 {
        let mut raw = Raw::connect(srv.addr());
        raw.offer(1, &format!("trickled{i}.bin"), size.into());
        assert!(matches!(raw.recv(), Some(Frame::Accept { .. })));
        raw.send(&[Frame::Begin { id: 1, from: 0 }, Frame::Data { len: size }]);
        tricklers.push(raw.s);
    }
    for i in 0..2 {
        let mut s = TcpStream::connect(srv.addr()).unwrap();
        s.write_all(format!("seed{i}.bin\n").as_bytes()).unwrap();
        tricklers.push(s);
    }
    let (stop, alive) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(4)),
    );
    let trickle = {
        let (stop, alive) = (Arc::clone(&stop), Arc::clone(&alive));
        thread::spawn(move || {
            // Every slot holder sends a body byte every 100 ms, until it is cut.
            while !stop.load(Ordering::Relaxed) {
                tricklers.retain_mut(|s| s.write_all(b"x").is_ok());
                alive.store(tricklers.len(), Ordering::Relaxed);
                thread::sleep(Duration::from_millis(100));
            }
        })
    };
    // Past --evict-after, however the bytes trickle.
    thread::sleep(Duration::from_millis(600));
    assert_eq!(
        upload_once(srv.addr(), "real.bin", b"real").code,
        Code::Stored
    );
    wait_for("the trickler that lost its slot to be cut", || {
        alive.load(Ordering::Relaxed) < 4
    });
    stop.store(true, Ordering::Relaxed);
    trickle.join().unwrap();
    srv.stop();
    assert!(srv.read("real.bin").unwrap() == b"real");
}

/// SECURITY.md, as above: a slow but real link (about 50 KiB/s here, in pieces of 4 KiB) makes
/// progress, however much longer than `--stall-timeout` its file takes.
#[test]
fn a_slow_real_link_is_not_stalled() {
    let mut srv = start(Config {
        stall_timeout: Duration::from_secs(1),
        ..config()
    });
    let body = data(128 << 10, 9);
    let mut raw = Raw::connect(srv.addr());
    raw.offer(1, "slow.bin", body.len() as u64);
    assert!(matches!(raw.recv(), Some(Frame::Accept { .. })));
    raw.send(&[Frame::Begin { id: 1, from: 0 }]);
    for piece in body.chunks(4 << 10) {
        raw.data(piece);
        thread::sleep(Duration::from_millis(80));
    }
    assert_eq!(raw.end(1, &body), Code::Stored);
    drop(raw);
    srv.stop();
    assert!(srv.read("slow.bin").unwrap() == body);
}

/// Offers `name` at the size of `body`, waits for the ACCEPT, then begins it and sends (and
/// flushes) the first MiB of `body`.
fn send_first_mib(d: &mut Client, name: &str, body: &[u8]) {
    let id = d.conn_mut().offer(info(name, body.len() as u64)).unwrap();
    assert!(matches!(
        d.next_step().unwrap(),
        Step::Event(Event::Accepted { .. })
    ));
    d.conn_mut().begin(id, Hasher::new()).unwrap();
    d.send_body(&body[..1 << 20]).unwrap();
    d.flush().unwrap();
}

#[test]
fn shutdown_lets_a_transfer_in_flight_finish() {
    let mut srv = start(config());
    let body = data(2 << 20, 6);
    let mut d = connect(srv.addr());
    send_first_mib(&mut d, "inflight.bin", &body);

    let stop = srv.request_stop();
    stop.shutdown();
    let addr = srv.addr();
    wait_for("the listener to close", || {
        TcpStream::connect(addr).is_err()
    });
    d.send_body(&body[1 << 20..]).unwrap();
    d.conn_mut().end().unwrap();
    match d.next_step().unwrap() {
        Step::Event(Event::Result { code, .. }) => assert_eq!(code, Code::Stored),
        other => panic!("expected RESULT, got {other:?}"),
    }
    // Nothing in flight any more: the server says goodbye.
    match d.next_step().unwrap() {
        Step::Event(Event::PeerError { code, .. }) => assert_eq!(code, Code::ShuttingDown),
        other => panic!("expected SHUTTING_DOWN, got {other:?}"),
    }
    srv.stop();
    assert!(srv.read("inflight.bin").unwrap() == body);
}

/// PROTOCOL.md §4.12: a client still sending when the grace ends is cut off with ERROR
/// `ShuttingDown`, and reads it: the server reads and drops what it still sends before it
/// closes, instead of resetting the connection under the ERROR.
#[test]
fn a_body_cut_off_by_the_end_of_the_grace_is_told_why() {
    let mut srv = start(Config {
        grace: Duration::from_millis(200),
        ..config()
    });
    let body = data(8 << 20, 9);
    let mut d = connect(srv.addr());
    send_first_mib(&mut d, "late.bin", &body);
    let stop = srv.request_stop();
    stop.shutdown();
    // Past the grace: the server has sent its ERROR, and what follows reaches it only after.
    thread::sleep(Duration::from_millis(600));
    // The server may be gone by the end of this: only what is read next matters.
    let _ = d.send_body(&body[1 << 20..]).and_then(|()| d.flush());
    match d.next_step() {
        Ok(Step::Event(Event::PeerError { code, .. })) => assert_eq!(code, Code::ShuttingDown),
        other => panic!("expected SHUTTING_DOWN, got {other:?}"),
    }
    srv.stop();
}

#[test]
fn shutdown_closes_idle_connections_at_once_and_refuses_new_files() {
    let mut srv = start(Config {
        grace: Duration::from_secs(60),
        ..config()
    });
    let mut idle = connect(srv.addr());
    srv.request_stop().shutdown();
    match idle.next_step().unwrap() {
        Step::Event(Event::PeerError { code, .. }) => assert_eq!(code, Code::ShuttingDown),
        other => panic!("expected SHUTTING_DOWN, got {other:?}"),
    }
    // Returns although the grace period is a minute: nothing was in flight.
    srv.stop();
}

#[test]
fn after_the_grace_period_unfinished_files_are_not_published() {
    let mut srv = start(Config {
        grace: Duration::from_millis(200),
        ..config()
    });
    let body = data(2 << 20, 8);
    let mut d = connect(srv.addr());
    send_first_mib(&mut d, "cut.bin", &body);
    wait_for("the first bytes to land", || srv.partials().len() == 1);
    srv.stop();
    assert!(srv.read("cut.bin").is_none());
    assert_eq!(srv.partials().len(), 1, "kept for resume");
}
