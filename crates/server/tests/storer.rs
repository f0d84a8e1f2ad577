//! Small bodies stored ahead on the connection's storer thread (crates/server/src/session/
//! storer.rs): RESULTs keep the order of the ENDs among bodies stored ahead, bodies stored
//! inline and refusals; the same name twice in one connection behaves as when every body was
//! stored inline; a mismatched or cut-off body leaves nothing behind.

mod common;

use common::*;
use ferry_proto::wire::Frame;
use ferry_proto::{Code, Digest};
use ferry_server::{Config, Overwrite};

/// Small enough to be stored ahead (at most 64 KiB).
const SMALL: usize = 4 << 10;
/// Large enough to be stored inline.
const BIG: usize = 200 << 10;

/// BEGIN, the body in DATA frames of at most 64 KiB, and END of upload `id`, whose END
/// carries `digest`.
fn body_frames(r: &mut Raw, id: u64, body: &[u8], digest: Digest) {
    r.send(&[Frame::Begin { id, from: 0 }]);
    for chunk in body.chunks(64 << 10) {
        r.data(chunk);
    }
    r.send(&[Frame::End {
        id,
        size: body.len() as u64,
        digest,
    }]);
}

/// One upload of a test: its name, body and the digest its END carries.
struct Upload {
    name: String,
    body: Vec<u8>,
    digest: Digest,
}

impl Upload {
    /// `body` as `name`, with its own digest.
    fn new(name: impl Into<String>, body: Vec<u8>) -> Self {
        let digest = Digest::of(&body);
        let name = name.into();
        Upload { name, body, digest }
    }
}

