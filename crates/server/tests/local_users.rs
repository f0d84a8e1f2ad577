//! Local users who can write in the storage folder (a shared upload folder), and two servers
//! on one folder (issue 11, items 12–17). Judged by the file system: nothing outside the root
//! is created, changed, deleted or served, and what is published is what the client sent.
//! The "local user" is this test where permissions do not matter, and uid 65534 (nobody)
//! where they do.

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use ferry_proto::wire::Frame;
use ferry_proto::{Code, Digest, Event, Hasher, Step};
use ferry_server::{Config, Server};
use rustix::fs::{FileType, Mode, CWD};

/// A folder outside the root with files that must never change (two of them named like the
/// leftovers an old server's start-up cleanup used to delete).
struct Outside {
    dir: tempfile::TempDir,
    before: std::collections::BTreeMap<PathBuf, Digest>,
}

const SECRET: &[u8] = b"outside secret";

impl Outside {
    fn new() -> Outside {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret.txt"), SECRET).unwrap();
        std::fs::write(dir.path().join(".ferry-tmp.bait"), b"bait").unwrap();
        let old = std::time::SystemTime::now() - Duration::from_secs(30 * 86_400);
        let bait = dir.path().join(".ferry-partial.bait");
        std::fs::write(&bait, b"bait").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&bait)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let before = snapshot(dir.path());
        Outside { dir, before }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Nothing outside was created, changed or deleted.
    fn check(&self) {
        assert_eq!(
            snapshot(self.path()),
            self.before,
            "outside the root changed"
        );
    }
}

fn mkfifo(path: &Path) {
    rustix::fs::mknodat(CWD, path, FileType::Fifo, Mode::from_raw_mode(0o666), 0).unwrap();
}

/// Stops the server, failing (instead of hanging) if it does not stop within 15 s.
fn stop_within_bound(mut srv: TestServer) {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        srv.stop();
        let _ = tx.send(());
    });
    rx.recv_timeout(Duration::from_secs(15))
        .expect("the server stops on request");
}

