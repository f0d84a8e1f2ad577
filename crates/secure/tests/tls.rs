//! Real TLS handshakes over 127.0.0.1 between this crate's server and client streams.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use ferry_secure::{
    accept_any, connect, host_key, ClientTls, Fingerprint, SecureError, ServerTls, Stream, Trust,
};
use ferry_test_ca::ca_and_leaf;

/// A safety net so a broken test fails instead of hanging; no test asserts on time.
const SAFETY_TIMEOUT: Duration = Duration::from_secs(30);

/// What the server received on one connection.
type Echoed = Result<Vec<u8>, SecureError>;

/// Serves one connection per entry of `configs`, in order, on one port: accepts (TLS
/// required), echoes everything until the client's end, then closes cleanly.
fn serve(configs: Vec<ServerTls>) -> (u16, JoinHandle<Vec<Echoed>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = thread::spawn(move || {
        configs
            .iter()
            .map(|tls| {
                let (tcp, _) = listener.accept().unwrap();
                tcp.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
                tcp.set_write_timeout(Some(SAFETY_TIMEOUT)).unwrap();
                let mut stream = accept_any(Some(tls), true, tcp)?;
                assert!(stream.is_tls());
                let mut got = Vec::new();
                stream.read_to_end(&mut got)?;
                stream.write_all(&got)?;
                stream.flush()?;
                stream.shutdown_write()?;
                Ok(got)
            })
            .collect()
    });
    (port, handle)
}

/// Serves one connection on a fresh port: `handle` gets the accepted TCP stream, with the
/// safety read timeout set; returns the port and the server thread.
fn serve_one<T: Send + 'static>(
    handle: impl FnOnce(TcpStream) -> T + Send + 'static,
) -> (u16, JoinHandle<T>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
        handle(tcp)
    });
    (port, server)
}

fn tcp_to(port: u16) -> TcpStream {
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    tcp.set_write_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    tcp
}

/// Connects, sends `msg`, ends, and returns what came back.
fn echo(
    tls: &ClientTls,
    host: &str,
    port: u16,
    msg: &[u8],
) -> Result<(Stream, Vec<u8>), SecureError> {
    let mut stream = connect(tls, host, tcp_to(port))?;
    assert!(stream.is_tls());
    stream.write_all(msg)?;
    stream.flush()?;
    stream.shutdown_write()?;
    let mut back = Vec::new();
    stream.read_to_end(&mut back)?;
    Ok((stream, back))
}

fn self_signed(dir: &Path) -> ServerTls {
    ServerTls::self_signed(dir).unwrap()
}

#[test]
fn handshake_and_echo_with_pinned_self_signed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let tls = self_signed(dir.path());
    let fp = tls.fingerprint();
    let (port, server) = serve(vec![tls]);
    let client = ClientTls::new(Trust::Pin(fp)).unwrap();
    let msg: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let (stream, back) = echo(&client, "127.0.0.1", port, &msg).unwrap();
    assert_eq!(back, msg);
    assert_eq!(stream.peer_fingerprint(), Some(fp));
    assert!(!stream.newly_trusted());
    let results = server.join().unwrap();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].as_ref().unwrap(), &msg);
}

#[test]
fn pin_mismatch_is_a_typed_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let tls = self_signed(dir.path());
    let real = tls.fingerprint();
    let (port, server) = serve(vec![tls]);
    let wrong = Fingerprint::from_bytes([7; 32]);
    let client = ClientTls::new(Trust::Pin(wrong)).unwrap();
    match echo(&client, "localhost", port, b"secret token here") {
        Err(SecureError::PinMismatch { expected, got }) => {
            assert_eq!(expected, wrong);
            assert_eq!(got, real);
        }
        other => panic!("expected PinMismatch, got {other:?}"),
    }
    // The server saw the client's refusal (an alert), and received no data.
    let results = server.join().unwrap();
    assert!(results[0].is_err(), "{:?}", results[0]);
}

