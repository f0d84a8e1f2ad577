//! Folder offers (issue 12, item 2; PROTOCOL.md §4.9): a version-2 client's folder offer makes
//! the folder, with its mode (less the umask) and mtime, answered by RESULT `Stored`, or
//! `Unchanged` when a folder was there; a file or a link in the way is never followed. A GET
//! of a folder says how to fetch it (item 5). Judged by the file system.

mod common;

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, UNIX_EPOCH};

use common::*;
use ferry_proto::wire::Frame;
use ferry_proto::{Code, EntryKind, Event, Name, Step, Timestamp};
use ferry_server::Config;

const T: Timestamp = Timestamp {
    secs: 1_600_000_000,
    nanos: 500_000_000,
};

/// The umask of this process (which the in-process server shares), read off a fresh folder.
fn umask() -> u32 {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("probe");
    // Made with 0o777, as mkdir(1) does.
    std::fs::create_dir(&p).unwrap();
    0o777 & !std::fs::metadata(&p).unwrap().mode()
}

/// (permission bits, mtime) of a folder in the store.
fn folder(srv: &TestServer, name: &str) -> (u32, Timestamp) {
    let m = std::fs::symlink_metadata(srv.dir.join(name)).unwrap();
    assert!(m.is_dir(), "{name} is a folder");
    let t = m.modified().unwrap().duration_since(UNIX_EPOCH).unwrap();
    (
        m.mode() & 0o7777,
        Timestamp {
            secs: t.as_secs() as i64,
            nanos: t.subsec_nanos(),
        },
    )
}

#[test]
fn an_empty_folder_is_made_with_its_mode_and_mtime_and_is_unchanged_on_repeat() {
    let srv = start(config());
    let mut d = connect(srv.addr());
    let um = umask();
    let o = offer_folder(&mut d, "photos/2024/empty", Some(0o4750), Some(T));
    assert_eq!(
        (o.code, o.detail.as_str()),
        (Code::Stored, "photos/2024/empty")
    );
    assert_eq!(
        folder(&srv, "photos/2024/empty"),
        (0o750 & !um, T),
        "mode less the umask, no set-id bit; the mtime offered"
    );
    assert_eq!(folder(&srv, "photos").0, 0o777 & !um, "parents as mkdir -p");
    let o = offer_folder(&mut d, "photos/2024/empty", Some(0o750), Some(T));
    assert_eq!(o.code, Code::Unchanged);
    assert_eq!(folder(&srv, "photos/2024/empty"), (0o750 & !um, T));
    // A folder without mode or mtime.
    assert_eq!(offer_folder(&mut d, "bare", None, None).code, Code::Stored);
    assert_eq!(folder(&srv, "bare").0, 0o777 & !um);
}

#[test]
fn a_folder_offered_after_its_contents_gets_its_mode_and_mtime() {
    let srv = start(config());
    let mut d = connect(srv.addr());
    let um = umask();
    assert_eq!(
        upload(&mut d, "tree/sub/f.txt", b"hello").code,
        Code::Stored
    );
    assert_eq!(upload(&mut d, "tree/g.txt", b"hi").code, Code::Stored);
    let t2 = Timestamp {
        secs: T.secs + 10,
        nanos: 0,
    };
    let o = offer_folder(&mut d, "tree/sub", Some(0o700), Some(T));
    assert_eq!(
        o.code,
        Code::Unchanged,
        "made by the upload, so already there"
    );
    let o = offer_folder(&mut d, "tree", Some(0o755), Some(t2));
    assert_eq!(o.code, Code::Unchanged);
    assert_eq!(folder(&srv, "tree/sub"), (0o700 & !um, T));
    assert_eq!(folder(&srv, "tree"), (0o755 & !um, t2));
    assert_eq!(srv.read("tree/sub/f.txt").unwrap(), b"hello");
}

/// A read-only folder (mode 555) is stored with read, write and search for the server's
/// user, made so or restyled so: a re-run still adds its new files to it.
#[test]
fn a_read_only_folder_stays_writable_for_the_server() {
    let srv = start(config());
    let mut d = connect(srv.addr());
    let um = umask();
    assert_eq!(
        offer_folder(&mut d, "ro", Some(0o555), Some(T)).code,
        Code::Stored
    );
    assert_eq!(folder(&srv, "ro").0, 0o755 & !um);
    assert_eq!(upload(&mut d, "ro/one.txt", b"1").code, Code::Stored);
    assert_eq!(
        offer_folder(&mut d, "ro", Some(0o500), Some(T)).code,
        Code::Unchanged
    );
    assert_eq!(folder(&srv, "ro").0, 0o700 & !um);
    assert_eq!(upload(&mut d, "ro/two.txt", b"2").code, Code::Stored);
}

