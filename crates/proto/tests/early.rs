//! Early offers between two machines in memory (version 3, PROTOCOL.md §4.14): a small file's
//! body follows its OFFER at once; the receiver answers before it reads on, takes an accepted
//! body as any other and drops a refused one without an event; every rule broken by a hostile
//! peer is a typed protocol error.

use ferry_proto::wire::{self, Frame, Timestamp, EARLY_MAX, MAGIC, VERSION};
use ferry_proto::{
    BodyCheck, Code, Connection, Digest, Driver, Error, Event, FileId, FileInfo, Hasher, Incoming,
    Name, OfferOptions, ProtocolError, Step, UsageError, EARLY_IN_FLIGHT_MAX,
};

const MTIME: Timestamp = Timestamp {
    secs: 1_700_000_000,
    nanos: 5,
};

fn info(name: &str, size: usize) -> FileInfo {
    FileInfo {
        name: Name::parse(name).unwrap(),
        size: Some(size as u64),
        mtime: Some(MTIME),
        mode: Some(0o644),
    }
}

fn early() -> OfferOptions {
    OfferOptions::default().early()
}

/// What a receiver saw of one file's body: its BEGIN offset and the bytes that arrived.
#[derive(Debug, Default)]
struct Received {
    events: Vec<Event>,
    bodies: Vec<(FileId, Vec<u8>)>,
}

/// Delivers what `from` queued to `to` until `to` pauses for an answer (or all is delivered);
/// body bytes are collected into `got`. Returns whether everything was delivered.
fn pump(from: &mut Connection, to: &mut Connection, got: &mut Received) -> bool {
    while !from.poll_transmit().is_empty() {
        let bytes = from.poll_transmit();
        let n = match to.incoming() {
            Some(Incoming::Bytes(due)) => {
                let n = bytes.len().min(usize::try_from(due).unwrap());
                to.body_received(&bytes[..n]).unwrap();
                got.bodies
                    .last_mut()
                    .unwrap()
                    .1
                    .extend_from_slice(&bytes[..n]);
                n
            }
            _ => to.handle_input(bytes).unwrap(),
        };
        from.advance(n);
        while let Some(e) = to.poll_event() {
            if let Event::Begin { id, .. } = e {
                got.bodies.push((id, Vec::new()));
            }
            got.events.push(e);
        }
        if n == 0 {
            assert!(to.is_paused(), "stalled without a pause");
            return false;
        }
    }
    true
}

/// A client and a server of `client_max` and `server_max` past HELLO/WELCOME.
fn pair_of(client_max: u16, server_max: u16) -> (Connection, Connection) {
    let mut client = Connection::client_with_max_version(None, client_max).unwrap();
    let mut server = Connection::server_with_max_version(server_max).unwrap();
    let mut seen = Received::default();
    pump(&mut client, &mut server, &mut seen);
    server.welcome().unwrap();
    pump(&mut server, &mut client, &mut seen);
    let v = client_max.min(server_max);
    assert_eq!(client.version(), Some(v));
    assert_eq!(server.version(), Some(v));
    (client, server)
}

fn pair() -> (Connection, Connection) {
    pair_of(VERSION, VERSION)
}

/// Client: an early upload of `body`, whole, as the client sends one.
fn send_early(client: &mut Connection, name: &str, body: &[u8]) -> FileId {
    let id = client.offer_with(info(name, body.len()), early()).unwrap();
    client.send_data(body).unwrap();
    client.end().unwrap();
    id
}

/// The next offer the server raised.
fn offer_of(got: &mut Received) -> ferry_proto::Offer {
    let i = got
        .events
        .iter()
        .position(|e| matches!(e, Event::Offer(_)))
        .expect("an offer");
    match got.events.remove(i) {
        Event::Offer(o) => o,
        _ => unreachable!(),
    }
}