/// Offers every upload at once (ids from 1), sends each body when its ACCEPT comes (the
/// last one's only up to `cut` bytes, then the client stops sending), and returns the
/// RESULTs and REFUSEs (id, code, detail) in the order they came, until `count` came or the
/// stream ended.
fn drive(
    r: &mut Raw,
    uploads: &[Upload],
    cut: Option<usize>,
    count: usize,
) -> Vec<(u64, Code, String)> {
    for (i, u) in uploads.iter().enumerate() {
        r.offer(i as u64 + 1, &u.name, u.body.len() as u64);
    }
    let mut out = Vec::new();
    while out.len() < count {
        match r.recv() {
            Some(Frame::Accept { id, .. }) => {
                let u = &uploads[id as usize - 1];
                match cut.filter(|_| id as usize == uploads.len()) {
                    Some(cut) => {
                        r.send(&[Frame::Begin { id, from: 0 }]);
                        r.data(&u.body[..cut]);
                        r.s.shutdown(std::net::Shutdown::Write).unwrap();
                    }
                    None => body_frames(r, id, &u.body, u.digest),
                }
            }
            Some(Frame::Result { id, code, detail }) => out.push((id, code, detail)),
            Some(Frame::Refuse { id, code, reason }) => out.push((id, code, reason)),
            Some(Frame::Error { .. }) | None if cut.is_some() => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    out
}

/// A server storing with `overwrite`, durable (fsync) or not.
fn server(overwrite: Overwrite, fsync: bool) -> TestServer {
    start(Config {
        overwrite,
        fsync,
        ..config()
    })
}

#[test]
fn results_keep_the_order_of_the_ends_among_ahead_inline_and_refused_bodies() {
    for fsync in [false, true] {
        let srv = server(Overwrite::Refuse, fsync);
        std::fs::write(srv.dir.join("taken.bin"), b"old").unwrap();
        let mut r = Raw::connect(srv.addr());
        // Per round: small, small with a wrong digest (refused at its END), big, a taken
        // name (refused at its offer), small, big, small, small, big with a wrong digest.
        let (mut uploads, mut expected) = (Vec::new(), Vec::new());
        for round in 0..6u8 {
            for (kind, len) in [
                ("s", SMALL),
                ("bad", SMALL),
                ("b", BIG),
                ("taken", SMALL),
                ("s", SMALL + 1),
                ("b", BIG + 1),
                ("s", 1),
                ("s", 60 << 10),
                ("bad", BIG),
            ] {
                let id = uploads.len() as u64 + 1;
                let body = data(len, round ^ id as u8);
                let (name, code) = match kind {
                    "taken" => ("taken.bin".to_owned(), Code::Exists),
                    "bad" => (format!("r{round}/bad{id}.bin"), Code::DigestMismatch),
                    _ => (format!("r{round}/{kind}{id}.bin"), Code::Stored),
                };
                let mut u = Upload::new(name.clone(), body);
                if kind == "bad" {
                    u.digest = Digest::of(b"something else");
                }
                uploads.push(u);
                expected.push((id, code, name));
            }
        }
        let got = drive(&mut r, &uploads, None, uploads.len());
        // REFUSEs answer offers at once; RESULTs come in END order.
        let refused: Vec<_> = got.iter().filter(|a| a.1 == Code::Exists).collect();
        assert_eq!(refused.len(), 6, "fsync {fsync}");
        let results: Vec<_> = got.iter().filter(|a| a.1 != Code::Exists).collect();
        let wanted: Vec<_> = expected.iter().filter(|e| e.1 != Code::Exists).collect();
        assert_eq!(results.len(), wanted.len());
        for (g, w) in results.iter().zip(&wanted) {
            assert_eq!((g.0, g.1), (w.0, w.1), "fsync {fsync}: {got:?}");
            if w.1 == Code::Stored {
                assert_eq!(g.2, w.2);
                let len = srv.read(&w.2).map(|b| b.len());
                assert!(len.is_some(), "{} stored", w.2);
            } else {
                assert!(srv.read(&w.2).is_none(), "{} not stored", w.2);
            }
        }
        assert_eq!(srv.read("taken.bin").unwrap(), b"old");
        assert!(srv.partials().is_empty(), "{:?}", srv.partials());
    }
}

/// What the same name offered twice in one connection led to: the answers to both offers
/// (by id), and each file left with which body it holds.
struct Twice {
    answers: Vec<(u64, Code, String)>,
    files: Vec<(String, &'static str)>,
}

/// Sends `first` as `same.bin`, then offers `second` under the same name in the same
/// connection before the first's RESULT came (both in one write).
fn same_name_twice(overwrite: Overwrite, first: &[u8], second: &[u8]) -> Twice {
    let srv = server(overwrite, false);
    let mut r = Raw::connect(srv.addr());
    r.offer(1, "same.bin", first.len() as u64);
    assert!(matches!(r.recv(), Some(Frame::Accept { id: 1, .. })));
    // The body, its END and the second offer in one write.
    let mut out = Vec::new();
    Frame::Begin { id: 1, from: 0 }.encode(&mut out);
    Frame::Data {
        len: first.len() as u32,
    }
    .encode(&mut out);
    out.extend_from_slice(first);
    Frame::End {
        id: 1,
        size: first.len() as u64,
        digest: Digest::of(first),
    }
    .encode(&mut out);
    file_offer(2, "same.bin", second.len() as u64).encode(&mut out);
    r.bytes(&out);
    let mut answers = Vec::new();
    while answers.len() < 2 {
        match r.recv() {
            Some(Frame::Accept { id: 2, .. }) => body_frames(&mut r, 2, second, Digest::of(second)),
            Some(Frame::Accept { .. }) => {}
            Some(Frame::Result { id, code, detail }) => answers.push((id, code, detail)),
            Some(Frame::Refuse { id, code, reason }) => answers.push((id, code, reason)),
            other => panic!("unexpected {other:?}"),
        }
    }
    answers.sort_by_key(|a| a.0);
    let mut files = srv.listing();
    files.retain(|f| !f.starts_with(".ferry-state/"));
    let files = files
        .into_iter()
        .map(|f| {
            let held = srv.read(&f).unwrap();
            let which = match held {
                _ if held == first => "first",
                _ if held == second => "second",
                _ => "neither",
            };
            (f, which)
        })
        .collect();
    Twice { answers, files }
}

#[test]
fn the_same_name_twice_in_one_connection_sees_the_first_stored() {
    let (a, b) = (data(SMALL, 1), data(SMALL, 2));
    let same = |who: &str| {
        (
            "same.bin".to_owned(),
            if who == "a" { "first" } else { "second" },
        )
    };

    let t = same_name_twice(Overwrite::Refuse, &a, &b);
    let codes: Vec<_> = t.answers.iter().map(|a| a.1).collect();
    assert_eq!(codes, [Code::Stored, Code::Exists], "{:?}", t.answers);
    assert_eq!(t.files, [same("a")]);

    let t = same_name_twice(Overwrite::Rename, &a, &b);
    let codes: Vec<_> = t.answers.iter().map(|a| a.1).collect();
    assert_eq!(codes, [Code::Stored, Code::Stored], "{:?}", t.answers);
    let renamed = t.answers[1].2.clone();
    assert_ne!(renamed, "same.bin");
    let mut want = vec![same("a"), (renamed, "second")];
    want.sort();
    assert_eq!(t.files, want);

    let t = same_name_twice(Overwrite::Replace, &a, &b);
    let codes: Vec<_> = t.answers.iter().map(|a| a.1).collect();
    assert_eq!(codes, [Code::Stored, Code::Stored], "{:?}", t.answers);
    assert_eq!(t.files, [same("b")]);
}

#[test]
fn a_digest_mismatch_stores_nothing() {
    let srv = server(Overwrite::Refuse, true);
    let mut r = Raw::connect(srv.addr());
    let mut bad = Upload::new("bad.bin", data(SMALL, 7));
    bad.digest = Digest::of(b"not it");
    let got = drive(&mut r, &[bad], None, 1);
    assert_eq!(got[0].1, Code::DigestMismatch, "{got:?}");
    drop(r);
    let mut left = srv.listing();
    left.retain(|f| !f.starts_with(".ferry-state/") || f.contains("partial"));
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_client_cut_off_mid_stream_leaves_no_partial_of_a_small_body() {
    let srv = server(Overwrite::Refuse, true);
    let mut r = Raw::connect(srv.addr());
    let uploads: Vec<Upload> = (0..10)
        .map(|i| Upload::new(format!("cut/f{i}.bin"), data(SMALL, i)))
        .collect();
    // The last body is cut in half: the client is gone.
    let got = drive(&mut r, &uploads, Some(SMALL / 2), uploads.len());
    // Every RESULT that came reports a file that is there, whole.
    let mut stored = 0;
    for (id, code, detail) in got {
        assert_eq!(code, Code::Stored, "{detail}");
        assert_eq!(
            srv.read(&detail).as_ref(),
            Some(&uploads[id as usize - 1].body)
        );
        stored += 1;
    }
    assert!(stored <= 9);
    // The nine complete bodies are stored, the cut one left nothing.
    wait_for("the complete bodies", || {
        (0..9).all(|i| srv.read(&format!("cut/f{i}.bin")).is_some())
    });
    assert!(srv.read("cut/f9.bin").is_none());
    assert!(srv.partials().is_empty(), "{:?}", srv.partials());
}
