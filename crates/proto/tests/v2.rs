//! Version-2 features between two machines in memory: the unchanged-file check, folders as
//! entries, LIST in bounded pages, and names POSIX accepts (PROTOCOL.md §4.8-§4.11, §5).

mod common;

use common::{frames_of, run, Plan, Store, MTIME};
use ferry_proto::wire::{Frame, Timestamp, MAX_CONTROL_PAYLOAD};
use ferry_proto::{
    Code, Connection, Digest, Entry, EntryKind, Error, Event, FileInfo, Name, OfferOptions,
    ProtocolError, UsageError, MAX_PIPELINE,
};

fn held(files: &[(&str, &[u8], Timestamp)]) -> Store {
    let mut s = Store::default();
    for (name, data, mtime) in files {
        s.files.insert(name.to_string(), data.to_vec());
        s.mtimes.insert(name.to_string(), *mtime);
    }
    s
}

fn uploads(files: &[(&str, &[u8])]) -> Plan {
    Plan {
        uploads: files
            .iter()
            .map(|(n, d)| (n.to_string(), d.to_vec(), true))
            .collect(),
        piece: 1000,
        window: 8,
        ..Plan::default()
    }
}

/// §4.8: a file held with the offered size and mtime is Unchanged; another mtime or size
/// falls to the overwrite policy (here: Exists); nothing is sent or rewritten.
#[test]
fn the_quick_check_answers_unchanged_by_size_and_mtime() {
    let later = Timestamp {
        secs: MTIME.secs,
        nanos: MTIME.nanos + 1,
    };
    let store = held(&[
        ("same.txt", b"same", MTIME),
        ("touched.txt", b"same", later),
        ("grown.txt", b"shorter", MTIME),
        ("same/deep.txt", b"deep", MTIME),
    ]);
    let plan = uploads(&[
        ("same.txt", b"same"),
        ("touched.txt", b"same"),
        ("grown.txt", b"longer!!"),
        ("same/deep.txt", b"deep"),
        ("new.txt", b"new"),
    ]);
    let out = run(&plan, store.clone(), 5, None);
    assert_eq!(out.uploads["same.txt"], Code::Unchanged);
    assert_eq!(out.uploads["same/deep.txt"], Code::Unchanged);
    assert_eq!(out.uploads["touched.txt"], Code::Exists);
    assert_eq!(out.uploads["grown.txt"], Code::Exists);
    assert_eq!(out.uploads["new.txt"], Code::Stored);
    assert!(!out.starts.contains_key("same.txt"), "no body was sent");
    assert_eq!(out.store.files["grown.txt"], b"shorter");
}

/// §4.8: with a digest in the offer (`--checksum`), contents decide, not the mtime.
#[test]
fn the_digest_check_compares_contents() {
    let elsewhen = Timestamp { secs: 5, nanos: 0 };
    let store = held(&[
        ("same.txt", b"same", elsewhen),
        ("other.txt", b"abcd", MTIME),
    ]);
    let plan = Plan {
        checksum: true,
        ..uploads(&[("same.txt", b"same"), ("other.txt", b"wxyz")])
    };
    let out = run(&plan, store, 3, None);
    assert_eq!(
        out.uploads["same.txt"],
        Code::Unchanged,
        "same bytes, other mtime"
    );
    assert_eq!(
        out.uploads["other.txt"],
        Code::Exists,
        "same size and mtime, other bytes"
    );
}

