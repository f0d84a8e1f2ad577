//! Unchanged files (issue 12, item 1; PROTOCOL.md §4.8): a version-2 offer of a file the
//! server holds with the same size and mtime (or, with a digest, the same contents) is answered
//! REFUSE `Unchanged` and nothing is touched; under version 1, or when the file differs, the
//! overwrite policy answers as before (under rename, once the copies it made are found not to
//! hold the file either). Judged by the answers and by the file's inode, ctime and
//! bytes; the digest cache by the bytes this process reads (`/proc/self/io`).

mod common;

use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;

use common::*;
use ferry_proto::{Code, Digest, Event, FileInfo, Hasher, Name, OfferOptions, Step, Timestamp};
use ferry_server::{Config, Overwrite};

/// The digest-cache test counts the bytes the whole process reads: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const T: Timestamp = Timestamp {
    secs: 1_700_000_000,
    nanos: 123_456_789,
};

fn file(name: &str, size: u64, mtime: Option<Timestamp>) -> FileInfo {
    FileInfo {
        name: Name::parse(name).unwrap(),
        size: Some(size),
        mtime,
        mode: Some(0o644),
    }
}

/// (inode, ctime in ns, bytes) of a stored file: what "nothing touched" means.
fn state_of(srv: &TestServer, name: &str) -> (u64, i64, i64, Vec<u8>) {
    let m = std::fs::metadata(srv.dir.join(name)).unwrap();
    (m.ino(), m.ctime(), m.ctime_nsec(), srv.read(name).unwrap())
}

#[test]
fn the_same_size_and_mtime_is_unchanged_under_version_2_only() {
    let _one = serial();
    let srv = start(config());
    let addr = srv.addr();
    let bytes = data(3000, 1);
    let info = file("dir/a.bin", 3000, Some(T));
    assert_eq!(
        upload_info(&mut connect(addr), info.clone(), &bytes).code,
        Code::Stored
    );
    let before = state_of(&srv, "dir/a.bin");

    // Version 2: Unchanged, no body, nothing touched.
    let o = upload_info(&mut connect(addr), info.clone(), &bytes);
    assert_eq!((o.code, o.from), (Code::Unchanged, None), "{o:?}");
    assert_eq!(o.detail, "dir/a.bin");
    assert_eq!(state_of(&srv, "dir/a.bin"), before);

    // Version 1: the overwrite policy answers, as it always did.
    let o = upload_info(&mut connect_version(addr, 1), info.clone(), &bytes);
    assert_eq!(o.code, Code::Exists, "{o:?}");

    // Same size, another mtime: changed, so the policy answers (refuse).
    let later = file(
        "dir/a.bin",
        3000,
        Some(Timestamp {
            secs: T.secs + 1,
            ..T
        }),
    );
    assert_eq!(
        upload_info(&mut connect(addr), later.clone(), &bytes).code,
        Code::Exists
    );
    // Same mtime, another size.
    let longer = data(3001, 1);
    assert_eq!(
        upload_info(
            &mut connect(addr),
            file("dir/a.bin", 3001, Some(T)),
            &longer
        )
        .code,
        Code::Exists
    );
    // Without an mtime there is nothing to compare.
    assert_eq!(
        upload_info(&mut connect(addr), file("dir/a.bin", 3000, None), &bytes).code,
        Code::Exists
    );
    assert_eq!(state_of(&srv, "dir/a.bin"), before);
}

#[test]
fn under_replace_an_unchanged_file_stays_and_a_changed_one_is_replaced() {
    let _one = serial();
    let srv = start(Config {
        overwrite: Overwrite::Replace,
        ..config()
    });
    let addr = srv.addr();
    let bytes = data(500, 2);
    let info = file("b.bin", 500, Some(T));
    assert_eq!(
        upload_info(&mut connect(addr), info.clone(), &bytes).code,
        Code::Stored
    );
    let before = state_of(&srv, "b.bin");
    assert_eq!(
        upload_info(&mut connect(addr), info, &bytes).code,
        Code::Unchanged
    );
    assert_eq!(state_of(&srv, "b.bin"), before, "not replaced");
    let other = data(500, 3);
    let later = file(
        "b.bin",
        500,
        Some(Timestamp {
            secs: T.secs + 60,
            ..T
        }),
    );
    assert_eq!(
        upload_info(&mut connect(addr), later, &other).code,
        Code::Stored
    );
    assert_eq!(srv.read("b.bin").unwrap(), other);
}