/// §4.14: an accepted early body arrives as any body (BEGIN from 0, DATA, END verified), before
/// the client has read a single reply; the ACCEPT then asks nothing more of the client, and the
/// RESULT lands.
#[test]
fn an_accepted_early_body_is_delivered_as_usual() {
    let (mut client, mut server) = pair();
    let body = b"early bytes".repeat(100);
    let id = send_early(&mut client, "a.txt", &body);
    let mut got = Received::default();
    assert!(
        !pump(&mut client, &mut server, &mut got),
        "paused at the OFFER"
    );
    let offer = offer_of(&mut got);
    assert!(offer.early);
    assert_eq!(offer.size, Some(body.len() as u64));
    assert!(got.events.is_empty(), "nothing read past the OFFER");
    server.accept(id, Hasher::new()).unwrap();
    assert!(pump(&mut client, &mut server, &mut got));
    assert_eq!(got.events[0], Event::Begin { id, from: 0 });
    assert!(matches!(
        got.events[1],
        Event::End {
            check: BodyCheck::Verified(d),
            ..
        } if d == Digest::of(&body)
    ));
    assert_eq!(got.bodies, vec![(id, body.clone())]);
    server.finish(id, Code::Stored, "a.txt").unwrap();

    let mut back = Received::default();
    assert!(pump(&mut server, &mut client, &mut back));
    assert_eq!(back.events.len(), 2);
    assert!(matches!(back.events[0], Event::Accepted { id: a, offset: 0, .. } if a == id));
    assert!(matches!(back.events[1], Event::Result { id: r, code: Code::Stored, .. } if r == id));
    assert!(client.is_idle() && server.is_idle());
    // Nothing more was sent for it after the ACCEPT.
    assert!(client.poll_transmit().is_empty());
}

/// §4.14: a refused early body (Exists, Busy, Unchanged…) is read and dropped by the machine:
/// no BEGIN, END or any event for it; the client lands the refusal and owes nothing, the
/// server owes no RESULT.
#[test]
fn a_refused_early_body_is_dropped_without_an_event() {
    for code in [Code::Exists, Code::Busy, Code::Unchanged, Code::Denied] {
        let (mut client, mut server) = pair();
        let id = send_early(&mut client, "a.txt", &[7; 3000]);
        let next = send_early(&mut client, "b.txt", b"second");
        let mut got = Received::default();
        assert!(!pump(&mut client, &mut server, &mut got));
        assert_eq!(offer_of(&mut got).id, id);
        server.refuse(id, code, "a.txt").unwrap();
        assert!(!pump(&mut client, &mut server, &mut got), "paused at b.txt");
        assert!(got.events.iter().all(|e| matches!(e, Event::Offer(_))));
        assert_eq!(offer_of(&mut got).id, next);
        server.accept(next, Hasher::new()).unwrap();
        assert!(pump(&mut client, &mut server, &mut got));
        assert_eq!(got.bodies, vec![(next, b"second".to_vec())], "{code}");
        server.finish(next, Code::Stored, "b.txt").unwrap();

        let mut back = Received::default();
        assert!(pump(&mut server, &mut client, &mut back));
        assert!(matches!(
            &back.events[0],
            Event::Refused { id: r, code: c, .. } if *r == id && *c == code
        ));
        assert!(matches!(back.events[2], Event::Result { id: r, .. } if r == next));
        assert_eq!(client.results_owed(), 0, "{code}");
        assert!(client.is_idle() && server.is_idle(), "{code}");
    }
}

/// §4.14 with §4.8: an early offer that the server finds unchanged is refused Unchanged while
/// its body is still on its way: the REFUSE reaches the client before its END is queued, and
/// the END then expects no RESULT.
#[test]
fn unchanged_before_the_end_leaves_nothing_owed() {
    let (mut client, mut server) = pair();
    let body = vec![1u8; 5000];
    let id = client
        .offer_with(info("same.txt", body.len()), early())
        .unwrap();
    client.send_data(&body[..100]).unwrap();
    let mut got = Received::default();
    pump(&mut client, &mut server, &mut got);
    let offer = offer_of(&mut got);
    assert_eq!(
        offer.unchanged(5000, MTIME, || Ok::<_, ()>(Digest::of(&body))),
        Ok(true)
    );
    server.refuse(id, Code::Unchanged, "same.txt").unwrap();
    let mut back = Received::default();
    pump(&mut server, &mut client, &mut back);
    assert!(matches!(
        back.events[0],
        Event::Refused {
            code: Code::Unchanged,
            ..
        }
    ));
    client.send_data(&body[100..]).unwrap();
    client.end().unwrap();
    assert!(pump(&mut client, &mut server, &mut got));
    assert!(got.events.is_empty() && got.bodies.is_empty());
    assert_eq!(client.results_owed(), 0);
    assert!(client.is_idle() && server.is_idle());
}

