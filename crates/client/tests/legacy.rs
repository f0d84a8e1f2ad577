//! `--legacy`: the seed framing, against a minimal seed-style receiver and, when present, the
//! lab report's own `seed/server.py`.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use common::{data, opts, sources, wait_child, write};
use ferry_client::{legacy, Status, Target};
use ferry_proto::Digest;

/// What a seed receiver got: one name and body per connection.
type Received = Vec<(String, Vec<u8>)>;

/// Accepts `n` connections, each `name\n` then the body until close, as the seed server does.
fn seed_receiver(n: usize) -> (SocketAddr, JoinHandle<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = thread::spawn(move || {
        (0..n)
            .map(|_| {
                let (stream, _) = listener.accept().unwrap();
                let mut r = BufReader::new(stream);
                let mut name = Vec::new();
                r.read_until(b'\n', &mut name).unwrap();
                assert_eq!(name.pop(), Some(b'\n'));
                let mut body = Vec::new();
                r.read_to_end(&mut body).unwrap();
                (String::from_utf8(name).unwrap(), body)
            })
            .collect()
    });
    (addr, handle)
}

#[test]
fn each_file_goes_by_base_name_on_its_own_connection() {
    let local = tempfile::tempdir().unwrap();
    let a = local.path().join("dir/a.bin");
    let b = local.path().join("b.txt");
    write(&a, &data(100_000, 5));
    write(&b, b"bee");
    let (addr, receiver) = seed_receiver(2);

    let outcome = legacy::send(
        &Target::from(addr),
        sources(&[&local.path().join("dir"), &b]),
        &opts(),
        &mut (),
    );

    assert_eq!(outcome.exit_code(), 0, "{:?}", outcome.error);
    assert!(outcome.files.iter().all(|f| f.status == Status::Sent));
    assert_eq!(outcome.files[0].digest, Some(Digest::of(&data(100_000, 5))));
    let got = receiver.join().unwrap();
    assert_eq!(got[0], ("a.bin".to_owned(), data(100_000, 5)));
    assert_eq!(got[1], ("b.txt".to_owned(), b"bee".to_vec()));
}

#[test]
fn the_ferry_server_takes_seed_uploads_too() {
    let server = common::TestServer::start(ferry_server::Overwrite::Refuse);
    let local = tempfile::tempdir().unwrap();
    let f = local.path().join("old-style.txt");
    write(&f, b"seed framing");

    let outcome = legacy::send(&server.target(), sources(&[&f]), &opts(), &mut ());

    assert_eq!(outcome.exit_code(), 0, "{:?}", outcome.error);
    common::wait_until("the server publishes the file", || {
        server.path("old-style.txt").exists()
    });
    assert_eq!(
        std::fs::read(server.path("old-style.txt")).unwrap(),
        b"seed framing"
    );
}

/// QA M7: a ferry-server that refuses the seed framing (`--no-seed`; likewise TLS or a token
/// required) answers with an ERROR frame (PROTOCOL.md §2.1), which `ferry send --legacy` reads
/// after the body: the run ends as a refused connection (exit 3), saying why, never `sent`.
#[test]
fn a_server_refusing_the_seed_framing_is_reported_not_sent() {
    let server = common::TestServer::with(|c| c.accept_seed = false);
    let local = tempfile::tempdir().unwrap();
    let n = local.path().join("n.txt");
    let m = local.path().join("m.txt");
    write(&n, b"n");
    write(&m, b"m");
    let addr = server.addr().to_string();

    let out = common::ferry(&[
        "send",
        "--legacy",
        &addr,
        n.to_str().unwrap(),
        m.to_str().unwrap(),
    ]);

    let err = common::stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains(&format!(
            "ferry: {addr} refused the connection: seed framing is disabled (--no-seed); \
             send without --legacy"
        )),
        "{err}"
    );
    assert!(!err.contains("sent "), "{err}");
    assert!(!err.contains("m.txt"), "the refusal ends the run: {err}");
    assert!(!server.path("n.txt").exists());
}

/// QA M7: a file the ferry-server refuses in the seed framing (its name exists, refuse
/// policy) is reported refused with the server's reason, whether the refusal is read after a
/// small body or stops a large one half-way; the other files go on (exit 1).
#[test]
fn a_seed_upload_the_server_refuses_is_reported_refused() {
    let server = common::TestServer::start(ferry_server::Overwrite::Refuse);
    write(&server.path("small.txt"), b"held");
    write(&server.path("large.bin"), b"held");
    let local = tempfile::tempdir().unwrap();
    let small = local.path().join("small.txt");
    let large = local.path().join("large.bin");
    let new = local.path().join("new.txt");
    write(&small, b"mine");
    write(&large, &data(32 << 20, 3));
    write(&new, b"new");

    let outcome = legacy::send(
        &server.target(),
        sources(&[&small, &large, &new]),
        &opts(),
        &mut (),
    );

    assert_eq!(outcome.exit_code(), 1, "{:?}", outcome.error);
    for refused in &outcome.files[..2] {
        assert_eq!(refused.status, Status::Code(ferry_proto::Code::Exists));
        assert!(refused.refused);
        assert!(
            refused.detail.contains("a file of that name exists"),
            "{}",
            refused.detail
        );
    }
    assert_eq!(outcome.files[2].status, Status::Sent);
    assert_eq!(std::fs::read(server.path("large.bin")).unwrap(), b"held");
    common::wait_until("the server publishes new.txt", || {
        server.path("new.txt").exists()
    });
}