#[test]
fn trust_on_first_use_records_accepts_and_refuses_a_change() {
    let dir = tempfile::tempdir().unwrap();
    let first = self_signed(&dir.path().join("a"));
    let other = self_signed(&dir.path().join("b"));
    assert_ne!(first.fingerprint(), other.fingerprint());
    let (port, server) = serve(vec![first.clone(), first.clone(), other.clone()]);

    let known = dir.path().join("sub/known_hosts");
    // An unrelated line and a comment before ours, so the line number is checked.
    fs::create_dir_all(known.parent().unwrap()).unwrap();
    fs::write(
        &known,
        format!(
            "# ferry known hosts\nexample.org:7878 {}",
            other.fingerprint()
        ),
    )
    .unwrap();
    let client = ClientTls::new(Trust::KnownHosts(known.clone())).unwrap();

    let (s1, back) = echo(&client, "LocalHost", port, b"one").unwrap();
    assert_eq!(back, b"one");
    assert!(s1.newly_trusted());
    let text = fs::read_to_string(&known).unwrap();
    let expected_line = format!("{} {}", host_key("localhost", port), first.fingerprint());
    assert_eq!(text.lines().nth(2), Some(expected_line.as_str()), "{text}");

    let (s2, back) = echo(&client, "localhost", port, b"two").unwrap();
    assert_eq!(back, b"two");
    assert!(!s2.newly_trusted());
    assert_eq!(fs::read_to_string(&known).unwrap(), text, "nothing added");

    let err = echo(&client, "localhost", port, b"three").unwrap_err();
    match &err {
        SecureError::CertificateChanged {
            host_port,
            expected,
            got,
            path,
            line,
        } => {
            assert_eq!(host_port, &format!("localhost:{port}"));
            assert_eq!(*expected, first.fingerprint());
            assert_eq!(*got, other.fingerprint());
            assert_eq!(path, &known);
            assert_eq!(*line, 3);
        }
        other => panic!("expected CertificateChanged, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("changed"), "{msg}");
    assert!(
        msg.contains(&format!("remove line 3 of {}", known.display())),
        "{msg}"
    );
    assert_eq!(fs::read_to_string(&known).unwrap(), text, "not overwritten");

    let results = server.join().unwrap();
    assert!(results[0].is_ok() && results[1].is_ok());
    assert!(results[2].is_err());
}

#[test]
fn known_hosts_syntax_errors_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let known = dir.path().join("known_hosts");
    fs::write(&known, "\nlocalhost:1 SHA256:nothex\n").unwrap();
    let client = ClientTls::new(Trust::KnownHosts(known)).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    match connect(&client, "localhost", tcp_to(port)) {
        Err(SecureError::KnownHostsSyntax { line: 2, .. }) => {}
        other => panic!("expected KnownHostsSyntax at line 2, got {other:?}"),
    }
}

#[test]
fn ca_file_verification() {
    let dir = tempfile::tempdir().unwrap();
    let (ca_pem, chain_pem, key_pem) = ca_and_leaf("ferry test CA", &["localhost"]);
    let (other_ca_pem, _, _) = ca_and_leaf("another CA", &["localhost"]);
    let p = |name: &str| dir.path().join(name);
    fs::write(p("ca.pem"), ca_pem).unwrap();
    fs::write(p("other-ca.pem"), other_ca_pem).unwrap();
    fs::write(p("cert.pem"), chain_pem).unwrap();
    fs::write(p("key.pem"), key_pem).unwrap();
    let tls = ServerTls::from_pem_files(&p("cert.pem"), &p("key.pem")).unwrap();
    let (port, server) = serve(vec![tls.clone(), tls.clone(), tls.clone(), tls]);

    let good = ClientTls::new(Trust::CaFile(p("ca.pem"))).unwrap();
    let (stream, back) = echo(&good, "localhost", port, b"hello CA").unwrap();
    assert_eq!(back, b"hello CA");
    assert!(stream.peer_fingerprint().is_some());

    // Right CA, wrong name: the leaf only names localhost.
    match echo(&good, "127.0.0.1", port, b"x") {
        Err(SecureError::Handshake {
            source: rustls::Error::InvalidCertificate(_),
            ..
        }) => {}
        other => panic!("expected a certificate error, got {other:?}"),
    }

    // Another CA.
    let bad = ClientTls::new(Trust::CaFile(p("other-ca.pem"))).unwrap();
    let err = echo(&bad, "localhost", port, b"x").unwrap_err();
    assert!(
        matches!(
            err,
            SecureError::Handshake {
                source: rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("--ca"), "{err}");

    // Mozilla's roots do not include the test CA.
    let web = ClientTls::new(Trust::WebPkiRoots).unwrap();
    assert!(matches!(
        echo(&web, "localhost", port, b"x"),
        Err(SecureError::Handshake { .. })
    ));
    let results = server.join().unwrap();
    assert!(results[0].is_ok());
}

#[test]
fn ca_file_without_certificates_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    fs::write(&empty, "not a certificate\n").unwrap();
    assert!(matches!(
        ClientTls::new(Trust::CaFile(empty)),
        Err(SecureError::Pem { .. })
    ));
    assert!(matches!(
        ClientTls::new(Trust::CaFile(dir.path().join("missing.pem"))),
        Err(SecureError::File { .. })
    ));
}

#[cfg(unix)]
#[test]
fn self_signed_is_generated_once_and_reused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state/tls");
    let first = ServerTls::self_signed(&state).unwrap();
    assert!(first.generated());
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state.join("key.pem")), 0o600);
    assert_eq!(mode(&state), 0o700);
    let cert_pem = fs::read(state.join("cert.pem")).unwrap();

    let second = ServerTls::self_signed(&state).unwrap();
    assert!(!second.generated());
    assert_eq!(second.fingerprint(), first.fingerprint());
    assert_eq!(fs::read(state.join("cert.pem")).unwrap(), cert_pem);

    // The fingerprint is that of the DER certificate in cert.pem.
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let der = CertificateDer::from_pem_slice(&cert_pem).unwrap();
    assert_eq!(Fingerprint::of_der(&der), first.fingerprint());
    let shown = first.fingerprint().to_string();
    assert!(shown.starts_with("SHA256:") && shown.len() == 71, "{shown}");

    // A key others can read is refused, with the fix in the message.
    fs::set_permissions(state.join("key.pem"), fs::Permissions::from_mode(0o644)).unwrap();
    let err = ServerTls::self_signed(&state).unwrap_err();
    assert!(
        matches!(err, SecureError::InsecurePermissions { mode: 0o644, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("chmod 600"), "{err}");
    fs::set_permissions(state.join("key.pem"), fs::Permissions::from_mode(0o600)).unwrap();

    // Half a pair is reported, not silently replaced.
    fs::remove_file(state.join("cert.pem")).unwrap();
    assert!(matches!(
        ServerTls::self_signed(&state),
        Err(SecureError::PartialSelfSigned {
            missing: "cert.pem",
            ..
        })
    ));
    assert!(state.join("key.pem").exists());
}

#[test]
fn pem_errors_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    fs::write(&cert, "nothing\n").unwrap();
    fs::write(&key, "nothing\n").unwrap();
    assert!(matches!(
        ServerTls::from_pem_files(&cert, &key),
        Err(SecureError::Pem { .. })
    ));
    // A certificate with someone else's key.
    let (_, chain, _) = ca_and_leaf("one CA", &["localhost"]);
    let (_, _, other_key) = ca_and_leaf("two CA", &["localhost"]);
    fs::write(&cert, chain).unwrap();
    fs::write(&key, other_key).unwrap();
    let err = ServerTls::from_pem_files(&cert, &key).unwrap_err();
    assert!(matches!(err, SecureError::CertKey { .. }), "{err:?}");
}

