//! Tokens, the failure limiter, and both together over TLS with the real protocol driver.

use std::fs;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpListener, TcpStream};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use ferry_proto::{Code, Connection, Driver, Event, Step};
use ferry_secure::{
    accept_any, connect, ClientTls, FailureLimiter, SecureError, ServerTls, SharedFailureLimiter,
    Token, Trust, MAX_TOKEN_LEN, OVERFLOW_BUCKETS, OVERFLOW_FACTOR, SITE_FACTOR, TOKEN_ENV,
};

#[cfg(unix)]
fn write_secret(path: &Path, content: &[u8], mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::write(path, content).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

#[cfg(not(unix))]
fn write_secret(path: &Path, content: &[u8], _mode: u32) {
    fs::write(path, content).unwrap();
}

#[test]
fn token_file_is_trimmed_of_one_newline() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("token");
    for (content, expected) in [
        (&b"s3cret\n"[..], &b"s3cret"[..]),
        (b"s3cret\r\n", b"s3cret"),
        (b"s3cret", b"s3cret"),
        (b"s3cret\n\n", b"s3cret\n"),
        (b" spaced \n", b" spaced "),
    ] {
        write_secret(&p, content, 0o600);
        let t = Token::from_file(&p).unwrap();
        assert_eq!(t.as_bytes(), expected, "{content:?}");
    }
}

#[cfg(unix)]
#[test]
fn token_file_readable_by_others_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("token");
    for mode in [0o644, 0o640, 0o604, 0o660, 0o620] {
        write_secret(&p, b"s3cret\n", mode);
        let err = Token::from_file(&p).unwrap_err();
        match &err {
            SecureError::InsecurePermissions { mode: m, path } => {
                assert_eq!(*m, mode);
                assert_eq!(path, &p);
            }
            other => panic!("expected InsecurePermissions, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains(&format!("chmod 600 {}", p.display())), "{msg}");
        assert!(!msg.contains("s3cret"), "{msg}");
    }
    write_secret(&p, b"s3cret\n", 0o400);
    assert!(Token::from_file(&p).is_ok());
}

#[test]
fn token_length_limits() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("token");
    for empty in [&b""[..], b"\n", b"\r\n"] {
        write_secret(&p, empty, 0o600);
        let err = Token::from_file(&p).unwrap_err();
        assert!(matches!(err, SecureError::BadToken { .. }), "{err:?}");
        assert!(err.to_string().contains("empty"), "{err}");
    }
    let mut max = vec![b'x'; MAX_TOKEN_LEN];
    max.push(b'\n');
    write_secret(&p, &max, 0o600);
    assert_eq!(
        Token::from_file(&p).unwrap().as_bytes().len(),
        MAX_TOKEN_LEN
    );
    write_secret(&p, &vec![b'x'; MAX_TOKEN_LEN + 1], 0o600);
    let err = Token::from_file(&p).unwrap_err();
    assert!(err.to_string().contains("longer than 1024"), "{err}");
    write_secret(&p, &vec![b'x'; 100_000], 0o600);
    assert!(matches!(
        Token::from_file(&p),
        Err(SecureError::BadToken { .. })
    ));
    assert!(Token::new(vec![]).is_err());
    assert!(Token::new(vec![0; MAX_TOKEN_LEN + 1]).is_err());
    // The limit is the HELLO frame's.
    assert_eq!(MAX_TOKEN_LEN, ferry_proto::wire::MAX_TOKEN_LEN);
}

#[test]
fn token_file_errors() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        Token::from_file(&dir.path().join("missing")),
        Err(SecureError::File { .. })
    ));
    assert!(Token::from_file(dir.path()).is_err());
}

#[test]
fn token_verify_is_exact() {
    let t = Token::new(b"correct horse".to_vec()).unwrap();
    assert!(t.verify(Some(b"correct horse")));
    assert!(!t.verify(Some(b"correct hors")));
    assert!(!t.verify(Some(b"correct horse ")));
    assert!(!t.verify(Some(b"Correct horse")));
    assert!(!t.verify(Some(b"")));
    assert!(!t.verify(None));
    let long = Token::new(vec![b'a'; MAX_TOKEN_LEN]).unwrap();
    assert!(long.verify(Some(&[b'a'; MAX_TOKEN_LEN])));
    assert!(!long.verify(Some(&[b'a'; MAX_TOKEN_LEN - 1])));
}

