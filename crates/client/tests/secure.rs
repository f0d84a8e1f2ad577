//! TLS and tokens: against the real server (`Config::tls`, `Config::token`) and, where the test
//! must see what reaches the wire, against a server scripted from `ferry_secure` and the
//! protocol driver.

mod common;

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::thread;
use std::time::Duration;

use common::{data, ferry, ferry_env, opts, sources, stderr, token_file, write, TestServer};
use ferry_client::download::{self, Dest};
use ferry_client::{exit, upload, ClientError, Options, Status};
use ferry_proto::{Code, Connection, Driver, Event, Name, Step};
use ferry_secure::{accept, ClientTls, Fingerprint, SecureError, ServerTls, Token, Trust};
use ferry_test_ca::ca_and_leaf;

const TOKEN: &str = "correct horse battery staple";

/// A server that requires TLS (a self-signed certificate) and, if given, a token.
struct Secure {
    server: TestServer,
    fingerprint: Fingerprint,
    _state: tempfile::TempDir,
}

fn secure_server(token: Option<&str>) -> Secure {
    let state = tempfile::tempdir().unwrap();
    let tls = ServerTls::self_signed(state.path()).unwrap();
    let fingerprint = tls.fingerprint();
    let token = token.map(|t| Token::new(t.as_bytes().to_vec()).unwrap());
    let server = TestServer::with(|c| {
        c.tls = Some(tls);
        c.token = token;
    });
    Secure {
        server,
        fingerprint,
        _state: state,
    }
}

fn pinned(fp: Fingerprint, token: Option<&str>) -> Options {
    Options {
        tls: Some(ClientTls::new(Trust::Pin(fp)).unwrap()),
        token: token.map(|t| Token::new(t.as_bytes().to_vec()).unwrap()),
        ..opts()
    }
}

