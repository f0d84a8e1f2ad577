//! The lifecycle table (PROTOCOL.md §4.13, `ferry_proto::lifecycle`): the document's table is
//! the code's, row for row; the machines take every row's frame in its state, and refuse
//! every other frame naming the id there with a protocol error. Early file offers (§4.14)
//! included: their receiver reads nothing after the OFFER until it has answered.

use std::collections::BTreeSet;

use ferry_proto::lifecycle::{next, By, State, Subject, TRANSITIONS};
use ferry_proto::wire::{self, kind, Frame, Timestamp, VERSION};
use ferry_proto::{
    Code, Connection, Digest, Entry, EntryKind, Error, Event, FileId, FileInfo, Hasher, Incoming,
    Name, OfferOptions,
};

/// The body of every file offer here.
const BODY: &[u8] = b"abcd";

fn name(s: &str) -> Name {
    Name::parse(s).unwrap()
}

/// The §4.13 table of the document, as (what, state, frame, sent by, next state).
fn document_rows() -> BTreeSet<[String; 5]> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/PROTOCOL.md");
    let doc = std::fs::read_to_string(path).expect("docs/PROTOCOL.md");
    let section = doc.split("### 4.13 States").nth(1).expect("§4.13");
    let section = section.split("\n## ").next().unwrap_or_default();
    section
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| what"))
        .map(|l| {
            let cells: Vec<String> = l
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_owned())
                .collect();
            cells.try_into().expect("five cells a row")
        })
        .collect()
}

#[test]
fn the_document_table_is_the_code_table() {
    let code: BTreeSet<[String; 5]> = TRANSITIONS
        .iter()
        .map(|t| {
            [
                t.subject.name(),
                t.from.name(),
                wire::frame_name(t.frame).unwrap(),
                t.by.name(),
                t.to.name(),
            ]
            .map(str::to_owned)
        })
        .collect();
    assert_eq!(code.len(), TRANSITIONS.len(), "a row is repeated");
    assert_eq!(document_rows(), code);
}

/// A client and a server past HELLO/WELCOME (the latest version), with every byte delivered.
struct Pair {
    client: Connection,
    server: Connection,
}

/// Delivers what `from` queued to `to`, body bytes included, until `to` pauses for an answer
/// to an early offer; panics on any error.
fn pump(from: &mut Connection, to: &mut Connection) {
    while !from.poll_transmit().is_empty() {
        let bytes = from.poll_transmit();
        let n = match to.incoming() {
            Some(Incoming::Bytes(due)) => {
                let n = bytes.len().min(due as usize);
                to.body_received(&bytes[..n]).unwrap();
                n
            }
            _ => to.handle_input(bytes).unwrap(),
        };
        from.advance(n);
        if n == 0 && to.is_paused() {
            return;
        }
        assert!(n > 0, "stalled");
    }
}

impl Pair {
    fn new() -> Self {
        let mut p = Pair {
            client: Connection::client(None).unwrap(),
            server: Connection::server(),
        };
        p.c2s();
        assert!(matches!(
            p.server.poll_event(),
            Some(Event::Hello {
                version: VERSION,
                ..
            })
        ));
        p.server.welcome().unwrap();
        p.s2c();
        assert!(matches!(
            p.client.poll_event(),
            Some(Event::Welcome { version: VERSION })
        ));
        p
    }

    fn c2s(&mut self) {
        pump(&mut self.client, &mut self.server);
    }

    fn s2c(&mut self) {
        pump(&mut self.server, &mut self.client);
    }

    /// Takes every event either side raised.
    fn drain(&mut self) {
        while self.client.poll_event().is_some() || self.server.poll_event().is_some() {}
    }

    /// A pair with an id of `subject` in state `from` (an upload: the client sends).
    fn reach(subject: Subject, from: State) -> (Pair, FileId) {
        let mut p = Pair::new();
        let info = |size| FileInfo {
            name: name("f"),
            size,
            mtime: None,
            mode: None,
        };
        let id = match subject {
            Subject::FileOffer => p.client.offer(info(Some(BODY.len() as u64))).unwrap(),
            Subject::EarlyFileOffer => p
                .client
                .offer_with(
                    info(Some(BODY.len() as u64)),
                    OfferOptions::default().early(),
                )
                .unwrap(),
            Subject::FolderOffer => p
                .client
                .offer_with(info(None), OfferOptions::folder())
                .unwrap(),
            Subject::Get => p.client.get(name("f")).unwrap(),
            Subject::List => p.client.list(None, false).unwrap(),
        };
        p.c2s();
        p.drain();
        let steps: &[State] = match from {
            State::Announced | State::Asked => &[],
            State::Accepted => &[State::Accepted],
            State::Refused => &[State::Refused],
            State::Body => &[State::Accepted, State::Body],
            State::Discarding => &[State::Refused, State::Body],
            State::Ended => &[State::Accepted, State::Body, State::Ended],
            State::Listing => &[State::Listing],
            State::Done => unreachable!("no row starts at done"),
        };
        for step in steps {
            match step {
                State::Accepted => {
                    p.server.accept(id, Hasher::new()).unwrap();
                    p.s2c();
                }
                State::Refused => {
                    p.server.refuse(id, Code::Exists, "no").unwrap();
                    p.s2c();
                }
                State::Body => {
                    // An early offer's BEGIN went out with it.
                    if subject == Subject::FileOffer {
                        p.client.begin(id, Hasher::new()).unwrap();
                    }
                    p.client.send_data(BODY).unwrap();
                    p.c2s();
                }
                State::Ended => {
                    p.client.end().unwrap();
                    p.c2s();
                }
                State::Listing => {
                    p.server.list_page(id, &[entry()]).unwrap();
                    p.s2c();
                }
                _ => unreachable!(),
            }
            p.drain();
        }
        (p, id)
    }
}

