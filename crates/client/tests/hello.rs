//! The probe rides with the HELLO (PROTOCOL.md §2.2, §4.1): a send's first file offer goes in
//! the same write as the HELLO, before WELCOME, when it has version-1 bits only; servers of
//! every version answer it, and a server that refuses the connection stores nothing of it. At
//! the other end, the client closes without waiting for the server to (PROTOCOL.md §9).

mod common;

use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use common::{ferry, ferry_env, raw_server, stderr, write, Raw, TestServer};
use ferry_proto::wire::{kind, Frame};
use ferry_proto::{Code, Digest, EntryKind};
use ferry_secure::Token;

fn arg(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The next frame, which must come before the script answers anything.
fn unanswered(raw: &mut Raw) -> Option<Frame> {
    raw.read_frame()
}

/// §2.2, §4.1: a server of version 1, 2 or 3 reads the HELLO and then the first file's plain
/// OFFER (no digest, not early) before it has said WELCOME, and the upload completes.
#[test]
fn the_first_offer_goes_with_the_hello_to_servers_of_every_version() {
    for version in 1..=3 {
        let local = tempfile::tempdir().unwrap();
        let file = local.path().join("probe.txt");
        write(&file, b"abc");
        let (addr, script) = raw_server(move |mut raw| {
            // Bounded: a client that waited for WELCOME fails the test here.
            raw.stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            raw.expect(kind::HELLO);
            let Some(Frame::Offer {
                id,
                kind: EntryKind::File,
                digest: None,
                early: false,
                ..
            }) = unanswered(&mut raw)
            else {
                panic!("v{version}: a plain file offer before WELCOME")
            };
            raw.send(&[
                Frame::Welcome { version },
                Frame::Accept {
                    id,
                    offset: 0,
                    prefix: Digest::of_empty(),
                },
            ]);
            raw.store(id, "probe.txt");
            raw.drain();
        });

        let out = ferry(&["send", &addr.to_string(), arg(&file)]);

        script.join().unwrap();
        assert_eq!(out.status.code(), Some(0), "v{version}: {}", stderr(&out));
    }
}

/// §4.1: with `--checksum` the first offer carries a digest, a version-2 item: it waits for
/// WELCOME (nothing but the HELLO before it).
#[test]
fn with_checksum_the_first_offer_waits_for_welcome() {
    let local = tempfile::tempdir().unwrap();
    let file = local.path().join("probe.txt");
    write(&file, b"abc");
    let (addr, script) = raw_server(|mut raw| {
        raw.expect(kind::HELLO);
        raw.stream
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let before = unanswered(&mut raw);
        raw.stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        raw.send(&[Frame::Welcome { version: 2 }]);
        let offer = raw.expect(kind::OFFER);
        let Frame::Offer { id, digest, .. } = &offer else {
            unreachable!()
        };
        raw.send(&[Frame::Refuse {
            id: *id,
            code: Code::Unchanged,
            reason: "same".into(),
        }]);
        raw.drain();
        (before, digest.is_some())
    });

    let out = ferry(&["send", "--checksum", &addr.to_string(), arg(&file)]);

    let (before, digest) = script.join().unwrap();
    assert_eq!(before, None, "nothing after the HELLO before WELCOME");
    assert!(digest, "the offer after WELCOME carries the digest");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// §4.1: a server that requires a token denies a wrong or missing one and acts on no frame
/// after the HELLO: the offer that rode with it stores nothing, and the refusal is all that is
/// said (no file has a fate of its own). The right token stores it.
#[test]
fn a_denied_client_stores_nothing_of_the_offer_behind_its_hello() {
    let token = Token::new(b"the right token".to_vec()).unwrap();
    let server = TestServer::with(|c| c.token = Some(token));
    let local = tempfile::tempdir().unwrap();
    let file = local.path().join("f.txt");
    write(&file, b"must not arrive");
    let target = server.target().to_string();

    for env in [&[("FERRY_TOKEN", "a wrong token")][..], &[]] {
        let out = ferry_env(&["send", &target, arg(&file)], env);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{env:?}: {err}");
        assert!(err.contains("authentication failed"), "{err}");
        // Without a token, the client is told that one is needed.
        assert_eq!(
            env.is_empty(),
            err.contains("no token given; this server requires one"),
            "{err}"
        );
        assert!(!err.contains("f.txt"), "the refusal alone: {err}");
        assert!(common::tree(server.dir.path()).is_empty(), "nothing stored");
    }

    let out = ferry_env(
        &["send", &target, arg(&file)],
        &[("FERRY_TOKEN", "the right token")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(common::tree(server.dir.path()), ["f.txt"]);
}

/// A server at its connection limit refuses before it reads anything: the client, whose
/// offer went with its HELLO, still reads why (busy: at its limit), and nothing is stored.
#[test]
fn a_server_at_its_limit_says_busy_to_a_client_whose_offer_went_with_its_hello() {
    let server = TestServer::with(|c| {
        c.max_connections = 1;
        c.max_handshakes = 0;
    });
    let _held = TcpStream::connect(server.addr()).unwrap();
    let local = tempfile::tempdir().unwrap();
    let file = local.path().join("f.txt");
    write(&file, b"must not arrive");

    let out = ferry(&["send", &server.target().to_string(), arg(&file)]);

    let err = stderr(&out);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("at its limit"), "{err}");
    assert!(common::tree(server.dir.path()).is_empty(), "nothing stored");
}

/// Once every RESULT is in, the client ends its side and exits without waiting for the
/// server's (plain TCP): the server still reads a clean end (EOF, no reset) while it holds its
/// own side open until the client has exited.
#[test]
fn the_client_ends_cleanly_without_waiting_for_the_server_to_close() {
    use std::io::Read;
    let local = tempfile::tempdir().unwrap();
    let file = local.path().join("f.txt");
    write(&file, b"abc");
    let (addr, script) = raw_server(|mut raw| {
        raw.stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        raw.welcome();
        let id = common::id_of(&raw.expect(kind::OFFER));
        raw.send(&[Frame::Accept {
            id,
            offset: 0,
            prefix: Digest::of_empty(),
        }]);
        raw.store(id, "f.txt");
        let mut rest = Vec::new();
        let end = raw.stream.read_to_end(&mut rest).map_err(|e| e.kind());
        (end, raw.stream)
    });

    let out = ferry(&["send", &addr.to_string(), arg(&file)]);

    let (end, held) = script.join().unwrap();
    assert_eq!(end, Ok(0), "a clean end, nothing after the END");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    drop(held);
}