#[test]
fn plain_and_tls_share_one_port() {
    let dir = tempfile::tempdir().unwrap();
    let tls = self_signed(dir.path());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = {
        let tls = tls.clone();
        thread::spawn(move || {
            let mut out = Vec::new();
            // 1: plain allowed; 2: plain refused when TLS is required; 3: TLS without config;
            // 4: closed without a byte.
            for (cfg, require) in [
                (Some(&tls), false),
                (Some(&tls), true),
                (None, false),
                (Some(&tls), false),
            ] {
                let (tcp, _) = listener.accept().unwrap();
                tcp.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
                out.push(accept_any(cfg, require, tcp).map(|mut s| {
                    let mut buf = [0u8; 6];
                    s.read_exact(&mut buf).unwrap();
                    (s.is_tls(), buf)
                }));
            }
            out
        })
    };
    let mut plain = tcp_to(port);
    plain.write_all(b"\0FERRY").unwrap();
    let mut plain2 = tcp_to(port);
    plain2.write_all(b"name\nbody").unwrap();
    let client = ClientTls::new(Trust::Pin(tls.fingerprint())).unwrap();
    let err = connect(&client, "localhost", tcp_to(port)).unwrap_err();
    assert!(
        matches!(
            err,
            SecureError::HandshakeIo { .. } | SecureError::Handshake { .. }
        ),
        "{err:?}"
    );
    drop(tcp_to(port));
    let results = server.join().unwrap();
    assert_eq!(results[0].as_ref().unwrap(), &(false, *b"\0FERRY"));
    assert!(matches!(results[1], Err(SecureError::PlainRefused { .. })));
    assert!(matches!(
        results[2],
        Err(SecureError::TlsNotConfigured { .. })
    ));
    assert!(matches!(
        results[3],
        Err(SecureError::EmptyConnection { .. })
    ));
    drop((plain, plain2));
}

