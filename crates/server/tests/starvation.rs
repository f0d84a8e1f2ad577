//! A server that cannot be starved or held: chattering connections lose their slots to real
//! uploads, one address is capped, a connection that makes no progress is cut however often
//! it chatters, a client that stops reading a download is released within the idle timeout
//! and one short closing deadline, and a resume takes over from a connection cut off by the
//! network. Plain and TLS where the transport matters.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use ferry_proto::{Code, Connection, Driver, Event, Hasher, Name, Step};
use ferry_secure::{ClientTls, Fingerprint, ServerTls, Stream, Trust};
use ferry_server::Config;

type Conn = Driver<Stream<TcpStream>>;

/// How the test clients reach the server.
#[derive(Debug, Clone, Copy)]
enum Via {
    Plain,
    Tls(Fingerprint),
}

impl Via {
    /// Starts a server with `config`, over TLS for [`Via::Tls`] (the returned guard keeps the
    /// certificate's folder).
    fn start(tls: bool, config: Config) -> (TestServer, Via, tempfile::TempDir) {
        let state = tempfile::tempdir().unwrap();
        if !tls {
            return (start(config), Via::Plain, state);
        }
        let server_tls = ServerTls::self_signed(&state.path().join("tls")).unwrap();
        let via = Via::Tls(server_tls.fingerprint());
        let srv = start(Config {
            tls: Some(server_tls),
            ..config
        });
        (srv, via, state)
    }

    /// Connects and sends HELLO without waiting for the answer; `None` if the server is not
    /// there to talk to (a refused TLS handshake, say).
    fn hello(self, addr: SocketAddr) -> Option<Conn> {
        let s = TcpStream::connect(addr).ok()?;
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        s.set_write_timeout(Some(PATIENCE)).unwrap();
        let stream = match self {
            Via::Plain => Stream::plain(s),
            Via::Tls(fp) => {
                let tls = ClientTls::new(Trust::Pin(fp)).unwrap();
                ferry_secure::connect(&tls, "localhost", s).ok()?
            }
        };
        let mut d = Driver::new(stream, Connection::client(None).unwrap());
        d.flush().ok()?;
        Some(d)
    }

    /// Connects and waits for WELCOME; the server's error otherwise.
    fn welcomed(self, addr: SocketAddr) -> Result<Conn, String> {
        let mut d = self.hello(addr).ok_or("no connection")?;
        match d.next_step() {
            Ok(Step::Event(Event::Welcome { .. })) => Ok(d),
            other => Err(format!("{other:?}")),
        }
    }
}

/// A client that holds a connection with a GET of a missing file every `every` (a few dozen
/// bytes), and connects again whenever the server cuts it, until `stop`. Counts its
/// connections in `opened`.
fn chatter(
    via: Via,
    addr: SocketAddr,
    every: Duration,
    stop: &Arc<AtomicBool>,
    opened: &Arc<AtomicUsize>,
) -> thread::JoinHandle<()> {
    let (stop, opened) = (Arc::clone(stop), Arc::clone(opened));
    thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let Ok(mut d) = via.welcomed(addr) else {
                thread::sleep(Duration::from_millis(200));
                continue;
            };
            opened.fetch_add(1, Ordering::Relaxed);
            'held: while !stop.load(Ordering::Relaxed) {
                let name = Name::parse("missing.txt").unwrap();
                if d.conn_mut().get(name).is_err() || d.flush().is_err() {
                    break;
                }
                if !matches!(d.next_step(), Ok(Step::Event(Event::Refused { .. }))) {
                    break;
                }
                let until = Instant::now() + every;
                while Instant::now() < until {
                    if stop.load(Ordering::Relaxed) {
                        break 'held;
                    }
                    thread::sleep(Duration::from_millis(50));
                }
            }
            thread::sleep(Duration::from_millis(200));
        }
    })
}

