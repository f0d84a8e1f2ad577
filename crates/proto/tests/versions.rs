//! Version negotiation between machines of versions 1 to 3 (PROTOCOL.md §4.1, §12).

mod common;

use common::{run_versions, Plan, Store};
use ferry_proto::wire::{Frame, MAGIC, MIN_VERSION, VERSION};
use ferry_proto::{
    Code, Connection, Digest, Entry, EntryKind, Error, Event, FileInfo, Hasher, Name, OfferOptions,
    ProtocolError, UsageError,
};

fn plan() -> Plan {
    Plan {
        uploads: vec![
            ("a.txt".into(), b"alpha".to_vec(), true),
            ("exists.txt".into(), b"same".to_vec(), true),
            ("stream.log".into(), b"streamed".to_vec(), false),
        ],
        gets: vec!["served.txt".into(), "missing.txt".into()],
        piece: 3,
        window: 4,
        folders: vec!["photos".into()],
        lists: vec![(String::new(), false)],
        checksum: false,
    }
}

fn store() -> Store {
    let mut s = Store::default();
    s.files.insert("exists.txt".into(), b"same".to_vec());
    s.mtimes.insert("exists.txt".into(), common::MTIME);
    s.files.insert("served.txt".into(), b"served".to_vec());
    s
}

/// §4.1: every pairing of a version-1 and a version-2 end negotiates the highest common
/// version; the version-1 conversation is unchanged (the quick check, folders and LIST stay
/// out of it) and nothing of version 2 crosses the wire (checked by the harness, frame by
/// frame, in both directions).
#[test]
fn every_pairing_negotiates_the_highest_common_version() {
    for (client, server) in [
        (1, 1),
        (1, 2),
        (2, 1),
        (2, 2),
        (1, 3),
        (3, 1),
        (2, 3),
        (3, 2),
        (3, 3),
    ] {
        let out = run_versions(&plan(), store(), 7, None, (client, server));
        let v = client.min(server);
        assert_eq!(out.versions, (Some(v), Some(v)), "{client} x {server}");
        assert_eq!(out.uploads["a.txt"], Code::Stored);
        assert_eq!(out.uploads["stream.log"], Code::Stored);
        assert!(out.downloads["served.txt"] == Ok(b"served".to_vec()));
        assert_eq!(out.downloads["missing.txt"], Err(Code::NotFound));
        if v == 1 {
            assert_eq!(out.uploads["exists.txt"], Code::Exists, "v1 policy");
            assert_eq!(out.folders["photos"], Code::Unsupported, "never sent");
            assert_eq!(out.listings[""], Err(Code::Unsupported), "never sent");
            assert!(!out.store.folders.contains("photos"));
        } else {
            assert_eq!(out.uploads["exists.txt"], Code::Unchanged);
            assert_eq!(out.folders["photos"], Code::Stored);
            let names: Vec<&str> = out.listings[""].as_ref().unwrap()[..]
                .iter()
                .map(|e| e.name.as_str())
                .collect();
            // What existed when the LIST was answered: uploads may still be in flight.
            for held in ["exists.txt", "photos", "served.txt"] {
                assert!(names.contains(&held), "{names:?}");
            }
            assert!(names.is_sorted(), "{names:?}");
        }
    }
}

/// §4.1: the bytes a version-1 peer sees. A new client's HELLO offers 1..=3, which a
/// version-1 server accepts (it only checks that 1 lies in the range); a version-1 client's
/// HELLO (1..=1) gets WELCOME 1 from a new server, byte for byte what a version-1 server sent.
#[test]
fn the_bytes_a_version_1_peer_sees_are_version_1_bytes() {
    let hello = Connection::client(None).unwrap().poll_transmit().to_vec();
    let mut want = MAGIC.to_vec();
    want.extend_from_slice(&[0x01, 0, 0, 0, 6, 0, 1, 0, 3, 0, 0]);
    assert_eq!(hello, want);

    let v1_hello = Connection::client_with_max_version(None, 1)
        .unwrap()
        .poll_transmit()
        .to_vec();
    assert_eq!(
        &v1_hello[MAGIC.len()..],
        &[0x01, 0, 0, 0, 6, 0, 1, 0, 1, 0, 0]
    );
    let mut server = Connection::server();
    server.handle_input(&v1_hello).unwrap();
    assert_eq!(
        server.poll_event(),
        Some(Event::Hello {
            version: 1,
            token: None
        })
    );
    server.welcome().unwrap();
    assert_eq!(server.poll_transmit(), &[0x02, 0, 0, 0, 2, 0, 1]);
    assert_eq!(server.version(), Some(1));
}

