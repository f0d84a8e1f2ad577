//! `--retries`: a flaky link (a proxy that cuts each connection after a different number of
//! bytes) costs retries, never files; what is not a network failure is never retried.

mod common;

use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use common::{
    data, dead_addr, ferry, id_of, opts, raw_server, scripted_then_forwarded, sources, stderr,
    write, FlakyProxy, TestServer,
};
use ferry_client::download::{self, partial_path, Dest};
use ferry_client::{exit, upload, Backoff, Observer, Options, Outcome, Retry, Status, Target};
use ferry_proto::wire::{kind, Frame, VERSION};
use ferry_proto::{Code, Digest, Name};
use ferry_secure::{ClientTls, Fingerprint, ServerTls, Token, Trust};
use ferry_server::Overwrite;

static SLEPT: AtomicU32 = AtomicU32::new(0);

fn short_sleep(d: Duration) {
    SLEPT.fetch_add(1, Ordering::SeqCst);
    std::thread::sleep(d);
}

/// Retries with millisecond waits.
fn retrying(n: u32) -> Options {
    Options {
        retries: n,
        backoff: Backoff {
            first: Duration::from_millis(5),
            max: Duration::from_millis(20),
            jitter: false,
            sleep: short_sleep,
        },
        ..opts()
    }
}

/// Remembers the retries announced.
#[derive(Default)]
struct Retries(Vec<Retry>);

impl Observer for Retries {
    fn retrying(&mut self, retry: &Retry) {
        self.0.push(retry.clone());
    }
}

/// A server with a self-signed certificate that wants the token `tok`: the folder that holds
/// the certificate (keep it first, so that it outlives the server), the server, its fingerprint.
fn tls_server_with_token() -> (tempfile::TempDir, TestServer, Fingerprint) {
    let state = tempfile::tempdir().unwrap();
    let tls = ServerTls::self_signed(state.path()).unwrap();
    let fp = tls.fingerprint();
    let server = TestServer::with(|c| {
        c.tls = Some(tls);
        c.token = Some(Token::new(b"tok".to_vec()).unwrap());
    });
    (state, server, fp)
}

/// [`retrying`]`(n)` over TLS pinned to `pin`, sending `token`.
fn tls_retrying(n: u32, pin: Fingerprint, token: &[u8]) -> Options {
    Options {
        tls: Some(ClientTls::new(Trust::Pin(pin)).unwrap()),
        token: Some(Token::new(token.to_vec()).unwrap()),
        ..retrying(n)
    }
}

/// Uploads `file` to the scripted server at `addr` with [`retrying`]`(3)`; returns the
/// outcome once the script is done.
fn upload_to_script(addr: SocketAddr, server: JoinHandle<()>, file: &std::path::Path) -> Outcome {
    let outcome = upload::send(&Target::from(addr), sources(&[file]), &retrying(3), &mut ());
    server.join().unwrap();
    outcome
}