/// §4.8: `Offer::unchanged` hashes only when the sizes agree, and never without size and
/// mtime or a digest; Unchanged can answer no other offer.
#[test]
fn unchanged_needs_something_to_compare() {
    let (mut client, mut server) = v2_pair();
    let name = |n: &str| Name::parse(n).unwrap();
    let offers = [
        (Some(4), Some(MTIME), OfferOptions::default()),
        (Some(4), None, OfferOptions::default()),
        (None, Some(MTIME), OfferOptions::default()),
        (
            Some(4),
            None,
            OfferOptions::with_digest(Digest::of(b"abcd")),
        ),
        (None, Some(MTIME), OfferOptions::folder()),
    ];
    for (i, (size, mtime, opts)) in offers.iter().enumerate() {
        let info = FileInfo {
            name: name(&format!("f{i}")),
            size: *size,
            mtime: *mtime,
            mode: None,
        };
        client.offer_with(info, *opts).unwrap();
    }
    server.handle_input(client.poll_transmit()).unwrap();
    let got: Vec<_> = std::iter::from_fn(|| server.poll_event()).collect();
    let mut hashed = 0;
    let mut hash = || {
        hashed += 1;
        Ok::<_, ()>(Digest::of(b"abcd"))
    };
    let verdicts: Vec<bool> = got
        .iter()
        .map(|e| match e {
            Event::Offer(o) => o.unchanged(4, MTIME, &mut hash).unwrap(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(verdicts, [true, false, false, true, false]);
    assert_eq!(hashed, 1, "hashed only for the digest offer");
    for (id, ok) in [(1, true), (2, false), (3, false), (4, true)] {
        let r = server.refuse(id, Code::Unchanged, "");
        assert_eq!(r.is_ok(), ok, "#{id}: {r:?}");
        if !ok {
            assert!(matches!(r, Err(UsageError::Invalid(_))));
            server.refuse(id, Code::Exists, "").unwrap();
        }
    }
    assert!(matches!(
        server.refuse(5, Code::Unchanged, ""),
        Err(UsageError::Invalid(_))
    ));
    // A hostile receiver claiming Unchanged for an offer without size and mtime.
    let mut bad = v2_pair().0;
    let info = FileInfo {
        name: name("s"),
        size: None,
        mtime: None,
        mode: None,
    };
    bad.offer(info).unwrap();
    let err = bad
        .handle_input(&encode(&[Frame::Refuse {
            id: 1,
            code: Code::Unchanged,
            reason: String::new(),
        }]))
        .unwrap_err();
    assert!(
        matches!(err, Error::Protocol(ProtocolError::Unexpected { .. })),
        "{err}"
    );
}

/// §4.9: a folder offer creates the folder and is answered by RESULT alone (Stored, or
/// Unchanged when it existed, or a failure such as Exists); it has no body and no ACCEPT.
#[test]
fn folders_are_entries_without_a_body() {
    let mut store = held(&[("file", b"x", MTIME)]);
    store.folders.insert("old".into());
    let plan = Plan {
        folders: vec![
            "new".into(),
            "old".into(),
            "file".into(),
            "new/empty".into(),
        ],
        piece: 10,
        window: 2,
        ..Plan::default()
    };
    let out = run(&plan, store, 1, None);
    assert_eq!(out.folders["new"], Code::Stored);
    assert_eq!(out.folders["new/empty"], Code::Stored);
    assert_eq!(out.folders["old"], Code::Unchanged);
    assert_eq!(out.folders["file"], Code::Exists);
    assert!(out.store.folders.contains("new/empty"));

    // On the wire: OFFER (folder flag, no size) then RESULT, nothing else for it.
    let (mut client, mut server) = v2_pair();
    let info = FileInfo {
        name: Name::parse("d").unwrap(),
        size: None,
        mtime: Some(MTIME),
        mode: Some(0o700),
    };
    let id = client.offer_with(info, OfferOptions::folder()).unwrap();
    server.handle_input(client.poll_transmit()).unwrap();
    client.transmitted(client.poll_transmit().len());
    let Some(Event::Offer(o)) = server.poll_event() else {
        panic!("an offer")
    };
    assert_eq!(
        (o.kind, o.size, o.mode),
        (EntryKind::Folder, None, Some(0o700))
    );
    let accept = server.accept(id, ferry_proto::Hasher::new());
    assert!(matches!(accept, Err(UsageError::Invalid(_))), "{accept:?}");
    server.finish(id, Code::Stored, "d").unwrap();
    assert_eq!(
        frames_of(server.poll_transmit()),
        [Frame::Result {
            id,
            code: Code::Stored,
            detail: "d".into()
        }]
    );
    client.handle_input(server.poll_transmit()).unwrap();
    assert!(matches!(
        client.poll_event(),
        Some(Event::Result {
            code: Code::Stored,
            ..
        })
    ));
    assert!(client.is_idle());

    // A folder cannot carry a size, and a download is always a file.
    let sized = FileInfo {
        name: Name::parse("d2").unwrap(),
        size: Some(0),
        mtime: None,
        mode: None,
    };
    assert!(matches!(
        client.offer_with(sized, OfferOptions::folder()),
        Err(UsageError::Invalid(_))
    ));
    let id = client.get(Name::parse("dir").unwrap()).unwrap();
    let folder_offer = Frame::Offer {
        id,
        kind: EntryKind::Folder,
        size: None,
        mtime: None,
        mode: None,
        name: "dir".into(),
        digest: None,
        early: false,
    };
    let err = client.handle_input(&encode(&[folder_offer])).unwrap_err();
    assert!(
        matches!(err, Error::Protocol(ProtocolError::Unexpected { .. })),
        "{err}"
    );
}

/// §4.10: a listing of thousands of entries arrives in pages that each fit one control
/// frame; the server machine never holds more than one page (checked by the harness after
/// every page), the client receives every entry once, in order.
#[test]
fn a_large_listing_streams_in_bounded_pages() {
    let mut store = Store::default();
    store.folders.insert("big".into());
    let long = "n".repeat(200);
    for i in 0..2000 {
        let name = format!("big/{i:04}-{long}");
        store.files.insert(name, vec![0; i % 7]);
    }
    store.folders.insert("big/sub".into());
    store.files.insert("big/sub/inner".into(), b"i".to_vec());
    store.files.insert("elsewhere".into(), b"e".to_vec());
    let plan = Plan {
        lists: vec![("big".into(), false), ("big/sub".into(), true)],
        piece: 10,
        window: 4,
        ..Plan::default()
    };
    let out = run(&plan, store.clone(), 4096, None);
    let top = out.listings["big"].as_ref().unwrap();
    assert_eq!(
        top.len(),
        1 + 2000 + 1,
        "the folder itself, 2000 files, one folder"
    );
    assert_eq!(top[0].name.as_str(), "big");
    assert!(
        top.iter().all(|e| e.name.as_str() != "big/sub/inner"),
        "one level"
    );
    assert_eq!(top[1].size, 0);
    assert_eq!(top[2].size, 1);
    let per_page = (MAX_CONTROL_PAYLOAD as usize - 8) / (27 + 4 + 205);
    assert!(out.pages >= 2002 / per_page, "{} pages", out.pages);
    let sub = out.listings["big/sub"].as_ref().unwrap();
    let names: Vec<&str> = sub.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["big/sub", "big/sub/inner"]);
    assert_eq!(sub[0].kind, EntryKind::Folder);
}

/// §4.10: what LIST answers for the root, a file, a missing path and a bad path.
#[test]
fn listing_the_root_a_file_and_what_is_not_there() {
    let mut store = held(&[("a.txt", b"abc", MTIME), ("dir/b", b"b", MTIME)]);
    store.folders.insert("dir".into());
    let plan = Plan {
        lists: vec![
            (String::new(), false),
            ("a.txt".into(), false),
            ("missing".into(), true),
        ],
        window: 8,
        ..Plan::default()
    };
    let out = run(&plan, store, 64, None);
    let root: Vec<(EntryKind, &str, u64)> = out.listings[""]
        .as_ref()
        .unwrap()
        .iter()
        .map(|e| (e.kind, e.name.as_str(), e.size))
        .collect();
    assert_eq!(
        root,
        [(EntryKind::File, "a.txt", 3), (EntryKind::Folder, "dir", 0)]
    );
    let file = out.listings["a.txt"].as_ref().unwrap();
    assert_eq!((file.len(), file[0].mtime), (1, MTIME));
    assert_eq!(out.listings["missing"], Err(Code::NotFound));

    let (_, mut server) = v2_pair();
    let list = |id, path: &str| Frame::List {
        id,
        recursive: false,
        path: path.into(),
    };
    server
        .handle_input(&encode(&[list(1, "../etc"), list(2, "")]))
        .unwrap();
    let Some(Event::List {
        id: 1,
        path: Err(bad),
        ..
    }) = server.poll_event()
    else {
        panic!("a bad path")
    };
    assert!(bad.to_string().contains("`.` and `..`"), "{bad}");
    let page = server.list_page(1, &[entry(EntryKind::File, "x")]);
    assert!(matches!(page, Err(UsageError::Invalid(_))), "{page:?}");
    server.refuse(1, Code::BadName, "bad name").unwrap();
    assert!(matches!(
        server.poll_event(),
        Some(Event::List {
            id: 2,
            path: Ok(None),
            recursive: false
        })
    ));
    server.listed(2, 3).unwrap();
}

fn entry(kind: EntryKind, name: &str) -> Entry {
    Entry {
        kind,
        name: Name::parse(name).unwrap(),
        size: 0,
        mtime: MTIME,
        mode: 0o644,
    }
}

/// §4.11: the server machine refuses to send entries that break a listing's rules, and the
/// client machine refuses to receive them from a hostile server.
#[test]
fn listings_keep_to_the_listed_path() {
    use EntryKind::{File, Folder};
    /// The listed path, recursive, and the entries a server tries to send.
    type Case<'a> = (&'a str, bool, &'a [(EntryKind, &'a str)]);
    let cases: &[Case] = &[
        ("d", false, &[(File, "d/x")]),
        ("d", false, &[(Folder, "d"), (File, "e/x")]),
        ("d", false, &[(Folder, "d"), (File, "dx")]),
        ("d", false, &[(Folder, "d"), (File, "d/x/y")]),
        ("d", true, &[(File, "d"), (File, "d/x")]),
        ("", false, &[(File, "a/b")]),
    ];
    for (path, recursive, entries) in cases {
        let entries: Vec<Entry> = entries.iter().map(|(k, n)| entry(*k, n)).collect();
        let path = (!path.is_empty()).then(|| Name::parse(path).unwrap());

        let (mut client, mut server) = v2_pair();
        let id = client.list(path.clone(), *recursive).unwrap();
        server.handle_input(client.poll_transmit()).unwrap();
        assert!(matches!(server.poll_event(), Some(Event::List { .. })));
        let mut sent = 0;
        let refused = loop {
            match server.list_page(id, &entries[sent..]) {
                Ok(n) if n > 0 => sent += n,
                Ok(_) => break false,
                Err(UsageError::Invalid(_)) => break true,
                Err(e) => panic!("{e:?}"),
            }
        };
        assert!(refused, "{path:?} {entries:?}");

        let err = client
            .handle_input(&encode(&[Frame::Entries { id, entries }]))
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Protocol(ProtocolError::Malformed {
                    frame: "ENTRIES",
                    ..
                })
            ),
            "{err}"
        );
    }
    // A LISTED whose count differs from the entries delivered.
    let (mut client, _) = v2_pair();
    let id = client.list(None, true).unwrap();
    let frames = [
        Frame::Entries {
            id,
            entries: vec![entry(File, "a")],
        },
        Frame::Listed {
            id,
            count: 2,
            skipped: 0,
        },
    ];
    let err = client.handle_input(&encode(&frames)).unwrap_err();
    assert!(
        matches!(err, Error::Protocol(ProtocolError::Malformed { .. })),
        "{err}"
    );
}

