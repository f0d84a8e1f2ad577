//! LIST (issue 12, item 4; PROTOCOL.md §4.10-§4.11) against the real server, in raw frames:
//! what is listed (files and folders, never the server's own files, links, special files, or
//! anything through a link), in pages of at most one control frame, one level or recursive;
//! and what a listing costs the server (descriptors, counted in `/proc/self/fd`).

mod common;

use std::collections::BTreeSet;
use std::sync::Mutex;

use common::*;
use ferry_proto::wire::Frame;
use ferry_proto::{Code, Entry, EntryKind};

/// Descriptor counts are process-wide: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// A finished listing: its entries in order, how many ENTRIES frames, and LISTED's numbers.
#[derive(Debug)]
struct Listed {
    entries: Vec<Entry>,
    pages: usize,
    count: u64,
    skipped: u64,
}

impl Listed {
    fn names(&self) -> BTreeSet<String> {
        self.entries
            .iter()
            .map(|e| e.name.as_str().to_owned())
            .collect()
    }
}

/// Sends LIST `id` and reads its answer; `Err` with the code of a REFUSE. `each_page` runs
/// after every page.
fn list_with(
    raw: &mut Raw,
    id: u64,
    path: &str,
    recursive: bool,
    mut each_page: impl FnMut(),
) -> Result<Listed, Code> {
    raw.send(&[Frame::List {
        id,
        recursive,
        path: path.to_owned(),
    }]);
    let mut entries = Vec::new();
    let mut pages = 0;
    loop {
        match raw.recv() {
            Some(Frame::Entries {
                id: got,
                entries: e,
            }) => {
                assert_eq!(got, id);
                assert!(!e.is_empty(), "an empty page");
                pages += 1;
                entries.extend(e);
                each_page();
            }
            Some(Frame::Listed {
                id: got,
                count,
                skipped,
            }) => {
                assert_eq!(got, id);
                assert_eq!(count, entries.len() as u64, "LISTED counts what was sent");
                return Ok(Listed {
                    entries,
                    pages,
                    count,
                    skipped,
                });
            }
            Some(Frame::Refuse { id: got, code, .. }) => {
                assert_eq!(got, id);
                assert!(entries.is_empty());
                return Err(code);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn list(raw: &mut Raw, id: u64, path: &str, recursive: bool) -> Result<Listed, Code> {
    list_with(raw, id, path, recursive, || {})
}

/// 20 folders of 99 files each (2,000 entries), a file at the top, and what must never be
/// listed: a link to a folder outside (with files), a link to a file, a dangling link and a
/// FIFO. Returns the outside folder.
fn tree(srv: &TestServer) -> tempfile::TempDir {
    let outside = tempfile::tempdir().unwrap();
    for i in 0..5 {
        std::fs::write(outside.path().join(format!("secret{i}")), b"s").unwrap();
    }
    for d in 0..20 {
        let dir = srv.dir.join(format!("d{d:02}"));
        std::fs::create_dir(&dir).unwrap();
        for f in 0..99 {
            std::fs::write(dir.join(format!("file {f:03}.txt")), b"x".repeat(f)).unwrap();
        }
    }
    std::fs::write(srv.dir.join("top.txt"), b"top").unwrap();
    std::os::unix::fs::symlink(outside.path(), srv.dir.join("linkdir")).unwrap();
    std::os::unix::fs::symlink("top.txt", srv.dir.join("d00/linkfile")).unwrap();
    std::os::unix::fs::symlink("nowhere", srv.dir.join("d01/dangling")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        srv.dir.join("d02/fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    outside
}

#[test]
fn two_thousand_entries_come_in_pages_without_links_specials_or_server_files() {
    let _one = serial();
    let srv = start(config());
    let _outside = tree(&srv);
    // A finished upload, so that the state folder holds files too.
    assert_eq!(
        upload_once(srv.addr(), "d00/uploaded.bin", b"up").code,
        Code::Stored
    );
    let mut raw = Raw::connect(srv.addr());

    let all = list(&mut raw, 1, "", true).unwrap();
    assert_eq!(
        all.count, 2002,
        "20 folders, 1,980 files, top.txt, the upload"
    );
    assert!(all.pages > 1, "{} page(s)", all.pages);
    assert_eq!(all.skipped, 4, "two links, a dangling link, a FIFO");
    let names = all.names();
    assert_eq!(names.len(), 2002, "no entry twice");
    assert!(names.contains("d07/file 042.txt") && names.contains("top.txt"));
    assert!(
        names
            .iter()
            .all(|n| !n.contains(".ferry-") && !n.starts_with("linkdir") && !n.contains("secret")),
        "nothing of the server's or behind a link"
    );
    // Pre-order: a folder comes before what it holds.
    let mut seen = BTreeSet::new();
    for e in &all.entries {
        if let Some((parent, _)) = e.name.as_str().rsplit_once('/') {
            assert!(seen.contains(parent), "{} before its folder", e.name);
        }
        seen.insert(e.name.as_str().to_owned());
        let want = if e.name.as_str().ends_with(".txt") || e.name.as_str().ends_with(".bin") {
            EntryKind::File
        } else {
            EntryKind::Folder
        };
        assert_eq!(e.kind, want, "{}", e.name);
    }
    let f = all
        .entries
        .iter()
        .find(|e| e.name.as_str() == "d03/file 017.txt")
        .unwrap();
    assert_eq!(f.size, 17);

    // One level: the top only.
    let top = list(&mut raw, 2, "", false).unwrap();
    assert_eq!(top.count, 21);
    assert_eq!(top.skipped, 1, "the link to a folder");

    // A folder: itself first, then its own entries.
    let d03 = list(&mut raw, 3, "d03", false).unwrap();
    assert_eq!(d03.entries[0].name.as_str(), "d03");
    assert_eq!(d03.entries[0].kind, EntryKind::Folder);
    assert_eq!(d03.count, 100);
    assert_eq!(
        list(&mut raw, 4, "d02", true).unwrap().skipped,
        1,
        "the FIFO"
    );

    // A file: that file only.
    let one = list(&mut raw, 5, "d03/file 005.txt", true).unwrap();
    assert_eq!(one.count, 1);
    assert_eq!(
        (one.entries[0].kind, one.entries[0].size),
        (EntryKind::File, 5)
    );
}

#[test]
fn missing_paths_links_and_the_server_s_folder_are_refused() {
    let _one = serial();
    let srv = start(config());
    let _outside = tree(&srv);
    let mut raw = Raw::connect(srv.addr());
    assert_eq!(
        list(&mut raw, 1, "missing", false).unwrap_err(),
        Code::NotFound
    );
    assert_eq!(
        list(&mut raw, 2, "top.txt/x", false).unwrap_err(),
        Code::NotFound
    );
    assert_eq!(
        list(&mut raw, 3, "linkdir", true).unwrap_err(),
        Code::BadName
    );
    assert_eq!(
        list(&mut raw, 4, "linkdir/secret0", true).unwrap_err(),
        Code::BadName
    );
    assert_eq!(
        list(&mut raw, 5, "d00/linkfile", true).unwrap_err(),
        Code::BadName
    );
    assert_eq!(
        list(&mut raw, 6, ".ferry-state", true).unwrap_err(),
        Code::BadName
    );
    assert_eq!(
        list(&mut raw, 7, "d02/fifo", true).unwrap_err(),
        Code::NotFound
    );
    assert_eq!(list(&mut raw, 8, "../x", true).unwrap_err(), Code::BadName);
    // The connection goes on.
    assert_eq!(list(&mut raw, 9, "d05", false).unwrap().count, 100);
}

#[test]
fn a_big_recursive_listing_holds_few_descriptors_and_stops_at_64_levels() {
    let _one = serial();
    let srv = start(config());
    // 70 nested folders, each with 10 empty folders beside the next: 770 folders.
    let mut dir = srv.dir.clone();
    for _ in 0..70 {
        for side in 0..10 {
            std::fs::create_dir(dir.join(format!("s{side}"))).unwrap();
        }
        dir = dir.join("n");
        std::fs::create_dir(&dir).unwrap();
    }
    let baseline = open_fds();
    let mut peak = baseline;
    let mut raw = Raw::connect(srv.addr());
    // Read slowly: the server cannot run ahead by more than the socket buffers hold.
    let all = list_with(&mut raw, 1, "", true, || {
        peak = peak.max(open_fds());
        std::thread::sleep(std::time::Duration::from_millis(2));
    })
    .unwrap();
    assert!(all.pages > 5, "{} pages", all.pages);
    let deepest = all.entries.iter().map(|e| e.name.depth()).max().unwrap();
    assert_eq!(deepest, 64, "names stop at 64 components");
    assert_eq!(all.count, 64 * 11, "every folder up to 64 levels");
    assert_eq!(
        all.skipped, 11,
        "the 65th level is counted, and nothing below it read"
    );
    assert!(
        peak < baseline + 64 + 10,
        "{peak} descriptors open during the listing, {baseline} before"
    );
}
