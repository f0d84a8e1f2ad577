//! Scale-out on a real object store: two `ferry-server` binaries on one bucket of a
//! single-node Ceph RGW (tests/rgw, scripts/rgw.sh), a real HAProxy in TCP mode in front of
//! them (round robin, PROXY v2). Uploads land exactly once, an upload cut by its client or by
//! the balancer resumes through the other instance, concurrent uploads of one name store one,
//! a killed server leaves nothing visible, downloads (whole and resumed) are intact. The
//! clients are the proto `Driver` clients of tests/common.

mod common;
mod haproxy;
mod ops;
mod rgw;

use std::net::Shutdown;
use std::sync::{Arc, Barrier};

use common::*;
use ferry_proto::{Code, Event, Hasher, Step};
use haproxy::HaProxy;
use ops::Bin;
use rgw::Rgw;

/// Where the servers keep their own state in the bucket (never a client's name).
const STATE: &str = ".ferry-state/";

/// The S3 backend's part size: uploads bigger than this are multipart uploads.
const PART: usize = 8 << 20;

/// Two servers on one fresh bucket behind HAProxy: connection N through the front goes to
/// server N modulo 2 (round robin, counted from 0).
struct Bed {
    rgw: &'static Rgw,
    bucket: String,
    servers: Vec<Bin>,
    proxy: HaProxy,
}

impl Bed {
    /// The bed, or `None` (after a loud `SKIPPED` line) when Ceph or HAProxy is missing.
    fn start(tag: &str) -> Option<Bed> {
        let rgw = Rgw::get()?;
        let bucket = rgw.fresh_bucket(tag);
        let store = format!("s3://{bucket}");
        let args = [
            "--store",
            &store,
            "--s3-endpoint",
            rgw.endpoint(),
            "--proxy-protocol",
            "--trusted-proxy",
            "127.0.0.1",
        ];
        let servers: Vec<Bin> = (0..2)
            .map(|_| Bin::start_with_env(&args, &rgw.env()))
            .collect();
        let addrs: Vec<_> = servers.iter().map(|s| s.addr).collect();
        let proxy = HaProxy::start(&addrs)?;
        Some(Bed {
            rgw,
            bucket,
            servers,
            proxy,
        })
    }

    /// A welcomed client through the balancer.
    fn client(&self) -> Client {
        connect(self.proxy.front)
    }

    /// What clients can see in the bucket: every key but the servers' state, with its size.
    fn visible(&self) -> Vec<(String, u64)> {
        let mut keys = self.rgw.keys(&self.bucket, "");
        keys.retain(|(k, _)| !k.starts_with(STATE));
        keys
    }

    /// The stored bytes of `name`, read straight from the bucket.
    fn object(&self, name: &str) -> Option<Vec<u8>> {
        self.rgw.get_object(&self.bucket, name)
    }
}

/// What the S3 backend's refuse-overwrite rests on: a PutObject with `If-None-Match: *` is
/// refused (412) when the key exists, and the first object stays.
#[test]
fn rgw_refuses_a_conditional_put_over_an_existing_key() {
    let Some(rgw) = Rgw::get() else { return };
    let bucket = rgw.fresh_bucket("if-none-match");
    assert_eq!(rgw.put_if_absent(&bucket, "claim", b"first"), 200);
    assert_eq!(rgw.put_if_absent(&bucket, "claim", b"second"), 412);
    assert_eq!(
        rgw.get_object(&bucket, "claim").as_deref(),
        Some(&b"first"[..])
    );
    assert_eq!(rgw.keys(&bucket, ""), vec![("claim".to_owned(), 5)]);
}

