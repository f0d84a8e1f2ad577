//! Properties of the machines under arbitrary input (PROTOCOL.md §3-§7, §2.1, §4.10, §5).

mod common;
mod fuzz_checks;

use common::{run, Plan, Store};
use ferry_proto::name::MAX_NAME_LEN;
use ferry_proto::wire::{kind, Frame, Timestamp, FRAME_HEADER_LEN, MAX_CONTROL_PAYLOAD};
use ferry_proto::{
    BodyCheck, Code, Connection, Entry, EntryKind, Event, FileInfo, Framing, Hasher, Incoming, Name,
};
use proptest::prelude::*;

fn name_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec("[a-zA-Z0-9_][a-zA-Z0-9 _.é日-]{0,12}[a-zA-Z0-9_]", 1..4)
        .prop_map(|parts| parts.join("/"))
        .prop_filter("valid name", |n| Name::parse(n).is_ok())
}

fn uploads_strategy() -> impl Strategy<Value = Vec<(String, Vec<u8>, bool)>> {
    prop::collection::btree_map(
        name_strategy(),
        (prop::collection::vec(any::<u8>(), 0..3000), any::<bool>()),
        1..6,
    )
    .prop_map(|m| m.into_iter().map(|(n, (d, sized))| (n, d, sized)).collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// (a) §4-§7: any set of uploads arrives intact and identical whatever the chunking of
    /// the byte streams, with pipelining windows from 1 to 8.
    #[test]
    fn sessions_round_trip_under_any_chunking(
        uploads in uploads_strategy(),
        chunk in 1usize..300,
        piece in 1usize..2000,
        window in 1usize..8,
    ) {
        let plan = Plan { uploads: uploads.clone(), piece, window, ..Plan::default() };
        let out = run(&plan, Store::default(), chunk, None);
        for (name, data, _) in &uploads {
            prop_assert_eq!(out.uploads[name], Code::Stored);
            prop_assert!(&out.store.files[name] == data);
        }
        let whole = run(&plan, Store::default(), usize::MAX, None);
        prop_assert!(whole == out);
    }

    /// (b) §3: arbitrary bytes never panic a server or a client machine, and what is buffered
    /// never exceeds the caps.
    #[test]
    fn arbitrary_bytes_never_panic_and_respect_caps(
        prefix in prop::sample::select(vec![
            &b""[..],
            &b"\0ferry\r\n"[..],
            &b"\0ferry\r\n\x01\x00\x00\x00\x06\x00\x01\x00\x01\x00\x00"[..],
            // HELLO 1..=2 for a server, WELCOME 2 for a client: version-2 states are reached.
            &b"\0ferry\r\n\x01\x00\x00\x00\x06\x00\x01\x00\x02\x00\x00"[..],
            &b"\x02\x00\x00\x00\x02\x00\x02"[..],
        ]),
        bytes in prop::collection::vec(any::<u8>(), 0..20_000),
        chunk in 1usize..5000,
    ) {
        let cap = (MAX_CONTROL_PAYLOAD as usize + FRAME_HEADER_LEN).max(MAX_NAME_LEN + 1);
        let mut input = prefix.to_vec();
        input.extend_from_slice(&bytes);
        for mut conn in [Connection::server(), Connection::client(None).unwrap()] {
            let mut rest = &input[..];
            while !rest.is_empty() {
                let n = chunk.min(rest.len());
                match conn.incoming() {
                    Some(Incoming::Bytes(due)) => {
                        let k = n.min(due as usize);
                        conn.body_received(&rest[..k]).unwrap();
                        rest = &rest[k..];
                    }
                    Some(Incoming::UntilEof) => {
                        conn.body_received(&rest[..n]).unwrap();
                        rest = &rest[n..];
                    }
                    None => match conn.handle_input(&rest[..n]) {
                        Ok(0) => {
                            // Waiting for an answer: refuse whatever is offered and go on.
                            let Some(Event::Offer(o)) = conn.poll_event() else { break };
                            conn.refuse(o.id, Code::Exists, "no").unwrap();
                        }
                        Ok(used) => rest = &rest[used..],
                        Err(_) => break,
                    },
                }
                prop_assert!(conn.buffered() <= cap);
                while let Some(ev) = conn.poll_event() {
                    if let Event::Offer(o) = ev {
                        let _ = conn.refuse(o.id, Code::Exists, "no");
                    }
                }
            }
            let _ = conn.handle_eof();
        }
    }

    /// (c) §2.1: the seed framing carries any valid single-component name and any body.
    #[test]
    fn seed_framing_round_trips(
        name in "[a-zA-Z0-9_][a-zA-Z0-9 _.é-]{0,40}[a-zA-Z0-9_]",
        body in prop::collection::vec(any::<u8>(), 0..5000),
        chunk in 1usize..700,
    ) {
        let name = Name::parse_single(&name).unwrap();
        let mut client = Connection::seed_client();
        let size = Some(body.len() as u64);
        let id = client.offer(FileInfo { name: name.clone(), size, mtime: None, mode: None }).unwrap();
        prop_assert_eq!(client.begin(id, Hasher::new()).unwrap(), 0);
        client.send_data(&body).unwrap();
        let sent = client.end().unwrap();
        let wire = client.poll_transmit().to_vec();
        prop_assert!(client.is_idle() || !wire.is_empty());

        let mut server = Connection::server();
        let mut got = Vec::new();
        let mut events = Vec::new();
        let mut rest = &wire[..];
        while !rest.is_empty() {
            let n = chunk.min(rest.len());
            if server.incoming() == Some(Incoming::UntilEof) {
                server.body_received(&rest[..n]).unwrap();
                got.extend_from_slice(&rest[..n]);
                rest = &rest[n..];
            } else {
                let used = server.handle_input(&rest[..n]).unwrap();
                rest = &rest[used..];
                while let Some(ev) = server.poll_event() {
                    if let Event::Offer(o) = &ev {
                        server.accept(o.id, Hasher::new()).unwrap();
                    }
                    events.push(ev);
                }
            }
        }
        server.handle_eof().unwrap();
        events.extend(std::iter::from_fn(|| server.poll_event()));
        prop_assert_eq!(server.framing(), Some(Framing::Seed));
        prop_assert!(got == body);
        let Some(Event::Offer(offer)) = events.first() else { panic!("no offer: {events:?}") };
        prop_assert_eq!(offer.name.as_ref().unwrap(), &name);
        let size = body.len() as u64;
        let end = Event::End { id: 1, size, check: BodyCheck::Unverified(sent) };
        prop_assert!(events.contains(&end), "missing {:?}", end);
        prop_assert_eq!(events.last(), Some(&Event::Closed));
    }

    /// (d) §6.2: flipping any body byte is always reported as a digest mismatch.
    #[test]
    fn a_flipped_body_byte_is_always_a_digest_mismatch(
        body in prop::collection::vec(any::<u8>(), 1..4000),
        at in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let mut client = Connection::client(None).unwrap();
        let size = Some(body.len() as u64);
        let info = FileInfo { name: Name::parse("f").unwrap(), size, mtime: None, mode: None };
        let id = client.offer(info).unwrap();
        let mut server = Connection::server();
        let mut to_server = client.poll_transmit().to_vec();
        client.transmitted(to_server.len());
        server.handle_input(&to_server).unwrap();
        let hello = matches!(server.poll_event(), Some(Event::Hello { .. }));
        prop_assert!(hello, "HELLO first");
        server.welcome().unwrap();
        let Some(Event::Offer(o)) = server.poll_event() else { panic!("offer expected") };
        server.accept(o.id, Hasher::new()).unwrap();
        let reply = server.poll_transmit().to_vec();
        server.transmitted(reply.len());
        client.handle_input(&reply).unwrap();
        client.begin(id, Hasher::new()).unwrap();
        let header = client.data_frame(body.len() as u32).unwrap();
        to_server = client.poll_transmit().to_vec();
        client.transmitted(to_server.len());
        to_server.extend_from_slice(header.as_bytes());
        let body_at = to_server.len();
        to_server.extend_from_slice(&body);
        client.body_sent(&body).unwrap();
        client.end().unwrap();
        to_server.extend_from_slice(client.poll_transmit());
        to_server[body_at + at.index(body.len())] ^= 1 << bit;

        let mut rest = &to_server[..];
        let mut end = None;
        while !rest.is_empty() {
            if let Some(Incoming::Bytes(n)) = server.incoming() {
                let k = (n as usize).min(rest.len());
                server.body_received(&rest[..k]).unwrap();
                rest = &rest[k..];
            } else {
                let used = server.handle_input(rest).unwrap();
                rest = &rest[used..];
            }
            while let Some(ev) = server.poll_event() {
                if let Event::End { check, .. } = ev { end = Some(check); }
            }
        }
        prop_assert!(matches!(end, Some(BodyCheck::Mismatch { .. })), "{end:?}");
    }
}

/// Names with the characters that matter: separators, dots, Windows-reserved characters,
/// spaces, controls, invisible formatting characters, and plain letters.
fn tricky_name() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec![
            "a",
            "é",
            "/",
            ".",
            "..",
            " ",
            "\\",
            ":",
            "?",
            "*",
            "\"",
            "<",
            ">",
            "|",
            "\0",
            "\n",
            "\u{1b}",
            "\u{85}",
            "\u{202E}",
            "\u{FEFF}",
            "con",
            "aux",
            "nul",
            "COM1",
            "..namedfork",
            "~",
        ]),
        0..12,
    )
    .prop_map(|parts| parts.concat())
}