#[test]
fn tls_detection_byte() {
    assert!(ferry_secure::looks_like_tls(0x16));
    assert!(!ferry_secure::looks_like_tls(0x00));
    assert!(!ferry_secure::looks_like_tls(b'a'));
}

#[test]
fn truncation_without_close_notify_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let tls = self_signed(dir.path());
    let fp = tls.fingerprint();
    let (port, server) = serve_one(move |tcp| {
        let mut s = accept_any(Some(&tls), true, tcp).unwrap();
        s.write_all(b"partial").unwrap();
        s.flush().unwrap();
        // Close the TCP connection without close_notify.
        s.tcp().shutdown(std::net::Shutdown::Both).unwrap();
    });
    let client = ClientTls::new(Trust::Pin(fp)).unwrap();
    let mut s = connect(&client, "localhost", tcp_to(port)).unwrap();
    let mut got = Vec::new();
    let err = s.read_to_end(&mut got).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    assert_eq!(got, b"partial");
    server.join().unwrap();
}

/// A transport that moves one byte per call, as a wrapper with its own logic would sit
/// between TLS and the socket.
#[derive(Debug)]
struct Trickle {
    tcp: TcpStream,
    calls: usize,
}

impl Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.calls += 1;
        let n = buf.len().min(1);
        self.tcp.read(&mut buf[..n])
    }
}

impl Write for Trickle {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.calls += 1;
        let n = buf.len().min(1);
        self.tcp.write(&buf[..n])
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.tcp.flush()
    }
}

impl ferry_secure::Transport for Trickle {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.tcp.peer_addr()
    }

    fn shutdown_write(&mut self) -> std::io::Result<()> {
        self.tcp.shutdown(std::net::Shutdown::Write)
    }
}

