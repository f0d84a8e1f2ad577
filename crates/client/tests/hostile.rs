//! Hostile or broken servers, scripted frame by frame: the client never writes outside its
//! folder, never publishes unverified bytes and never reports success for them.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use common::{id_of, opts, raw_server, write, Raw};
use ferry_client::download::{self, Dest};
use ferry_client::{upload, Options, Outcome, Status, Target};
use ferry_proto::wire::{kind, Frame};
use ferry_proto::{Code, Digest, Name};

fn offer(id: u64, name: &str, size: Option<u64>) -> Frame {
    Frame::Offer {
        id,
        kind: ferry_proto::EntryKind::File,
        digest: None,
        size,
        mtime: None,
        mode: None,
        name: name.to_owned(),
        early: false,
    }
}

/// Offers `a.txt` as `offered` bytes, awaits the ACCEPT, then sends BEGIN and `body`.
fn offer_and_send(raw: &mut Raw, id: u64, offered: u64, body: &[u8]) {
    raw.send(&[offer(id, "a.txt", Some(offered))]);
    raw.expect(kind::ACCEPT);
    raw.send(&[Frame::Begin { id, from: 0 }]);
    raw.send_data(body);
}

/// An END for `id` that claims `size` bytes with the digest of `digest_of`.
fn end(id: u64, size: u64, digest_of: &[u8]) -> Frame {
    Frame::End {
        id,
        size,
        digest: Digest::of(digest_of),
    }
}

/// Uploads one file holding `content` to the scripted server at `addr`; returns the outcome
/// once the script is done.
fn run_upload(addr: SocketAddr, server: JoinHandle<()>, content: &[u8], opts: &Options) -> Outcome {
    let local = tempfile::tempdir().unwrap();
    let f = local.path().join("f");
    write(&f, content);
    let outcome = upload::send(&Target::from(addr), common::sources(&[&f]), opts, &mut ());
    server.join().unwrap();
    outcome
}

/// Runs a download of `a.txt` into `<tmp>/out` against the scripted server; returns the
/// outcome and the temp dir (which must hold nothing but `out`).
fn download_from(script: impl FnOnce(Raw, u64) + Send + 'static) -> (Outcome, tempfile::TempDir) {
    let (addr, server) = raw_server(|mut raw| {
        raw.welcome();
        let get = raw.expect(kind::GET);
        script(raw, id_of(&get));
    });
    let tmp = tempfile::tempdir().unwrap();
    let dest = Dest::Dir(tmp.path().join("out"));
    let names = vec![Name::parse("a.txt").unwrap()];
    let outcome = download::get(&Target::from(addr), names, &dest, &opts(), &mut ());
    server.join().unwrap();
    assert_eq!(
        common::tree(tmp.path())
            .iter()
            .filter(|f| !f.starts_with("out/"))
            .count(),
        0,
        "nothing outside the folder"
    );
    assert!(!tmp.path().join("out/a.txt").exists(), "nothing published");
    assert!(outcome.files.iter().all(|f| !f.status.is_success()));
    (outcome, tmp)
}

#[test]
fn names_never_asked_for_are_a_protocol_error() {
    for evil in [
        "../escape.txt",
        "/etc/passwd",
        "b.txt",
        "out/../../x",
        "a.txt/../../x",
    ] {
        let (outcome, _tmp) = download_from(move |mut raw, id| {
            raw.send(&[offer(id, evil, Some(4))]);
            raw.drain();
        });
        assert_eq!(outcome.exit_code(), 5, "{evil}: {:?}", outcome.error);
        let msg = outcome.error.unwrap().to_string();
        assert!(msg.contains("not requested"), "{msg}");
    }
}

#[test]
fn a_body_longer_than_offered_is_cut_off() {
    let (outcome, tmp) = download_from(|mut raw, id| {
        offer_and_send(&mut raw, id, 4, b"12345678");
        raw.drain();
    });
    assert_eq!(outcome.exit_code(), 5, "{:?}", outcome.error);
    let partial = tmp.path().join("out/.a.txt.ferry-partial");
    let held = std::fs::metadata(partial).map_or(0, |m| m.len());
    assert!(held <= 4, "{held} bytes written for a 4-byte file");
}

