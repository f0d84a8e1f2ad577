//! Nothing half-done is ever published: digest mismatch, truncation, dropped connections,
//! resume (verified prefix), and two uploads racing for one name.

mod common;

use std::sync::{Arc, Barrier};
use std::thread;

use common::*;
use ferry_proto::wire::Frame;
use ferry_proto::{Code, Digest, Hasher};
use ferry_server::{Config, Overwrite};

#[test]
fn a_digest_mismatch_stores_nothing_and_the_connection_goes_on() {
    let mut srv = start(config());
    let mut raw = Raw::connect(srv.addr());
    raw.offer(1, "m.txt", 5);
    assert!(matches!(
        raw.recv(),
        Some(Frame::Accept {
            id: 1,
            offset: 0,
            ..
        })
    ));
    raw.send(&[Frame::Begin { id: 1, from: 0 }]);
    raw.data(b"hello");
    raw.send(&[Frame::End {
        id: 1,
        size: 5,
        digest: Digest::of(b"jello"),
    }]);
    match raw.recv() {
        Some(Frame::Result { id: 1, code, .. }) => assert_eq!(code, Code::DigestMismatch),
        other => panic!("expected RESULT, got {other:?}"),
    }
    // Same connection, same name, right digest: stored.
    raw.offer(2, "m.txt", 5);
    assert!(matches!(
        raw.recv(),
        Some(Frame::Accept {
            id: 2,
            offset: 0,
            ..
        })
    ));
    raw.send(&[Frame::Begin { id: 2, from: 0 }]);
    raw.data(b"hello");
    raw.send(&[Frame::End {
        id: 2,
        size: 5,
        digest: Digest::of(b"hello"),
    }]);
    assert!(matches!(
        raw.recv(),
        Some(Frame::Result {
            id: 2,
            code: Code::Stored,
            ..
        })
    ));
    drop(raw);
    srv.stop();
    assert_eq!(srv.listing(), vec!["m.txt"]);
}

#[test]
fn a_truncated_body_is_never_published() {
    let mut srv = start(config());
    let body = data(100, 5);
    let mut raw = Raw::connect(srv.addr());
    raw.offer(1, "t.bin", 100);
    assert!(matches!(raw.recv(), Some(Frame::Accept { .. })));
    raw.send(&[Frame::Begin { id: 1, from: 0 }]);
    raw.data(&body[..50]);
    raw.send(&[Frame::End {
        id: 1,
        size: 50,
        digest: Digest::of(&body[..50]),
    }]);
    assert!(matches!(
        raw.recv(),
        Some(Frame::Error {
            code: Code::SizeMismatch,
            ..
        })
    ));
    assert_eq!(raw.recv(), None);
    srv.stop();
    assert!(srv.read("t.bin").is_none());
}

#[test]
fn a_dropped_upload_is_kept_and_resumed_from_where_it_stopped() {
    let mut srv = start(config());
    let body = data(3 << 20, 9);
    let cut = (1 << 20) + 12_345;
    upload_and_drop(&srv, "dir/big.bin", &body, cut);
    assert!(
        srv.read("dir/big.bin").is_none(),
        "nothing under the final name"
    );

    let o = upload_when_free(srv.addr(), "dir/big.bin", &body);
    assert_eq!(o.code, Code::Stored, "{o:?}");
    assert_eq!(
        o.from,
        Some(cut as u64),
        "the body resumed at the kept offset"
    );
    srv.stop();
    assert!(
        srv.read("dir/big.bin").unwrap() == body,
        "resumed file differs"
    );
    assert_eq!(srv.listing(), vec!["dir/big.bin"]);
}

#[test]
fn a_restart_cleans_temp_files_and_keeps_partials_for_resume() {
    let mut srv = start(config());
    let body = data(2 << 20, 12);
    upload_and_drop(&srv, "keep/me.bin", &body, 700_000);
    let stale = srv.dir.join(".ferry-state/tmp/.ferry-tmp.crashed");
    std::fs::write(&stale, b"left by a crash").unwrap();
    srv.restart();
    assert!(!stale.exists(), "temp files are removed at start-up");
    assert_eq!(srv.partials().len(), 1, "partials are kept");
    let o = upload_once(srv.addr(), "keep/me.bin", &body);
    assert_eq!((o.code, o.from), (Code::Stored, Some(700_000)), "{o:?}");
    srv.stop();
    assert!(srv.read("keep/me.bin").unwrap() == body);
    assert_eq!(srv.listing(), vec!["keep/me.bin"]);
}

#[test]
fn a_resume_whose_prefix_differs_restarts_from_zero() {
    let mut srv = start(config());
    let first = data(2 << 20, 1);
    let second = data(2 << 20, 2);
    upload_and_drop(&srv, "r.bin", &first, 1 << 20);
    let o = upload_when_free(srv.addr(), "r.bin", &second);
    assert_eq!((o.code, o.from), (Code::Stored, Some(0)), "{o:?}");
    srv.stop();
    assert!(srv.read("r.bin").unwrap() == second);
    assert_eq!(srv.listing(), vec!["r.bin"]);
}

#[test]
fn a_cancelled_upload_leaves_nothing() {
    let mut srv = start(config());
    let body = data(10_000, 4);
    let mut d = connect(srv.addr());
    let id = d.conn_mut().offer(info("c.bin", 10_000)).unwrap();
    assert!(matches!(
        d.next_step().unwrap(),
        ferry_proto::Step::Event(ferry_proto::Event::Accepted { .. })
    ));
    d.conn_mut().begin(id, Hasher::new()).unwrap();
    d.send_body(&body[..5000]).unwrap();
    d.conn_mut().cancel(id, "changed my mind").unwrap();
    assert_eq!(upload(&mut d, "after.txt", b"x").code, Code::Stored);
    drop(d);
    srv.stop();
    assert_eq!(srv.listing(), vec!["after.txt"]);
}

fn race(overwrite: Overwrite) {
    let mut srv = start(Config {
        overwrite,
        ..config()
    });
    let bodies = [data(4 << 20, 11), data(4 << 20, 22)];
    let gate = Arc::new(Barrier::new(2));
    let outcomes: Vec<_> = bodies
        .iter()
        .map(|b| {
            let (addr, b, gate) = (srv.addr(), b.clone(), Arc::clone(&gate));
            thread::spawn(move || {
                let mut d = connect(addr);
                gate.wait();
                upload(&mut d, "same.bin", &b).code
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    assert!(outcomes.contains(&Code::Stored), "{outcomes:?}");
    for c in &outcomes {
        assert!(
            matches!(c, Code::Stored | Code::Busy | Code::Exists),
            "{outcomes:?}"
        );
    }
    srv.stop();
    let stored = srv.read("same.bin").unwrap();
    assert!(
        stored == bodies[0] || stored == bodies[1],
        "the stored file is one whole upload"
    );
    assert_eq!(srv.listing(), vec!["same.bin"]);
}

#[test]
fn two_uploads_of_one_name_leave_one_whole_file_refuse() {
    race(Overwrite::Refuse);
}

#[test]
fn two_uploads_of_one_name_leave_one_whole_file_replace() {
    race(Overwrite::Replace);
}