/// A server past HELLO that negotiated `version`, and a client past WELCOME of `version`.
fn pair(version: u16) -> (Connection, Connection) {
    let mut client = Connection::client_with_max_version(None, version).unwrap();
    let mut server = Connection::server();
    server.handle_input(client.poll_transmit()).unwrap();
    client.transmitted(client.poll_transmit().len());
    assert!(matches!(server.poll_event(), Some(Event::Hello { .. })));
    server.welcome().unwrap();
    client.handle_input(server.poll_transmit()).unwrap();
    server.transmitted(server.poll_transmit().len());
    assert_eq!(client.poll_event(), Some(Event::Welcome { version }));
    (client, server)
}

fn encode(frames: &[Frame]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        f.encode(&mut out);
    }
    out
}

fn entry(name: &str) -> Entry {
    Entry {
        kind: EntryKind::File,
        name: Name::parse(name).unwrap(),
        size: 1,
        mtime: common::MTIME,
        mode: 0o644,
    }
}

/// Feeds `frames` and expects the fatal error `NotInVersion`, reported to the peer as ERROR
/// `Unsupported`.
fn assert_not_in_version_1(conn: &mut Connection, frames: &[Frame], feature: &str) {
    let err = conn.handle_input(&encode(frames)).unwrap_err();
    match &err {
        Error::Protocol(ProtocolError::NotInVersion {
            feature: f,
            version,
        }) => {
            assert_eq!((*f, *version), (feature, 1), "{err}")
        }
        other => panic!("{feature}: {other:?}"),
    }
    let sent = common::frames_of(conn.poll_transmit());
    assert!(
        matches!(
            sent.last(),
            Some(Frame::Error {
                code: Code::Unsupported,
                ..
            })
        ),
        "{sent:?}"
    );
}