fn arg(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn the_binary_sends_many_files_across_a_flaky_link() {
    let server = TestServer::start(Overwrite::Refuse);
    let local = tempfile::tempdir().unwrap();
    let files = [
        ("a.bin", data(2 << 20, 1)),
        ("b.bin", data(1_500_000, 2)),
        ("c.txt", b"the last one".to_vec()),
    ];
    for (name, content) in &files {
        write(&local.path().join("set").join(name), content);
    }
    // Cut inside a.bin, then before WELCOME, then inside b.bin; the fourth goes through.
    let proxy = FlakyProxy::start(server.addr(), vec![900_000, 60, 1_300_000]);

    let out = ferry(&[
        "send",
        &proxy.target().to_string(),
        arg(&local.path().join("set")),
        "--retries",
        "5",
        "--json",
    ]);

    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for (name, content) in &files {
        let stored = fs::read(server.path(&format!("set/{name}"))).unwrap();
        assert!(stored == *content, "{name} differs");
    }
    // One more when a cut fell between a file's END and its RESULT (it is confirmed first).
    assert!(proxy.connections() >= 4);
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let retries: Vec<_> = lines.iter().filter(|l| l["type"] == "retry").collect();
    // Each cut costs one retry, except a cut of the short connection that first confirms a
    // file whose whole body went out before a cut (the kernel buffers much of a file).
    assert!(retries.len() >= 2, "{stdout}");
    assert_eq!(retries[0]["retry"], 1);
    assert_eq!(retries[0]["of"], 5);
    let file_lines: Vec<_> = lines.iter().filter(|l| l["type"] == "file").collect();
    assert_eq!(file_lines.len(), 3, "one final line per file: {stdout}");
    assert!(file_lines.iter().all(|l| l["ok"] == true), "{stdout}");
    let a = file_lines
        .iter()
        .find(|l| l["name"] == "set/a.bin")
        .unwrap();
    assert!(a["offset"].as_u64().unwrap() > 0, "a.bin resumed: {a}");
    let summary = lines.last().unwrap();
    assert_eq!(summary["retries"], retries.len());
    assert_eq!(summary["exit_code"], 0);
    let err = stderr(&out);
    assert_eq!(err.matches("retrying in").count(), retries.len(), "{err}");
    assert!(err.contains("(1 of 5)"), "{err}");
}

#[test]
fn the_binary_gets_files_across_a_flaky_link() {
    let server = TestServer::start(Overwrite::Refuse);
    let big = data(2 << 20, 3);
    let other = data(1 << 20, 4);
    write(&server.path("dl/big.bin"), &big);
    write(&server.path("dl/other.bin"), &other);
    let proxy = FlakyProxy::start(server.addr(), vec![700_000, 1_200_000, 400_000]);
    let out_dir = tempfile::tempdir().unwrap();

    let out = ferry(&[
        "get",
        &proxy.target().to_string(),
        "dl/big.bin",
        "dl/other.bin",
        "-o",
        arg(out_dir.path()),
        "--retries",
        "5",
    ]);

    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(fs::read(out_dir.path().join("dl/big.bin")).unwrap() == big);
    assert!(fs::read(out_dir.path().join("dl/other.bin")).unwrap() == other);
    assert_eq!(
        common::tree(out_dir.path()),
        ["dl/big.bin", "dl/other.bin"],
        "no partial left"
    );
    assert_eq!(proxy.connections(), 4);
    assert_eq!(
        stderr(&out).matches("retrying in").count(),
        3,
        "one per cut"
    );
}

#[test]
fn without_retries_a_cut_is_exit_4_and_resumable() {
    let server = TestServer::start(Overwrite::Refuse);
    let content = data(2 << 20, 5);
    write(&server.path("big.bin"), &content);
    let proxy = FlakyProxy::start(server.addr(), vec![500_000]);
    let out_dir = tempfile::tempdir().unwrap();
    let args = [
        "get",
        &proxy.target().to_string(),
        "big.bin",
        "-o",
        arg(out_dir.path()),
        "--retries",
        "0",
    ]
    .map(str::to_owned);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    let out = ferry(&args);

    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(!stderr(&out).contains("retrying"), "{}", stderr(&out));
    assert!(stderr(&out).contains("run the same command again to resume"));
    assert!(partial_path(&out_dir.path().join("big.bin")).exists());
    assert_eq!(proxy.connections(), 1);

    // The same command again: the proxy lets it through now.
    let again = ferry(&args);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert!(fs::read(out_dir.path().join("big.bin")).unwrap() == content);
}

#[test]
fn an_upload_without_retries_fails_with_exit_4() {
    let server = TestServer::start(Overwrite::Refuse);
    let local = tempfile::tempdir().unwrap();
    let file = local.path().join("big.bin");
    write(&file, &data(1 << 20, 6));
    let proxy = FlakyProxy::start(server.addr(), vec![300_000]);

    let out = ferry(&["send", &proxy.target().to_string(), arg(&file)]);

    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(!server.path("big.bin").exists());
}

#[test]
fn tls_with_a_token_across_a_flaky_link() {
    let (_state, server, fp) = tls_server_with_token();
    let local = tempfile::tempdir().unwrap();
    let contents: Vec<Vec<u8>> = (0..4).map(|i| data(600_000, 10 + i)).collect();
    let paths: Vec<_> = (0..4).map(|i| local.path().join(format!("f{i}"))).collect();
    for (p, c) in paths.iter().zip(&contents) {
        write(p, c);
    }
    // Cuts in the middle of TLS records, during a handshake, and mid-body.
    let proxy = FlakyProxy::start(server.addr(), vec![1_000_001, 700, 333_333, 1_234_567]);
    let o = tls_retrying(6, fp, b"tok");
    let mut seen = Retries::default();
    let refs: Vec<&std::path::Path> = paths.iter().map(|p| p.as_path()).collect();

    let outcome = upload::send(&proxy.target(), sources(&refs), &o, &mut seen);

    assert_eq!(
        outcome.exit_code(),
        exit::OK,
        "{:?} {:#?}",
        outcome.error,
        outcome.files
    );
    assert!(outcome.retries >= 3, "{}", outcome.retries);
    assert_eq!(seen.0.len() as u32, outcome.retries);
    assert_eq!(outcome.files.len(), 4, "one report per file");
    for (i, c) in contents.iter().enumerate() {
        assert!(
            fs::read(server.path(&format!("f{i}"))).unwrap() == *c,
            "f{i}"
        );
    }
    let out = tempfile::tempdir().unwrap();
    let proxy = FlakyProxy::start(server.addr(), vec![500_000, 900, 800_000]);
    let names: Vec<Name> = (0..4)
        .map(|i| Name::parse(&format!("f{i}")).unwrap())
        .collect();
    let got = download::get(
        &proxy.target(),
        names,
        &Dest::Dir(out.path().to_owned()),
        &o,
        &mut (),
    );
    assert_eq!(got.exit_code(), exit::OK, "{:?}", got.error);
    assert_eq!(got.retries, 3);
    for (i, c) in contents.iter().enumerate() {
        assert!(fs::read(out.path().join(format!("f{i}"))).unwrap() == *c);
    }
}

/// The cut falls after the whole file went out and before its RESULT came back: the server
/// stored it. The retry proves that with a GET offering the whole local file as the resume
/// prefix (no byte of body moves) instead of sending it again, which would be refused as
/// existing, or stored a second time under another name.
#[test]
fn a_file_stored_whose_result_was_lost_is_confirmed_not_sent_again() {
    for overwrite in [Overwrite::Refuse, Overwrite::Rename] {
        let server = TestServer::start(overwrite);
        let local = tempfile::tempdir().unwrap();
        let file = local.path().join("doc.bin");
        let content = data(300_000, 8);
        write(&file, &content);
        let mut before_result = Vec::new();
        Frame::Welcome { version: VERSION }.encode(&mut before_result);
        Frame::Accept {
            id: 1,
            offset: 0,
            prefix: Digest::of_empty(),
        }
        .encode(&mut before_result);
        let proxy = FlakyProxy::downstream(server.addr(), vec![before_result.len() as u64]);
        let mut seen = Retries::default();

        let outcome = upload::send(&proxy.target(), sources(&[&file]), &retrying(3), &mut seen);

        assert_eq!(outcome.exit_code(), exit::OK, "{:?}", outcome.files);
        assert_eq!(outcome.retries, 1);
        assert!(seen.0[0].reason.contains("RESULT"), "{:?}", seen.0);
        let r = &outcome.files[0];
        assert_eq!(r.status, Status::Code(Code::Stored));
        assert_eq!(
            (r.offset, r.bytes),
            (300_000, 0),
            "confirmed, not sent again"
        );
        assert_eq!(
            common::tree(server.dir.path()),
            ["doc.bin"],
            "{overwrite:?}"
        );
        assert!(fs::read(server.path("doc.bin")).unwrap() == content);
    }
}

#[test]
fn a_server_that_never_answers_is_retried_with_growing_waits_then_exit_4() {
    let before = SLEPT.load(Ordering::SeqCst);
    let local = tempfile::tempdir().unwrap();
    let file = local.path().join("f");
    write(&file, b"x");
    let mut seen = Retries::default();
    let o = Options {
        backoff: Backoff {
            first: Duration::from_millis(1),
            max: Duration::from_millis(4),
            ..retrying(0).backoff
        },
        ..retrying(4)
    };

    let outcome = upload::send(&Target::from(dead_addr()), sources(&[&file]), &o, &mut seen);

    assert_eq!(outcome.exit_code(), exit::NETWORK);
    assert_eq!(outcome.retries, 4);
    let delays: Vec<u128> = seen.0.iter().map(|r| r.delay.as_millis()).collect();
    assert_eq!(delays, [1, 2, 4, 4]);
    assert!(seen
        .0
        .iter()
        .all(|r| r.reason.contains("connection refused")));
    assert!(SLEPT.load(Ordering::SeqCst) >= before + 4);
}

#[test]
fn refusals_and_untrusted_servers_are_not_retried() {
    let (_state, server, fp) = tls_server_with_token();
    write(&server.path("taken"), b"already here");
    let local = tempfile::tempdir().unwrap();
    let file = local.path().join("taken");
    write(&file, b"new");
    let with = |pin: Fingerprint, token: &[u8]| tls_retrying(3, pin, token);
    let cases = [
        (
            with(Fingerprint::from_bytes([3; 32]), b"tok"),
            exit::UNTRUSTED,
        ),
        (with(fp, b"wrong"), exit::REFUSED),
        (with(fp, b"tok"), exit::REFUSED), // the name exists: a per-file refusal
    ];
    for (o, code) in cases {
        let proxy = FlakyProxy::start(server.addr(), vec![]);
        let outcome = upload::send(&proxy.target(), sources(&[&file]), &o, &mut ());
        assert_eq!(outcome.exit_code(), code, "{:?}", outcome.error);
        assert_eq!(outcome.retries, 0);
        assert_eq!(proxy.connections(), 1);
    }
    assert_eq!(fs::read(server.path("taken")).unwrap(), b"already here");
}

#[test]
fn a_digest_mismatch_or_protocol_error_from_the_peer_is_not_retried() {
    // The raw server takes one connection: a retry would find nothing listening.
    let (addr, server) = raw_server(move |mut raw| {
        let id = raw.accept_offer(0, Digest::of_empty());
        raw.expect(kind::END);
        raw.send(&[Frame::Result {
            id,
            code: Code::DigestMismatch,
            detail: String::new(),
        }]);
        raw.drain();
    });
    let local = tempfile::tempdir().unwrap();
    let file = local.path().join("f");
    write(&file, b"bytes");
    let outcome = upload_to_script(addr, server, &file);
    assert_eq!(outcome.exit_code(), exit::PARTIAL);
    assert_eq!(outcome.files[0].status, Status::Code(Code::DigestMismatch));
    assert_eq!(outcome.retries, 0);

    let (addr, server) = raw_server(|mut raw| {
        raw.accept_offer(1000, Digest::of_empty());
        raw.drain();
    });
    let outcome = upload_to_script(addr, server, &file);
    assert_eq!(outcome.exit_code(), exit::PROTOCOL, "{:?}", outcome.error);
    assert_eq!(outcome.retries, 0);
}

#[test]
fn standard_input_is_not_sent_twice() {
    let server = TestServer::start(Overwrite::Refuse);
    let proxy = FlakyProxy::start(server.addr(), vec![200_000]);
    let input = data(1 << 20, 7);

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "send",
            &proxy.target().to_string(),
            "-",
            "--name",
            "piped.bin",
            "--retries",
            "3",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    // The client stops reading at the cut: the rest of the input may find the pipe closed.
    let feeder = std::thread::spawn(move || {
        let _ = pipe.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();

    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert_eq!(proxy.connections(), 1, "not retried");
    assert!(!server.path("piped.bin").exists());
}

/// A server that answers "busy" once (to the whole connection, or to one file) and then
/// serves: `--retries` waits and tries again instead of giving up with exit 3.
#[test]
fn a_busy_answer_is_waited_out_and_retried() {
    let server = TestServer::start(Overwrite::Refuse);
    let local = tempfile::tempdir().unwrap();
    let file = local.path().join("movie.bin");
    let content = data(200_000, 9);
    write(&file, &content);
    let too_many = |mut raw: common::Raw| {
        raw.send(&[Frame::Error {
            code: Code::Busy,
            reason: "too many connections; try again later".into(),
        }]);
        raw.drain();
    };
    let file_busy = |mut raw: common::Raw| {
        raw.welcome();
        let id = id_of(&raw.expect(kind::OFFER));
        raw.send(&[Frame::Refuse {
            id,
            code: Code::Busy,
            reason: "movie.bin is being uploaded by another connection; try again later".into(),
        }]);
        raw.drain();
    };
    /// What the server does with the first connection.
    type Script = Box<dyn FnOnce(common::Raw) + Send>;
    // A server over its limits may also close before a byte (README, exit 4: "network"), as
    // one cut off does: that too is retried.
    let scripts: [(&str, Script); 3] = [
        ("connection", Box::new(too_many)),
        ("file", Box::new(file_busy)),
        ("hang-up", Box::new(drop)),
    ];
    for (what, script) in scripts {
        let _ = fs::remove_file(server.path("movie.bin"));
        let addr = scripted_then_forwarded(server.addr(), script);
        let mut seen = Retries::default();
        let outcome = upload::send(
            &Target::from(addr),
            sources(&[&file]),
            &retrying(3),
            &mut seen,
        );
        assert_eq!(outcome.exit_code(), exit::OK, "{what}: {:?}", outcome);
        assert_eq!(outcome.retries, 1, "{what}");
        assert!(seen.0[0].delay > Duration::ZERO, "{what}: it waited");
        assert_eq!(
            fs::read(server.path("movie.bin")).unwrap(),
            content,
            "{what}"
        );
    }
}