#[test]
fn token_is_never_printed() {
    let t = Token::new(b"hunter2".to_vec()).unwrap();
    assert_eq!(format!("{t:?}"), "Token(***)");
    assert_eq!(format!("{:?}", Some(t)), "Some(Token(***))");
}

#[test]
fn client_token_from_file_or_environment() {
    // The only test that touches FERRY_TOKEN.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("token");
    write_secret(&p, b"from-file\n", 0o600);
    std::env::remove_var(TOKEN_ENV);
    assert!(Token::for_client(None).unwrap().is_none());
    std::env::set_var(TOKEN_ENV, "");
    assert!(Token::for_client(None).unwrap().is_none());
    std::env::set_var(TOKEN_ENV, "from-env\n");
    assert_eq!(
        Token::for_client(None).unwrap().unwrap().as_bytes(),
        b"from-env"
    );
    // --token-file wins over the environment.
    assert_eq!(
        Token::for_client(Some(&p)).unwrap().unwrap().as_bytes(),
        b"from-file"
    );
    std::env::set_var(TOKEN_ENV, "x".repeat(MAX_TOKEN_LEN + 1));
    let err = Token::for_client(None).unwrap_err();
    assert!(err.to_string().contains(TOKEN_ENV), "{err}");
    std::env::remove_var(TOKEN_ENV);
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn at(base: Instant, secs: u64) -> Instant {
    base + Duration::from_secs(secs)
}

#[test]
fn limiter_blocks_after_n_failures_and_recovers_after_the_window() {
    let base = Instant::now();
    let mut lim = FailureLimiter::new(3, Duration::from_secs(60), 100);
    let a = ip("192.0.2.1");
    let b = ip("192.0.2.2");
    assert!(lim.check(a, base));
    lim.record_failure(a, at(base, 0));
    lim.record_failure(a, at(base, 1));
    assert!(lim.check(a, at(base, 2)), "two failures are not enough");
    lim.record_failure(a, at(base, 2));
    assert!(!lim.check(a, at(base, 3)), "the third blocks");
    assert!(lim.check(b, at(base, 3)), "other sources are unaffected");
    assert_eq!(
        lim.retry_after(a, at(base, 12)),
        Some(Duration::from_secs(50))
    );
    assert!(
        !lim.check(a, at(base, 61)),
        "blocked for a window after the third"
    );
    assert!(lim.check(a, at(base, 62)), "the window has passed");
    assert_eq!(lim.retry_after(a, at(base, 62)), None);
    // A fresh start: one failure does not block again.
    lim.record_failure(a, at(base, 63));
    assert!(lim.check(a, at(base, 64)));
}

#[test]
fn limiter_failures_spread_over_more_than_a_window_do_not_add_up() {
    let base = Instant::now();
    let mut lim = FailureLimiter::new(3, Duration::from_secs(60), 100);
    let a = ip("198.51.100.7");
    lim.record_failure(a, at(base, 0));
    lim.record_failure(a, at(base, 30));
    lim.record_failure(a, at(base, 61)); // a new window starts here
    assert!(lim.check(a, at(base, 62)));
    lim.record_failure(a, at(base, 62));
    assert!(lim.check(a, at(base, 63)));
    lim.record_failure(a, at(base, 63));
    assert!(!lim.check(a, at(base, 64)));
}

#[test]
fn limiter_success_forgets_and_sources_are_grouped() {
    let base = Instant::now();
    let mut lim = FailureLimiter::new(2, Duration::from_secs(10), 100);
    let a = ip("203.0.113.9");
    lim.record_failure(a, base);
    lim.record_success(a);
    lim.record_failure(a, at(base, 1));
    assert!(lim.check(a, at(base, 1)), "the success reset the count");

    // One IPv6 /64 is one source; IPv4-mapped IPv6 is IPv4.
    lim.record_failure(ip("2001:db8::1"), base);
    lim.record_failure(ip("2001:db8::ffff:2"), base);
    assert!(!lim.check(ip("2001:db8::3"), base));
    assert!(lim.check(ip("2001:db8:0:1::1"), base));
    lim.record_failure(ip("::ffff:192.0.2.50"), base);
    lim.record_failure(ip("192.0.2.50"), base);
    assert!(!lim.check(ip("192.0.2.50"), base));
}

#[test]
fn limiter_memory_is_bounded_and_never_forgets_a_counting_source() {
    let base = Instant::now();
    let mut lim = FailureLimiter::new(1, Duration::from_secs(60), 3);
    let v4 = |i: u8| IpAddr::V4(Ipv4Addr::new(10, 0, i, 1));
    for i in 0..10u8 {
        lim.record_failure(v4(i), at(base, u64::from(i)));
        assert!(lim.tracked() <= 3);
    }
    assert_eq!(lim.tracked(), 3);
    let now = at(base, 10);
    // The first three keep their counters (newer sources do not push them out) ...
    for i in 0..3u8 {
        assert!(!lim.check(v4(i), now), "10.0.{i}.1");
    }
    // ... and the later ones counted in overflow buckets, whose allowance is larger.
    for i in 3..10u8 {
        assert!(lim.check(v4(i), now), "10.0.{i}.1");
    }
    // Expired counters are dropped when checked.
    assert!(lim.check(v4(0), at(base, 1000)));
    assert_eq!(lim.tracked(), 0);
}

/// Guesses one at a time from each source, as long as the limiter lets it, at most `tries`
/// each; returns how many guesses were let through.
fn guesses_let_through(
    lim: &mut FailureLimiter,
    sources: impl Iterator<Item = IpAddr>,
    tries: u32,
    now: Instant,
) -> u64 {
    let mut through = 0;
    for ip in sources {
        for _ in 0..tries {
            if !lim.check(ip, now) {
                break;
            }
            through += 1;
            lim.record_failure(ip, now);
        }
    }
    through
}

fn in_site(site: u16, net: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, site, net, 0, 0, 0, 1))
}