fn arg(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn pinned_tls_with_a_token_uploads_and_downloads_identical_files() {
    let s = secure_server(Some(TOKEN));
    let local = tempfile::tempdir().unwrap();
    let big = data(3 << 20, 1);
    write(&local.path().join("up/big.bin"), &big);
    write(&local.path().join("up/small.txt"), b"small");
    let o = pinned(s.fingerprint, Some(TOKEN));

    let sent = upload::send(
        &s.server.target(),
        sources(&[&local.path().join("up")]),
        &o,
        &mut (),
    );

    assert_eq!(sent.exit_code(), exit::OK, "{:?}", sent.error);
    assert!(fs::read(s.server.path("up/big.bin")).unwrap() == big);
    assert_eq!(fs::read(s.server.path("up/small.txt")).unwrap(), b"small");

    let out = tempfile::tempdir().unwrap();
    let names = vec![Name::parse("up/big.bin").unwrap()];
    let got = download::get(
        &s.server.target(),
        names,
        &Dest::Dir(out.path().to_owned()),
        &o,
        &mut (),
    );
    assert_eq!(got.exit_code(), exit::OK, "{:?}", got.error);
    assert!(fs::read(out.path().join("up/big.bin")).unwrap() == big);
}

#[test]
fn the_binary_pins_and_reads_its_token_file() {
    let s = secure_server(Some(TOKEN));
    let local = tempfile::tempdir().unwrap();
    let file = local.path().join("f.bin");
    let content = data(200_000, 2);
    write(&file, &content);
    let token = token_file(local.path(), TOKEN);
    let target = s.server.target().to_string();
    let pin = s.fingerprint.to_string();

    let out = ferry(&[
        "send",
        &target,
        arg(&file),
        "--pin",
        &pin,
        "--token-file",
        arg(&token),
    ]);

    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(fs::read(s.server.path("f.bin")).unwrap() == content);
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
    // FERRY_TOKEN works as well, for get.
    let dl = tempfile::tempdir().unwrap();
    let out = ferry_env(
        &["get", &target, "f.bin", "-o", arg(dl.path()), "--pin", &pin],
        &[("FERRY_TOKEN", TOKEN)],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(fs::read(dl.path().join("f.bin")).unwrap() == content);
}

#[test]
fn a_wrong_or_missing_token_is_denied_with_exit_3_and_nothing_stored() {
    let s = secure_server(Some(TOKEN));
    let local = tempfile::tempdir().unwrap();
    let file = local.path().join("f.txt");
    write(&file, b"must not arrive");
    let target = s.server.target().to_string();
    let pin = s.fingerprint.to_string();

    for env in [&[("FERRY_TOKEN", "a wrong token")][..], &[]] {
        let out = ferry_env(&["send", &target, arg(&file), "--pin", &pin], env);
        assert_eq!(out.status.code(), Some(3), "{env:?}: {}", stderr(&out));
        let err = stderr(&out);
        let said = if env.is_empty() {
            "authentication failed (no token given; this server requires one): check \
             FERRY_TOKEN / --token-file"
        } else {
            "authentication failed: check FERRY_TOKEN / --token-file"
        };
        assert!(err.contains(said), "{err}");
        assert!(
            !err.contains("a wrong token"),
            "the token is never printed: {err}"
        );
        assert!(!err.contains("f.txt"), "the refusal alone: {err}");
    }
    assert!(
        common::tree(s.server.dir.path()).is_empty(),
        "nothing stored"
    );

    let o = pinned(s.fingerprint, Some("a wrong token"));
    let outcome = upload::send(&s.server.target(), sources(&[&file]), &o, &mut ());
    assert!(
        matches!(outcome.error, Some(ClientError::Denied { .. })),
        "{:?}",
        outcome.error
    );
    assert_eq!(outcome.exit_code(), exit::REFUSED);
}

#[test]
fn a_wrong_pin_is_refused_with_exit_6_and_nothing_stored() {
    let s = secure_server(Some(TOKEN));
    let local = tempfile::tempdir().unwrap();
    let file = local.path().join("f.txt");
    write(&file, b"must not arrive");
    let wrong = Fingerprint::from_bytes([7; 32]).to_string();

    let out = ferry_env(
        &[
            "send",
            &s.server.target().to_string(),
            arg(&file),
            "--pin",
            &wrong,
        ],
        &[("FERRY_TOKEN", TOKEN)],
    );

    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("does not match the pinned fingerprint"),
        "{err}"
    );
    assert!(
        err.contains(&s.fingerprint.to_string()),
        "shows what it got: {err}"
    );
    assert!(err.contains("nothing was sent"), "{err}");
    assert!(common::tree(s.server.dir.path()).is_empty());
}

/// A server scripted from `ferry_secure::accept`: the handshake with a client that pins
/// another certificate fails, so not one byte of application data (HELLO, the token) reaches
/// it; a client pinning the right one gets through to HELLO, token included.
#[test]
fn a_wrong_pin_sends_no_byte_of_hello_or_token() {
    let state = tempfile::tempdir().unwrap();
    let tls = ServerTls::self_signed(state.path()).unwrap();
    let right = tls.fingerprint();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = thread::spawn(move || {
        let mut seen = Vec::new();
        for _ in 0..2 {
            let (tcp, _) = listener.accept().unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let stream = match accept(&tls, tcp) {
                Ok(s) => s,
                Err(e) => {
                    seen.push(Err(e.to_string()));
                    continue;
                }
            };
            let mut d = Driver::new(stream, Connection::server());
            match d.next_step().unwrap() {
                Step::Event(Event::Hello { token, .. }) => seen.push(Ok(token)),
                other => panic!("expected HELLO, got {other:?}"),
            }
            d.conn_mut().close_with_error(Code::Denied, "scripted");
            let _ = d.flush();
            let _ = d.stream_mut().shutdown_write();
            let mut rest = Vec::new();
            let _ = d.stream_mut().read_to_end(&mut rest);
        }
        seen
    });
    let local = tempfile::tempdir().unwrap();
    let file = local.path().join("f.txt");
    write(&file, b"x");

    let wrong = pinned(Fingerprint::from_bytes([9; 32]), Some(TOKEN));
    let refused = upload::send(&addr.into(), sources(&[&file]), &wrong, &mut ());
    let right = pinned(right, Some(TOKEN));
    let denied = upload::send(&addr.into(), sources(&[&file]), &right, &mut ());

    let seen = server.join().unwrap();
    assert!(
        matches!(
            &refused.error,
            Some(ClientError::Untrusted { source, .. })
                if matches!(**source, SecureError::PinMismatch { .. })
        ),
        "{:?}",
        refused.error
    );
    assert_eq!(refused.exit_code(), exit::UNTRUSTED);
    assert!(seen[0].is_err(), "the handshake failed: {:?}", seen[0]);
    assert_eq!(seen[1], Ok(Some(TOKEN.as_bytes().to_vec())));
    assert_eq!(denied.exit_code(), exit::REFUSED);
}

#[test]
fn trust_on_first_use_records_then_refuses_a_changed_certificate() {
    let s = secure_server(None);
    let addr = s.server.addr();
    let local = tempfile::tempdir().unwrap();
    let file = local.path().join("f.txt");
    write(&file, b"hello");
    let config = local.path().join("config");
    let known = config.join("ferry/known_hosts");
    let target = addr.to_string();
    let env = [("XDG_CONFIG_HOME", arg(&config))];

    // First use: recorded and said so (--tofu: the default file under XDG_CONFIG_HOME).
    let first = ferry_env(&["send", &target, arg(&file), "--tofu", "--json"], &env);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let event: serde_json::Value = String::from_utf8_lossy(&first.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .find(|v: &serde_json::Value| v["type"] == "trusted")
        .expect("a trusted line");
    assert_eq!(event["fingerprint"], s.fingerprint.to_string());
    assert_eq!(event["known_hosts"], known.display().to_string());
    let line = format!("{target} {}", s.fingerprint);
    assert_eq!(fs::read_to_string(&known).unwrap().trim(), line);
    let err = stderr(&first);
    assert!(
        err.contains(&format!("trusted {target} on first use"))
            && err.contains(&line[target.len() + 1..]),
        "{err}"
    );
    assert_eq!(err.matches("on first use").count(), 1, "said once: {err}");

    // Second use: trusted silently (--known-hosts names the same file).
    let second = ferry(&[
        "send",
        &target,
        arg(&file),
        "--known-hosts",
        arg(&known),
        "--json",
    ]);
    assert_eq!(
        second.status.code(),
        Some(0),
        "unchanged now: {}",
        stderr(&second)
    );
    assert!(String::from_utf8_lossy(&second.stdout).contains(r#""status":"unchanged""#));
    assert!(
        !stderr(&second).contains("first use"),
        "{}",
        stderr(&second)
    );

    // Another certificate on the same address: a loud refusal, nothing sent.
    drop(s);
    let state = tempfile::tempdir().unwrap();
    let other = ServerTls::self_signed(state.path()).unwrap();
    let other_fp = other.fingerprint();
    let imposter = TestServer::with(|c| {
        c.listen = addr;
        c.tls = Some(other);
    });
    let third = ferry_env(&["send", &target, arg(&file), "--tofu"], &env);
    assert_eq!(third.status.code(), Some(6), "{}", stderr(&third));
    let err = stderr(&third);
    assert!(err.contains("WARNING"), "{err}");
    assert!(err.contains("changed"), "{err}");
    assert!(err.contains(&other_fp.to_string()), "{err}");
    assert!(err.contains("remove line 1"), "{err}");
    assert!(
        common::tree(imposter.dir.path()).is_empty(),
        "nothing stored"
    );
    assert_eq!(
        fs::read_to_string(&known).unwrap().trim(),
        line,
        "unchanged"
    );
}

#[test]
fn a_token_without_tls_works_but_is_warned_about() {
    let token = Token::new(TOKEN.as_bytes().to_vec()).unwrap();
    let server = TestServer::with(|c| c.token = Some(token));
    let local = tempfile::tempdir().unwrap();
    let file = local.path().join("f.txt");
    write(&file, b"plain");

    let out = ferry_env(
        &["send", &server.target().to_string(), arg(&file)],
        &[("FERRY_TOKEN", TOKEN)],
    );

    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("warning: sending the token without TLS"),
        "{}",
        stderr(&out)
    );
    assert_eq!(fs::read(server.path("f.txt")).unwrap(), b"plain");
    // --quiet prints nothing but failures: a warning is not one (scp -q hides ssh's too).
    let out = ferry_env(
        &["send", "-q", &server.target().to_string(), arg(&file)],
        &[("FERRY_TOKEN", TOKEN)],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
}

/// QA P1: a seed-framing upload (`--legacy`) to a server that requires TLS is told so in one
/// ERROR (PROTOCOL.md §2.1), not cut off with a reset: exit 3, as for `--no-seed`.
#[test]
fn a_legacy_upload_to_a_tls_server_is_told_it_needs_tls() {
    let s = secure_server(None);
    let local = tempfile::tempdir().unwrap();
    let file = local.path().join("m.txt");
    write(&file, b"m");
    let target = s.server.target().to_string();
    let out = ferry_env(&["send", "--legacy", &target, arg(&file)], &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains(&format!(
            "{target} refused the connection: this server requires TLS, which the seed \
             framing cannot carry; send without --legacy"
        )),
        "{err}"
    );
    assert!(
        common::tree(s.server.dir.path()).is_empty(),
        "nothing stored"
    );
}

#[test]
fn tls_and_plain_mismatches_fail_with_hints() {
    let s = secure_server(None);
    let plain = TestServer::start(ferry_server::Overwrite::Refuse);
    let local = tempfile::tempdir().unwrap();
    let file = local.path().join("f.txt");
    write(&file, b"x");

    // Plain client, TLS server: refused before WELCOME.
    let out = ferry(&["send", &s.server.target().to_string(), arg(&file)]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("requires TLS"), "{}", stderr(&out));

    // TLS client, plain server.
    let pin = s.fingerprint.to_string();
    let out = ferry(&[
        "send",
        &plain.target().to_string(),
        arg(&file),
        "--pin",
        &pin,
    ]);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("TLS"), "{}", stderr(&out));
    assert!(common::tree(plain.dir.path()).is_empty());
}

#[test]
fn bad_security_options_are_usage_errors() {
    let local = tempfile::tempdir().unwrap();
    let file = local.path().join("f.txt");
    write(&file, b"x");
    let f = arg(&file);
    let fp = Fingerprint::from_bytes([1; 32]).to_string();
    let missing = local.path().join("missing.pem");
    let loose = local.path().join("loose-token");
    fs::write(&loose, "hunter2\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&loose, fs::Permissions::from_mode(0o644)).unwrap();
    }
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["send", "box", f, "--legacy", "--pin", &fp], "--legacy"),
        (vec!["send", "box", f, "--legacy", "--tls"], "--legacy"),
        (
            vec!["send", "box", f, "--legacy", "--retries", "2"],
            "--retries",
        ),
        (vec!["send", "box", f, "--pin", "SHA256:abc"], "fingerprint"),
        (
            vec!["send", "box", f, "--pin", &fp, "--tofu"],
            "give only one",
        ),
        (vec!["send", "box", f, "--ca", arg(&missing)], "missing.pem"),
        #[cfg(unix)]
        (
            vec!["send", "box", f, "--token-file", arg(&loose)],
            "chmod 600",
        ),
    ];
    for (args, says) in cases {
        let out = ferry(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
        assert!(!stderr(&out).contains("hunter2"), "{}", stderr(&out));
    }
}

#[test]
fn a_tls_get_of_a_missing_file_reports_it() {
    let s = secure_server(None);
    let out = tempfile::tempdir().unwrap();
    let outcome = download::get(
        &s.server.target(),
        vec![Name::parse("nope").unwrap()],
        &Dest::Dir(out.path().to_owned()),
        &pinned(s.fingerprint, None),
        &mut (),
    );
    assert_eq!(outcome.files[0].status, Status::Code(Code::NotFound));
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
}

#[test]
fn many_tls_sessions_in_a_row() {
    let s = secure_server(Some(TOKEN));
    let local = tempfile::tempdir().unwrap();
    let o = pinned(s.fingerprint, Some(TOKEN));
    for i in 0..5 {
        let file = local.path().join(format!("f{i}"));
        write(&file, &data(10_000 * i, i as u32));
        let outcome = upload::send(&s.server.target(), sources(&[&file]), &o, &mut ());
        assert_eq!(outcome.exit_code(), exit::OK, "{:?}", outcome.error);
    }
    assert_eq!(common::tree(s.server.dir.path()).len(), 5);
}

#[test]
fn a_ca_file_vouches_for_the_server_under_its_name() {
    let pki = tempfile::tempdir().unwrap();
    let (ca, chain, key) = ca_and_leaf("ferry test CA", &["localhost"]);
    let (other_ca, _, _) = ca_and_leaf("someone else's CA", &["localhost"]);
    let p = |name: &str, content: &str| {
        let path = pki.path().join(name);
        fs::write(&path, content).unwrap();
        path
    };
    let (ca, other_ca, chain) = (
        p("ca.pem", &ca),
        p("other.pem", &other_ca),
        p("chain.pem", &chain),
    );
    let key = common::private_file(pki.path(), "key.pem", &key);
    let tls = ServerTls::from_pem_files(&chain, &key).unwrap();
    let server = TestServer::with(|c| c.tls = Some(tls));
    let local = tempfile::tempdir().unwrap();
    let file = local.path().join("f.txt");
    write(&file, b"by name");
    let port = server.addr().port();
    let by_name = format!("localhost:{port}");
    let by_address = format!("127.0.0.1:{port}");

    let ok = ferry(&["send", &by_name, arg(&file), "--ca", arg(&ca)]);
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    assert_eq!(fs::read(server.path("f.txt")).unwrap(), b"by name");

    // The certificate names localhost only.
    let wrong_name = ferry(&["send", &by_address, arg(&file), "--ca", arg(&ca)]);
    assert_eq!(wrong_name.status.code(), Some(6), "{}", stderr(&wrong_name));
    assert!(
        stderr(&wrong_name).contains("does not name this host"),
        "{}",
        stderr(&wrong_name)
    );

    let wrong_ca = ferry(&["send", &by_name, arg(&file), "--ca", arg(&other_ca)]);
    assert_eq!(wrong_ca.status.code(), Some(6), "{}", stderr(&wrong_ca));
    assert!(
        stderr(&wrong_ca).contains("not signed by a CA"),
        "{}",
        stderr(&wrong_ca)
    );

    // A block that is not a certificate is skipped, and the user is told.
    let junk = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    let mixed = p("mixed.pem", &(fs::read_to_string(&ca).unwrap() + junk));
    let other = local.path().join("g.txt");
    write(&other, b"despite the junk");
    let warned = ferry(&["send", &by_name, arg(&other), "--ca", arg(&mixed)]);
    assert_eq!(warned.status.code(), Some(0), "{}", stderr(&warned));
    assert!(
        stderr(&warned).contains("ignored 1 unparsable certificate(s)"),
        "{}",
        stderr(&warned)
    );
}