/// §4.14, §4.4: early and normal files in one window. An early offer waits while a file
/// offered before it awaits its ACCEPT or BEGIN (the machine says so), and may follow once that
/// body has begun; bodies reach the server in accept order and every file gets its RESULT.
#[test]
fn early_and_normal_files_share_a_window() {
    let (mut client, mut server) = pair();
    let a = send_early(&mut client, "a", b"aaaa");
    let big = vec![9u8; 200_000];
    let b = client.offer(info("big", big.len())).unwrap();
    let refused = client.offer_with(info("c", 3), early());
    assert!(
        matches!(refused, Err(UsageError::Invalid(why)) if why.contains("overtake")),
        "{refused:?}"
    );
    let mut got = Received::default();
    assert!(!pump(&mut client, &mut server, &mut got));
    server.accept(a, Hasher::new()).unwrap();
    assert!(pump(&mut client, &mut server, &mut got));
    // A resume prefix held for the big file: a normal offer resumes.
    let mut prefix = Hasher::new();
    prefix.update(&big[..1000]);
    server.accept(b, prefix).unwrap();
    let mut back = Received::default();
    pump(&mut server, &mut client, &mut back);
    assert!(matches!(back.events[1], Event::Accepted { id, offset: 1000, .. } if id == b));
    let mut local = Hasher::new();
    local.update(&big[..1000]);
    assert_eq!(client.begin(b, local).unwrap(), 1000);
    client.send_data(&big[1000..100_000]).unwrap();
    // The big body is open: still no early offer.
    assert!(client.offer_with(info("c", 3), early()).is_err());
    client.send_data(&big[100_000..]).unwrap();
    client.end().unwrap();
    let c = send_early(&mut client, "c", b"ccc");
    // A normal offer may follow an early one at once.
    let d = client.offer(info("d", 1)).unwrap();
    assert!(!pump(&mut client, &mut server, &mut got));
    server.accept(c, Hasher::new()).unwrap();
    assert!(pump(&mut client, &mut server, &mut got));
    server.accept(d, Hasher::new()).unwrap();
    for id in [a, b, c] {
        server.finish(id, Code::Stored, "x").unwrap();
    }
    pump(&mut server, &mut client, &mut back);
    client.begin(d, Hasher::new()).unwrap();
    client.send_data(b"d").unwrap();
    client.end().unwrap();
    pump(&mut client, &mut server, &mut got);
    server.finish(d, Code::Stored, "d").unwrap();
    pump(&mut server, &mut client, &mut back);

    let order: Vec<FileId> = got.bodies.iter().map(|(id, _)| *id).collect();
    assert_eq!(order, vec![a, b, c, d]);
    assert_eq!(got.bodies[1].1, big[1000..]);
    let results: Vec<FileId> = back
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Result { id, .. } => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(results, vec![a, b, c, d]);
    assert!(client.is_idle() && server.is_idle());
}

/// §4.14: a receiver that holds part of the file accepts an early offer at offset 0 all the
/// same: an early body cannot resume.
#[test]
fn an_early_offer_is_accepted_at_offset_zero_whatever_is_held() {
    let (mut client, mut server) = pair();
    let id = send_early(&mut client, "a", b"abcdef");
    let mut got = Received::default();
    pump(&mut client, &mut server, &mut got);
    let mut held = Hasher::new();
    held.update(b"abc");
    server.accept(id, held).unwrap();
    let frames = frames(server.poll_transmit());
    assert_eq!(
        frames,
        vec![Frame::Accept {
            id,
            offset: 0,
            prefix: Digest::of_empty()
        }]
    );
    assert!(pump(&mut client, &mut server, &mut got));
    assert_eq!(got.bodies, vec![(id, b"abcdef".to_vec())]);
}