fn entry_strategy() -> impl Strategy<Value = Entry> {
    (
        name_strategy(),
        any::<bool>(),
        any::<u64>(),
        any::<i64>(),
        0u32..1_000_000_000,
        any::<u32>(),
    )
        .prop_map(|(name, folder, size, secs, nanos, mode)| Entry {
            kind: if folder {
                EntryKind::Folder
            } else {
                EntryKind::File
            },
            name: Name::parse(&name).unwrap(),
            size: if folder { 0 } else { size },
            mtime: Timestamp { secs, nanos },
            mode,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// (e) §5: any string is refused by `Name::parse` or safe under a POSIX folder; a portable
    /// name keeps every Windows rule, and a name that breaks one is never portable (the
    /// fuzz target's check, on names built from the characters that matter).
    #[test]
    fn names_are_safe_or_refused(raw in tricky_name()) {
        fuzz_checks::names(raw.as_bytes());
    }

    /// (f) §4.2, §4.10: the version-2 decoders (LIST, ENTRIES, LISTED, OFFER with its new
    /// flags) never panic on arbitrary payloads, and what decodes re-encodes to itself.
    #[test]
    fn version_2_payloads_never_panic(
        k in prop::sample::select(vec![kind::LIST, kind::ENTRIES, kind::LISTED, kind::OFFER]),
        payload in prop::collection::vec(any::<u8>(), 0..600),
        flags in 0u8..64,
    ) {
        let mut data = vec![k];
        data.extend_from_slice(&payload);
        if data.len() > 9 {
            data[9] = flags; // the OFFER and LIST flags byte, after the 8-byte id
        }
        fuzz_checks::frame_decode(&data);
    }

    /// (g) §4.10: any valid entries, paged by the server machine, reach the client machine
    /// whole and in order, one control frame per page, whatever the chunking; a damaged page
    /// is an error, never a panic.
    #[test]
    fn any_listing_round_trips_in_pages(
        entries in prop::collection::vec(entry_strategy(), 0..120),
        chunk in 1usize..9000,
        flip in any::<prop::sample::Index>(),
    ) {
        let mut client = Connection::client(None).unwrap();
        let mut server = Connection::server();
        server.handle_input(client.poll_transmit()).unwrap();
        client.transmitted(client.poll_transmit().len());
        let _ = server.poll_event();
        server.welcome().unwrap();
        client.handle_input(server.poll_transmit()).unwrap();
        server.transmitted(server.poll_transmit().len());
        let _ = client.poll_event();

        let id = client.list(None, true).unwrap();
        server.handle_input(client.poll_transmit()).unwrap();
        client.transmitted(client.poll_transmit().len());
        let listed = matches!(server.poll_event(), Some(Event::List { .. }));
        prop_assert!(listed);
        let mut wire = Vec::new();
        let mut rest = &entries[..];
        while !rest.is_empty() {
            let n = server.list_page(id, rest).unwrap();
            prop_assert!(n > 0);
            let page = server.poll_transmit();
            prop_assert!(page.len() <= FRAME_HEADER_LEN + MAX_CONTROL_PAYLOAD as usize);
            wire.extend_from_slice(page);
            server.transmitted(page.len());
            rest = &rest[n..];
        }
        server.listed(id, 0).unwrap();
        wire.extend_from_slice(server.poll_transmit());

        let mut damaged = Connection::client(None).unwrap();
        let mut bad = wire.clone();
        let at = flip.index(bad.len());
        bad[at] ^= 0x40;
        let welcome = [0x02, 0, 0, 0, 2, 0, 2];
        damaged.handle_input(&welcome).unwrap();
        let _ = damaged.list(None, true).unwrap();
        let _ = damaged.handle_input(&bad);

        let mut got = Vec::new();
        let mut count = None;
        for piece in wire.chunks(chunk) {
            let used = client.handle_input(piece).unwrap();
            prop_assert_eq!(used, piece.len());
            while let Some(ev) = client.poll_event() {
                match ev {
                    Event::Entries { entries, .. } => got.extend(entries),
                    Event::Listed { count: c, .. } => count = Some(c),
                    other => prop_assert!(false, "{:?}", other),
                }
            }
        }
        prop_assert!(got == entries);
        prop_assert_eq!(count, Some(entries.len() as u64));
        prop_assert!(client.is_idle());
        let frames = common::frames_of(&wire);
        let only_listing = frames
            .iter()
            .all(|f| matches!(f, Frame::Entries { .. } | Frame::Listed { .. }));
        prop_assert!(only_listing);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// (h) §4.1-§4.11: version-2 conversations with random bytes overwritten, inserted or
    /// deleted, cut at random points, keep every invariant of the fuzz targets' checks
    /// (no panic, no stall, caps, sticky errors, ERROR last, nothing v2 sent under v1).
    #[test]
    fn mutated_v2_sessions_keep_the_fuzz_invariants(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 0..6),
        sizes in prop::collection::vec(any::<u8>(), 0..7),
        client in any::<bool>(),
    ) {
        let (options, mut stream) = if client {
            // WELCOME prepended; the client then offers folder #1 and lists the root (#2).
            (1, fuzz_checks::v2_client_tail(1, 2))
        } else {
            // The v2 HELLO prepended.
            (2, fuzz_checks::v2_server_session())
        };
        for (at, byte, op) in edits {
            let i = at.index(stream.len() + 1);
            match op {
                0 if i < stream.len() => stream[i] = byte,
                1 => stream.insert(i, byte),
                _ if i < stream.len() => drop(stream.remove(i)),
                _ => {}
            }
        }
        let mut data = fuzz_checks::Chunked::header(options, &sizes);
        data.extend_from_slice(&stream);
        if client {
            fuzz_checks::client_stream(&data);
        } else {
            fuzz_checks::server_stream(&data);
        }
    }
}