/// The scenario, shortened: every slot held by a client sending a small GET well
/// within the idle timeout (reconnecting whenever it is cut), and real uploads one a second;
/// every upload is stored. Before, every one was refused as busy.
fn chattering_clients_do_not_lock_uploads_out(tls: bool) {
    let (mut srv, via, _state) = Via::start(
        tls,
        Config {
            max_connections: 4,
            idle_timeout: Duration::from_secs(4),
            ..config()
        },
    );
    let addr = srv.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicUsize::new(0));
    let chatterers: Vec<_> = (0..4)
        .map(|_| chatter(via, addr, Duration::from_secs(1), &stop, &opened))
        .collect();
    wait_for("the chatterers to hold every slot", || {
        opened.load(Ordering::Relaxed) >= 4
    });
    // Longer than the grace (2 s) a slot holder gets without progress.
    thread::sleep(Duration::from_millis(2500));
    let mut outcomes = Vec::new();
    for i in 0..4 {
        let name = format!("real-{i}.bin");
        let body = data(64 * 1024, i as u8);
        let outcome = via
            .welcomed(addr)
            .map(|mut d| upload(&mut d, &name, &body).code);
        outcomes.push(outcome);
        thread::sleep(Duration::from_secs(1));
    }
    stop.store(true, Ordering::Relaxed);
    for c in chatterers {
        c.join().unwrap();
    }
    assert!(
        outcomes.iter().all(|o| *o == Ok(Code::Stored)),
        "{outcomes:?}"
    );
    srv.stop();
    for i in 0..4 {
        assert_eq!(
            srv.read(&format!("real-{i}.bin")),
            Some(data(64 * 1024, i as u8))
        );
    }
}

#[test]
fn chattering_clients_do_not_lock_uploads_out_plain() {
    chattering_clients_do_not_lock_uploads_out(false);
}

#[test]
fn chattering_clients_do_not_lock_uploads_out_tls() {
    chattering_clients_do_not_lock_uploads_out(true);
}

#[test]
fn a_connection_without_progress_is_closed_however_often_it_chatters() {
    let srv = start(Config {
        idle_timeout: Duration::from_secs(4),
        stall_timeout: Duration::from_secs(1),
        ..config()
    });
    let mut d = Via::Plain.welcomed(srv.addr()).unwrap();
    // Progress (a stored file) resets the clock...
    assert_eq!(upload(&mut d, "real.txt", b"real").code, Code::Stored);
    let since = Instant::now();
    // ... a GET every 100 ms does not.
    let cut = loop {
        assert!(since.elapsed() < PATIENCE, "never cut");
        let name = Name::parse("missing.txt").unwrap();
        d.conn_mut().get(name).unwrap();
        d.flush().unwrap();
        match d.next_step() {
            Ok(Step::Event(Event::Refused { .. })) => {}
            other => break other,
        }
        thread::sleep(Duration::from_millis(100));
    };
    match cut {
        Ok(Step::Event(Event::PeerError { code, reason })) => {
            assert_eq!(code, Code::Timeout);
            assert!(reason.contains("no progress"), "{reason}");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    let after = since.elapsed();
    assert!(
        after < Duration::from_secs(3),
        "cut after {after:?}: the stall timeout is 1 s, the idle timeout 4 s"
    );
}

#[test]
fn one_address_gets_so_many_connections_and_is_told_why() {
    let srv = start(Config {
        max_per_source: 2,
        ..config()
    });
    // Counted from accept: a connection that has not even said HELLO counts.
    let silent = TcpStream::connect(srv.addr()).unwrap();
    let _welcomed = Via::Plain.welcomed(srv.addr()).unwrap();
    let mut third = Via::Plain.hello(srv.addr()).unwrap();
    match third.next_step() {
        Ok(Step::Event(Event::PeerError { code, reason })) => {
            assert_eq!(code, Code::Busy);
            assert!(reason.contains("per address"), "{reason}");
        }
        other => panic!("expected BUSY, got {other:?}"),
    }
    drop(silent);
    wait_for("a place for the address", || {
        Via::Plain.welcomed(srv.addr()).is_ok()
    });
}

/// The server's end of the TCP connection from `client`, as /proc/net/tcp shows it: its
/// state (`01` ESTABLISHED, `08` CLOSE_WAIT, ...) and its timer (`02`: keepalive), if any.
fn server_end(server: SocketAddr, client: SocketAddr) -> Option<(String, String)> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let port = |field: &str| u16::from_str_radix(field.rsplit(':').next().unwrap(), 16).unwrap();
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let timer = f[5].split(':').next().unwrap();
        (port(f[1]) == server.port() && port(f[2]) == client.port())
            .then(|| (f[3].to_owned(), timer.to_owned()))
    })
}

/// Whether the server still holds its end of the TCP connection from `client` open.
fn server_end_open(server: SocketAddr, client: SocketAddr) -> bool {
    server_end(server, client).is_some_and(|(state, _)| matches!(state.as_str(), "01" | "08"))
}