/// §4.14, §10: early bodies in flight stay within EARLY_IN_FLIGHT_MAX, files within EARLY_MAX;
/// answers free the room.
#[test]
fn the_sender_bounds_its_early_bytes() {
    let (mut client, mut server) = pair();
    assert_eq!(client.early_room(), EARLY_IN_FLIGHT_MAX);
    let over = client.offer_with(info("big", EARLY_MAX as usize + 1), early());
    assert!(over.is_err(), "{over:?}");
    let body = vec![0u8; EARLY_MAX as usize];
    let mut ids = Vec::new();
    while client.early_room() >= EARLY_MAX {
        ids.push(send_early(&mut client, &format!("f{}", ids.len()), &body));
    }
    assert_eq!(ids.len() as u64, EARLY_IN_FLIGHT_MAX / EARLY_MAX);
    assert!(client.offer_with(info("one-more", 1), early()).is_err());
    let mut got = Received::default();
    for id in &ids {
        pump(&mut client, &mut server, &mut got);
        server.accept(*id, Hasher::new()).unwrap();
    }
    pump(&mut client, &mut server, &mut got);
    pump(&mut server, &mut client, &mut Received::default());
    assert_eq!(client.early_room(), EARLY_IN_FLIGHT_MAX);
    assert_eq!(got.bodies.len(), ids.len());
}

/// §4.1, §12: against a version-2 server nothing early is sent: the client has no early room
/// and an early offer is a usage error, so a v2 peer only ever sees v2 offers.
#[test]
fn a_version_2_peer_sees_no_early_offer() {
    for (c, s) in [(VERSION, 2), (2, VERSION), (VERSION, 1)] {
        let (mut client, _server) = pair_of(c, s);
        assert_eq!(client.early_room(), 0);
        let got = client.offer_with(info("a", 1), early());
        assert!(
            matches!(got, Err(UsageError::NeedsVersion { needs: 3, .. })),
            "{c}x{s}: {got:?}"
        );
        assert!(client.poll_transmit().is_empty(), "nothing queued");
    }
}

/// The bytes of `frames`, encoded.
fn encode(frames: &[Frame]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        f.encode(&mut out);
    }
    out
}

/// Every frame in `bytes` (DATA headers as `Frame::Data`, their payload skipped).
fn frames(mut bytes: &[u8]) -> Vec<Frame> {
    let mut out = Vec::new();
    while bytes.len() >= wire::FRAME_HEADER_LEN {
        let header: [u8; wire::FRAME_HEADER_LEN] = bytes[..5].try_into().unwrap();
        let (kind, len) = wire::parse_header(header).unwrap();
        let end = wire::FRAME_HEADER_LEN + len as usize;
        if kind == wire::kind::DATA {
            out.push(Frame::Data { len });
        } else {
            out.push(Frame::decode(kind, &bytes[wire::FRAME_HEADER_LEN..end]).unwrap());
        }
        bytes = &bytes[end..];
    }
    out
}

fn early_offer(id: FileId, size: u64) -> Frame {
    Frame::Offer {
        id,
        kind: ferry_proto::EntryKind::File,
        size: Some(size),
        mtime: None,
        mode: None,
        name: format!("f{id}"),
        digest: None,
        early: true,
    }
}