/// §4.1: under version 1, every version-2 frame, flag and code from the peer is fatal, in
/// both directions.
#[test]
fn version_2_frames_flags_and_codes_are_fatal_under_version_1() {
    let offer = |kind, digest| Frame::Offer {
        id: 1,
        kind,
        size: (kind == EntryKind::File).then_some(1),
        mtime: None,
        mode: None,
        name: "x".into(),
        digest,
        early: false,
    };
    let server_side: [(Frame, &str); 3] = [
        (
            Frame::List {
                id: 1,
                recursive: false,
                path: String::new(),
            },
            "the LIST frame",
        ),
        (offer(EntryKind::Folder, None), "a folder OFFER"),
        (
            offer(EntryKind::File, Some(Digest::of(b"x"))),
            "an OFFER digest",
        ),
    ];
    for (frame, feature) in server_side {
        let (_, mut server) = pair(1);
        assert_not_in_version_1(&mut server, &[frame], feature);
    }

    // The client side: a version-1 client with one sized upload and one GET outstanding.
    let client_side = |frame: Frame, feature: &str| {
        let (mut client, _) = pair(1);
        let info = FileInfo {
            name: Name::parse("up").unwrap(),
            size: Some(1),
            mtime: Some(common::MTIME),
            mode: None,
        };
        client.offer(info).unwrap();
        client.get(Name::parse("down").unwrap()).unwrap();
        assert_not_in_version_1(&mut client, &[frame], feature);
    };
    client_side(
        Frame::Refuse {
            id: 1,
            code: Code::Unchanged,
            reason: String::new(),
        },
        "the code Unchanged",
    );
    client_side(
        Frame::Entries {
            id: 2,
            entries: vec![entry("a")],
        },
        "the ENTRIES frame",
    );
    client_side(
        Frame::Listed {
            id: 2,
            count: 0,
            skipped: 0,
        },
        "the LISTED frame",
    );
    // A whole version-1 upload: the receiver may not say Unchanged in RESULT, nor the
    // sender hear it.
    let (mut client, mut server) = pair(1);
    let info = FileInfo {
        name: Name::parse("up").unwrap(),
        size: Some(1),
        mtime: None,
        mode: None,
    };
    let id = client.offer(info).unwrap();
    server.handle_input(client.poll_transmit()).unwrap();
    client.transmitted(client.poll_transmit().len());
    assert!(matches!(server.poll_event(), Some(Event::Offer(_))));
    server.accept(id, Hasher::new()).unwrap();
    client.handle_input(server.poll_transmit()).unwrap();
    server.transmitted(server.poll_transmit().len());
    assert!(matches!(client.poll_event(), Some(Event::Accepted { .. })));
    client.begin(id, Hasher::new()).unwrap();
    client.send_data(b"x").unwrap();
    client.end().unwrap();
    let mut wire = client.poll_transmit().to_vec();
    while !wire.is_empty() {
        if server.incoming().is_some() {
            server.body_received(&wire[..1]).unwrap();
            wire.remove(0);
        } else {
            let n = server.handle_input(&wire).unwrap();
            wire.drain(..n);
        }
    }
    let events: Vec<Event> = std::iter::from_fn(|| server.poll_event()).collect();
    assert!(
        matches!(events.last(), Some(Event::End { .. })),
        "{events:?}"
    );
    let r = server.finish(id, Code::Unchanged, "");
    assert!(matches!(r, Err(UsageError::NeedsVersion { .. })), "{r:?}");
    assert!(server.poll_transmit().is_empty());
    let result = Frame::Result {
        id,
        code: Code::Unchanged,
        detail: String::new(),
    };
    assert_not_in_version_1(&mut client, &[result], "the code Unchanged");
}

/// §4.1: a machine never emits a version-2 feature before version 2 is negotiated: a client
/// before WELCOME (it cannot know yet) or after WELCOME 1, a server that negotiated 1.
#[test]
fn version_2_commands_wait_for_version_2() {
    let folder = || FileInfo {
        name: Name::parse("dir").unwrap(),
        size: None,
        mtime: None,
        mode: Some(0o755),
    };
    let needs = |r: Result<u64, UsageError>, version: Option<u16>| match r {
        Err(UsageError::NeedsVersion {
            needs: 2,
            version: v,
            ..
        }) => assert_eq!(v, version),
        other => panic!("{other:?}"),
    };
    let mut early = Connection::client(None).unwrap();
    let before = early.poll_transmit().len();
    needs(early.list(None, true), None);
    needs(early.offer_with(folder(), OfferOptions::folder()), None);
    assert_eq!(early.poll_transmit().len(), before, "nothing queued");
    assert_eq!(early.pipeline_room(), ferry_proto::MAX_PIPELINE);

    let (mut client, mut server) = pair(1);
    needs(client.list(None, false), Some(1));
    needs(client.offer_with(folder(), OfferOptions::folder()), Some(1));
    let sized = FileInfo {
        size: Some(3),
        ..folder()
    };
    needs(
        client.offer_with(sized, OfferOptions::with_digest(Digest::of(b"abc"))),
        Some(1),
    );
    assert!(client.poll_transmit().is_empty());

    let offer = FileInfo {
        name: Name::parse("f").unwrap(),
        size: Some(1),
        mtime: Some(common::MTIME),
        mode: None,
    };
    client.offer(offer).unwrap();
    server.handle_input(client.poll_transmit()).unwrap();
    let Some(Event::Offer(o)) = server.poll_event() else {
        panic!("an offer")
    };
    assert_eq!((o.kind, o.digest), (EntryKind::File, None));
    let r = server.refuse(o.id, Code::Unchanged, "");
    assert!(matches!(r, Err(UsageError::NeedsVersion { .. })), "{r:?}");
    assert!(server.poll_transmit().is_empty());
    server.refuse(o.id, Code::Exists, "exists").unwrap();
}

