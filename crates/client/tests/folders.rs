//! Issue 12 end to end, with the `ferry` binary against the in-process server (protocol 2):
//! re-runs report unchanged files, POSIX names travel, odd entries are skipped one by one,
//! `ferry ls`, folders both ways (`--to`, `get` of a folder, `-o` as `cp`), and an exact round
//! trip of a generated tree.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant, UNIX_EPOCH};

use common::{data, ferry, json_lines, raw_server, stderr, write, TestServer};
use ferry_server::Overwrite;
use rustix::fs::{FileType, Mode};
use serde_json::Value;

fn arg(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The records of `lines` with this `type` and `status`.
fn count(lines: &[Value], kind: &str, status: &str) -> usize {
    lines
        .iter()
        .filter(|l| l["type"] == kind && l["status"] == status)
        .count()
}

fn set_mtime(path: &Path, secs: u64, nanos: u32) {
    let t = UNIX_EPOCH + Duration::new(secs, nanos);
    File::open(path).unwrap().set_modified(t).unwrap();
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn is_root() -> bool {
    let probe = tempfile::tempfile().unwrap();
    probe.metadata().unwrap().uid() == 0
}

/// A FIFO at `path` with a writer waiting to hand it `b"precious"`: the writer blocks until
/// someone opens the FIFO for reading.
fn fifo_with_writer(path: &Path) -> thread::JoinHandle<bool> {
    rustix::fs::mkfifoat(rustix::fs::CWD, path, Mode::from_raw_mode(0o600)).unwrap();
    let p = path.to_owned();
    thread::spawn(move || {
        let mut w = File::options().write(true).open(&p).unwrap();
        std::io::Write::write_all(&mut w, b"precious").is_ok()
    })
}

/// Reads what the FIFO's writer still holds: it must not have lost it to anyone else.
fn drain_fifo(path: &Path, writer: thread::JoinHandle<bool>) -> Vec<u8> {
    let fd = rustix::fs::open(
        path,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NONBLOCK,
        Mode::empty(),
    )
    .unwrap();
    let mut r = File::from(fd);
    let mut got = Vec::new();
    let until = Instant::now() + Duration::from_secs(10);
    while got.len() < 8 && Instant::now() < until {
        let mut buf = [0u8; 64];
        match r.read(&mut buf) {
            Ok(0) if writer.is_finished() => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
    assert!(writer.join().unwrap(), "the writer could write");
    got
}

/// Special entries that a send must skip, made under `dir`; returns their paths.
fn specials(dir: &Path) -> (Vec<PathBuf>, thread::JoinHandle<bool>) {
    let fifo = dir.join("a fifo");
    let writer = fifo_with_writer(&fifo);
    let dangling = dir.join("dangling link");
    std::os::unix::fs::symlink(dir.join("nowhere"), &dangling).unwrap();
    let socket = dir.join("sock");
    // The listener's file stays when it is dropped.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let odd = dir.join("unreadable or a device");
    if is_root() {
        // Root reads everything: a device stands in for the unreadable file.
        let dev = rustix::fs::mknodat(
            rustix::fs::CWD,
            &odd,
            FileType::CharacterDevice,
            Mode::from_raw_mode(0o600),
            rustix::fs::makedev(1, 3),
        );
        if dev.is_err() {
            // No CAP_MKNOD here: another socket then.
            drop(std::os::unix::net::UnixListener::bind(&odd).unwrap());
        }
    } else {
        write(&odd, b"secret");
        set_mode(&odd, 0);
    }
    (vec![fifo, dangling, socket, odd], writer)
}

/// Issue 12 item 1: after a cut, running the same send again completes what is missing
/// (the rest is unchanged) and exits 0; a third run finds everything unchanged.
#[test]
fn a_rerun_after_a_cut_completes_what_is_missing_and_exits_0() {
    let server = TestServer::start(Overwrite::Refuse);
    let local = tempfile::tempdir().unwrap();
    let root = local.path().join("photos");
    for i in 0..60u32 {
        write(&root.join(format!("d{}/f{i}.bin", i % 3)), &data(20_000, i));
    }
    fs::create_dir(root.join("empty")).unwrap();
    let addr = server.addr().to_string();
    let (proxy, cut) = common::cutting_proxy(server.addr(), 600_000, u64::MAX);

    let first = ferry(&["send", &proxy.to_string(), arg(&root)]);
    cut.join().unwrap();
    assert_eq!(first.status.code(), Some(4), "{}", stderr(&first));

    // The server may not have seen the cut yet and still hold the last names for the cut
    // connection: those are "busy" for a moment, which --retries waits out.
    let second = ferry(&["send", "--json", "--retries", "3", &addr, arg(&root)]);
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    assert!(!stderr(&second).contains("exists"), "{}", stderr(&second));
    let lines = json_lines(&second.stdout);
    assert!(count(&lines, "file", "unchanged") > 0, "{lines:?}");
    assert!(count(&lines, "file", "stored") > 0, "{lines:?}");
    assert_eq!(
        count(&lines, "file", "unchanged") + count(&lines, "file", "stored"),
        60
    );
    for i in 0..60u32 {
        let name = format!("photos/d{}/f{i}.bin", i % 3);
        assert!(
            fs::read(server.path(&name)).unwrap() == data(20_000, i),
            "{name}"
        );
    }
    assert!(server.path("photos/empty").is_dir());

    let third = ferry(&["send", "--json", &addr, arg(&root)]);
    assert_eq!(third.status.code(), Some(0), "{}", stderr(&third));
    let lines = json_lines(&third.stdout);
    assert_eq!(count(&lines, "file", "unchanged"), 60);
    assert_eq!(count(&lines, "folder", "unchanged"), 5);
    let summary = lines.last().unwrap();
    assert_eq!(
        (summary["unchanged"].as_u64(), summary["failed"].as_u64()),
        (Some(60), Some(0))
    );
    assert_eq!(summary["bytes"], 0, "nothing moved");
    let quiet = ferry(&["send", &addr, arg(&root)]);
    assert!(
        stderr(&quiet).contains("unchanged photos/d0/f0.bin"),
        "{}",
        stderr(&quiet)
    );
}

/// Issue 12 item 1: `--checksum` sends each file's digest, so contents are compared where the
/// quick check (size and mtime) is fooled.
#[test]
fn checksum_compares_contents_where_size_and_mtime_agree() {
    let server = TestServer::start(Overwrite::Refuse);
    let local = tempfile::tempdir().unwrap();
    let f = local.path().join("f.txt");
    write(&f, b"aaaa");
    set_mtime(&f, 1_700_000_000, 0);
    let addr = server.addr().to_string();
    assert_eq!(ferry(&["send", &addr, arg(&f)]).status.code(), Some(0));

    // Same size, same mtime, other bytes.
    write(&f, b"bbbb");
    set_mtime(&f, 1_700_000_000, 0);
    let quick = ferry(&["send", "--json", &addr, arg(&f)]);
    assert_eq!(quick.status.code(), Some(0), "{}", stderr(&quick));
    assert_eq!(json_lines(&quick.stdout)[0]["status"], "unchanged");
    let checked = ferry(&["send", "--json", "--checksum", &addr, arg(&f)]);
    assert_eq!(checked.status.code(), Some(3), "{}", stderr(&checked));
    assert_eq!(json_lines(&checked.stdout)[0]["status"], "exists");

    write(&f, b"aaaa");
    let same = ferry(&["send", "--json", "--checksum", &addr, arg(&f)]);
    assert_eq!(same.status.code(), Some(0), "{}", stderr(&same));
    assert_eq!(json_lines(&same.stdout)[0]["status"], "unchanged");
    assert_eq!(fs::read(server.path("f.txt")).unwrap(), b"aaaa");
}

/// Issue 12 items 2-3: names POSIX accepts travel as they are; a FIFO (never opened: its
/// writer loses nothing), a dangling link, a socket and an unreadable file (a device as root)
/// are skipped with one `ferry: skipped` line and one record each; the rest is sent; exit 1.
#[test]
fn odd_names_travel_and_special_entries_are_skipped_one_by_one() {
    let server = TestServer::start(Overwrite::Refuse);
    let local = tempfile::tempdir().unwrap();
    let root = local.path().join("t");
    let names = [
        "aux.c",
        "nul.tar.gz",
        "x:y",
        "what?",
        "Screenshot 2024-01-01 10:30:00.png",
        "trailing.",
        "sub/con",
        "sub/dé jà vu*",
    ];
    for (i, n) in names.iter().enumerate() {
        write(&root.join(n), &data(100 + i, i as u32));
    }
    let (odd, writer) = specials(&root);
    let addr = server.addr().to_string();

    let out = ferry(&["send", "--json", &addr, arg(&root)]);

    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let lines = json_lines(&out.stdout);
    assert_eq!(count(&lines, "file", "stored"), names.len(), "{lines:?}");
    assert_eq!(count(&lines, "file", "skipped"), odd.len(), "{lines:?}");
    assert_eq!(lines.last().unwrap()["skipped"], odd.len());
    let err = stderr(&out);
    for p in &odd {
        let line = format!("ferry: skipped {}: ", p.display());
        assert_eq!(err.matches(&line).count(), 1, "{line} in {err}");
    }
    assert!(
        !err.contains("WARN"),
        "the tool's own lines, not the log's: {err}"
    );
    for (i, n) in names.iter().enumerate() {
        let stored = fs::read(server.path(&format!("t/{n}"))).unwrap();
        assert!(stored == data(100 + i, i as u32), "{n}");
    }
    assert_eq!(drain_fifo(&odd[0], writer), b"precious");

    // Again, quietly: nothing to store, the same entries still skipped (exit 1), and only
    // their lines: they are the failures.
    let quiet = ferry(&["send", "-q", &addr, arg(&root)]);
    assert_eq!(quiet.status.code(), Some(1));
    let said = stderr(&quiet);
    assert_eq!(
        said.lines().count(),
        odd.len(),
        "--quiet says what failed: {said}"
    );
    assert!(
        said.lines().all(|l| l.starts_with("ferry: skipped ")),
        "{said}"
    );
}

/// QA M2, PROTOCOL.md §5.1: names spelt with the joiners ZWNJ (Persian `می‌خواهم`) and ZWJ
/// (emoji sequences 👨‍👩‍👧, 👩‍💻) are sent, listed and fetched back as they are, and shown as
/// they are; a name with a character that only hides (a zero-width space) is still skipped,
/// and shown escaped.
#[test]
fn names_with_joiners_travel_both_ways_and_are_listed() {
    let server = TestServer::start(Overwrite::Refuse);
    let local = tempfile::tempdir().unwrap();
    let root = local.path().join("j");
    let names = [
        "\u{645}\u{6CC}\u{200C}\u{62E}\u{648}\u{627}\u{647}\u{645}.txt",
        "family-\u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}.jpg",
        "dev-\u{1F469}\u{200D}\u{1F4BB}/\u{915}\u{94D}\u{200D}\u{937}.png",
    ];
    for (i, n) in names.iter().enumerate() {
        write(&root.join(n), &data(10 + i, i as u32));
    }
    write(&root.join("zero\u{200B}width"), b"z");
    let addr = server.addr().to_string();

    let sent = ferry(&["send", &addr, arg(&root)]);
    assert_eq!(sent.status.code(), Some(1), "{}", stderr(&sent));
    let said = stderr(&sent);
    for (i, n) in names.iter().enumerate() {
        assert!(said.contains(&format!("stored j/{n}")), "{n}: {said}");
        let stored = fs::read(server.path(&format!("j/{n}"))).unwrap();
        assert!(stored == data(10 + i, i as u32), "{n}");
    }
    assert!(
        said.contains("zero\\u{200b}width: ") && !said.contains('\u{200B}'),
        "the hiding character is skipped and shown escaped: {said}"
    );

    let ls = ferry(&["ls", "-r", &addr, "j"]);
    assert_eq!(ls.status.code(), Some(0), "{}", stderr(&ls));
    let text = String::from_utf8(ls.stdout).unwrap();
    for n in names {
        assert!(text.contains(&format!(" j/{n}\n")), "{n}: {text}");
    }

    let out = tempfile::tempdir().unwrap();
    let get = ferry(&["get", &addr, "j", "-o", arg(out.path())]);
    assert_eq!(get.status.code(), Some(0), "{}", stderr(&get));
    for (i, n) in names.iter().enumerate() {
        let got = fs::read(out.path().join("j").join(n)).unwrap();
        assert!(got == data(10 + i, i as u32), "{n}");
    }
}

/// Issue 12 item 4: `ferry ls` shows one level (or all with `-r`), names, sizes and times,
/// one JSON record per entry and a summary last; a protocol-1 server cannot list (exit 5).
#[test]
fn ls_lists_one_level_or_all_and_needs_protocol_2() {
    let server = TestServer::start(Overwrite::Refuse);
    write(&server.path("photos/a.jpg"), &data(4096, 1));
    set_mtime(&server.path("photos/a.jpg"), 1_704_105_000, 0);
    write(&server.path("photos/2024/b.jpg"), b"bb");
    fs::create_dir(server.path("photos/empty")).unwrap();
    write(&server.path("top.txt"), b"t");
    let addr = server.addr().to_string();

    let root = ferry(&["ls", &addr]);
    assert_eq!(root.status.code(), Some(0), "{}", stderr(&root));
    let text = String::from_utf8(root.stdout).unwrap();
    // In the server's folder order, page by page.
    let mut shown: Vec<&str> = text
        .lines()
        .map(|l| l.rsplit(' ').next().unwrap())
        .collect();
    shown.sort_unstable();
    assert_eq!(shown, ["photos/", "top.txt"], "{text}");

    let one = String::from_utf8(ferry(&["ls", &addr, "photos"]).stdout).unwrap();
    assert!(
        one.contains("-rw-r--r--         4096 2024-01-01 10:30:00 photos/a.jpg"),
        "{one}"
    );
    assert!(
        one.contains(" photos/2024/") && one.contains(" photos/empty/"),
        "{one}"
    );
    assert!(
        !one.contains("b.jpg") && !one.contains(" photos/\n"),
        "{one}"
    );

    let all = ferry(&["ls", "-r", "--json", &addr, "photos"]);
    assert_eq!(all.status.code(), Some(0));
    let lines = json_lines(&all.stdout);
    let names: Vec<&str> = lines[..lines.len() - 1]
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
    assert!(names.contains(&"photos/2024/b.jpg"));
    let summary = lines.last().unwrap();
    assert_eq!(
        (summary["type"].as_str(), summary["entries"].as_u64()),
        (Some("summary"), Some(4))
    );

    let missing = ferry(&["ls", &addr, "nope"]);
    assert_eq!(missing.status.code(), Some(3), "{}", stderr(&missing));

    let (old, script) = raw_server(|mut raw| {
        raw.welcome_as(1);
        raw.drain();
    });
    let v1 = ferry(&["ls", &old.to_string()]);
    script.join().unwrap();
    assert_eq!(v1.status.code(), Some(5));
    assert!(
        stderr(&v1).contains("speaks protocol 1, which has no listing; upgrade"),
        "{}",
        stderr(&v1)
    );
}

/// Issue 12 item 5: `send --to` stores under a folder; `get` of a folder fetches it whole
/// (empty folders, modes and mtimes too); `-o` behaves as `cp`.
#[test]
fn folders_travel_both_ways_with_to_and_cp_like_output() {
    let server = TestServer::start(Overwrite::Refuse);
    let local = tempfile::tempdir().unwrap();
    let photos = local.path().join("photos");
    write(&photos.join("a.jpg"), b"aaa");
    set_mode(&photos.join("a.jpg"), 0o600);
    set_mtime(&photos.join("a.jpg"), 1_600_000_000, 123_456_789);
    write(&photos.join("2024/b.jpg"), b"bb");
    fs::create_dir(photos.join("empty")).unwrap();
    set_mtime(&photos.join("empty"), 1_500_000_000, 5);
    let addr = server.addr().to_string();

    let sent = ferry(&["send", &addr, arg(&photos), "--to", "backups/2026"]);
    assert_eq!(sent.status.code(), Some(0), "{}", stderr(&sent));
    assert_eq!(
        fs::read(server.path("backups/2026/photos/2024/b.jpg")).unwrap(),
        b"bb"
    );
    assert!(server.path("backups/2026/photos/empty").is_dir());

    let out = local.path().join("out");
    let got = ferry(&[
        "get",
        &addr,
        "backups/2026/photos",
        "-o",
        &format!("{}/", arg(&out)),
    ]);
    assert_eq!(got.status.code(), Some(0), "{}", stderr(&got));
    let back = out.join("backups/2026/photos");
    assert_eq!(fs::read(back.join("a.jpg")).unwrap(), b"aaa");
    assert_eq!(fs::read(back.join("2024/b.jpg")).unwrap(), b"bb");
    let a = fs::metadata(back.join("a.jpg")).unwrap();
    assert_eq!(a.mode() & 0o777, 0o600);
    assert_eq!((a.mtime(), a.mtime_nsec()), (1_600_000_000, 123_456_789));
    let empty = fs::metadata(back.join("empty")).unwrap();
    assert!(empty.is_dir());
    assert_eq!((empty.mtime(), empty.mtime_nsec()), (1_500_000_000, 5));

    // -o names the file when exactly one file is fetched and the path does not exist.
    let dl = local.path().join("dl");
    let named = ferry(&[
        "get",
        &addr,
        "backups/2026/photos/a.jpg",
        "-o",
        arg(&dl.join("newname.jpg")),
    ]);
    assert_eq!(named.status.code(), Some(0), "{}", stderr(&named));
    assert_eq!(fs::read(dl.join("newname.jpg")).unwrap(), b"aaa");
    // An existing folder receives.
    let into = ferry(&[
        "get",
        &addr,
        "backups/2026/photos/2024/b.jpg",
        "-o",
        arg(&dl),
    ]);
    assert_eq!(into.status.code(), Some(0), "{}", stderr(&into));
    assert_eq!(
        fs::read(dl.join("backups/2026/photos/2024/b.jpg")).unwrap(),
        b"bb"
    );
    // A folder into a path that does not exist: that path is made the folder.
    let fresh = local.path().join("fresh");
    let whole = ferry(&["get", &addr, "backups", "-o", arg(&fresh)]);
    assert_eq!(whole.status.code(), Some(0), "{}", stderr(&whole));
    assert!(fresh.join("backups/2026/photos/empty").is_dir());
    // Fetched again: every file is already here.
    let again = ferry(&["get", "--json", &addr, "backups", "-o", arg(&fresh)]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert_eq!(count(&json_lines(&again.stdout), "file", "unchanged"), 2);
}

/// What a tree holds, by relative path: (is a folder, permission bits, mtime, bytes).
type Snapshot = BTreeMap<String, (bool, u32, (i64, i64), Vec<u8>)>;

fn snapshot(root: &Path) -> Snapshot {
    fn walk(root: &Path, dir: &Path, out: &mut Snapshot) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_str().unwrap().to_owned();
            let bytes = if m.is_file() {
                fs::read(&p).unwrap()
            } else {
                Vec::new()
            };
            let entry = (
                m.is_dir(),
                m.mode() & 0o777,
                (m.mtime(), m.mtime_nsec()),
                bytes,
            );
            out.insert(rel, entry);
            if m.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Generates a tree of 2,000 files and 120 folders (20 empty) with mixed names, modes and
/// mtimes to the nanosecond.
fn generate(root: &Path) {
    let stems = [
        "plain",
        "with space",
        "unicodé 日本",
        "aux.c",
        "x:y",
        "what?",
        "Screenshot 2024-01-01 10:30:00.png",
        "trailing.",
        "nul.tar.gz",
        "back\\slash",
    ];
    let file_modes = [0o644, 0o600, 0o755, 0o640];
    let mut folders = vec![root.to_owned()];
    for d in 0..100u32 {
        let parent = folders[(d as usize * 7) % folders.len()].clone();
        let dir = parent.join(format!("{} {d}", stems[d as usize % stems.len()]));
        fs::create_dir_all(&dir).unwrap();
        folders.push(dir);
    }
    for i in 0..2000u32 {
        let dir = &folders[i as usize % folders.len()];
        let path = dir.join(format!("{i} {}", stems[i as usize % stems.len()]));
        write(&path, &data((i as usize * 13) % 3000, i));
        set_mode(&path, file_modes[i as usize % file_modes.len()]);
        set_mtime(
            &path,
            1_500_000_000 + u64::from(i) * 97,
            i * 1_001 % 1_000_000_000,
        );
    }
    for e in 0..20u32 {
        let dir =
            folders[e as usize * 3].join(format!("empty {e} {}", stems[e as usize % stems.len()]));
        fs::create_dir(&dir).unwrap();
        folders.push(dir);
    }
    // Deepest first, so that giving a folder its time is not undone by its children's.
    folders.sort_by_key(|f| std::cmp::Reverse(f.components().count()));
    for (n, dir) in folders.iter().enumerate() {
        set_mode(dir, if n % 2 == 0 { 0o755 } else { 0o750 });
        set_mtime(dir, 1_400_000_000 + n as u64 * 1_000, n as u32 * 7);
    }
}

/// Issue 12 items 6-7: a generated tree of over 2,000 entries is sent (its special entries
/// skipped, one record each, exit 1) and fetched back into an empty folder: same relative
/// paths, bytes, permission bits, mtimes, empty folders. Sent again (without the specials),
/// every file is unchanged and the run exits 0.
#[test]
fn a_generated_tree_round_trips_exactly() {
    // 4,000 files written: no fsync on the server, and a memory file system here if there is
    // one (the client syncs each download), so that the test takes seconds.
    let server = TestServer::with(|c| c.fsync = false);
    let local = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap();
    let root = local.path().join("tree");
    fs::create_dir(&root).unwrap();
    generate(&root);
    let want = snapshot(&root);
    assert!(want.len() >= 2_100, "{}", want.len());
    let (odd, writer) = specials(&root.join(want.keys().find(|k| want[*k].0).unwrap()));
    // Adding the specials moved their folder's mtime: take it back.
    let odd_dir = odd[0].parent().unwrap();
    let rel = odd_dir.strip_prefix(&root).unwrap().to_str().unwrap();
    let (_, _, (secs, nanos), _) = want[rel];
    set_mtime(odd_dir, secs as u64, nanos as u32);
    let addr = server.addr().to_string();
    let sent = ferry(&["send", "--json", &addr, arg(&root)]);

    assert_eq!(sent.status.code(), Some(1), "{}", stderr(&sent));
    let lines = json_lines(&sent.stdout);
    assert_eq!(count(&lines, "file", "skipped"), odd.len());
    assert_eq!(count(&lines, "file", "stored"), 2_000);
    // Folders holding files were made by their files' publishing: "unchanged" then.
    assert_eq!(
        count(&lines, "folder", "stored") + count(&lines, "folder", "unchanged"),
        121,
        "120 and the tree itself"
    );

    let out = local.path().join("out");
    fs::create_dir(&out).unwrap();
    let got = ferry(&["get", "--json", &addr, "tree", "-o", arg(&out)]);
    assert_eq!(got.status.code(), Some(0), "{}", stderr(&got));
    assert_eq!(count(&json_lines(&got.stdout), "file", "stored"), 2_000);
    let back = snapshot(&out.join("tree"));
    assert_eq!(back.len(), want.len());
    for (rel, w) in &want {
        let b = back.get(rel).unwrap_or_else(|| panic!("{rel} missing"));
        assert_eq!(b, w, "{rel}");
    }
    assert_eq!(drain_fifo(&odd[0], writer), b"precious");

    for p in &odd {
        fs::remove_file(p).unwrap();
    }
    let again = ferry(&["send", "--json", &addr, arg(&root)]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    let lines = json_lines(&again.stdout);
    assert_eq!(count(&lines, "file", "unchanged"), 2_000);
    assert_eq!(count(&lines, "file", "stored"), 0);
}

/// One row of the schema table: the type, the commands that print it, its fields.
type SchemaRow = (String, Vec<String>, Vec<String>);

/// The fields each record type has, as crates/client/README.md's schema table documents them,
/// and the schema section's text.
fn documented_schema() -> (Vec<SchemaRow>, String) {
    let readme = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme.split("### Schema").nth(1).expect("a schema section");
    let ticked = |cell: &str| -> Vec<String> {
        cell.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    };
    let rows = section
        .lines()
        .skip_while(|l| !l.starts_with("| `type`"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let from = cells[2].split(", ").map(str::to_owned).collect();
            (ticked(cells[1]).remove(0), from, ticked(cells[3]))
        })
        .collect();
    (rows, section.to_owned())
}

/// Issue 12 item 8: every JSON record `send`, `get` and `ls` print has exactly the fields the
/// README's schema documents for its type, a documented status, and the summary comes last.
#[test]
fn json_records_match_the_documented_schema() {
    let (rows, section) = documented_schema();
    assert!(rows.len() >= 7, "{rows:?}");
    let check = |command: &str, record: &Value| {
        let kind = record["type"].as_str().expect("every record has a type");
        let row = rows
            .iter()
            .find(|(t, from, _)| t == kind && from.iter().any(|f| f == command))
            .unwrap_or_else(|| panic!("{kind} from {command} is not documented"));
        let mut got: Vec<&str> = record
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut want: Vec<&str> = row.2.iter().map(String::as_str).collect();
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want, "{command}: {record}");
        if let Some(status) = record.get("status").and_then(Value::as_str) {
            assert!(
                section.contains(&format!("`{status}`")),
                "status {status} documented"
            );
        }
    };
    let server = TestServer::start(Overwrite::Refuse);
    let local = tempfile::tempdir().unwrap();
    let root = local.path().join("docs");
    write(&root.join("a.txt"), b"a");
    fs::create_dir(root.join("empty")).unwrap();
    std::os::unix::fs::symlink(root.join("nowhere"), root.join("dangling")).unwrap();
    let addr = server.addr().to_string();
    let out = local.path().join("out");
    let runs: [(&str, Vec<&str>); 4] = [
        ("send", vec!["send", "--json", &addr, arg(&root)]),
        ("send", vec!["send", "--json", &addr, arg(&root)]),
        (
            "get",
            vec!["get", "--json", &addr, "docs", "nope", "-o", arg(&out)],
        ),
        ("ls", vec!["ls", "--json", "-r", &addr]),
    ];
    let mut seen = Vec::new();
    for (command, args) in runs {
        let run = ferry(&args);
        let lines = json_lines(&run.stdout);
        assert_eq!(
            lines.last().unwrap()["type"],
            "summary",
            "{command}: summary last"
        );
        assert_eq!(
            lines.iter().filter(|l| l["type"] == "summary").count(),
            1,
            "{command}"
        );
        for l in &lines {
            check(command, l);
            seen.push(format!("{} {}", l["type"], l["status"]));
        }
    }
    for want in [
        r#""file" "stored""#,
        r#""file" "unchanged""#,
        r#""file" "skipped""#,
        r#""folder" "stored""#,
        r#""file" "not_found""#,
        r#""entry" null"#,
    ] {
        assert!(seen.iter().any(|s| s == want), "{want} in {seen:?}");
    }
    let retry = ferry_client::Retry {
        retry: 1,
        of: 2,
        delay: Duration::from_millis(200),
        reason: "cut".into(),
        files_left: 1,
    };
    check("send", &retry.to_json());
}

/// Issue 12: against a protocol-1 server a send is as before: plain file offers only (no
/// folder entry, no digest even with --checksum); folders are reported `not_sent`, which is
/// no failure, so a server refusing every file is still exit 3.
#[test]
fn a_protocol_1_server_gets_plain_file_offers_only() {
    use ferry_proto::wire::{kind, Frame};
    use ferry_proto::{Code, EntryKind};
    let local = tempfile::tempdir().unwrap();
    let root = local.path().join("d");
    write(&root.join("a.txt"), b"a");
    write(&root.join("sub/b.txt"), b"b");
    fs::create_dir(root.join("empty")).unwrap();
    let (addr, script) = raw_server(|mut raw| {
        raw.welcome_as(1);
        let mut names = Vec::new();
        for _ in 0..2 {
            match raw.expect(kind::OFFER) {
                Frame::Offer {
                    id,
                    kind,
                    digest,
                    name,
                    ..
                } => {
                    assert_eq!((kind, digest), (EntryKind::File, None), "{name}");
                    names.push(name);
                    raw.send(&[Frame::Refuse {
                        id,
                        code: Code::Exists,
                        reason: "exists".into(),
                    }]);
                }
                other => panic!("{other:?}"),
            }
        }
        raw.drain();
        names
    });

    let out = ferry(&[
        "send",
        "--json",
        "--checksum",
        &addr.to_string(),
        arg(&root),
    ]);

    let mut names = script.join().unwrap();
    names.sort();
    assert_eq!(names, ["d/a.txt", "d/sub/b.txt"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let lines = json_lines(&out.stdout);
    assert_eq!(count(&lines, "folder", "not_sent"), 3, "{lines:?}");
    assert_eq!(count(&lines, "file", "exists"), 2);
}

/// PROTOCOL.md §4.9, §7.1: a folder is offered once everything under it has been *sent* (each
/// file's END), not once it is stored: the server acts on frames in order, so the folder's
/// mode and mtime are applied after its files. A server that withholds every RESULT until it
/// has read the folder offers gets them (a client waiting for the RESULTs would wait forever),
/// each after the END of every file under it and the offer of every subfolder.
#[test]
fn folders_are_offered_once_their_files_are_sent_not_stored() {
    use ferry_proto::wire::Frame;
    use ferry_proto::{Code, Digest, EntryKind};
    let local = tempfile::tempdir().unwrap();
    let root = local.path().join("d");
    write(&root.join("a.txt"), b"a");
    write(&root.join("sub/b.txt"), b"b");
    write(&root.join("sub/c.txt"), b"c");
    let (addr, script) = raw_server(|mut raw| {
        // Bounded: a client that waits for RESULTs before its folders fails the test here.
        raw.stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        raw.welcome_as(2);
        let mut names = HashMap::new();
        let mut files = Vec::new();
        let mut ended = Vec::new();
        let mut folders = Vec::new();
        while folders.len() < 2 {
            match raw.read_frame().expect("a folder offer before the RESULTs") {
                Frame::Offer {
                    id,
                    kind: EntryKind::Folder,
                    name,
                    ..
                } => {
                    for (file, n) in &files {
                        if Path::new(n).starts_with(&name) {
                            assert!(ended.contains(file), "{name} offered before {n} was sent");
                        }
                    }
                    folders.push((id, name.clone()));
                    names.insert(id, name);
                }
                Frame::Offer { id, name, .. } => {
                    files.push((id, name.clone()));
                    names.insert(id, name);
                    raw.send(&[Frame::Accept {
                        id,
                        offset: 0,
                        prefix: Digest::of_empty(),
                    }]);
                }
                Frame::End { id, .. } => ended.push(id),
                _ => {}
            }
        }
        // Every RESULT now: the files' in END order, then the folders'.
        let results: Vec<Frame> = ended
            .iter()
            .chain(folders.iter().map(|(id, _)| id))
            .map(|&id| Frame::Result {
                id,
                code: Code::Stored,
                detail: names[&id].clone(),
            })
            .collect();
        raw.send(&results);
        raw.drain();
        (ended.len(), folders)
    });

    let out = ferry(&["send", "--json", &addr.to_string(), arg(&root)]);

    let (ended, folders) = script.join().unwrap();
    assert_eq!(ended, 3, "every file was sent before the folders");
    let folders: Vec<&str> = folders.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(folders, ["d/sub", "d"], "a subfolder before its parent");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lines = json_lines(&out.stdout);
    assert_eq!(count(&lines, "file", "stored"), 3, "{lines:?}");
    assert_eq!(count(&lines, "folder", "stored"), 2, "{lines:?}");
}

/// A tree of many small files (each stored by the server's storer thread, behind the
/// connection's) ends with every folder's mtime and mode as the source's: the folders, offered
/// once their files were sent, are applied after those files are stored (PROTOCOL.md §4.9).
#[test]
fn many_small_files_leave_every_folder_mtime_as_the_source() {
    let server = TestServer::with(|c| c.fsync = false);
    let local = tempfile::tempdir().unwrap();
    let root = local.path().join("small");
    let mut folders = vec![root.clone()];
    for i in 0..4 {
        let dir = root.join(format!("f{i}"));
        for j in 0..3 {
            let sub = dir.join(format!("s{j}"));
            for k in 0..25 {
                write(&sub.join(format!("{k}.txt")), &data(100 + k, k as u32));
            }
            folders.push(sub);
        }
        write(&dir.join("top.txt"), b"top");
        folders.push(dir);
    }
    // Distinct old mtimes, set after the files were written, deepest first.
    for (n, dir) in folders.iter().enumerate().rev() {
        set_mode(dir, 0o750);
        set_mtime(dir, 1_000_000_000 + n as u64 * 1_000, 123_456_789);
    }
    let want = snapshot(&root);

    let out = ferry(&["send", "--json", &server.addr().to_string(), arg(&root)]);

    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(count(&json_lines(&out.stdout), "file", "stored"), 304);
    let got = snapshot(&server.path("small"));
    assert_eq!(got.len(), want.len());
    for (rel, w) in want.iter().filter(|(_, w)| w.0) {
        assert_eq!(got.get(rel), Some(w), "{rel}");
    }
    let top = fs::metadata(server.path("small")).unwrap();
    let src = fs::metadata(&root).unwrap();
    assert_eq!(
        (top.mtime(), top.mtime_nsec()),
        (src.mtime(), src.mtime_nsec())
    );
}