#[test]
fn an_offer_without_a_size_is_a_protocol_error_and_leaves_nothing() {
    let (outcome, tmp) = download_from(|mut raw, id| {
        raw.send(&[offer(id, "a.txt", None)]);
        // A client that accepts gets a stream of bytes with no end in sight.
        if let Some(Frame::Accept { .. }) = raw.read_frame() {
            raw.send(&[Frame::Begin { id, from: 0 }]);
            for _ in 0..16 {
                raw.send_data(&[b'x'; 4096]);
            }
            return;
        }
        raw.drain();
    });
    assert_eq!(outcome.exit_code(), 5, "{:?}", outcome.error);
    let msg = outcome.error.unwrap().to_string();
    assert!(msg.contains("without a size"), "{msg}");
    assert!(
        common::tree(tmp.path()).is_empty(),
        "no partial left behind"
    );
}

#[test]
fn a_download_that_cannot_fit_is_refused_here() {
    let (outcome, tmp) = download_from(|mut raw, id| {
        raw.send(&[offer(id, "a.txt", Some(1 << 60))]);
        match raw.read_frame() {
            Some(Frame::Refuse { code, .. }) => assert_eq!(code, Code::NoSpace),
            other => panic!("expected a refusal, got {other:?}"),
        }
        raw.drain();
    });
    assert_eq!(outcome.exit_code(), 1, "{:?}", outcome.error);
    let file = &outcome.files[0];
    assert_eq!(file.status, Status::Code(Code::NoSpace));
    assert!(file.detail.contains("not enough space"), "{}", file.detail);
    assert!(
        common::tree(tmp.path()).is_empty(),
        "no partial left behind"
    );
}

#[test]
fn an_end_that_disagrees_with_the_offer_is_refused() {
    let (outcome, _tmp) = download_from(|mut raw, id| {
        offer_and_send(&mut raw, id, 8, b"1234");
        raw.send(&[end(id, 4, b"1234")]);
        raw.drain();
    });
    assert_eq!(outcome.exit_code(), 5, "{:?}", outcome.error);
}

#[test]
fn a_wrong_digest_discards_the_file_and_tells_the_server() {
    let (outcome, tmp) = download_from(|mut raw, id| {
        offer_and_send(&mut raw, id, 5, b"hello");
        raw.send(&[end(id, 5, b"jello")]);
        match raw.expect(kind::RESULT) {
            Frame::Result { code, .. } => assert_eq!(code, Code::DigestMismatch),
            other => panic!("{other:?}"),
        }
        raw.drain();
    });
    assert_eq!(outcome.exit_code(), 1);
    assert_eq!(outcome.files[0].status, Status::Code(Code::DigestMismatch));
    assert!(
        common::tree(tmp.path()).is_empty(),
        "no partial kept either"
    );
}

#[test]
fn a_result_for_a_file_never_sent_is_a_protocol_error() {
    let (addr, server) = raw_server(|mut raw| {
        raw.welcome();
        let o = raw.expect(kind::OFFER);
        raw.send(&[Frame::Result {
            id: id_of(&o),
            code: Code::Stored,
            detail: "f".into(),
        }]);
        raw.drain();
    });
    let outcome = run_upload(addr, server, b"data", &opts());

    assert_eq!(outcome.exit_code(), 5, "{:?}", outcome.error);
    assert_eq!(outcome.files[0].status, Status::Incomplete);
}

#[test]
fn a_resume_offset_with_a_foreign_prefix_restarts_at_zero() {
    let content = b"the whole file".to_vec();
    let expected = content.clone();
    let (addr, server) = raw_server(move |mut raw| {
        let id = raw.accept_offer(3, Digest::of(b"xyz"));
        assert_eq!(raw.expect(kind::BEGIN), Frame::Begin { id, from: 0 });
        match raw.expect(kind::END) {
            Frame::End { size, digest, .. } => {
                assert_eq!((size, digest), (14, Digest::of(&expected)));
            }
            other => panic!("{other:?}"),
        }
        raw.send(&[Frame::Result {
            id,
            code: Code::Stored,
            detail: "f".into(),
        }]);
        raw.drain();
    });
    let outcome = run_upload(addr, server, &content, &opts());

    assert_eq!(outcome.exit_code(), 0, "{:?}", outcome.error);
    assert_eq!((outcome.files[0].offset, outcome.files[0].bytes), (0, 14));
}

