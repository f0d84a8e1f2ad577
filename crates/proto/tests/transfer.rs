//! A client machine against a server machine in memory (PROTOCOL.md §4-§7).

mod common;

use common::{accepted_upload, run, Plan, Store};
use ferry_proto::Code;

fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn plan() -> Plan {
    Plan {
        uploads: vec![
            ("a.txt".into(), bytes(10_000, 1), true),
            ("dir/b.bin".into(), bytes(0, 2), true),
            ("stream.log".into(), bytes(5_000, 3), false),
            ("exists.txt".into(), bytes(10, 4), true),
            ("resume.bin".into(), bytes(70_000, 5), true),
        ],
        gets: vec!["served.txt".into(), "missing.txt".into()],
        piece: 4096,
        window: 3,
        ..Plan::default()
    }
}

fn store() -> Store {
    let mut s = Store::default();
    s.files.insert("exists.txt".into(), b"old".to_vec());
    s.files.insert("served.txt".into(), bytes(123_456, 9));
    s.partials
        .insert("resume.bin".into(), bytes(70_000, 5)[..33_333].to_vec());
    s
}

/// §5-§7: uploads (sized, empty, streamed, refused, resumed) and downloads in one connection.
#[test]
fn mixed_session_round_trips() {
    let p = plan();
    let out = run(&p, store(), 1 << 20, None);
    for (name, data, _) in &p.uploads {
        if name == "exists.txt" {
            assert_eq!(out.uploads[name], Code::Exists);
            assert_eq!(out.store.files[name], b"old");
        } else {
            assert_eq!(out.uploads[name], Code::Stored, "{name}");
            assert!(&out.store.files[name] == data, "{name}");
        }
    }
    assert_eq!(
        out.starts["resume.bin"], 33_333,
        "resumed from the verified prefix"
    );
    assert_eq!(out.starts["a.txt"], 0);
    assert!(out.downloads["served.txt"] == Ok(bytes(123_456, 9)));
    assert_eq!(out.downloads["missing.txt"], Err(Code::NotFound));
}

/// §7: a kept partial whose bytes differ from the source is restarted, not appended to.
#[test]
fn resume_with_a_wrong_prefix_restarts_from_zero() {
    let p = Plan {
        uploads: vec![("r.bin".into(), bytes(50_000, 1), true)],
        gets: vec![],
        piece: 8192,
        window: 1,
        ..Plan::default()
    };
    let mut s = Store::default();
    let mut partial = bytes(50_000, 1)[..20_000].to_vec();
    partial[100] ^= 0xff;
    s.partials.insert("r.bin".into(), partial);
    let out = run(&p, s, 4096, None);
    assert_eq!(out.starts["r.bin"], 0);
    assert!(out.store.files["r.bin"] == bytes(50_000, 1));
}

/// Chunking invariance: the same session delivered all at once and one byte at a time.
#[test]
fn one_byte_at_a_time_equals_all_at_once() {
    let p = Plan {
        piece: 1000,
        ..plan()
    };
    let whole = run(&p, store(), usize::MAX, None);
    let bytewise = run(&p, store(), 1, None);
    assert!(whole == bytewise);
    assert_eq!(whole.uploads.len(), 5);
}

/// §6: a flipped body bit is reported as a digest mismatch and nothing is stored.
#[test]
fn flipped_body_byte_is_a_digest_mismatch() {
    let p = Plan {
        uploads: vec![("f.bin".into(), bytes(3000, 7), true)],
        gets: vec![],
        piece: 1024,
        window: 1,
        ..Plan::default()
    };
    // Magic (8) + HELLO (5+7) + OFFER (5+35+5) + BEGIN (21) + DATA header (5) = byte 91 is body.
    let out = run(&p, Store::default(), 64, Some(91 + 1500));
    assert_eq!(out.uploads["f.bin"], Code::DigestMismatch);
    assert!(out.store.files.is_empty());
}

/// §3: a partly received frame is visible to the adapter, so it can run a message deadline.
#[test]
fn a_partial_frame_is_reported_in_progress() {
    let mut server = ferry_proto::Connection::server();
    assert!(!server.frame_in_progress());
    let hello = ferry_proto::Connection::client(None)
        .unwrap()
        .poll_transmit()
        .to_vec();
    server.handle_input(&hello[..3]).unwrap();
    assert!(server.frame_in_progress(), "inside the magic");
    server.handle_input(&hello[3..10]).unwrap();
    assert!(server.frame_in_progress(), "inside the HELLO header");
    server.handle_input(&hello[10..]).unwrap();
    assert!(!server.frame_in_progress(), "a whole HELLO");
}