#[test]
fn uploads_through_the_balancer_land_exactly_once() {
    let Some(mut bed) = Bed::start("once") else {
        return;
    };
    let files = [
        ("empty", Vec::new()),
        ("small.txt", data(1000, 1)),
        ("dir/one-part.bin", data(PART, 2)),
        ("dir/sub/three-parts.bin", data(2 * PART + 12345, 3)),
    ];
    // Each file through one instance, then again through the other: stored once, then left
    // as it is.
    for (name, bytes) in &files {
        assert_eq!(
            upload(&mut bed.client(), name, bytes).code,
            Code::Stored,
            "{name}"
        );
    }
    for (name, bytes) in &files {
        let again = upload(&mut bed.client(), name, bytes);
        assert!(
            matches!(again.code, Code::Unchanged | Code::Exists),
            "{name} again: {again:?}"
        );
    }
    let mut want: Vec<(String, u64)> = files
        .iter()
        .map(|(n, b)| (n.to_string(), b.len() as u64))
        .collect();
    want.sort();
    assert_eq!(bed.visible(), want);
    for (name, bytes) in &files {
        assert!(bed.object(name).as_ref() == Some(bytes), "{name} differs");
    }
    // Both instances served (each connection stored one file).
    for s in &mut bed.servers {
        s.wait_line(": 1 stored");
    }
}

/// Offers `bytes` as `name` through the balancer and sends the first `sent` bytes of the
/// body; returns the client, its upload unfinished.
fn start_upload(bed: &Bed, name: &str, bytes: &[u8], sent: usize) -> Client {
    let mut d = bed.client();
    let id = d.conn_mut().offer(info(name, bytes.len() as u64)).unwrap();
    match d.next_step().unwrap() {
        Step::Event(Event::Accepted { offset: 0, .. }) => {}
        other => panic!("expected ACCEPT at 0, got {other:?}"),
    }
    d.conn_mut().begin(id, Hasher::new()).unwrap();
    d.send_body(&bytes[..sent]).unwrap();
    d.flush().unwrap();
    d
}

/// Offers `bytes` as `name` through the balancer, sends the first `cut` bytes of the body and
/// goes away (the client was killed): the instance it reached sees the end of the stream.
fn cut_upload(bed: &Bed, name: &str, bytes: &[u8], cut: usize) {
    let mut d = start_upload(bed, name, bytes, cut);
    let s = d.stream_mut();
    s.shutdown(Shutdown::Write).unwrap();
    let _ = std::io::copy(s, &mut std::io::sink());
}

/// Waits until some part of an upload is stored (its record is a key with a `/p/`).
fn wait_for_a_stored_part(bed: &Bed) {
    wait_for("a stored part", || {
        let state = bed.rgw.keys(&bed.bucket, STATE);
        state.iter().any(|(k, _)| k.contains("/p/"))
    });
}

#[test]
fn an_upload_cut_mid_body_resumes_through_the_other_instance() {
    let Some(mut bed) = Bed::start("resume") else {
        return;
    };
    let name = "cut/big.bin";
    let bytes = data(3 * PART + 4321, 7);
    let cut = 2 * PART + PART / 2;
    cut_upload(&bed, name, &bytes, cut);
    bed.servers[0].wait_line("connection closed");
    assert!(bed.object(name).is_none(), "visible before it is complete");
    // The next connection goes to the other instance, which resumes from the parts the first
    // one stored.
    let resumed = upload(&mut bed.client(), name, &bytes);
    assert_eq!(resumed.code, Code::Stored, "{resumed:?}");
    // From the parts the first instance stored whole (the one being filled was lost).
    assert_eq!(resumed.from, Some(2 * PART as u64));
    bed.servers[1].wait_line(": 1 stored");
    assert!(bed.object(name) == Some(bytes), "not byte-identical");
    assert_eq!(
        bed.visible(),
        vec![(name.to_owned(), (3 * PART + 4321) as u64)]
    );
}