/// Downloads `name`: its bytes, or `None` if the server refused or cancelled it.
fn get(d: &mut Client, name: &str) -> Option<Vec<u8>> {
    d.conn_mut()
        .get(ferry_proto::Name::parse(name).unwrap())
        .unwrap();
    let (mut got, mut buf) = (Vec::new(), vec![0u8; 1 << 16]);
    loop {
        match d.next_step().unwrap() {
            Step::Event(Event::Offer(o)) => d.conn_mut().accept(o.id, Hasher::new()).unwrap(),
            Step::Event(Event::Refused { .. } | Event::Cancelled { .. }) => return None,
            Step::Event(Event::Begin { .. }) => {}
            Step::Body(_) => {
                let n = d.read_body(&mut buf).unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            Step::Event(Event::End { id, .. }) => {
                d.conn_mut().finish(id, Code::Stored, "").unwrap();
                return Some(got);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Item 12: a connection does not trust a folder for its life. After `d/one.txt` is stored,
/// `d` is swapped for a link to an outside folder: nothing more lands there.
#[test]
fn a_folder_swapped_for_a_link_after_use_is_not_trusted() {
    let srv = start(config());
    let outside = Outside::new();
    let mut d = connect(srv.addr());
    assert_eq!(upload(&mut d, "d/one.txt", b"one").code, Code::Stored);
    std::fs::rename(srv.dir.join("d"), srv.dir.join("d-was")).unwrap();
    std::os::unix::fs::symlink(outside.path(), srv.dir.join("d")).unwrap();

    let o = upload(&mut d, "d/two.txt", b"two");
    assert_eq!(o.code, Code::BadName, "{o:?}");
    // A resumable upload cut half-way on the same connection: no partial lands there either.
    let body = data(2 << 20, 12);
    let id = d
        .conn_mut()
        .offer(info("d/big.bin", body.len() as u64))
        .unwrap();
    match d.next_step().unwrap() {
        Step::Event(Event::Accepted { .. }) => {
            d.conn_mut().begin(id, Hasher::new()).unwrap();
            d.send_body(&body[..1 << 20]).unwrap();
            d.flush().unwrap();
        }
        Step::Event(Event::Refused { code, .. }) => assert_eq!(code, Code::BadName),
        other => panic!("unexpected {other:?}"),
    }
    drop(d);
    thread::sleep(Duration::from_millis(200));
    stop_within_bound(srv);
    outside.check();
}

/// Item 13: a local user flips `sub` between a folder and a link to an outside folder while
/// uploads and GETs run and the server restarts: nothing outside is created, changed or
/// deleted, and no GET serves the outside file.
#[test]
fn flipping_a_folder_and_a_link_never_reaches_outside() {
    let mut srv = start(config());
    let outside = Outside::new();
    let root = srv.dir.clone();
    std::fs::create_dir(root.join("sub")).unwrap();
    std::fs::write(root.join("sub/secret.txt"), b"inside").unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let flipper = {
        let (stop, root, target) = (Arc::clone(&stop), root.clone(), outside.path().to_owned());
        thread::spawn(move || {
            let sub = root.join("sub");
            for i in 0..1_000_000u32 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let parked = root.join(format!("parked-{i}"));
                if std::fs::rename(&sub, &parked).is_ok() {
                    let _ = std::os::unix::fs::symlink(&target, &sub);
                    thread::yield_now();
                    let _ = std::fs::remove_file(&sub);
                    let _ = std::fs::rename(&parked, &sub);
                }
                // A folder about half of the time.
                thread::sleep(Duration::from_micros(50));
            }
        })
    };
    let (mut served, mut stored) = (0, 0);
    for round in 0..4 {
        let mut up = connect(srv.addr());
        for i in 0..100 {
            let name = format!("sub/u{round}-{i}.txt");
            if upload(&mut up, &name, b"upload").code == Code::Stored {
                stored += 1;
            }
        }
        drop(up);
        let mut d = connect(srv.addr());
        for _ in 0..300 {
            if let Some(bytes) = get(&mut d, "sub/secret.txt") {
                assert_ne!(bytes, SECRET, "a GET served the outside file");
                served += 1;
            }
        }
        drop(d);
        srv.restart();
    }
    stop.store(true, Ordering::Relaxed);
    flipper.join().unwrap();
    stop_within_bound(srv);
    outside.check();
    eprintln!("{stored} uploads stored, {served} GETs served, all inside the root");
}

/// Item 14: a hard link to an outside file planted at a partial's place is never hashed
/// (its size and digest are not disclosed in ACCEPT) and never written.
#[test]
fn a_hard_link_at_a_partial_s_place_is_not_disclosed_or_changed() {
    let srv = start(config());
    let outside = Outside::new();
    let body = data(2 << 20, 14);
    upload_and_drop(&srv, "big.bin", &body, (1 << 20) + 5);
    let partial = srv.dir.join(&srv.partials()[0]);
    std::fs::remove_file(&partial).unwrap();
    std::fs::hard_link(outside.path().join("secret.txt"), &partial).unwrap();

    let mut raw = Raw::connect(srv.addr());
    raw.offer(1, "big.bin", body.len() as u64);
    match raw.recv() {
        Some(Frame::Accept { offset, .. }) => {
            assert_eq!(offset, 0, "the outside file's size was disclosed")
        }
        other => panic!("expected ACCEPT, got {other:?}"),
    }
    assert_eq!(raw.send_body(1, &body, 0), Code::Stored);
    assert!(srv.read("big.bin") == Some(body));
    stop_within_bound(srv);
    outside.check();
}

/// Item 14: a hard-link snapshot of a partial (`cp -al`) is never changed by a later resume.
#[test]
fn a_hard_link_snapshot_of_a_partial_is_not_changed_by_a_resume() {
    let srv = start(config());
    let backup = tempfile::tempdir().unwrap();
    let body = data(2 << 20, 15);
    let cut = (1 << 20) + 7;
    upload_and_drop(&srv, "snap.bin", &body, cut);
    let copy = backup.path().join("partial");
    std::fs::hard_link(srv.dir.join(&srv.partials()[0]), &copy).unwrap();

    assert_eq!(
        upload_once(srv.addr(), "snap.bin", &body).code,
        Code::Stored
    );
    assert!(srv.read("snap.bin") == Some(body.clone()));
    assert!(
        std::fs::read(&copy).unwrap() == body[..cut],
        "the snapshot changed"
    );
    stop_within_bound(srv);
}

/// Item 15: FIFOs planted at a GET name and in the state folder block no thread, and the
/// server stops on request.
#[test]
fn fifos_never_block_a_connection_or_a_shutdown() {
    let mut srv = start(config());
    mkfifo(&srv.dir.join("pipe"));
    let body = data(2 << 20, 16);
    upload_and_drop(&srv, "big.bin", &body, 1 << 20);
    let partial = srv.dir.join(&srv.partials()[0]);
    std::fs::remove_file(&partial).unwrap();
    mkfifo(&partial);

    let quick = Duration::from_secs(3);
    let mut raw = Raw::connect(srv.addr());
    raw.s.set_read_timeout(Some(quick)).unwrap();
    raw.send(&[Frame::Get {
        id: 1,
        name: "pipe".into(),
    }]);
    assert!(
        matches!(
            raw.recv(),
            Some(Frame::Refuse {
                code: Code::NotFound,
                ..
            })
        ),
        "a FIFO is not served"
    );
    raw.offer(2, "big.bin", body.len() as u64);
    assert!(
        matches!(raw.recv(), Some(Frame::Accept { offset: 0, .. })),
        "a FIFO is not a partial"
    );
    assert_eq!(raw.send_body(2, &body, 0), Code::Stored);
    drop(raw);

    // A FIFO in the temp folder at start-up, and one where the next partial goes.
    mkfifo(&srv.state().join("tmp/.ferry-tmp.fifo"));
    let started = Instant::now();
    srv.restart();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(srv.read("big.bin") == Some(body));
    stop_within_bound(srv);
}

/// Item 16: another local user cannot change a partial between ACCEPT and BEGIN (the state
/// folder cannot be entered), and what is published is what the client sent.
#[test]
fn another_user_cannot_touch_a_partial_between_accept_and_begin() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIPPED: needs root");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let srv = start(config());
    // A shared upload folder: every local user may write in it.
    let perm = std::fs::Permissions::from_mode;
    std::fs::set_permissions(srv.dir.parent().unwrap(), perm(0o755)).unwrap();
    std::fs::set_permissions(&srv.dir, perm(0o777)).unwrap();
    let body = data(2 << 20, 17);
    let cut = (1 << 20) + 1234;
    upload_and_drop(&srv, "shared.bin", &body, cut);
    let partial = srv.dir.join(&srv.partials()[0]);

    let mut raw = Raw::connect(srv.addr());
    raw.offer(1, "shared.bin", body.len() as u64);
    match raw.recv() {
        Some(Frame::Accept { offset, .. }) => assert_eq!(offset, cut as u64),
        other => panic!("expected ACCEPT, got {other:?}"),
    }
    // Flip one byte of the partial, in place or by replacing the file.
    let flip = r#"p="$1"
        printf X | dd of="$p" bs=1 seek=5 conv=notrunc 2>/dev/null && exit 0
        cp "$p" "$p.x" 2>/dev/null && printf X | dd of="$p.x" bs=1 seek=5 conv=notrunc 2>/dev/null \
            && mv -f "$p.x" "$p" && exit 0
        exit 1"#;
    let as_nobody = |cmd: &mut Command| {
        let quiet = cmd
            .uid(65534)
            .gid(65534)
            .stderr(std::process::Stdio::null());
        quiet.status().unwrap().success()
    };
    let flipped = as_nobody(Command::new("sh").args(["-c", flip, "sh"]).arg(&partial));
    let entered = as_nobody(Command::new("ls").arg(srv.state()));
    assert!(!entered, "another user entered the state folder");
    assert!(!flipped, "another user changed the partial");

    assert_eq!(raw.send_body(1, &body, cut), Code::Stored);
    assert!(
        srv.read("shared.bin") == Some(body),
        "the published file differs"
    );
    stop_within_bound(srv);
}

/// Item 17: two servers on one folder (a rolling restart), two clients resuming one partial
/// through each: one whole file or a clean Busy, never a mix.
#[test]
fn two_servers_on_one_folder_never_publish_a_mix() {
    let srv = start(config());
    let second = Server::bind(Config {
        dir: srv.dir.clone(),
        ..config()
    })
    .unwrap()
    .spawn()
    .unwrap();
    let (cut, mid, len) = (1 << 20, 2 << 20, 4 << 20);
    let one = data(len, 1);
    let mut two = one[..cut].to_vec();
    two.extend_from_slice(&data(len - cut, 2));
    upload_and_drop(&srv, "movie.bin", &one, cut);
    let partial = srv.dir.join(&srv.partials()[0]);

    let mut a = Raw::connect(srv.addr());
    a.offer(1, "movie.bin", len as u64);
    assert!(matches!(a.recv(), Some(Frame::Accept { offset, .. }) if offset == cut as u64));
    let mut b = Raw::connect(second.addr());
    b.offer(1, "movie.bin", len as u64);
    match b.recv() {
        Some(Frame::Refuse {
            code: Code::Busy, ..
        }) => {
            assert_eq!(a.send_body(1, &one, cut), Code::Stored);
        }
        Some(Frame::Accept { .. }) => {
            // Both open the one partial; A writes half, B all of it, then A the rest.
            let begin = [Frame::Begin {
                id: 1,
                from: cut as u64,
            }];
            a.send(&begin);
            b.send(&begin);
            thread::sleep(Duration::from_millis(200));
            a.data(&one[cut..mid]);
            wait_for("A's first half", || {
                std::fs::metadata(&partial).is_ok_and(|m| m.len() >= mid as u64)
            });
            b.data(&two[cut..]);
            let _ = b.end(1, &two);
            a.data(&one[mid..]);
            let _ = a.end(1, &one);
        }
        other => panic!("expected ACCEPT or REFUSE busy, got {other:?}"),
    }
    drop((a, b));
    second.shutdown().unwrap();
    let stored = srv.read("movie.bin").expect("one upload is stored");
    assert!(
        stored == one || stored == two,
        "a mix of both was published"
    );
    stop_within_bound(srv);
}

/// LIST `path` over `raw`: the names listed, or the code of the refusal.
fn list(raw: &mut Raw, id: u64, path: &str) -> Result<Vec<String>, Code> {
    raw.send(&[Frame::List {
        id,
        recursive: true,
        path: path.to_owned(),
    }]);
    let mut names = Vec::new();
    loop {
        match raw.recv() {
            Some(Frame::Entries { entries, .. }) => {
                names.extend(entries.into_iter().map(|e| e.name.as_str().to_owned()))
            }
            Some(Frame::Listed { .. }) => return Ok(names),
            Some(Frame::Refuse { code, .. }) => return Err(code),
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// QA F4: in a shared folder every local user may write without the sticky bit, uid 65534
/// renames the server's state folder to `stolen` and makes its own `.ferry-state`. Clients
/// can neither list `stolen`, fetch or replace the digest cache in it, nor store or make
/// folders in it; and the next start refuses the planted folder saying what to run.
#[test]
fn a_state_folder_renamed_by_another_user_is_never_served_and_a_planted_one_is_explained() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIPPED: needs root");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let config = Config {
        overwrite: ferry_server::Overwrite::Replace,
        ..config()
    };
    let mut srv = start(config.clone());
    let perm = std::fs::Permissions::from_mode;
    std::fs::set_permissions(srv.dir.parent().unwrap(), perm(0o755)).unwrap();
    std::fs::set_permissions(&srv.dir, perm(0o777)).unwrap();
    // Started on the shared folder (warned about, with `chmod +t`).
    srv.restart();
    let big = data(1 << 20, 21);
    let mut c = connect(srv.addr());
    assert_eq!(upload(&mut c, "big.bin", &big).code, Code::Stored);
    let d = srv.dir.display();
    let moved = Command::new("sh")
        .args([
            "-c",
            &format!("mv {d}/.ferry-state {d}/stolen && mkdir -m 777 {d}/.ferry-state"),
        ])
        .uid(65534)
        .gid(65534)
        .status()
        .unwrap();
    assert!(moved.success(), "the local user renames the state folder");
    // The server goes on keeping its state in the moved folder: a cut upload's partial.
    upload_and_drop(&srv, "cut.bin", &data(2 << 20, 22), (1 << 20) + 3);
    assert!(
        std::fs::read_dir(srv.dir.join("stolen/partials"))
            .unwrap()
            .count()
            > 0
    );

    let mut raw = Raw::connect(srv.addr());
    let top = list(&mut raw, 1, "").unwrap();
    assert!(!top.iter().any(|n| n.starts_with("stolen")), "{top:?}");
    for (id, path) in [(2, "stolen"), (3, "stolen/partials"), (4, "stolen/digests")] {
        assert_eq!(list(&mut raw, id, path), Err(Code::BadName), "{path}");
    }
    drop(raw);
    assert_eq!(
        get(&mut c, "stolen/digests"),
        None,
        "the digest cache is served"
    );
    let cache = std::fs::read(srv.dir.join("stolen/digests")).unwrap();
    for name in [
        "stolen/digests",
        "stolen/new.txt",
        "stolen/tmp/x",
        "stolen/deep/x",
    ] {
        let o = upload(&mut c, name, b"junk\n");
        assert_eq!(o.code, Code::BadName, "{name}: {o:?}");
    }
    assert_eq!(
        offer_folder(&mut c, "stolen/tmp", Some(0o777), None).code,
        Code::BadName
    );
    assert!(std::fs::read(srv.dir.join("stolen/digests")).unwrap() == cache);
    let left: Vec<_> = std::fs::read_dir(srv.dir.join("stolen"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(left.len(), 3, "nothing stored into it: {left:?}");
    drop(c);

    srv.stop();
    let e = Server::bind(Config {
        dir: srv.dir.clone(),
        ..config
    })
    .expect_err("a planted state folder is refused")
    .to_string();
    assert!(e.contains("belongs to uid 65534"), "{e}");
    assert!(
        e.contains("`mv ") && e.contains("chmod +t"),
        "says what to run: {e}"
    );
}