#[test]
fn a_file_or_a_link_in_the_way_is_never_followed() {
    let srv = start(config());
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(srv.dir.join("a.txt"), b"keep").unwrap();
    let a_mode = std::fs::metadata(srv.dir.join("a.txt")).unwrap().mode();
    std::os::unix::fs::symlink(outside.path(), srv.dir.join("link")).unwrap();
    let mut d = connect(srv.addr());

    let o = offer_folder(&mut d, "a.txt", Some(0o700), Some(T));
    assert_eq!(o.code, Code::Exists, "{o:?}");
    let o = offer_folder(&mut d, "a.txt/sub", Some(0o700), Some(T));
    assert_eq!(o.code, Code::Exists, "{o:?}");
    let o = offer_folder(&mut d, "link", Some(0o700), Some(T));
    assert_eq!(o.code, Code::Exists, "{o:?}");
    assert!(o.detail.contains("symbolic link"), "{o:?}");
    let o = offer_folder(&mut d, "link/sub", Some(0o700), Some(T));
    assert_eq!(o.code, Code::BadName, "{o:?}");
    let o = offer_folder(&mut d, "new/.ferry-state", None, None);
    assert_eq!(o.code, Code::BadName, "{o:?}");

    assert_eq!(srv.read("a.txt").unwrap(), b"keep");
    let m = std::fs::symlink_metadata(srv.dir.join("a.txt")).unwrap();
    assert_eq!(m.mode(), a_mode, "mode untouched");
    assert!(std::fs::symlink_metadata(srv.dir.join("link"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    let outside_time = std::fs::metadata(outside.path())
        .unwrap()
        .modified()
        .unwrap();
    assert_ne!(
        outside_time,
        UNIX_EPOCH + Duration::new(T.secs as u64, T.nanos),
        "the link's target got no mtime"
    );
    assert!(
        !srv.dir.join("new").exists(),
        "nothing made for a refused name"
    );
    // The connection goes on.
    assert_eq!(upload(&mut d, "ok.txt", b"x").code, Code::Stored);
}

#[test]
fn a_get_of_a_folder_says_how_to_fetch_it() {
    let srv = start(config());
    std::fs::create_dir_all(srv.dir.join("tree/sub")).unwrap();
    let mut d = connect(srv.addr());
    d.conn_mut().get(Name::parse("tree").unwrap()).unwrap();
    match d.next_step().unwrap() {
        Step::Event(Event::Refused { code, reason, .. }) => {
            assert_eq!(code, Code::NotFound);
            assert!(
                reason.contains("is a folder, and a GET fetches one file: list the folder"),
                "{reason}"
            );
        }
        other => panic!("expected REFUSE, got {other:?}"),
    }
}

/// PROTOCOL.md §4.9: a folder's RESULT answers its offer, in offer order. On a durable server
/// a folder made now waits for a flush before its RESULT; offers pipelined right behind it
/// (new folders, a file) must still be answered after it and in order, not fail the
/// connection (they used to, when they arrived before that flush ended).
#[test]
fn offers_pipelined_behind_a_folder_made_now_are_answered_in_order() {
    let srv = start(Config {
        fsync: true,
        ..config()
    });
    let folder_offer = |id, name: &str| Frame::Offer {
        id,
        kind: EntryKind::Folder,
        digest: None,
        size: None,
        mtime: None,
        mode: None,
        name: name.into(),
        early: false,
    };
    for round in 0..20 {
        let mut raw = Raw::connect(srv.addr());
        let (a, b) = (format!("r{round}/a"), format!("r{round}/b"));
        raw.send(&[
            folder_offer(1, &a),
            folder_offer(2, &b),
            folder_offer(3, &a),
            file_offer(4, format!("{a}/f"), 5),
        ]);
        let mut answers = Vec::new();
        for _ in 0..4 {
            answers.push(match raw.recv() {
                Some(Frame::Result { id, code, .. }) => (id, Some(code)),
                // ACCEPT: no code.
                Some(Frame::Accept { id, .. }) => (id, None),
                other => panic!("round {round}: expected an answer, got {other:?}"),
            });
        }
        assert_eq!(
            answers,
            [
                (1, Some(Code::Stored)),
                (2, Some(Code::Stored)),
                (3, Some(Code::Unchanged)),
                (4, None)
            ],
            "round {round}"
        );
        assert_eq!(raw.send_body(4, b"hello", 0), Code::Stored);
    }
}
