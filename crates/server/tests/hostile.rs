//! Hostile clients against the real server (issue 6, docs/SECURITY.md): every case is judged
//! by looking at the filesystem afterwards — nothing outside the root, nothing existing changed,
//! nothing half-written under a final name.

mod common;

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::PathBuf;

use common::*;
use ferry_proto::wire::Frame;
use ferry_proto::{Code, Digest, Event, Step};
use ferry_server::Config;

/// A server whose root sits beside a folder of files that must never change, with one
/// existing file inside the root.
struct Arena {
    srv: TestServer,
    outside: tempfile::TempDir,
    before_outside: BTreeMap<PathBuf, Digest>,
}

impl Arena {
    fn new(config: Config) -> Arena {
        let srv = start(config);
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("passwd"), b"root:x:0:0").unwrap();
        std::fs::write(srv.dir.join("existing.txt"), b"keep me").unwrap();
        let before_outside = snapshot(outside.path());
        Arena {
            srv,
            outside,
            before_outside,
        }
    }

    /// Stops the server and checks the invariants every hostile case must leave.
    fn verify(mut self) -> BTreeMap<PathBuf, Digest> {
        self.srv.stop();
        assert_eq!(
            snapshot(self.outside.path()),
            self.before_outside,
            "outside the root changed"
        );
        assert_eq!(
            self.srv.read("existing.txt").as_deref(),
            Some(&b"keep me"[..])
        );
        let mut inside = snapshot(&self.srv.dir);
        for path in inside.keys() {
            let name = path.file_name().unwrap().to_string_lossy();
            assert!(!name.starts_with(".ferry-tmp"), "temp file left: {path:?}");
        }
        // The server's own files (its digest cache, say) are not the clients'.
        let state = self.srv.state();
        inside.retain(|path, _| !path.starts_with(&state));
        inside
    }
}