#[test]
fn an_offset_beyond_the_file_is_a_protocol_error() {
    let (addr, server) = raw_server(|mut raw| {
        raw.accept_offer(1000, Digest::of_empty());
        raw.drain();
    });
    let outcome = run_upload(addr, server, b"tiny", &opts());

    assert_eq!(outcome.exit_code(), 5, "{:?}", outcome.error);
}

#[test]
fn a_busy_server_is_a_refusal_with_its_reason_escaped() {
    let (addr, server) = raw_server(|mut raw| {
        raw.send(&[Frame::Error {
            code: Code::Busy,
            reason: "too many clients\x1b[2J".into(),
        }]);
        raw.drain();
    });
    let outcome = run_upload(addr, server, b"x", &opts());

    assert_eq!(outcome.exit_code(), 3);
    let msg = outcome.error.unwrap().to_string();
    assert!(
        msg.contains("refused the connection: too many clients"),
        "{msg}"
    );
    assert!(!msg.contains('\x1b'), "{msg}");
}

#[test]
fn garbage_from_the_server_is_a_protocol_error() {
    let (addr, server) = raw_server(|mut raw| {
        raw.send_raw(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        raw.drain();
    });
    let outcome = run_upload(addr, server, b"x", &opts());

    assert_eq!(outcome.exit_code(), 5, "{:?}", outcome.error);
}

#[test]
fn a_silent_server_times_out() {
    let (addr, server) = raw_server(|mut raw| {
        raw.welcome();
        raw.drain();
    });
    let local = tempfile::tempdir().unwrap();
    let f = local.path().join("f");
    write(&f, b"x");
    let quick = Options {
        timeout: Duration::from_secs(1),
        ..opts()
    };

    let outcome = upload::send(&Target::from(addr), common::sources(&[&f]), &quick, &mut ());
    server.join().unwrap();

    assert_eq!(outcome.exit_code(), 4);
    let msg = outcome.error.unwrap().to_string();
    assert!(msg.contains("did not answer"), "{msg}");
}

#[test]
fn a_wrong_digest_on_stdout_fails_the_command() {
    let (addr, server) = raw_server(|mut raw| {
        raw.welcome();
        let id = id_of(&raw.expect(kind::GET));
        raw.send(&[offer(id, "a.txt", Some(5))]);
        raw.expect(kind::ACCEPT);
        raw.send(&[Frame::Begin { id, from: 0 }]);
        raw.send_data(b"hello");
        raw.send(&[end(id, 5, b"jello")]);
        raw.drain();
    });

    let out = common::ferry(&["get", &addr.to_string(), "a.txt", "-o", "-"]);
    server.join().unwrap();

    assert_eq!(out.status.code(), Some(1));
    let err = common::stderr(&out);
    assert!(err.contains("do not match"), "{err}");
}

/// README, exit codes: a peer that closes before sending a byte is a network failure (4, and
/// `--retries` tries again: a ferry server over its limits, or a cut link), with the lab
/// report's server.py named second; one that sent bytes that are not ferry is exit 5.
#[test]
fn a_peer_that_hangs_up_before_welcome_gets_a_hint() {
    let (addr, server) = raw_server(drop);
    let outcome = run_upload(addr, server, b"x", &opts());

    assert_eq!(outcome.exit_code(), 4);
    let msg = outcome.error.unwrap().to_string();
    assert!(
        msg.contains("closed the connection before answering"),
        "{msg}"
    );
    assert!(msg.contains("--legacy"), "{msg}");

    let (addr, server) = raw_server(|mut raw| {
        raw.send_raw(&[0xff; 3]);
        raw.stream.shutdown(std::net::Shutdown::Write).unwrap();
        raw.drain();
    });
    let outcome = run_upload(addr, server, b"x", &opts());
    assert_eq!(outcome.exit_code(), 5);
    let msg = outcome.error.unwrap().to_string();
    assert!(msg.contains("is it a ferry server?"), "{msg}");
    assert!(msg.contains("--legacy"), "{msg}");
}

/// Runs `ferry get --timeout 3 a.txt` against a server that runs `prelude` at full speed,
/// then trickles `trickle` one byte every 2 s (at most 20 of them); returns the exit code, how
/// long the client ran, and the temp dir it downloaded into.
fn get_from_trickler(
    prelude: impl FnOnce(&mut Raw, u64) + Send + 'static,
    trickle: impl FnOnce(u64) -> Vec<u8> + Send + 'static,
) -> (Option<i32>, Duration, tempfile::TempDir) {
    let done = Arc::new(AtomicBool::new(false));
    let client_done = done.clone();
    let (addr, server) = raw_server(move |mut raw| {
        raw.welcome();
        let id = id_of(&raw.expect(kind::GET));
        prelude(&mut raw, id);
        for b in trickle(id).into_iter().take(20) {
            for _ in 0..20 {
                if done.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if std::io::Write::write_all(&mut raw.stream, &[b]).is_err() {
                return;
            }
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let started = std::time::Instant::now();
    let run = common::ferry(&[
        "get",
        &addr.to_string(),
        "a.txt",
        "-o",
        out.to_str().unwrap(),
        "--timeout",
        "3",
    ]);
    let took = started.elapsed();
    client_done.store(true, Ordering::SeqCst);
    server.join().unwrap();
    (run.status.code(), took, tmp)
}

fn encode(frames: &[Frame]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        f.encode(&mut out);
    }
    out
}

#[test]
fn a_trickling_server_cannot_stretch_the_timeout() {
    // The replies themselves, one byte every 2 s.
    let (code, took, tmp) =
        get_from_trickler(|_, _| {}, |id| encode(&[offer(id, "a.txt", Some(5))]));
    assert_eq!(code, Some(4), "a timeout is a network failure");
    assert!(took < Duration::from_secs(15), "ran {took:?}");
    assert!(common::tree(tmp.path()).is_empty(), "nothing left behind");

    // A body: one-byte DATA frames, one every 2 s.
    let (code, took, _tmp) = get_from_trickler(
        |raw, id| {
            raw.send(&[offer(id, "a.txt", Some(1000))]);
            raw.expect(kind::ACCEPT);
            raw.send(&[Frame::Begin { id, from: 0 }]);
        },
        |_| {
            let mut bytes = Vec::new();
            for _ in 0..4 {
                bytes.extend(encode(&[Frame::Data { len: 1 }]));
                bytes.push(b'x');
            }
            bytes
        },
    );
    assert_eq!(code, Some(4));
    assert!(took < Duration::from_secs(15), "ran {took:?}");
}

/// PROTOCOL.md §4.12: a server that ends the connection in the middle of a body with ERROR
/// `ShuttingDown` and closes without reading the rest (so that the close resets our writes) is
/// reported by its words, not as a broken pipe: the client reads what the server still had to
/// say after its write failed.
#[test]
fn a_server_stopping_mid_body_is_reported_by_its_words_not_as_a_broken_pipe() {
    let (addr, server) = raw_server(|mut raw| {
        raw.accept_offer(0, Digest::of_empty());
        raw.expect(kind::DATA);
        raw.send(&[Frame::Error {
            code: Code::ShuttingDown,
            reason: "the server is shutting down".into(),
        }]);
        // Closed with the client's bytes unread: a reset.
    });
    let local = tempfile::tempdir().unwrap();
    let file = local.path().join("big.bin");
    write(&file, &vec![7u8; 64 << 20]);

    let outcome = upload::send(
        &Target::from(addr),
        common::sources(&[&file]),
        &opts(),
        &mut (),
    );

    server.join().unwrap();
    let error = outcome.error.as_ref().expect("the run failed").to_string();
    assert!(error.contains("(shutting down)"), "{error}");
    assert_eq!(outcome.exit_code(), ferry_client::exit::NETWORK, "{error}");
}