/// The bytes this process has read so far (`rchar`: every `read`, files and sockets).
fn bytes_read() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn a_digest_check_compares_contents_and_its_cache_spares_the_second_read() {
    let _one = serial();
    let srv = start(config());
    let addr = srv.addr();
    // Put there by hand, with an mtime the offers do not carry: only the digest can match.
    const LEN: usize = 8 << 20;
    let bytes = data(LEN, 4);
    let path = srv.dir.join("big.bin");
    std::fs::write(&path, &bytes).unwrap();
    let offer = |digest: Digest| {
        let info = file("big.bin", LEN as u64, Some(T));
        upload_with(
            &mut connect(addr),
            info,
            OfferOptions::with_digest(digest),
            &bytes,
        )
        .code
    };

    let before = bytes_read();
    assert_eq!(offer(Digest::of(&bytes)), Code::Unchanged);
    let first = bytes_read() - before;
    assert!(
        first >= LEN as u64,
        "the first check reads the file: {first}"
    );
    assert!(srv.dir.join(DIGEST_CACHE).is_file());

    let before = bytes_read();
    assert_eq!(offer(Digest::of(&bytes)), Code::Unchanged);
    let second = bytes_read() - before;
    assert!(second < 1 << 20, "the second check read {second} bytes");

    // Other contents of the same size: the policy answers.
    assert_eq!(offer(Digest::of(&data(LEN, 5))), Code::Exists);

    // The contents change behind the server's back, size and mtime restored: the cached
    // digest no longer vouches for them (the ctime moved).
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    let changed = data(LEN, 6);
    std::fs::write(&path, &changed).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    assert_eq!(offer(Digest::of(&bytes)), Code::Exists);
    assert_eq!(offer(Digest::of(&changed)), Code::Unchanged);
    assert_eq!(std::fs::read(&path).unwrap(), changed, "never touched");
}

#[test]
fn an_uploaded_file_s_digest_is_cached_and_a_link_or_folder_is_never_unchanged() {
    let _one = serial();
    let srv = start(config());
    let addr = srv.addr();
    let bytes = data(4 << 20, 7);
    let info = file("up.bin", bytes.len() as u64, None);
    assert_eq!(
        upload_info(&mut connect(addr), info.clone(), &bytes).code,
        Code::Stored
    );
    let before = bytes_read();
    let o = upload_with(
        &mut connect(addr),
        info,
        OfferOptions::with_digest(Digest::of(&bytes)),
        &bytes,
    );
    assert_eq!(o.code, Code::Unchanged);
    let read = bytes_read() - before;
    assert!(
        read < 1 << 20,
        "the digest recorded at upload was used: {read}"
    );

    // A link to a file with the offered size and mtime is not that file.
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("t");
    std::fs::write(&target, b"xyz").unwrap();
    std::os::unix::fs::symlink(&target, srv.dir.join("link")).unwrap();
    let mtime = std::fs::metadata(&target).unwrap().modified().unwrap();
    let d = mtime.duration_since(std::time::UNIX_EPOCH).unwrap();
    let t = Timestamp {
        secs: d.as_secs() as i64,
        nanos: d.subsec_nanos(),
    };
    let o = upload_info(&mut connect(addr), file("link", 3, Some(t)), b"xyz");
    assert_eq!(o.code, Code::BadName, "{o:?}");
    std::fs::create_dir(srv.dir.join("folder")).unwrap();
    let o = upload_info(&mut connect(addr), file("folder", 0, Some(t)), b"");
    assert_eq!(o.code, Code::Exists, "{o:?}");
}

/// Whether the digest cache holds no record at all (the table is all zeros).
fn no_digest_recorded(srv: &TestServer) -> bool {
    let table = std::fs::read(srv.dir.join(DIGEST_CACHE)).unwrap_or_default();
    table.iter().all(|b| *b == 0)
}

