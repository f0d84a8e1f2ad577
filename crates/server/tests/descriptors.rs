//! Per-connection descriptors (issue 11, item 1): whatever one client pipelines, its
//! connection holds a bounded number of open files, so that it cannot exhaust the process's
//! descriptors and lock everyone else out. Judged by counting `/proc/self/fd` (the test server
//! runs in this process).

mod common;

use std::sync::Mutex;

use common::*;
use ferry_proto::wire::Frame;
use ferry_proto::{Code, Digest};

/// Descriptor counts are process-wide: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// GETs sent before reading the replies, so that the socket buffers never fill up.
const BATCH: u64 = 100;

#[test]
fn three_thousand_gets_never_accepted_hold_no_descriptors() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let srv = start(config());
    std::fs::write(srv.dir.join("file.txt"), b"hello").unwrap();
    let baseline = open_fds();
    let mut raw = Raw::connect(srv.addr());
    let (mut offered, mut busy) = (0, 0);
    for batch in 0..3_000 / BATCH {
        let gets: Vec<Frame> = (1..=BATCH)
            .map(|i| Frame::Get {
                id: batch * BATCH + i,
                name: "file.txt".into(),
            })
            .collect();
        raw.send(&gets);
        for _ in 0..BATCH {
            match raw.recv() {
                Some(Frame::Offer { .. }) => offered += 1,
                Some(Frame::Refuse {
                    code: Code::Busy, ..
                }) => busy += 1,
                other => panic!("expected OFFER or REFUSE busy, got {other:?}"),
            }
        }
    }
    let held = open_fds();
    assert!(
        held < baseline + 50,
        "3,000 GETs never accepted: {held} descriptors open, {baseline} before"
    );
    assert_eq!(
        (offered, busy),
        (1024, 1976),
        "offers past the cap are refused"
    );
    // Another client is served meanwhile, and the first one's offers still work.
    let body = data(100_000, 3);
    assert_eq!(
        upload_once(srv.addr(), "other.bin", &body).code,
        Code::Stored
    );
    assert_eq!(srv.read("other.bin"), Some(body));
    raw.send(&[Frame::Accept {
        id: 1,
        offset: 0,
        prefix: Digest::of(b""),
    }]);
    assert!(matches!(raw.recv(), Some(Frame::Begin { id: 1, from: 0 })));
}

#[test]
fn pending_resumable_offers_hold_a_bounded_number_of_partials() {
    const OFFERS: u64 = 24;
    const SIZE: usize = 1 << 20;
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let srv = start(config());
    let baseline = open_fds();
    let mut raw = Raw::connect(srv.addr());
    for id in 1..=OFFERS {
        raw.offer(id, &format!("p/{id}.bin"), SIZE as u64);
    }
    for id in 1..=OFFERS {
        match raw.recv() {
            Some(Frame::Accept {
                id: a, offset: 0, ..
            }) => assert_eq!(a, id),
            other => panic!("expected ACCEPT, got {other:?}"),
        }
    }
    let held = open_fds();
    assert!(
        held < baseline + 16,
        "{OFFERS} pending offers: {held} descriptors open, {baseline} before"
    );
    assert!(srv.partials().len() <= 8, "{:?}", srv.partials());
    // Every upload still goes through, resumable or not.
    for id in 1..=OFFERS {
        let body = data(SIZE, id as u8);
        raw.send(&[Frame::Begin { id, from: 0 }]);
        raw.data(&body);
        raw.send(&[Frame::End {
            id,
            size: SIZE as u64,
            digest: Digest::of(&body),
        }]);
        match raw.recv() {
            Some(Frame::Result { id: r, code, .. }) => {
                assert_eq!((r, code), (id, Code::Stored));
            }
            other => panic!("expected RESULT, got {other:?}"),
        }
        assert!(srv.read(&format!("p/{id}.bin")) == Some(body), "#{id}");
    }
    drop(raw);
    assert!(srv.partials().is_empty(), "{:?}", srv.partials());
}
