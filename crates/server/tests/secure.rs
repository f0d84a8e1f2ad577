//! TLS and token authentication: a pinned self-signed certificate, plain and seed connections
//! refused when TLS or a token is required, wrong tokens denied before anything reaches the
//! disk, failed attempts limited per source, a trickled handshake cut by the deadline.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use common::*;
use ferry_proto::wire::{Frame, MAGIC, VERSION};
use ferry_proto::{Code, Connection, Driver, Event, Step};
use ferry_secure::{ClientTls, Fingerprint, SecureError, ServerTls, Stream, Token, Trust};
use ferry_server::Config;

const TOKEN: &[u8] = b"correct horse battery staple";

type TlsClient = Driver<Stream>;

/// A self-signed certificate in a fresh state folder (kept alive by the returned guard).
fn self_signed() -> (ServerTls, tempfile::TempDir) {
    let state = tempfile::tempdir().unwrap();
    let tls = ServerTls::self_signed(&state.path().join("tls")).unwrap();
    (tls, state)
}

fn token() -> Token {
    Token::new(TOKEN.to_vec()).unwrap()
}

fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.set_write_timeout(Some(PATIENCE)).unwrap();
    s
}

/// Connects over TLS pinning `fp`, sends HELLO with `token`, and returns the driver without
/// waiting for the answer.
fn tls_connect(
    addr: SocketAddr,
    fp: Fingerprint,
    token: Option<&[u8]>,
) -> Result<TlsClient, SecureError> {
    let tls = ClientTls::new(Trust::Pin(fp))?;
    let stream = ferry_secure::connect(&tls, "localhost", tcp(addr))?;
    assert!(stream.is_tls());
    let mut d = Driver::new(stream, Connection::client(token).unwrap());
    d.flush().unwrap();
    Ok(d)
}

/// The server's first answer to HELLO.
fn answer<S: Read + Write>(d: &mut Driver<S>) -> Event {
    match d.next_step() {
        Ok(Step::Event(e)) => e,
        other => panic!("expected an event, got {other:?}"),
    }
}

/// A refusal of the token: a client that gave none is told so.
fn expect_denied<S: Read + Write>(d: &mut Driver<S>) {
    match answer(d) {
        Event::PeerError { code, reason } => {
            assert_eq!(code, Code::Denied);
            assert!(
                [
                    "authentication failed",
                    "authentication failed (no token given; this server requires one)"
                ]
                .contains(&reason.as_str()),
                "{reason}"
            );
        }
        other => panic!("expected DENIED, got {other:?}"),
    }
}

fn welcomed<S: Read + Write>(mut d: Driver<S>) -> Driver<S> {
    match answer(&mut d) {
        Event::Welcome { .. } => d,
        other => panic!("expected WELCOME, got {other:?}"),
    }
}

/// Ends a TLS client cleanly (close_notify) and reads the server's end.
fn close(d: TlsClient) {
    let (mut stream, _) = d.into_parts();
    stream.shutdown_write().unwrap();
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
}