/// Names that would make a path unsafe on a POSIX server (traversal, absolute forms, empty
/// components, the macOS resource fork, control and invisible characters, over the caps), each
/// refused with BadName (PROTOCOL.md §5).
fn bad_names() -> Vec<String> {
    let mut names: Vec<String> = [
        // Unix traversal and absolute forms.
        "",
        ".",
        "..",
        "../x",
        "../../../../etc/passwd",
        "a/../../x",
        "./x",
        "a/./b",
        "x/..",
        "a//b",
        "a/",
        "/",
        "/etc/passwd",
        "//server/share/x",
        // macOS forms.
        "file/..namedfork/rsrc",
        // Control, escape and invisible characters.
        "a\0b",
        "a\nb",
        "a\rb",
        "tab\there",
        "bell\u{7}",
        "a\u{1b}[2Jb",
        "del\u{7f}",
        "c1\u{85}",
        "evil\u{202E}gpj.exe",
        "zero\u{200B}width",
        "bom\u{FEFF}x",
        "iso\u{2066}x",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    names.push("a".repeat(256));
    names.push(vec!["d"; 65].join("/"));
    names
}

/// Names a POSIX file system stores as they are, although Windows could not (drive letters,
/// `\\`, device names, trailing dots and spaces, `? * < > | " :`): a POSIX server accepts
/// them (PROTOCOL.md §5) and stores each exactly under that name, inside the root.
fn windows_only_bad_names() -> Vec<String> {
    [
        "C:x",
        "c:/windows/x",
        "C:\\Windows\\x",
        "\\\\server\\share\\x",
        "..\\x",
        "a\\b",
        "file.txt:stream",
        "CON",
        "con.txt",
        "dir/nul.txt",
        "NUL",
        "PRN.log",
        "AUX",
        "COM1",
        "lpt9.txt",
        "COM\u{b9}",
        "CONIN$",
        "trailing.",
        "trailing ",
        "dir./x",
        "x?",
        "x*",
        "x<y",
        "x>y",
        "x|y",
        "\"quoted\"",
        "x:y",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn unsafe_names_are_refused_and_nothing_escapes() {
    let names = bad_names();
    assert!(names.len() >= 28, "{}", names.len());
    let arena = Arena::new(config());
    let mut raw = Raw::connect(arena.srv.addr());
    for (i, name) in names.iter().enumerate() {
        let id = i as u64 + 1;
        raw.offer(id, name, 3);
        match raw.recv() {
            Some(Frame::Refuse { id: r, code, .. }) => {
                assert_eq!((r, code), (id, Code::BadName), "{name:?}")
            }
            other => panic!("{name:?}: expected REFUSE, got {other:?}"),
        }
    }
    // The same names as GETs never read outside the root either.
    for (i, name) in names.iter().enumerate() {
        let id = (names.len() + i) as u64 + 1;
        raw.send(&[Frame::Get {
            id,
            name: name.clone(),
        }]);
        assert!(
            matches!(
                raw.recv(),
                Some(Frame::Refuse {
                    code: Code::BadName,
                    ..
                })
            ),
            "{name:?}"
        );
    }
    // A name over the wire cap (4096 bytes) is a broken frame: the connection ends.
    raw.offer(10_000, &"n".repeat(5000), 3);
    assert!(matches!(
        raw.recv(),
        Some(Frame::Error {
            code: Code::Protocol,
            ..
        })
    ));
    assert_eq!(raw.recv(), None);
    drop(raw);
    let inside = arena.verify();
    assert_eq!(inside.len(), 1, "only the existing file: {inside:?}");
}

/// PROTOCOL.md §5: names only Windows refuses are ordinary names on a POSIX server: each is
/// stored under exactly that name inside the root and served back, and nothing outside changes.
#[test]
fn windows_only_names_are_stored_inside_the_root_under_their_own_name() {
    let arena = Arena::new(config());
    let addr = arena.srv.addr();
    let names = windows_only_bad_names();
    for name in &names {
        let o = upload_once(addr, name, name.as_bytes());
        assert_eq!(o.code, Code::Stored, "{name:?}: {o:?}");
        assert_eq!(
            arena.srv.read(name).as_deref(),
            Some(name.as_bytes()),
            "{name:?}"
        );
    }
    let mut d = connect(addr);
    for name in &names {
        let (bytes, _) = download(&mut d, name).unwrap_or_else(|c| panic!("{name:?}: {c}"));
        assert_eq!(bytes, name.as_bytes(), "{name:?}");
    }
    drop(d);
    let inside = arena.verify();
    assert_eq!(inside.len(), names.len() + 1, "{inside:?}");
}

#[test]
fn seed_names_in_hostile_forms_store_nothing() {
    let arena = Arena::new(config());
    for name in bad_names()
        .iter()
        .filter(|n| !n.contains('\n') && !n.starts_with('\0'))
    {
        seed_send(arena.srv.addr(), name.as_bytes(), b"payload");
    }
    // Invalid UTF-8 and a name line with no end.
    seed_send(arena.srv.addr(), b"\xff\xfe.txt", b"payload");
    seed_send(arena.srv.addr(), &[b'n'; 5000], b"");
    let inside = arena.verify();
    assert_eq!(inside.len(), 1, "{inside:?}");
}

/// Look-alike separators and dots are ordinary characters: stored inside the root under
/// exactly that name, or refused; NFC and NFD spellings are distinct names, and neither
/// replaces the other.
#[test]
fn look_alikes_and_unicode_twins_stay_inside_the_root() {
    let arena = Arena::new(config());
    let addr = arena.srv.addr();
    let look_alikes = [
        "a\u{2215}b",
        "a\u{FF0F}b",
        "\u{FF0E}\u{FF0E}",
        "\u{2024}\u{2024}",
        "a\u{29F8}b",
    ];
    for name in look_alikes {
        let o = upload_once(addr, name, name.as_bytes());
        assert_eq!(o.code, Code::Stored, "{name:?}");
        assert_eq!(
            arena.srv.read(name).as_deref(),
            Some(name.as_bytes()),
            "{name:?}"
        );
    }
    let nfc = "caf\u{e9}.txt";
    let nfd = "cafe\u{301}.txt";
    assert_eq!(upload_once(addr, nfc, b"nfc").code, Code::Stored);
    assert_eq!(upload_once(addr, nfd, b"nfd").code, Code::Stored);
    assert_eq!(arena.srv.read(nfc).as_deref(), Some(&b"nfc"[..]));
    assert_eq!(arena.srv.read(nfd).as_deref(), Some(&b"nfd"[..]));
    let inside = arena.verify();
    assert_eq!(inside.len(), 1 + look_alikes.len() + 2, "{inside:?}");
}

/// Sizes that lie or overflow end the transfer with nothing published.
#[test]
fn lying_and_overflowing_lengths_publish_nothing() {
    let arena = Arena::new(config());
    let addr = arena.srv.addr();
    let body = data(1000, 3);
    let digest = Digest::of(&body);

    // Body longer than announced: the DATA frame overruns the size.
    let mut raw = Raw::connect(addr);
    raw.offer(1, "long.bin", 10);
    assert!(matches!(raw.recv(), Some(Frame::Accept { .. })));
    raw.send(&[Frame::Begin { id: 1, from: 0 }]);
    raw.data(&body);
    assert!(matches!(
        raw.recv(),
        Some(Frame::Error {
            code: Code::SizeMismatch,
            ..
        })
    ));

    // Body shorter than announced, then END.
    let mut raw = Raw::connect(addr);
    raw.offer(1, "short.bin", 5000);
    assert!(matches!(raw.recv(), Some(Frame::Accept { .. })));
    raw.send(&[Frame::Begin { id: 1, from: 0 }]);
    raw.data(&body);
    raw.send(&[Frame::End {
        id: 1,
        size: 1000,
        digest,
    }]);
    assert!(matches!(
        raw.recv(),
        Some(Frame::Error {
            code: Code::SizeMismatch,
            ..
        })
    ));

    // A size no disk can hold, and a frame length over every cap.
    let mut raw = Raw::connect(addr);
    raw.offer(1, "huge.bin", u64::MAX);
    assert!(matches!(
        raw.recv(),
        Some(Frame::Refuse {
            code: Code::NoSpace | Code::TooLarge,
            ..
        })
    ));
    raw.bytes(&[0x03, 0xff, 0xff, 0xff, 0xff]);
    assert!(matches!(
        raw.recv(),
        Some(Frame::Error {
            code: Code::Protocol,
            ..
        })
    ));

    // A resume offset beyond the file the client itself announced.
    let mut raw = Raw::connect(addr);
    raw.offer(1, "begin.bin", 10);
    assert!(matches!(raw.recv(), Some(Frame::Accept { .. })));
    raw.send(&[Frame::Begin { id: 1, from: 7 }]);
    assert!(matches!(
        raw.recv(),
        Some(Frame::Error {
            code: Code::Protocol,
            ..
        })
    ));
    drop(raw);

    let inside = arena.verify();
    for name in ["long.bin", "short.bin", "huge.bin", "begin.bin"] {
        assert!(
            !inside.keys().any(|p| p.ends_with(name)),
            "{name} published: {inside:?}"
        );
    }
}

/// A flipped byte at ten positions across the body: all detected, none published.
#[test]
fn a_flipped_byte_anywhere_is_caught_and_never_published() {
    let arena = Arena::new(config());
    let body = data(64 * 1024, 9);
    let digest = Digest::of(&body);
    let mut raw = Raw::connect(arena.srv.addr());
    for (i, at) in [
        0, 1, 511, 4095, 4096, 30_000, 32_768, 50_000, 65_534, 65_535,
    ]
    .into_iter()
    .enumerate()
    {
        let id = i as u64 + 1;
        let name = format!("flip-{at}.bin");
        raw.offer(id, &name, body.len() as u64);
        assert!(matches!(raw.recv(), Some(Frame::Accept { .. })), "{name}");
        let mut bad = body.clone();
        bad[at] ^= 0x20;
        raw.send(&[Frame::Begin { id, from: 0 }]);
        raw.data(&bad);
        raw.send(&[Frame::End {
            id,
            size: body.len() as u64,
            digest,
        }]);
        match raw.recv() {
            Some(Frame::Result { id: r, code, .. }) => {
                assert_eq!((r, code), (id, Code::DigestMismatch), "{name}")
            }
            other => panic!("{name}: expected RESULT, got {other:?}"),
        }
    }
    drop(raw);
    let inside = arena.verify();
    assert!(
        !inside.keys().any(|p| p.to_string_lossy().contains("flip-")),
        "{inside:?}"
    );
}

/// A flood of connections that send garbage, half a magic, or nothing, then vanish: the
/// server stays up and still stores a real upload intact.
#[test]
fn a_flood_of_junk_connections_leaves_the_server_serving() {
    let arena = Arena::new(config());
    let addr = arena.srv.addr();
    for i in 0..200u32 {
        if let Ok(mut s) = TcpStream::connect(addr) {
            use std::io::Write;
            let junk: &[u8] = match i % 4 {
                0 => b"",
                1 => b"\0fer",
                2 => b"\0ferry\r\n\x99\x00\x00\x00\x00",
                _ => b"GET / HTTP/1.1\r\n\r\n",
            };
            let _ = s.write_all(junk);
        }
    }
    // The flood came from this test's address, which has a connection cap of its own: the
    // address is served again once the flood's connections are gone.
    wait_for("the flood to drain", || {
        matches!(
            connect_unwelcomed(addr).next_step(),
            Ok(Step::Event(Event::Welcome { .. }))
        )
    });
    let body = data(100_000, 1);
    assert_eq!(
        upload_when_free(addr, "after-flood.bin", &body).code,
        Code::Stored
    );
    assert_eq!(arena.srv.read("after-flood.bin"), Some(body));
    arena.verify();
}

/// Issue 11 item 3: no client name reaches the server's own files. The reserved prefix is
/// refused in every component, for uploads and downloads, so that no client can squat the
/// place of another upload's partial; the upload it aimed at still works.
#[test]
fn the_reserved_prefix_is_refused_in_every_component() {
    let arena = Arena::new(config());
    let addr = arena.srv.addr();
    let names = [
        "a/.ferry-partial.x/y",
        ".ferry-partial.0123456789abcdef/report.iso",
        ".ferry-state/x",
        ".ferry-state/partials/x",
        "d/e/.ferry-tmp.1",
        "d/.ferry-/x",
    ];
    let mut raw = Raw::connect(addr);
    for (i, name) in names.iter().enumerate() {
        let id = 2 * i as u64 + 1;
        raw.offer(id, name, 3);
        raw.send(&[Frame::Get {
            id: id + 1,
            name: name.to_string(),
        }]);
        for want in [id, id + 1] {
            match raw.recv() {
                Some(Frame::Refuse { id: r, code, .. }) => {
                    assert_eq!((r, code), (want, Code::BadName), "{name}")
                }
                other => panic!("{name}: expected REFUSE, got {other:?}"),
            }
        }
    }
    drop(raw);
    let body = data(2 << 20, 5);
    assert_eq!(upload_once(addr, "report.iso", &body).code, Code::Stored);
    assert_eq!(arena.srv.read("report.iso"), Some(body));
    let inside = arena.verify();
    assert_eq!(inside.len(), 2, "{inside:?}");
}

/// Issue 11 item 4: an OFFER creates nothing; 1,024 offers of files twenty folders deep,
/// never followed by a body, leave no folder behind.
#[test]
fn offers_without_a_body_leave_no_folder() {
    const OFFERS: u64 = 1024;
    let mut arena = Arena::new(config());
    let deep = (b'a'..=b't')
        .map(|c| (c as char).to_string())
        .collect::<Vec<_>>();
    let mut raw = Raw::connect(arena.srv.addr());
    let offers: Vec<Frame> = (1..=OFFERS)
        .map(|id| file_offer(id, format!("n{id}/{}/file.bin", deep.join("/")), 3))
        .collect();
    raw.send(&offers);
    for id in 1..=OFFERS {
        match raw.recv() {
            Some(Frame::Accept { id: a, .. }) => assert_eq!(a, id),
            other => panic!("expected ACCEPT, got {other:?}"),
        }
    }
    drop(raw);
    arena.srv.stop();
    let folders: Vec<_> = std::fs::read_dir(&arena.srv.dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| e.file_name())
        .collect();
    assert_eq!(folders, [".ferry-state"], "folders left by offers");
    arena.verify();
}