fn entry() -> Entry {
    Entry {
        kind: EntryKind::File,
        name: name("e"),
        size: 1,
        mtime: Timestamp { secs: 1, nanos: 0 },
        mode: 0o644,
    }
}

/// The bytes of `frame` about `id`, as the side that sends it would write them (fields that
/// fit the states the walk reaches).
fn frame_bytes(frame: u8, id: FileId, from: State) -> Vec<u8> {
    let f = match frame {
        kind::ACCEPT => Frame::Accept {
            id,
            offset: 0,
            prefix: Digest::of_empty(),
        },
        kind::REFUSE => Frame::Refuse {
            id,
            code: Code::Exists,
            reason: "no".into(),
        },
        kind::BEGIN => Frame::Begin { id, from: 0 },
        // An empty DATA frame is legal in a body and means nothing (§6.1).
        kind::DATA => return wire::data_header(0).to_vec(),
        kind::END => Frame::End {
            id,
            size: BODY.len() as u64,
            digest: Digest::of(BODY),
        },
        kind::RESULT => Frame::Result {
            id,
            code: Code::Stored,
            detail: "f".into(),
        },
        kind::CANCEL => Frame::Cancel {
            id,
            reason: "gone".into(),
        },
        kind::OFFER => Frame::Offer {
            id,
            kind: EntryKind::File,
            size: Some(1),
            mtime: None,
            mode: None,
            name: "f".into(),
            digest: None,
            early: false,
        },
        kind::ENTRIES => Frame::Entries {
            id,
            entries: vec![Entry {
                name: name(if from == State::Listing { "e2" } else { "e" }),
                ..entry()
            }],
        },
        kind::LISTED => Frame::Listed {
            id,
            count: u64::from(from == State::Listing),
            skipped: 0,
        },
        other => panic!("no frame about an id: {other}"),
    };
    let mut out = Vec::new();
    f.encode(&mut out);
    out
}

/// Whether the sender of a file sends `frame` (the others come from its receiver, or the
/// server answering a request).
fn sent_by_sender(frame: u8) -> bool {
    matches!(frame, kind::BEGIN | kind::DATA | kind::END | kind::CANCEL)
}

/// The machine that receives `frame` about an upload or a request: the server hears the
/// sender (the client), the client hears the receiver and the server.
fn receiver_of(p: &mut Pair, frame: u8) -> &mut Connection {
    if sent_by_sender(frame) {
        &mut p.server
    } else {
        &mut p.client
    }
}

/// Every row's frame is taken in its state, and raises its event (DATA: none).
#[test]
fn the_machines_take_every_row() {
    for t in TRANSITIONS {
        let (mut p, id) = Pair::reach(t.subject, t.from);
        let bytes = frame_bytes(t.frame, id, t.from);
        let to = receiver_of(&mut p, t.frame);
        assert_eq!(to.handle_input(&bytes), Ok(bytes.len()), "{t:?}");
        // A refused early body is dropped without an event (§4.14).
        let dropped = matches!(t.from, State::Refused | State::Discarding);
        let event = t.frame != kind::DATA && !dropped;
        assert_eq!(to.poll_event().is_some(), event, "{t:?}");
        assert!(
            matches!(t.by, By::Sender)
                == (t.frame == kind::BEGIN
                    || t.frame == kind::DATA
                    || t.frame == kind::END
                    || t.frame == kind::CANCEL)
        );
    }
}

/// Every other frame naming the id in a state of the table is a protocol error.
#[test]
fn the_machines_refuse_every_frame_outside_the_table() {
    let frames = [
        kind::ACCEPT,
        kind::REFUSE,
        kind::BEGIN,
        kind::DATA,
        kind::END,
        kind::RESULT,
        kind::CANCEL,
        kind::OFFER,
        kind::ENTRIES,
        kind::LISTED,
    ];
    let mut states: Vec<(Subject, State)> = Vec::new();
    for t in TRANSITIONS {
        if !states.contains(&(t.subject, t.from)) {
            states.push((t.subject, t.from));
        }
    }
    let mut checked = 0;
    for (subject, from) in states {
        for frame in frames {
            if next(subject, from, frame).is_some() {
                continue;
            }
            let (mut p, id) = Pair::reach(subject, from);
            // DATA outside a body carries bytes; an empty one would be legal in a body.
            let mut bytes = frame_bytes(frame, id, from);
            if frame == kind::DATA {
                bytes = wire::data_header(1).to_vec();
                bytes.push(b'x');
            }
            let to = receiver_of(&mut p, frame);
            let got = to.handle_input(&bytes);
            if subject == Subject::EarlyFileOffer && from == State::Announced && to.is_paused() {
                // The receiver reads nothing until it has answered the early offer (§4.14).
                assert_eq!(got, Ok(0), "{from:?} {}", wire::frame_name(frame).unwrap());
                continue;
            }
            assert!(
                matches!(got, Err(Error::Protocol(_))),
                "{subject:?} {from:?} took {}: {got:?}",
                wire::frame_name(frame).unwrap()
            );
            checked += 1;
        }
    }
    assert!(checked > 50, "{checked} illegal moves checked");
}