/// §4.10, §7.1: LISTs count against the pipeline cap like GETs, on both sides, and are
/// answered in request order with GETs.
#[test]
fn lists_count_against_the_pipeline_cap() {
    let (mut client, _) = v2_pair();
    for _ in 0..MAX_PIPELINE / 2 {
        client.list(None, false).unwrap();
        client.get(Name::parse("g").unwrap()).unwrap();
    }
    assert_eq!(
        client.list(None, false),
        Err(UsageError::PipelineFull { max: MAX_PIPELINE })
    );

    let (_, mut server) = v2_pair();
    let lists: Vec<Frame> = (1..=MAX_PIPELINE as u64 + 1)
        .map(|id| Frame::List {
            id,
            recursive: true,
            path: String::new(),
        })
        .collect();
    let err = server.handle_input(&encode(&lists)).unwrap_err();
    assert_eq!(
        err,
        Error::Protocol(ProtocolError::PipelineFull { max: MAX_PIPELINE })
    );

    // An OFFER answering a GET queued behind an unfinished LIST is out of order.
    let (mut client, _) = v2_pair();
    let list = client.list(None, false).unwrap();
    let get = client.get(Name::parse("g").unwrap()).unwrap();
    let offer = Frame::Offer {
        id: get,
        kind: EntryKind::File,
        size: Some(1),
        mtime: None,
        mode: None,
        name: "g".into(),
        digest: None,
        early: false,
    };
    let err = client.handle_input(&encode(&[offer])).unwrap_err();
    assert_eq!(
        err,
        Error::Protocol(ProtocolError::WrongId {
            frame: "OFFER",
            expected: list,
            got: get
        })
    );
}