#[test]
fn limiter_every_64_of_one_48_is_bounded_by_the_site() {
    let now = Instant::now();
    let max = 5;
    let mut lim = FailureLimiter::new(max, Duration::from_secs(60), 4096);
    // All 65,536 /64s of 2001:db8:7::/48, each guessing up to its own allowance.
    let through = guesses_let_through(&mut lim, (0..=u16::MAX).map(|n| in_site(7, n)), max, now);
    assert_eq!(through, u64::from(max * SITE_FACTOR), "the /48's allowance");
    assert!(!lim.check(in_site(7, 0xbeef), now), "the whole /48 waits");
    // A well-behaved source elsewhere is not blocked by that site.
    assert!(lim.check(in_site(8, 0), now), "another /48");
    assert!(lim.check(ip("192.0.2.1"), now), "IPv4");
    lim.record_failure(in_site(8, 0), now);
    assert!(
        lim.check(in_site(8, 0), now),
        "one failure is within its allowance"
    );
    // After the window, the site may try again.
    assert!(lim.check(in_site(7, 1), now + Duration::from_secs(61)));
}

#[test]
fn limiter_more_sources_than_its_capacity_are_bounded_in_total() {
    let now = Instant::now();
    let (max, capacity) = (5, 100);
    let bound =
        u64::from(max) * (capacity as u64 + (OVERFLOW_BUCKETS as u64) * u64::from(OVERFLOW_FACTOR));
    // 200,000 IPv4 sources, spread over as many /24s as possible, each guessing up to twice
    // its allowance: the total stays under the bound, and a second wave in the same window
    // gets nothing more.
    let source = |i: u32| IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + (i << 8) + 1));
    let mut lim = FailureLimiter::new(max, Duration::from_secs(60), capacity);
    let first = guesses_let_through(&mut lim, (0..100_000).map(source), 2 * max, now);
    assert!(
        first <= bound,
        "{first} guesses went through, more than {bound}"
    );
    assert!(
        first >= u64::from(max) * capacity as u64,
        "tracked sources got their allowance"
    );
    assert_eq!(lim.tracked(), capacity);
    let later = now + Duration::from_secs(30);
    let second = guesses_let_through(&mut lim, (100_000..200_000).map(source), 2 * max, later);
    assert_eq!(second, 0, "every bucket is full until the window ends");
    // Once the window has passed, the limiter lets sources try again.
    assert!(lim.check(source(7), now + Duration::from_secs(121)));
}