/// `--legacy` to a peer that answers the upload, which server.py never does, and not with a
/// ferry refusal: not reported sent, but as a peer that is not a seed server (exit 5).
#[test]
fn a_peer_that_answers_a_seed_upload_is_not_a_seed_server() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = Target::from(listener.local_addr().unwrap());
    let peer = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut got = Vec::new();
        stream.read_to_end(&mut got).unwrap();
        std::io::Write::write_all(&mut stream, b"thanks!\n").unwrap();
    });
    let local = tempfile::tempdir().unwrap();
    let f = local.path().join("f.txt");
    write(&f, b"x");

    let outcome = legacy::send(&target, sources(&[&f]), &opts(), &mut ());

    peer.join().unwrap();
    assert_eq!(outcome.exit_code(), 5);
    let said = outcome.error.unwrap().to_string();
    assert!(
        said.contains(
            "answered the upload with \"thanks!\", which the lab report's server.py never does"
        ),
        "{said}"
    );
    assert_ne!(outcome.files[0].status, Status::Sent);
}

#[test]
fn clashing_base_names_are_refused_before_connecting() {
    let local = tempfile::tempdir().unwrap();
    write(&local.path().join("x/f"), b"1");
    write(&local.path().join("y/f"), b"2");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let target = Target::from(listener.local_addr().unwrap());

    let outcome = legacy::send(
        &target,
        sources(&[&local.path().join("x"), &local.path().join("y")]),
        &opts(),
        &mut (),
    );

    assert_eq!(outcome.exit_code(), 2);
    assert!(outcome.error.unwrap().to_string().contains("base names"));
    assert!(listener.accept().is_err(), "no connection was made");
}

#[test]
fn the_binary_sends_stdin_in_seed_framing() {
    let (addr, receiver) = seed_receiver(1);
    let out = common::ferry_with_stdin(
        &[
            "send",
            "--legacy",
            &addr.to_string(),
            "-",
            "--name",
            "piped.txt",
        ],
        Some(b"from a pipe"),
    );
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert_eq!(
        receiver.join().unwrap(),
        [("piped.txt".to_owned(), b"from a pipe".to_vec())]
    );
}

/// The lab report's own `seed/server.py`, run with python3 for one connection.
struct SeedPy {
    child: Child,
    port: u16,
    log: JoinHandle<String>,
    store: tempfile::TempDir,
}

impl SeedPy {
    /// `None` when there is no python3 or no seed/server.py.
    fn start() -> Option<Self> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../seed/server.py");
        let python = Command::new("python3").arg("--version").output();
        if !script.exists() || !python.is_ok_and(|o| o.status.success()) {
            eprintln!("skipped: no seed/server.py or no python3");
            return None;
        }
        let store = tempfile::tempdir().unwrap();
        // server.py binds its own port: take a free one from the system, then hand it over.
        let port = common::dead_addr().port();
        let mut child = Command::new("python3")
            .arg("-u")
            .arg(&script)
            .env("SEED_HOST", "127.0.0.1")
            .env("SEED_PORT", port.to_string())
            .env("SEED_DIR", store.path())
            .env("SEED_MAX_CONNECTIONS", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut said = BufReader::new(child.stdout.take().unwrap());
        let mut first_line = String::new();
        said.read_line(&mut first_line).unwrap();
        assert!(first_line.contains("listening"), "{first_line}");
        // server.py prints as it goes and dies on a closed pipe: keep reading.
        let log = thread::spawn(move || {
            let mut rest = String::new();
            let _ = said.read_to_string(&mut rest);
            rest
        });
        Some(Self {
            child,
            port,
            log,
            store,
        })
    }

    fn target(&self) -> Target {
        Target::new("127.0.0.1", self.port)
    }

    /// Waits for the server to exit after its one connection; returns what it printed.
    fn wait(mut self) -> (String, tempfile::TempDir) {
        let status = wait_child(&mut self.child, Duration::from_secs(30), || {
            "server.py did not finish".to_owned()
        });
        let log = self.log.join().unwrap();
        assert!(status.success(), "{log}");
        (log, self.store)
    }
}

#[test]
fn the_lab_reports_server_receives_our_upload() {
    let Some(seed) = SeedPy::start() else { return };
    let local = tempfile::tempdir().unwrap();
    let file = local.path().join("report.pdf");
    let content = data(300_000, 9);
    write(&file, &content);

    let outcome = legacy::send(&seed.target(), sources(&[&file]), &opts(), &mut ());

    let (_, store) = seed.wait();
    assert_eq!(outcome.exit_code(), 0, "{:?}", outcome.error);
    // server.py never answers: its silence, read until it closed, is a file sent.
    assert_eq!(outcome.files[0].status, Status::Sent);
    assert!(std::fs::read(store.path().join("report.pdf")).unwrap() == content);
}

#[test]
fn without_legacy_the_lab_reports_server_gets_a_hint() {
    let Some(seed) = SeedPy::start() else { return };
    let local = tempfile::tempdir().unwrap();
    let file = local.path().join("f.txt");
    write(&file, b"x");

    let out = common::ferry(&["send", &seed.target().to_string(), file.to_str().unwrap()]);

    seed.wait();
    // server.py closes without a byte, as a network cut or a server too busy to answer would
    // (exit 4, README's table), and the message names --legacy for it.
    assert_eq!(out.status.code(), Some(4));
    assert!(
        common::stderr(&out).contains("lab report's server.py, use --legacy"),
        "{}",
        common::stderr(&out)
    );
}