/// Whether the server closed (or reset) the connection; reads and drops anything before.
fn closed_by_server(mut s: TcpStream) -> bool {
    let mut sink = Vec::new();
    match s.read_to_end(&mut sink) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

#[test]
fn tls_upload_and_download_with_a_pinned_self_signed_certificate() {
    let (tls, _state) = self_signed();
    let fp = tls.fingerprint();
    let mut srv = start(Config {
        tls: Some(tls),
        token: Some(token()),
        ..config()
    });
    let body = data(3_000_123, 5);
    let mut d = welcomed(tls_connect(srv.addr(), fp, Some(TOKEN)).unwrap());
    assert_eq!(upload(&mut d, "secret.bin", &body).code, Code::Stored);
    assert_eq!(upload(&mut d, "empty.txt", b"").code, Code::Stored);
    let (got, info) = download(&mut d, "secret.bin").unwrap();
    assert_eq!(got, body);
    assert_eq!(info.size, Some(body.len() as u64));
    close(d);

    // A second connection downloads what the first stored.
    let mut d = welcomed(tls_connect(srv.addr(), fp, Some(TOKEN)).unwrap());
    assert_eq!(download(&mut d, "empty.txt").unwrap().0, b"");
    close(d);
    srv.stop();
    assert_eq!(srv.listing(), vec!["empty.txt", "secret.bin"]);
    assert_eq!(srv.read("secret.bin").unwrap(), body);
}

#[test]
fn tls_without_a_token_works_and_a_wrong_pin_is_refused_by_the_client() {
    let (tls, _state) = self_signed();
    let fp = tls.fingerprint();
    let mut srv = start(Config {
        tls: Some(tls),
        ..config()
    });
    let mut d = welcomed(tls_connect(srv.addr(), fp, None).unwrap());
    assert_eq!(upload(&mut d, "a.txt", b"a").code, Code::Stored);
    close(d);
    let wrong = Fingerprint::from_bytes([7; 32]);
    match tls_connect(srv.addr(), wrong, None) {
        Err(SecureError::PinMismatch { got, .. }) => assert_eq!(got, fp),
        other => panic!("expected a pin mismatch, got {other:?}"),
    }
    srv.stop();
    assert_eq!(srv.listing(), vec!["a.txt"]);
}

#[test]
fn plain_clients_are_refused_when_tls_is_required() {
    let (tls, _state) = self_signed();
    let mut srv = start(Config {
        tls: Some(tls),
        ..config()
    });
    // A plain ferry client is told why.
    let mut d = connect_unwelcomed(srv.addr());
    match answer(&mut d) {
        Event::PeerError { code, reason } => {
            assert_eq!(code, Code::Unsupported);
            assert!(reason.contains("requires TLS"), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // A seed client is dropped, its file never stored.
    let mut s = tcp(srv.addr());
    let _ = s.write_all(b"seed.txt\nhello");
    let _ = s.shutdown(Shutdown::Write);
    assert!(closed_by_server(s));
    srv.stop();
    assert!(srv.listing().is_empty(), "{:?}", srv.listing());
}

#[test]
fn a_tls_client_to_a_plain_server_is_closed() {
    let srv = start(config());
    let (tls, _state) = self_signed();
    assert!(tls_connect(srv.addr(), tls.fingerprint(), None).is_err());
    // The server still serves plain clients.
    assert_eq!(upload_once(srv.addr(), "p.txt", b"p").code, Code::Stored);
}

#[test]
fn the_right_token_stores_a_wrong_or_missing_one_is_denied_before_the_disk() {
    let mut srv = start(Config {
        token: Some(token()),
        ..config()
    });
    let mut d = connect_with(srv.addr(), Some(TOKEN));
    assert_eq!(upload(&mut d, "ok.txt", b"ok").code, Code::Stored);
    drop(d);

    expect_denied(&mut connect_with_unwelcomed(srv.addr(), Some(b"wrong")));
    expect_denied(&mut connect_with_unwelcomed(srv.addr(), None));
    // A prefix of the token is not the token.
    expect_denied(&mut connect_with_unwelcomed(srv.addr(), Some(&TOKEN[..5])));

    // A client that does not wait for the answer: HELLO with a wrong token, then an OFFER
    // and a body in the same write. Nothing of it may reach the folder.
    let mut raw = Raw { s: tcp(srv.addr()) };
    let mut out = MAGIC.to_vec();
    Frame::Hello {
        min: VERSION,
        max: VERSION,
        token: b"guess".to_vec(),
    }
    .encode(&mut out);
    file_offer(1, "sneaky.txt", 4).encode(&mut out);
    raw.bytes(&out);
    match raw.recv() {
        Some(Frame::Error { code, .. }) => assert_eq!(code, Code::Denied),
        other => panic!("expected DENIED, got {other:?}"),
    }
    assert_eq!(raw.recv(), None, "the server closes after denying");
    srv.stop();
    assert_eq!(srv.listing(), vec!["ok.txt"]);
}

/// A plain ferry client sending `token`, welcomed.
fn connect_with(addr: SocketAddr, token: Option<&[u8]>) -> Client {
    welcomed(connect_with_unwelcomed(addr, token))
}

fn connect_with_unwelcomed(addr: SocketAddr, token: Option<&[u8]>) -> Client {
    let mut d = Driver::new(tcp(addr), Connection::client(token).unwrap());
    d.flush().unwrap();
    d
}

#[test]
fn after_too_many_failures_a_source_is_refused_before_the_handshake() {
    let (tls, _state) = self_signed();
    let fp = tls.fingerprint();
    let srv = start(Config {
        tls: Some(tls),
        token: Some(token()),
        max_auth_failures: 2,
        auth_window: Duration::from_secs(3600),
        ..config()
    });
    // A right token resets nothing it has not counted; two wrong ones reach the limit.
    welcomed(tls_connect(srv.addr(), fp, Some(TOKEN)).unwrap());
    expect_denied(&mut tls_connect(srv.addr(), fp, Some(b"nope")).unwrap());
    expect_denied(&mut tls_connect(srv.addr(), fp, None).unwrap());
    // Now even the right token is refused, before the TLS handshake: the TLS client gets no
    // handshake, only a plain ERROR (which the `ferry` client reads out, see its tests).
    match tls_connect(srv.addr(), fp, Some(TOKEN)) {
        Err(SecureError::Handshake { .. } | SecureError::HandshakeIo { .. }) => {}
        other => panic!("expected the handshake to fail, got {other:?}"),
    }
    // A plain connection is told why and for how long, then closed.
    let mut d = connect_with_unwelcomed(srv.addr(), Some(TOKEN));
    expect_blocked(&mut d);
}

/// The refusal of a source blocked after failed logins: it says so and for how long.
fn expect_blocked<S: Read + Write>(d: &mut Driver<S>) {
    match answer(d) {
        Event::PeerError { code, reason } => {
            assert_eq!(code, Code::Denied);
            assert!(
                reason.starts_with("blocked after too many failed logins")
                    && reason.ends_with(" s"),
                "{reason}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_failure_limit_also_holds_without_tls() {
    let srv = start(Config {
        token: Some(token()),
        max_auth_failures: 1,
        auth_window: Duration::from_secs(3600),
        ..config()
    });
    expect_denied(&mut connect_with_unwelcomed(srv.addr(), Some(b"x")));
    let mut d = connect_with_unwelcomed(srv.addr(), Some(TOKEN));
    expect_blocked(&mut d);
}

#[test]
fn the_seed_framing_is_refused_when_a_token_is_required() {
    let mut srv = start(Config {
        token: Some(token()),
        ..config()
    });
    let mut s = tcp(srv.addr());
    let _ = s.write_all(b"report.pdf\nnot without a token");
    let _ = s.shutdown(Shutdown::Write);
    assert!(closed_by_server(s));
    // Ferry clients with the token are still served.
    let mut d = connect_with(srv.addr(), Some(TOKEN));
    assert_eq!(upload(&mut d, "ok.txt", b"ok").code, Code::Stored);
    drop(d);
    srv.stop();
    assert_eq!(srv.listing(), vec!["ok.txt"]);
}

#[test]
fn the_seed_framing_is_refused_inside_tls_too() {
    let (tls, _state) = self_signed();
    let fp = tls.fingerprint();
    let mut srv = start(Config {
        tls: Some(tls),
        ..config()
    });
    let client = ClientTls::new(Trust::Pin(fp)).unwrap();
    let mut s = ferry_secure::connect(&client, "localhost", tcp(srv.addr())).unwrap();
    let _ = s.write_all(b"seed.txt\nover TLS");
    let _ = s.flush();
    let _ = s.shutdown_write();
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink);
    srv.stop();
    assert!(srv.listing().is_empty(), "{:?}", srv.listing());
}

#[test]
fn a_trickled_tls_handshake_is_cut_by_the_header_deadline() {
    let (tls, _state) = self_signed();
    let srv = start(Config {
        tls: Some(tls),
        header_timeout: Duration::from_millis(300),
        ..config()
    });
    let s = tcp(srv.addr());
    let mut writer = s.try_clone().unwrap();
    let trickle = thread::spawn(move || {
        // A TLS record header announcing 512 bytes of handshake, then one byte every 20 ms:
        // the record never completes before the deadline, which alone ends it.
        let mut bytes = vec![0x16, 0x03, 0x01, 0x02, 0x00];
        bytes.resize(5 + 512, 0);
        for b in bytes {
            if writer.write_all(&[b]).is_err() {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        false
    });
    assert!(
        closed_by_server(s),
        "the server closed the trickling handshake"
    );
    assert!(trickle.join().unwrap(), "the server stopped reading");
}

#[test]
fn a_busy_tls_server_says_so_over_tls() {
    let (tls, _state) = self_signed();
    let fp = tls.fingerprint();
    let srv = start(Config {
        tls: Some(tls),
        max_connections: 1,
        max_handshakes: 0,
        ..config()
    });
    let _held = welcomed(tls_connect(srv.addr(), fp, None).unwrap());
    let mut d = tls_connect(srv.addr(), fp, None).unwrap();
    match answer(&mut d) {
        Event::PeerError { code, .. } => assert_eq!(code, Code::Busy),
        other => panic!("expected BUSY, got {other:?}"),
    }
}

#[test]
fn a_message_begun_with_the_previous_one_must_end_within_the_header_timeout() {
    let mut srv = start(Config {
        header_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_secs(30),
        ..config()
    });
    let mut raw = Raw::connect(srv.addr());
    let offer = |id, name: &str| {
        let mut out = Vec::new();
        file_offer(id, name, 1).encode(&mut out);
        out
    };
    // One whole OFFER and the first byte of the next, in one write; the rest comes after the
    // header timeout (but well within the idle timeout): the second message is cut.
    let first = offer(1, "a.txt");
    let second = offer(2, "b.txt");
    let mut out = first.clone();
    out.push(second[0]);
    raw.bytes(&out);
    match raw.recv() {
        Some(Frame::Accept { id, .. }) => assert_eq!(id, 1),
        other => panic!("expected ACCEPT, got {other:?}"),
    }
    thread::sleep(Duration::from_millis(600));
    let _ = raw.s.write_all(&second[1..]);
    match raw.recv() {
        Some(Frame::Error { code, .. }) => assert_eq!(code, Code::Timeout),
        other => panic!("expected a timeout, got {other:?}"),
    }
    srv.stop();
    assert!(srv.listing().is_empty(), "{:?}", srv.listing());
}