/// §5.1 (issue 12, point 2): names POSIX stores and Windows does not travel as they are and
/// stay relative; `Name::portable` says which rule Windows needs.
#[test]
fn names_posix_accepts_travel_unchanged() {
    let names = [
        "aux.c",
        "linux/drivers/aux.c",
        "nul.tar.gz",
        "x:y",
        "what?",
        "Screenshot 2024-01-01 10:30:00.png",
        "back\\slash",
        "<>|\"*",
        "trailing.",
        "trailing ",
        "CON",
    ];
    let files: Vec<(&str, &[u8])> = names.iter().map(|n| (*n, n.as_bytes())).collect();
    let out = run(&uploads(&files), Store::default(), 100, None);
    for n in names {
        assert_eq!(out.uploads[n], Code::Stored, "{n:?}");
        assert_eq!(out.store.files[n], n.as_bytes(), "{n:?}");
        let name = Name::parse(n).unwrap();
        assert!(name.portable().is_err(), "{n:?} is not portable");
        let joined = std::path::Path::new("/srv/root").join(name.as_str());
        assert!(joined.starts_with("/srv/root"), "{n:?}");
    }
}

fn encode(frames: &[Frame]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        f.encode(&mut out);
    }
    out
}

/// A client and a server past HELLO/WELCOME of version 2, with nothing queued.
fn v2_pair() -> (Connection, Connection) {
    let mut client = Connection::client_with_max_version(None, 2).unwrap();
    let mut server = Connection::server();
    server.handle_input(client.poll_transmit()).unwrap();
    client.transmitted(client.poll_transmit().len());
    assert!(matches!(
        server.poll_event(),
        Some(Event::Hello { version: 2, .. })
    ));
    server.welcome().unwrap();
    client.handle_input(server.poll_transmit()).unwrap();
    server.transmitted(server.poll_transmit().len());
    assert_eq!(client.poll_event(), Some(Event::Welcome { version: 2 }));
    assert!(server.poll_transmit().is_empty() && client.poll_transmit().is_empty());
    (client, server)
}