/// Frames, and after each DATA header its payload.
fn with_bodies(parts: &[(Frame, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (f, body) in parts {
        f.encode(&mut out);
        out.extend_from_slice(body);
    }
    out
}

/// A server of `max_version` past a client's HELLO, with `sent` fed after it; answers every
/// offer with `answer` (true: accept). Returns the error the bytes caused.
fn hostile(max_version: u16, sent: &[u8], answer: bool) -> Error {
    let mut server = Connection::server_with_max_version(max_version).unwrap();
    let mut input = MAGIC.to_vec();
    input.extend(encode(&[Frame::Hello {
        min: 1,
        max: max_version,
        token: Vec::new(),
    }]));
    input.extend_from_slice(sent);
    let mut rest = &input[..];
    for _ in 0..100 {
        let n = match server.incoming() {
            Some(Incoming::Bytes(due)) => {
                let n = rest.len().min(due as usize);
                server.body_received(&rest[..n]).map(|()| n)
            }
            _ => server.handle_input(rest),
        };
        let n = match n {
            Ok(n) => n,
            Err(e) => return e,
        };
        rest = &rest[n..];
        while let Some(e) = server.poll_event() {
            match e {
                Event::Hello { .. } => server.welcome().unwrap(),
                Event::Offer(o) if answer => server.accept(o.id, Hasher::new()).unwrap(),
                Event::Offer(o) => server.refuse(o.id, Code::Exists, "no").unwrap(),
                _ => {}
            }
        }
        if rest.is_empty() {
            return server.handle_eof().unwrap_err();
        }
    }
    panic!("the hostile input was never refused");
}

fn protocol(e: &Error) -> &ProtocolError {
    match e {
        Error::Protocol(p) => p,
        other => panic!("not a protocol error: {other:?}"),
    }
}

/// §4.14: every rule a hostile sender breaks is a typed protocol error, whether the server
/// accepted the early offer or refused it (its body then dropped): more bytes than announced,
/// a BEGIN from elsewhere than 0, another frame before the BEGIN, an END of another size.
#[test]
fn a_hostile_early_body_is_a_protocol_error() {
    let begin = |from| Frame::Begin { id: 1, from };
    let end = |size| Frame::End {
        id: 1,
        size,
        digest: Digest::of_empty(),
    };
    for answer in [true, false] {
        let sent = with_bodies(&[
            (early_offer(1, 4), b""),
            (begin(0), b""),
            (Frame::Data { len: 5 }, b"12345"),
        ]);
        let e = hostile(3, &sent, answer);
        assert!(
            matches!(
                protocol(&e),
                ProtocolError::BodyOverrun {
                    got: 5,
                    expected: 4
                }
            ),
            "{e}"
        );
        let e = hostile(3, &encode(&[early_offer(1, 4), begin(2)]), answer);
        assert!(
            matches!(protocol(&e), ProtocolError::Malformed { what, .. } if what.contains("at 0")),
            "{e}"
        );
        let get = Frame::Get {
            id: 2,
            name: "x".into(),
        };
        let e = hostile(3, &encode(&[early_offer(1, 4), get]), answer);
        assert!(
            matches!(protocol(&e), ProtocolError::Unexpected { why, .. } if why.contains("BEGIN")),
            "{e}"
        );
        let sent = with_bodies(&[(early_offer(1, 4), b""), (Frame::Data { len: 1 }, b"x")]);
        let e = hostile(3, &sent, answer);
        assert!(
            matches!(protocol(&e), ProtocolError::Unexpected { .. }),
            "{e}"
        );
        let sent = with_bodies(&[
            (early_offer(1, 4), b""),
            (begin(0), b""),
            (Frame::Data { len: 3 }, b"123"),
            (end(3), b""),
        ]);
        let e = hostile(3, &sent, answer);
        assert!(
            matches!(protocol(&e), ProtocolError::SizeMismatch { .. }),
            "{e}"
        );
        // The stream ends where the early body is owed.
        let e = hostile(3, &encode(&[early_offer(1, 4)]), answer);
        assert!(
            matches!(protocol(&e), ProtocolError::ClosedEarly { .. }),
            "{e}"
        );
    }
}

/// §4.14, §4.1: an early offer over EARLY_MAX, without a size, as a folder, on a version-2
/// connection, or overtaking a body the server awaits: typed protocol errors.
#[test]
fn a_hostile_early_offer_is_a_protocol_error() {
    let e = hostile(3, &encode(&[early_offer(1, EARLY_MAX + 1)]), true);
    assert_eq!(
        protocol(&e),
        &ProtocolError::EarlyTooLarge {
            size: EARLY_MAX + 1,
            max: EARLY_MAX
        }
    );
    assert_eq!(protocol(&e).code(), Code::Protocol);

    let e = hostile(2, &encode(&[early_offer(1, 4)]), true);
    assert!(
        matches!(protocol(&e), ProtocolError::NotInVersion { version: 2, .. }),
        "{e}"
    );
    assert_eq!(protocol(&e).code(), Code::Unsupported);

    // Bit 5 without bit 0, and with bit 3 (folder): malformed.
    for flags in [1 << 5, (1 << 5) | (1 << 3) | 1] {
        let mut payload = 1u64.to_be_bytes().to_vec();
        payload.push(flags);
        payload.extend_from_slice(&[0; 8 + 12 + 4]);
        payload.extend_from_slice(&[0, 1, b'a']);
        let got = Frame::decode(wire::kind::OFFER, &payload);
        assert!(
            matches!(got, Err(ProtocolError::Malformed { .. })),
            "{flags:#x}: {got:?}"
        );
    }

    // A normal offer accepted and not begun: an early one may not overtake its body.
    let normal = Frame::Offer {
        id: 1,
        kind: ferry_proto::EntryKind::File,
        size: Some(10),
        mtime: None,
        mode: None,
        name: "n".into(),
        digest: None,
        early: false,
    };
    let e = hostile(3, &encode(&[normal, early_offer(2, 4)]), true);
    assert!(
        matches!(protocol(&e), ProtocolError::Unexpected { why, .. } if why.contains("overtake")),
        "{e}"
    );
}

/// §4.14: the client takes no early download, and no ACCEPT of an early offer other than at 0.
#[test]
fn a_hostile_server_cannot_misuse_early_offers() {
    // A download OFFER with the early flag.
    let (mut client, _server) = pair();
    let id = client.get(Name::parse("f2").unwrap()).unwrap();
    let e = client
        .handle_input(&encode(&[early_offer(id, 4)]))
        .unwrap_err();
    assert!(
        matches!(protocol(&e), ProtocolError::Unexpected { .. }),
        "{e}"
    );

    // An ACCEPT of an early offer at another offset.
    let (mut client, _server) = pair();
    let id = send_early(&mut client, "a", b"abcd");
    let accept = Frame::Accept {
        id,
        offset: 2,
        prefix: Digest::of(b"ab"),
    };
    let e = client.handle_input(&encode(&[accept])).unwrap_err();
    assert!(
        matches!(protocol(&e), ProtocolError::Malformed { what, .. } if what.contains("offset 0")),
        "{e}"
    );

    // A RESULT for a refused early file.
    let (mut client, _server) = pair();
    let id = send_early(&mut client, "a", b"abcd");
    let refuse = Frame::Refuse {
        id,
        code: Code::Exists,
        reason: "no".into(),
    };
    let result = Frame::Result {
        id,
        code: Code::Stored,
        detail: "a".into(),
    };
    let e = client.handle_input(&encode(&[refuse, result])).unwrap_err();
    assert!(matches!(protocol(&e), ProtocolError::WrongId { .. }), "{e}");
}

/// The blocking driver hands the early OFFER out and reads nothing more until it is answered:
/// a caller that reads on without answering gets a usage error, never a misread body.
#[test]
fn the_driver_waits_for_the_answer_to_an_early_offer() {
    let (mut client, server) = pair();
    send_early(&mut client, "a", b"abcd");
    let bytes = client.poll_transmit().to_vec();
    let mut driver = Driver::new(std::io::Cursor::new(bytes), server);
    let step = driver.next_step().unwrap();
    assert!(
        matches!(step, Step::Event(Event::Offer(ref o)) if o.early),
        "{step:?}"
    );
    let got = driver.next_step().unwrap_err();
    assert!(
        matches!(
            got,
            ferry_proto::DriveError::Proto(Error::Usage(UsageError::Unanswered))
        ),
        "{got:?}"
    );
}