/// §4.1: no common version is a fatal `Unsupported`; a WELCOME outside the client's range is
/// a protocol error.
#[test]
fn no_common_version_is_refused() {
    let hello = |min: u16, max: u16| {
        let mut b = MAGIC.to_vec();
        Frame::Hello {
            min,
            max,
            token: Vec::new(),
        }
        .encode(&mut b);
        b
    };
    for (server_max, min, max) in [(2, 3, 9), (1, 2, 2), (2, 0, 0)] {
        let mut server = Connection::server_with_max_version(server_max).unwrap();
        let err = server.handle_input(&hello(min, max)).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Protocol(ProtocolError::UnsupportedVersion { .. })
            ),
            "{err}"
        );
        // The error names the whole range the server speaks, not its highest version alone.
        let range = format!("we speak {MIN_VERSION}..={server_max}");
        assert!(err.to_string().contains(&range), "{err}");
    }
    let mut server = Connection::server();
    server.handle_input(&hello(0, 7)).unwrap();
    assert_eq!(
        server.poll_event(),
        Some(Event::Hello {
            version: VERSION,
            token: None
        })
    );

    let mut v1 = Connection::client_with_max_version(None, 1).unwrap();
    let err = v1
        .handle_input(&encode(&[Frame::Welcome { version: 2 }]))
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Protocol(ProtocolError::Unexpected {
                frame: "WELCOME",
                ..
            })
        ),
        "{err}"
    );
    assert!(Connection::client_with_max_version(None, VERSION + 1).is_err());
    assert!(Connection::server_with_max_version(0).is_err());
}

/// §2.2, §4.1 (what may precede WELCOME): a client may offer a file with version-1 bits only
/// right after HELLO (it is queued behind the HELLO, for one write); a digest (version 2) or
/// an early offer (version 3) is still refused then. A server of every version acts on the
/// offer once it welcomed the client, and the client reads WELCOME, then the answer.
#[test]
fn a_plain_offer_may_ride_with_the_hello() {
    let file = || FileInfo {
        name: Name::parse("probe.txt").unwrap(),
        size: Some(3),
        mtime: Some(common::MTIME),
        mode: Some(0o644),
    };
    for server_max in 1..=VERSION {
        let mut client = Connection::client(None).unwrap();
        let hello = client.poll_transmit().len();
        let r = client.offer_with(file(), OfferOptions::with_digest(Digest::of(b"abc")));
        assert!(
            matches!(
                r,
                Err(UsageError::NeedsVersion {
                    needs: 2,
                    version: None,
                    ..
                })
            ),
            "{r:?}"
        );
        let r = client.offer_with(file(), OfferOptions::default().early());
        assert!(
            matches!(
                r,
                Err(UsageError::NeedsVersion {
                    needs: 3,
                    version: None,
                    ..
                })
            ),
            "{r:?}"
        );
        assert_eq!(client.poll_transmit().len(), hello, "nothing queued");
        let id = client.offer(file()).unwrap();
        assert!(
            client.poll_transmit().len() > hello,
            "HELLO and OFFER, one write"
        );

        let mut server = Connection::server_with_max_version(server_max).unwrap();
        let n = server.handle_input(client.poll_transmit()).unwrap();
        client.advance(n);
        assert!(client.poll_transmit().is_empty(), "v{server_max}: all read");
        assert!(matches!(server.poll_event(), Some(Event::Hello { .. })));
        server.welcome().unwrap();
        let Some(Event::Offer(o)) = server.poll_event() else {
            panic!("v{server_max}: the offer after the HELLO")
        };
        assert_eq!(
            (o.id, o.kind, o.digest, o.early),
            (id, EntryKind::File, None, false)
        );
        server.accept(o.id, Hasher::new()).unwrap();
        client.handle_input(server.poll_transmit()).unwrap();
        let v = server_max.min(VERSION);
        assert_eq!(client.poll_event(), Some(Event::Welcome { version: v }));
        assert!(
            matches!(client.poll_event(), Some(Event::Accepted { id: a, offset: 0, .. }) if a == id),
            "v{server_max}"
        );
    }
}