/// §9 (driver): bytes already read but not yet turned into steps count as pending input, so an
/// adapter can hold its replies until it would block.
#[test]
fn the_driver_reports_input_it_has_not_handed_out() {
    use std::io::Write;
    let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut client = ferry_proto::Connection::client(None).unwrap();
    for name in ["one", "two"] {
        let info = ferry_proto::FileInfo {
            name: ferry_proto::Name::parse(name).unwrap(),
            size: Some(1),
            mtime: None,
            mode: None,
        };
        client.offer(info).unwrap();
    }
    a.write_all(client.poll_transmit()).unwrap();
    let mut d = ferry_proto::Driver::new(b, ferry_proto::Connection::server());
    assert!(!d.input_pending(), "nothing read yet");
    let first = d.next_step().unwrap();
    assert!(matches!(
        first,
        ferry_proto::Step::Event(ferry_proto::Event::Hello { .. })
    ));
    assert!(d.input_pending(), "both OFFERs arrived with the HELLO");
    d.conn_mut().welcome().unwrap();
    for _ in 0..2 {
        let step = d.next_step().unwrap();
        assert!(matches!(
            step,
            ferry_proto::Step::Event(ferry_proto::Event::Offer(_))
        ));
    }
    assert!(!d.input_pending(), "all handed out");
}

/// §4.4: an OFFER may stand between two DATA frames of an open body; a second BEGIN may not.
#[test]
fn an_offer_between_data_frames_is_fine_a_second_begin_is_not() {
    use ferry_proto::{Connection, Event, FileInfo, Hasher, Incoming, Name, ProtocolError};
    let info = |n: &str| FileInfo {
        name: Name::parse(n).unwrap(),
        size: Some(4),
        mtime: None,
        mode: None,
    };
    let (mut client, mut server, first) = accepted_upload(info("a"));
    client.begin(first, Hasher::new()).unwrap();
    client.send_data(b"ab").unwrap();
    let second = client.offer(info("b")).unwrap();
    client.send_data(b"cd").unwrap();
    client.end().unwrap();
    let wire = client.poll_transmit().to_vec();
    let mut events = Vec::new();
    let mut rest = &wire[..];
    while !rest.is_empty() {
        if let Some(Incoming::Bytes(n)) = server.incoming() {
            server.body_received(&rest[..n as usize]).unwrap();
            rest = &rest[n as usize..];
        } else {
            let used = server.handle_input(rest).unwrap();
            rest = &rest[used..];
        }
        events.extend(std::iter::from_fn(|| server.poll_event()));
    }
    assert!(matches!(events[0], Event::Begin { id, from: 0 } if id == first));
    assert!(matches!(&events[1], Event::Offer(o) if o.id == second));
    assert!(matches!(events[2], Event::End { id, size: 4, .. } if id == first));

    // A BEGIN for the second file while the first body is open is refused.
    let mut bad = Connection::server();
    let mut bytes = Connection::client(None).unwrap().poll_transmit().to_vec();
    for id in [1, 2] {
        let name = format!("f{id}");
        ferry_proto::wire::Frame::Offer {
            id,
            kind: ferry_proto::EntryKind::File,
            digest: None,
            size: Some(4),
            mtime: None,
            mode: None,
            name,
            early: false,
        }
        .encode(&mut bytes);
    }
    bad.handle_input(&bytes).unwrap();
    let _ = std::iter::from_fn(|| bad.poll_event()).count();
    bad.welcome().unwrap();
    bad.accept(1, Hasher::new()).unwrap();
    bad.accept(2, Hasher::new()).unwrap();
    let mut begins = Vec::new();
    for id in [1, 2] {
        ferry_proto::wire::Frame::Begin { id, from: 0 }.encode(&mut begins);
    }
    let err = bad.handle_input(&begins).unwrap_err();
    assert!(
        matches!(
            err,
            ferry_proto::Error::Protocol(ProtocolError::Unexpected { frame: "BEGIN", .. })
        ),
        "{err}"
    );
}

/// §9 (driver): small body slices are queued, and the queue goes out as soon as it holds
/// `FLUSH_AT` bytes, without waiting for the next read, so a burst of small files streams.
#[test]
fn the_driver_writes_a_long_queue_of_small_bodies_before_any_read() {
    use ferry_proto::{Driver, FileInfo, Hasher, Name, FLUSH_AT, INLINE_BODY_MAX};
    use std::io;

    /// A stream that records what is written and refuses to be read.
    #[derive(Default)]
    struct Recorder(Vec<u8>);
    impl io::Read for Recorder {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            panic!("the driver read while only sending");
        }
    }
    impl io::Write for Recorder {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    let piece = vec![7u8; INLINE_BODY_MAX / 2];
    let pieces = 2 * FLUSH_AT / piece.len();
    let info = FileInfo {
        name: Name::parse("burst").unwrap(),
        size: Some((pieces * piece.len()) as u64),
        mtime: None,
        mode: None,
    };
    let (client, _server, id) = accepted_upload(info);

    let mut d = Driver::new(Recorder::default(), client);
    d.conn_mut().begin(id, Hasher::new()).unwrap();
    let mut first_write = None;
    for i in 0..pieces {
        d.send_body(&piece).unwrap();
        let queued = d.conn().poll_transmit().len();
        assert!(queued < FLUSH_AT, "{queued} bytes left queued");
        if first_write.is_none() && !d.stream().0.is_empty() {
            first_write = Some(i);
        }
    }
    let first_write = first_write.expect("the queue was written out");
    assert!(
        (first_write + 1) * piece.len() >= FLUSH_AT,
        "written after {} pieces, before the queue held {FLUSH_AT} bytes",
        first_write + 1
    );
    let written = d.stream().0.len() + d.conn().poll_transmit().len();
    assert!(
        written > pieces * piece.len(),
        "every body byte went out or is queued"
    );
}