/// A tree of small files records no digest, and a re-run still finds every file unchanged:
/// by size and mtime, and by digest (the file is hashed on demand). A download's OFFER still
/// carries the digest of a small file.
#[test]
fn a_rerun_over_small_files_is_unchanged_with_no_digest_record() {
    let _one = serial();
    let srv = start(config());
    let addr = srv.addr();
    let files: Vec<(String, Vec<u8>)> = (0..20u8)
        .map(|i| (format!("tree/d{}/f{i}.bin", i % 3), data(4096, i)))
        .collect();
    let mut d = connect(addr);
    for (name, bytes) in &files {
        let o = upload_info(&mut d, file(name, 4096, Some(T)), bytes);
        assert_eq!(o.code, Code::Stored, "{name}: {o:?}");
    }
    drop(d);
    assert!(
        no_digest_recorded(&srv),
        "a small file has no digest record"
    );

    let mut d = connect(addr);
    for (name, bytes) in &files {
        let o = upload_info(&mut d, file(name, 4096, Some(T)), bytes);
        assert_eq!(o.code, Code::Unchanged, "{name}: {o:?}");
        let by_digest = OfferOptions::with_digest(Digest::of(bytes));
        let o = upload_with(&mut d, file(name, 4096, None), by_digest, bytes);
        assert_eq!(o.code, Code::Unchanged, "{name} by digest: {o:?}");
    }
    // Other contents of the same size: hashed, compared, refused by the policy.
    let (name, _) = &files[0];
    let other = OfferOptions::with_digest(Digest::of(&data(4096, 99)));
    let o = upload_with(&mut d, file(name, 4096, None), other, &data(4096, 99));
    assert_eq!(o.code, Code::Exists, "{o:?}");
    assert!(
        no_digest_recorded(&srv),
        "hashing on demand records nothing"
    );

    let (name, bytes) = &files[1];
    let id = d.conn_mut().get(Name::parse(name).unwrap()).unwrap();
    match d.next_step().unwrap() {
        Step::Event(Event::Offer(o)) => {
            assert_eq!(o.id, id);
            assert_eq!(
                o.digest,
                Some(Digest::of(bytes)),
                "the OFFER carries the digest"
            );
            d.conn_mut().refuse(id, Code::Unchanged, "held").unwrap();
            d.flush().unwrap();
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(srv.read(name).unwrap(), *bytes);
}

/// The same name offered twice in one connection: the second offer, pipelined while the
/// first waits for its body, is refused `Busy` (this connection holds the name) and the
/// first is stored whole; offered again once stored, it is unchanged.
#[test]
fn the_same_name_offered_twice_in_one_connection() {
    let _one = serial();
    let srv = start(config());
    let mut d = connect(srv.addr());
    let (first, second) = (data(3000, 8), data(3000, 9));
    let info = file("twice.bin", 3000, Some(T));
    let a = d.conn_mut().offer(info.clone()).unwrap();
    let b = d.conn_mut().offer(info.clone()).unwrap();
    let (mut stored, mut refused) = (None, None);
    for _ in 0..16 {
        if stored.is_some() && refused.is_some() {
            break;
        }
        match d.next_step().unwrap() {
            Step::Event(Event::Accepted { id, .. }) => {
                assert_eq!(id, a, "only the first is accepted");
                d.conn_mut().begin(id, Hasher::new()).unwrap();
                d.send_body(&first).unwrap();
                d.conn_mut().end().unwrap();
            }
            Step::Event(Event::Refused { id, code, .. }) => {
                assert_eq!(id, b);
                refused = Some(code);
            }
            Step::Event(Event::Result { id, code, .. }) => {
                assert_eq!(id, a);
                stored = Some(code);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((stored, refused), (Some(Code::Stored), Some(Code::Busy)));
    assert_eq!(srv.read("twice.bin").unwrap(), first);
    let o = upload_info(&mut d, info, &second);
    assert_eq!(o.code, Code::Unchanged, "{o:?}");
    assert_eq!(srv.read("twice.bin").unwrap(), first);
}

/// Under `--overwrite rename`, sending a tree again is idempotent (PROTOCOL.md §4.8): a
/// changed `b.txt` is stored as `b (1).txt`, and the next run, with nothing changed, finds the
/// file there (REFUSE `Unchanged`, naming the copy) instead of storing `b (2).txt`; so do a
/// digest check and a file changed back to an older copy, in a folder too. The other policies
/// look at no copy.
#[test]
fn under_rename_a_rerun_finds_the_copy_it_made_and_makes_no_other() {
    let _one = serial();
    let srv = start(Config {
        overwrite: Overwrite::Rename,
        ..config()
    });
    let at = |secs| Timestamp {
        secs: T.secs + secs,
        ..T
    };
    let a = data(100, 1);
    let (b1, b2, b3) = (data(200, 2), data(200, 3), data(300, 4));
    let (c1, c2) = (data(400, 5), data(400, 6));
    // One run of `ferry send` over the tree: the code and detail of each file.
    let run = |tree: &[(&str, &Vec<u8>, Timestamp)]| -> Vec<(Code, String)> {
        let mut d = connect(srv.addr());
        tree.iter()
            .map(|(name, bytes, mtime)| {
                let info = file(name, bytes.len() as u64, Some(*mtime));
                let o = upload_info(&mut d, info, bytes);
                (o.code, o.detail)
            })
            .collect()
    };
    let answers = |list: &[(Code, &str)]| -> Vec<(Code, String)> {
        list.iter().map(|(c, d)| (*c, d.to_string())).collect()
    };

    let first = [
        ("a.txt", &a, at(0)),
        ("b.txt", &b1, at(0)),
        ("d/c.txt", &c1, at(0)),
    ];
    assert_eq!(
        run(&first),
        answers(&[
            (Code::Stored, "a.txt"),
            (Code::Stored, "b.txt"),
            (Code::Stored, "d/c.txt")
        ])
    );
    // b.txt and d/c.txt change: stored as copies.
    let changed = [
        ("a.txt", &a, at(0)),
        ("b.txt", &b2, at(60)),
        ("d/c.txt", &c2, at(60)),
    ];
    let copies = answers(&[
        (Code::Unchanged, "a.txt"),
        (Code::Stored, "b (1).txt"),
        (Code::Stored, "d/c (1).txt"),
    ]);
    assert_eq!(run(&changed), copies);
    // Nothing changed since: every file is unchanged, the changed ones in their copies.
    let unchanged = answers(&[
        (Code::Unchanged, "a.txt"),
        (Code::Unchanged, "b (1).txt"),
        (Code::Unchanged, "d/c (1).txt"),
    ]);
    assert_eq!(run(&changed), unchanged);
    assert_eq!(run(&changed), unchanged);
    assert_eq!(
        srv.listing(),
        ["a.txt", "b (1).txt", "b.txt", "d/c (1).txt", "d/c.txt"]
    );
    let before = state_of(&srv, "b (1).txt");

    // By digest (`ferry send --checksum`), whatever the mtime.
    let mut d = connect(srv.addr());
    let by_digest = OfferOptions::with_digest(Digest::of(&b2));
    let o = upload_with(&mut d, file("b.txt", 200, Some(at(999))), by_digest, &b2);
    assert_eq!((o.code, o.detail.as_str()), (Code::Unchanged, "b (1).txt"));
    // A third version is the next copy; changed back, a file is found in its own copy.
    let o = upload_info(&mut d, file("b.txt", 300, Some(at(120))), &b3);
    assert_eq!((o.code, o.detail.as_str()), (Code::Stored, "b (2).txt"));
    let o = upload_info(&mut d, file("b.txt", 200, Some(at(60))), &b2);
    assert_eq!((o.code, o.detail.as_str()), (Code::Unchanged, "b (1).txt"));
    let o = upload_info(&mut d, file("b.txt", 200, Some(at(0))), &b1);
    assert_eq!((o.code, o.detail.as_str()), (Code::Unchanged, "b.txt"));
    assert_eq!(state_of(&srv, "b (1).txt"), before, "never touched");
    assert_eq!(
        srv.listing(),
        [
            "a.txt",
            "b (1).txt",
            "b (2).txt",
            "b.txt",
            "d/c (1).txt",
            "d/c.txt"
        ]
    );

    // Under refuse, a name like a copy's is just another name.
    let refuse = start(config());
    let mut d = connect(refuse.addr());
    let o = upload_info(&mut d, file("x.txt", 200, Some(at(0))), &b1);
    assert_eq!(o.code, Code::Stored);
    let o = upload_info(&mut d, file("x (1).txt", 200, Some(at(60))), &b2);
    assert_eq!(o.code, Code::Stored);
    let o = upload_info(&mut d, file("x.txt", 200, Some(at(60))), &b2);
    assert_eq!(o.code, Code::Exists, "{o:?}");
}