#[test]
fn shared_limiter_across_threads() {
    let base = Instant::now();
    let shared = SharedFailureLimiter::new(FailureLimiter::new(8, Duration::from_secs(5), 10));
    let a = ip("192.0.2.77");
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let s = shared.clone();
            thread::spawn(move || {
                s.record_failure(a, base);
                s.record_failure(a, base);
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert!(!shared.check(a, base));
    assert_eq!(shared.tracked(), 1);
    shared.record_success(a);
    assert!(shared.check(a, base));
}

/// What the server did with one connection.
#[derive(Debug, PartialEq)]
enum Outcome {
    Welcomed,
    Denied,
    RefusedBeforeTls,
}

/// The recipe for adapters: limiter check before any TLS work, TLS, HELLO, token check, and a
/// failure counted against the source.
#[test]
fn token_over_tls_with_the_protocol_driver() {
    let state = tempfile::tempdir().unwrap();
    let tls = ServerTls::self_signed(state.path()).unwrap();
    let fp = tls.fingerprint();
    let server_token = Token::new(b"the right token".to_vec()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Synthetic time: the clock never moves, so the block cannot expire during the test.
    let now = Instant::now();
    let server = thread::spawn(move || {
        let mut limiter = FailureLimiter::new(2, Duration::from_secs(60), 16);
        let mut outcomes = Vec::new();
        for _ in 0..4 {
            let (tcp, addr) = listener.accept().unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            if !limiter.check(addr.ip(), now) {
                outcomes.push(Outcome::RefusedBeforeTls);
                continue; // dropped: closed without a byte
            }
            let stream = accept_any(Some(&tls), true, tcp).unwrap();
            let mut driver = Driver::new(stream, Connection::server());
            let Step::Event(Event::Hello { token, .. }) = driver.next_step().unwrap() else {
                panic!("expected HELLO");
            };
            if server_token.verify(token.as_deref()) {
                limiter.record_success(addr.ip());
                driver.conn_mut().welcome().unwrap();
                outcomes.push(Outcome::Welcomed);
            } else {
                limiter.record_failure(addr.ip(), now);
                driver
                    .conn_mut()
                    .close_with_error(Code::Denied, "authentication failed");
                outcomes.push(Outcome::Denied);
            }
            driver.flush().unwrap();
            driver.stream_mut().shutdown_write().unwrap();
            let mut rest = Vec::new();
            let _ = driver.stream_mut().read_to_end(&mut rest);
        }
        outcomes
    });

    let client_tls = ClientTls::new(Trust::Pin(fp)).unwrap();
    let hello = |token: Option<&[u8]>| -> Result<Event, SecureError> {
        let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let stream = connect(&client_tls, "localhost", tcp)?;
        let mut driver = Driver::new(stream, Connection::client(token).unwrap());
        let event = match driver.next_step().unwrap() {
            Step::Event(e) => e,
            other => panic!("unexpected {other:?}"),
        };
        // Close cleanly: end our side, then wait for the server's end.
        driver.stream_mut().shutdown_write().unwrap();
        let mut rest = Vec::new();
        let _ = driver.stream_mut().read_to_end(&mut rest);
        Ok(event)
    };
    assert!(matches!(
        hello(Some(b"the right token")).unwrap(),
        Event::Welcome { .. }
    ));
    assert!(matches!(
        hello(Some(b"a wrong token")).unwrap(),
        Event::PeerError {
            code: Code::Denied,
            ..
        }
    ));
    assert!(matches!(
        hello(None).unwrap(),
        Event::PeerError {
            code: Code::Denied,
            ..
        }
    ));
    // Two failures: the source is now refused before the TLS handshake.
    let err = hello(Some(b"the right token")).unwrap_err();
    assert!(
        matches!(
            err,
            SecureError::HandshakeIo { .. } | SecureError::Handshake { .. }
        ),
        "{err:?}"
    );
    assert_eq!(
        server.join().unwrap(),
        vec![
            Outcome::Welcomed,
            Outcome::Denied,
            Outcome::Denied,
            Outcome::RefusedBeforeTls
        ]
    );
}

#[test]
fn token_new_keeps_bytes_as_they_are() {
    let t = Token::new(b"with newline\n".to_vec()).unwrap();
    assert_eq!(t.as_bytes(), b"with newline\n");
    assert!(matches!(
        Token::new(vec![]),
        Err(SecureError::BadToken { .. })
    ));
}