#[test]
fn accepted_connections_have_tcp_keepalive() {
    let srv = start(config());
    let d = Via::Plain.welcomed(srv.addr()).unwrap();
    let client = d.stream().tcp().local_addr().unwrap();
    let (state, timer) = server_end(srv.addr(), client).expect("the server's end");
    assert_eq!(state, "01");
    // An idle connection with keepalive has its keepalive timer running.
    assert_eq!(timer, "02", "no keepalive timer on the server's end");
}

/// A client that takes a few bytes of a large download, then stops reading (and never
/// closes): the server gives up after the idle timeout, and everything after that (the ERROR
/// it cannot deliver, the TLS close, the TCP close) shares one short deadline. Before, over
/// TLS, each of these waited a full idle timeout again.
fn a_client_that_stops_reading_is_released(tls: bool) {
    let idle = Duration::from_secs(2);
    let (srv, via, _state) = Via::start(
        tls,
        Config {
            idle_timeout: idle,
            ..config()
        },
    );
    // Far more than the socket buffers hold.
    std::fs::write(srv.dir.join("big.bin"), data(32 << 20, 5)).unwrap();
    let mut d = via.welcomed(srv.addr()).unwrap();
    d.conn_mut().get(Name::parse("big.bin").unwrap()).unwrap();
    d.flush().unwrap();
    let mut buf = vec![0u8; 4096];
    loop {
        match d.next_step().unwrap() {
            Step::Event(Event::Offer(o)) => d.conn_mut().accept(o.id, Hasher::new()).unwrap(),
            Step::Event(Event::Begin { .. }) => {}
            Step::Body(_) => {
                d.read_body(&mut buf).unwrap();
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
        d.flush().unwrap();
    }
    let stopped = Instant::now();
    let client = d.stream().tcp().local_addr().unwrap();
    assert!(server_end_open(srv.addr(), client));
    while server_end_open(srv.addr(), client) {
        assert!(stopped.elapsed() < PATIENCE, "the server never let go");
        thread::sleep(Duration::from_millis(50));
    }
    let held = stopped.elapsed();
    // The idle timeout, then one closing deadline of 1 s; 1.5 s more for a loaded machine.
    assert!(
        held < idle + Duration::from_millis(2500),
        "held for {held:?} with a {idle:?} idle timeout"
    );
    drop(d);
}

#[test]
fn a_client_that_stops_reading_is_released_plain() {
    a_client_that_stops_reading_is_released(false);
}

#[test]
fn a_client_that_stops_reading_is_released_tls() {
    a_client_that_stops_reading_is_released(true);
}

#[test]
fn a_resume_takes_over_from_a_connection_cut_off_by_the_network() {
    let mut srv = start(Config {
        idle_timeout: Duration::from_secs(60),
        ..config()
    });
    let body = data(4 << 20, 9);
    // The first connection sends half the file, then goes silent without closing: to the
    // server it looks like a client cut off by the network (no FIN ever comes).
    let mut cut = connect(srv.addr());
    let id = cut
        .conn_mut()
        .offer(info("movie.bin", body.len() as u64))
        .unwrap();
    assert!(matches!(
        cut.next_step().unwrap(),
        Step::Event(Event::Accepted { .. })
    ));
    cut.conn_mut().begin(id, Hasher::new()).unwrap();
    cut.send_body(&body[..2 << 20]).unwrap();
    cut.flush().unwrap();
    let silent = Instant::now();
    // A new connection resumes the same name: refused as busy for a few seconds, then it
    // takes over, long before the idle timeout would have freed the name.
    let outcome = loop {
        let o = upload_once(srv.addr(), "movie.bin", &body);
        if o.code != Code::Busy || silent.elapsed() > PATIENCE {
            break o;
        }
        thread::sleep(Duration::from_millis(200));
    };
    let took = silent.elapsed();
    assert_eq!(outcome.code, Code::Stored, "{outcome:?} after {took:?}");
    assert!(outcome.from.unwrap() > 0, "resumed: {outcome:?}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    // The stale connection was told and closed.
    match cut.next_step() {
        Ok(Step::Event(Event::PeerError { code, .. })) => assert_eq!(code, Code::Busy),
        other => panic!("expected the stale connection to be closed, got {other:?}"),
    }
    srv.stop();
    assert!(srv.read("movie.bin").unwrap() == body);
}