#[test]
fn tls_over_a_custom_transport() {
    let dir = tempfile::tempdir().unwrap();
    let tls = self_signed(dir.path());
    let fp = tls.fingerprint();
    let (port, server) = serve_one(move |tcp| {
        assert_eq!(
            ferry_secure::detect(true, true, &tcp).unwrap(),
            ferry_secure::Detected::Tls
        );
        let mut s = ferry_secure::accept(&tls, Trickle { tcp, calls: 0 }).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        s.write_all(&got).unwrap();
        s.shutdown_write().unwrap();
        assert!(s.get_ref().calls > got.len());
        got
    });
    let known = dir.path().join("known_hosts");
    let client = ClientTls::new(Trust::KnownHosts(known.clone())).unwrap();
    let tcp = tcp_to(port);
    let mut s = connect(&client, "127.0.0.1", Trickle { tcp, calls: 0 }).unwrap();
    assert_eq!(s.peer_fingerprint(), Some(fp));
    assert!(s.newly_trusted());
    s.write_all(b"through the trickle").unwrap();
    let n = s
        .write_vectored(&[std::io::IoSlice::new(b"+vectored")])
        .unwrap();
    assert_eq!(n, b"+vectored".len());
    s.flush().unwrap();
    s.shutdown_write().unwrap();
    let mut back = Vec::new();
    s.read_to_end(&mut back).unwrap();
    assert_eq!(back, b"through the trickle+vectored");
    assert_eq!(server.join().unwrap(), back);
    assert_eq!(
        fs::read_to_string(&known).unwrap(),
        format!("127.0.0.1:{port} {fp}\n")
    );
}

/// A server that presents the pinned certificate without holding its key (a copy of the
/// public certificate is all an interceptor would have) is refused: the pin checks the
/// handshake signature, not only the certificate bytes.
#[test]
fn pinned_certificate_without_its_key_is_refused() {
    use std::sync::Arc;

    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use rustls::server::{ClientHello, ResolvesServerCert};
    use rustls::sign::CertifiedKey;

    #[derive(Debug)]
    struct Fixed(Arc<CertifiedKey>);
    impl ResolvesServerCert for Fixed {
        fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
            Some(self.0.clone())
        }
    }

    let victim = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let victim_der = CertificateDer::from(victim.cert.der().to_vec());
    let pinned = Fingerprint::of_der(&victim_der);
    let attacker_key = rcgen::KeyPair::generate().unwrap();
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            attacker_key.serialize_der(),
        )))
        .unwrap();
    let forged = Arc::new(CertifiedKey::new(vec![victim_der], signing));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Fixed(forged)));
    let config = Arc::new(config);

    let (port, server) = serve_one(move |mut tcp| {
        let mut conn = rustls::ServerConnection::new(config).unwrap();
        let mut result = Ok(());
        while conn.is_handshaking() {
            if let Err(e) = conn.complete_io(&mut tcp) {
                result = Err(e);
                break;
            }
        }
        result
    });
    let client = ClientTls::new(Trust::Pin(pinned)).unwrap();
    let err = connect(&client, "localhost", tcp_to(port)).unwrap_err();
    assert!(
        matches!(
            err,
            SecureError::Handshake {
                source: rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature),
                ..
            }
        ),
        "expected a bad handshake signature, got {err:?}"
    );
    assert!(
        server.join().unwrap().is_err(),
        "the forger never completes"
    );
}

/// A peer that answers a ClientHello with something other than TLS (an HTTP error page, an SSH
/// banner, garbage) or a TLS client that sends plain text: the handshake fails with a typed
/// error on either side, never a panic, whatever the bytes.
#[test]
fn a_peer_that_does_not_speak_tls_is_an_error_not_a_panic() {
    let answers: [&[u8]; 4] = [
        b"HTTP/1.1 400 Bad Request\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.2\r\n",
        &[0x16, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28],
        &[0xff; 64],
    ];
    let client = ClientTls::new(Trust::Pin(Fingerprint::from_bytes([7; 32]))).unwrap();
    for answer in answers {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let peer = thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
            let _ = s.read(&mut [0u8; 4096]);
            let _ = s.write_all(answer);
        });
        let got = connect(&client, "localhost", tcp_to(port));
        assert!(got.is_err(), "{answer:?}: the handshake cannot succeed");
        peer.join().unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let tls = self_signed(dir.path());
    for sent in answers {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let peer = thread::spawn(move || {
            let mut s = tcp_to(port);
            let _ = s.write_all(sent);
            let _ = s.shutdown(std::net::Shutdown::Write);
            let _ = s.read(&mut [0u8; 4096]);
        });
        let (s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
        assert!(ferry_secure::accept(&tls, s).is_err(), "{sent:?}");
        peer.join().unwrap();
    }
}