/// §11.2: the example exchange is what the machines send, byte for byte (mtimes aside).
#[test]
fn the_example_exchange_is_what_the_machines_send() {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let (mut client, mut server) = v2_pair();
    let id = client
        .list(Some(Name::parse("photos").unwrap()), false)
        .unwrap();
    assert_eq!(
        hex(client.poll_transmit()),
        format!("0d00000011{id:016x}000006{}", hex(b"photos"))
    );
    server.handle_input(client.poll_transmit()).unwrap();
    client.transmitted(client.poll_transmit().len());
    assert!(matches!(server.poll_event(), Some(Event::List { .. })));
    let mut folder = entry(EntryKind::Folder, "photos");
    folder.mode = 0o755;
    let mut file = entry(EntryKind::File, "photos/a.jpg");
    file.size = 4096;
    assert_eq!(server.list_page(id, &[folder, file]).unwrap(), 2);
    let page = hex(server.poll_transmit());
    assert!(
        page.starts_with(&format!("0e00000050{id:016x}01{:016x}", 0)),
        "{page}"
    );
    assert!(
        page.contains(&format!("000001ed0006{}", hex(b"photos"))),
        "{page}"
    );
    assert!(page.contains(&format!("00{:016x}", 4096)), "{page}");
    server.transmitted(server.poll_transmit().len());
    server.listed(id, 0).unwrap();
    assert_eq!(
        hex(server.poll_transmit()),
        format!("0f00000018{id:016x}{:016x}{:016x}", 2, 0)
    );

    let info = |name: &str, size| FileInfo {
        name: Name::parse(name).unwrap(),
        size,
        mtime: Some(MTIME),
        mode: size.is_none().then_some(0o755),
    };
    let dir = client
        .offer_with(info("backup", None), OfferOptions::folder())
        .unwrap();
    let offer = hex(client.poll_transmit());
    assert!(
        offer.starts_with(&format!("0300000029{dir:016x}0e{:016x}", 0)),
        "{offer}"
    );
    server.handle_input(client.poll_transmit()).unwrap();
    client.transmitted(client.poll_transmit().len());
    let hi = client.offer(info("backup/hi.txt", Some(2))).unwrap();
    let offer = hex(client.poll_transmit());
    assert!(
        offer.starts_with(&format!("0300000030{hi:016x}03{:016x}", 2)),
        "{offer}"
    );
    server.transmitted(server.poll_transmit().len());
    server.handle_input(client.poll_transmit()).unwrap();
    let _ = std::iter::from_fn(|| server.poll_event()).count();
    server.finish(dir, Code::Stored, "backup").unwrap();
    server.refuse(hi, Code::Unchanged, "backup/hi.txt").unwrap();
    assert_eq!(
        hex(server.poll_transmit()),
        format!(
            "0900000012{dir:016x}00000006{}0500000019{hi:016x}000f000d{}",
            hex(b"backup"),
            hex(b"backup/hi.txt")
        )
    );
}
