//! The files in flight on one connection are bounded by the reply budget, not by a fixed
//! window of 256: through a distant server (20 ms away) a tree of small files must not wait a
//! round trip per 256 files.

mod common;

use std::time::Duration;

use common::{data, raw_server, write};
use ferry_client::{upload, Target};
use ferry_proto::wire::{kind, Frame};

/// Small files with short names: the reply budget (64 KiB) holds about 800 of them.
const FILES: usize = 900;
/// Offers that must arrive before the server has answered any.
const IN_FLIGHT: usize = 600;

#[test]
fn hundreds_of_small_files_are_offered_before_the_first_reply() {
    let local = tempfile::tempdir().unwrap();
    let root = local.path().join("w");
    for i in 0..FILES {
        write(&root.join(format!("f{i:03}")), &data(16, i as u32));
    }
    let (addr, server) = raw_server(|mut raw| {
        // A client stuck at a smaller window stops offering: the read then times out.
        raw.stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        raw.expect(kind::HELLO);
        // Version 2: every file waits for its ACCEPT (early offers, version 3: early.rs).
        raw.send(&[Frame::Welcome { version: 2 }]);
        let mut offers = 0;
        while offers < IN_FLIGHT {
            match raw.read_frame() {
                Some(Frame::Offer { .. }) => offers += 1,
                Some(other) => panic!("unexpected {other:?}"),
                None => break,
            }
        }
        assert_eq!(offers, IN_FLIGHT, "offers in flight before any reply");
        // Hang up: the client reports the connection lost.
    });
    let outcome = upload::send(
        &Target::from(addr),
        common::sources(&[&root]),
        &common::opts(),
        &mut (),
    );
    server.join().unwrap();
    assert!(outcome.error.is_some(), "the server hung up");
}