#[test]
fn an_upload_cut_by_the_balancer_resumes_through_the_other_instance() {
    let Some(mut bed) = Bed::start("proxy-cut") else {
        return;
    };
    let name = "proxy-cut.bin";
    let bytes = data(3 * PART + 777, 8);
    let mut d = start_upload(&bed, name, &bytes, 2 * PART + 1000);
    wait_for_a_stored_part(&bed);
    // The balancer dies (SIGKILL) under the upload; a new one sends the next connection to
    // the other instance first.
    let other_first = [bed.servers[1].addr, bed.servers[0].addr];
    bed.proxy = HaProxy::start(&other_first).unwrap();
    let _ = std::io::copy(d.stream_mut(), &mut std::io::sink());
    drop(d);
    bed.servers[0].wait_line("connection closed");
    assert!(bed.object(name).is_none(), "visible before it is complete");
    let resumed = upload(&mut bed.client(), name, &bytes);
    assert_eq!(resumed.code, Code::Stored, "{resumed:?}");
    let from = resumed.from.expect("accepted");
    assert!(
        from >= PART as u64 && from % PART as u64 == 0,
        "resumed from {from}"
    );
    bed.servers[1].wait_line(": 1 stored");
    assert!(bed.object(name) == Some(bytes), "not byte-identical");
}

#[test]
fn eight_concurrent_uploads_of_one_name_through_both_instances_store_one() {
    let Some(bed) = Bed::start("race") else {
        return;
    };
    let name = "race.bin";
    // Small ones (one PutObject each) and multipart ones, all different.
    let contents: Vec<Vec<u8>> = (0..8u8)
        .map(|i| {
            let len = if i % 2 == 0 { 50_000 } else { PART + 1000 };
            data(len + usize::from(i), i)
        })
        .collect();
    let start = Arc::new(Barrier::new(contents.len()));
    let codes: Vec<Code> = std::thread::scope(|scope| {
        let runs: Vec<_> = contents
            .iter()
            .map(|bytes| {
                // Connected here, in order, so that they alternate between the instances.
                let mut d = bed.client();
                let start = Arc::clone(&start);
                scope.spawn(move || {
                    start.wait();
                    upload(&mut d, name, bytes).code
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let stored: Vec<usize> = (0..codes.len())
        .filter(|&i| codes[i] == Code::Stored)
        .collect();
    assert_eq!(stored.len(), 1, "{codes:?}");
    let winner = &contents[stored[0]];
    assert_eq!(bed.visible(), vec![(name.to_owned(), winner.len() as u64)]);
    assert!(
        bed.object(name).as_ref() == Some(winner),
        "not the winner's bytes"
    );
}

#[test]
fn a_server_killed_mid_upload_leaves_nothing_visible() {
    let Some(mut bed) = Bed::start("killed") else {
        return;
    };
    let name = "killed.bin";
    let bytes = data(3 * PART, 9);
    let d = start_upload(&bed, name, &bytes, 2 * PART + 1000);
    // Killed with its first parts stored and more in flight.
    wait_for_a_stored_part(&bed);
    bed.servers[0].child.kill().unwrap();
    bed.servers[0].child.wait().unwrap();
    drop(d);
    assert!(bed.object(name).is_none(), "visible after the kill");
    assert_eq!(bed.visible(), vec![]);
    // The survivor does not serve it either (the next connection goes to it).
    assert_eq!(
        download(&mut bed.client(), name).err(),
        Some(Code::NotFound)
    );
}

#[test]
fn downloads_through_the_balancer_are_intact_and_resume_by_range() {
    let Some(bed) = Bed::start("download") else {
        return;
    };
    let files = [
        ("empty", Vec::new()),
        ("small.txt", data(70_000, 4)),
        ("multi/part.bin", data(2 * PART + 99, 5)),
    ];
    for (name, bytes) in &files {
        assert_eq!(
            upload(&mut bed.client(), name, bytes).code,
            Code::Stored,
            "{name}"
        );
    }
    // Each file from both instances, whole, then the big one resumed from a local prefix
    // that ends inside a part (a ranged read of the store).
    for _ in 0..2 {
        for (name, bytes) in &files {
            let (got, info) = download(&mut bed.client(), name).unwrap();
            assert_eq!(info.size, Some(bytes.len() as u64), "{name}");
            assert!(&got == bytes, "{name} differs");
        }
        let (name, bytes) = &files[2];
        let held = PART + PART / 3;
        let (from, got) = download_resuming(&mut bed.client(), name, &bytes[..held]);
        assert_eq!(from, held as u64);
        assert!(&got == bytes, "{name} resumed differs");
    }
}
