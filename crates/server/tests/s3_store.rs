//! The S3 backend (`--store s3://…`) against a real object store: a single-node Ceph RGW
//! (tests/rgw, scripts/rgw.sh; SKIPPED when Ceph is not installed). Servers sharing one
//! bucket stand for instances behind a balancer.

mod common;
mod rgw;

use std::net::Shutdown;
use std::sync::{Arc, Barrier, Once};
use std::thread;

use common::{
    connect, data, info, offer_folder, start, upload, upload_once, upload_with, wait_for, Raw,
    TestServer,
};
use ferry_proto::wire::Frame;
use ferry_proto::{Code, Digest, Event, Hasher, OfferOptions, Step};
use ferry_server::{Config, ObjectStore, Overwrite};
use rgw::Rgw;

/// The part size of the backend (8 MiB).
const PART: usize = 8 << 20;
/// The key prefix the tests store under.
const PREFIX: &str = "pre";

/// The RGW, with its credentials in this process's environment (where the backend reads
/// them); `None` (after a SKIPPED line) without Ceph.
fn rgw() -> Option<&'static Rgw> {
    static ENV: Once = Once::new();
    let rgw = Rgw::get()?;
    ENV.call_once(|| {
        for (k, v) in rgw.env() {
            std::env::set_var(k, v);
        }
    });
    Some(rgw)
}

/// A server on `bucket` (under [`PREFIX`]) with `overwrite`.
fn server(rgw: &Rgw, bucket: &str, overwrite: Overwrite) -> TestServer {
    start(Config {
        overwrite,
        object_store: Some(ObjectStore {
            url: format!("s3://{bucket}/{PREFIX}"),
            endpoint: rgw.endpoint().to_owned(),
        }),
        ..common::config()
    })
}

/// The keys clients can see in `bucket`: under the prefix, the server's state left out.
fn visible(rgw: &Rgw, bucket: &str) -> Vec<(String, u64)> {
    rgw.keys(bucket, &format!("{PREFIX}/"))
        .into_iter()
        .filter(|(k, _)| !k.contains("/.ferry-state/"))
        .collect()
}

/// The server's state keys in `bucket` under `kind` (`u/`: uploads, `c/`: claims).
fn state(rgw: &Rgw, bucket: &str, kind: &str) -> Vec<String> {
    rgw.keys(bucket, &format!("{PREFIX}/.ferry-state/{kind}"))
        .into_iter()
        .map(|(k, _)| k)
        .collect()
}

/// Offers `bytes` as `name`, sends the first `cut` bytes of the body and closes the
/// connection.
fn upload_and_cut(srv: &TestServer, name: &str, bytes: &[u8], cut: usize) {
    let mut d = connect(srv.addr());
    let id = d.conn_mut().offer(info(name, bytes.len() as u64)).unwrap();
    match d.next_step().unwrap() {
        Step::Event(Event::Accepted { offset: 0, .. }) => {}
        other => panic!("expected ACCEPT at 0, got {other:?}"),
    }
    d.conn_mut().begin(id, Hasher::new()).unwrap();
    for chunk in bytes[..cut].chunks(1 << 20) {
        d.send_body(chunk).unwrap();
    }
    d.flush().unwrap();
    let s = d.stream_mut();
    s.shutdown(Shutdown::Write).unwrap();
    let _ = std::io::copy(s, &mut std::io::sink());
}

#[test]
fn s3_small_and_multipart_files_round_trip() {
    let Some(rgw) = rgw() else { return };
    let bucket = rgw.fresh_bucket("round-trip");
    let srv = server(rgw, &bucket, Overwrite::Refuse);
    let small = data(100_000, 1);
    let big = data(2 * PART + 12_345, 2);
    let mut d = connect(srv.addr());
    assert_eq!(upload(&mut d, "small.bin", &small).code, Code::Stored);
    assert_eq!(upload(&mut d, "dir/big.bin", &big).code, Code::Stored);
    assert_eq!(upload(&mut d, "empty", &[]).code, Code::Stored);
    assert_eq!(
        visible(rgw, &bucket),
        vec![
            (format!("{PREFIX}/dir/big.bin"), big.len() as u64),
            (format!("{PREFIX}/empty"), 0),
            (format!("{PREFIX}/small.bin"), small.len() as u64),
        ]
    );
    assert_eq!(
        rgw.get_object(&bucket, &format!("{PREFIX}/dir/big.bin")),
        Some(big.clone())
    );
    // No upload state is left behind once published, nor a claim.
    assert_eq!(state(rgw, &bucket, "u/"), Vec::<String>::new());
    assert_eq!(state(rgw, &bucket, "c/"), Vec::<String>::new());
    for (name, bytes) in [
        ("small.bin", &small),
        ("dir/big.bin", &big),
        ("empty", &vec![]),
    ] {
        let (got, offered) = common::download(&mut d, name).unwrap();
        assert_eq!(&got, bytes, "{name}");
        assert_eq!(offered.size, Some(bytes.len() as u64));
    }
    assert_eq!(
        common::download(&mut d, "missing").unwrap_err(),
        Code::NotFound
    );
    // Refuse-overwrite: a second upload of a stored name is refused.
    assert_eq!(upload(&mut d, "small.bin", &big).code, Code::Exists);
    assert_eq!(
        rgw.get_object(&bucket, &format!("{PREFIX}/small.bin")),
        Some(small)
    );
}

#[test]
fn s3_an_upload_cut_off_resumes_through_another_instance() {
    let Some(rgw) = rgw() else { return };
    let bucket = rgw.fresh_bucket("resume");
    let a = server(rgw, &bucket, Overwrite::Refuse);
    let b = server(rgw, &bucket, Overwrite::Refuse);
    let bytes = data(3 * PART + 4321, 3);
    // Two and a half parts reach instance A: two are stored, the half is lost.
    upload_and_cut(&a, "movie.mkv", &bytes, 2 * PART + PART / 2);
    wait_for("A to give its lease up", || {
        let keys = state(rgw, &bucket, "u/");
        !keys.iter().any(|k| k.ends_with("/lease"))
            && keys.iter().filter(|k| k.contains("/p/")).count() == 2
    });
    assert_eq!(
        visible(rgw, &bucket),
        vec![],
        "nothing shows before the end"
    );
    // The client resumes through instance B, at the end of the parts A stored.
    let outcome = upload_once(b.addr(), "movie.mkv", &bytes);
    assert_eq!(outcome.code, Code::Stored, "{}", outcome.detail);
    assert_eq!(outcome.from, Some(2 * PART as u64));
    assert_eq!(
        rgw.get_object(&bucket, &format!("{PREFIX}/movie.mkv")),
        Some(bytes)
    );
    assert_eq!(state(rgw, &bucket, "u/"), Vec::<String>::new());
}

#[test]
fn s3_concurrent_uploads_of_one_name_through_two_instances_store_exactly_one() {
    let Some(rgw) = rgw() else { return };
    let bucket = rgw.fresh_bucket("concurrent");
    let servers = [
        server(rgw, &bucket, Overwrite::Refuse),
        server(rgw, &bucket, Overwrite::Refuse),
    ];
    // Small files (one conditional PutObject each) and multipart ones (completed under the
    // claim), each round with 8 different contents of one size.
    for (round, len) in [(0u8, 64 << 10), (1, PART + 999)] {
        let name = format!("same-{round}.bin");
        let start = Arc::new(Barrier::new(8));
        let uploads: Vec<_> = (0..8u8)
            .map(|i| {
                let addr = servers[usize::from(i % 2)].addr();
                let (name, start) = (name.clone(), Arc::clone(&start));
                let bytes = data(len, 10 * round + i);
                thread::spawn(move || {
                    start.wait();
                    (upload_once(addr, &name, &bytes), bytes)
                })
            })
            .collect();
        let outcomes: Vec<_> = uploads.into_iter().map(|t| t.join().unwrap()).collect();
        let stored: Vec<_> = outcomes
            .iter()
            .filter(|(o, _)| o.code == Code::Stored)
            .collect();
        assert_eq!(
            stored.len(),
            1,
            "{:?}",
            outcomes.iter().map(|(o, _)| o).collect::<Vec<_>>()
        );
        for (o, _) in &outcomes {
            assert!(
                matches!(o.code, Code::Stored | Code::Exists | Code::Busy),
                "{o:?}"
            );
        }
        assert_eq!(
            rgw.get_object(&bucket, &format!("{PREFIX}/{name}"))
                .as_ref(),
            Some(&stored[0].1),
            "the object is the upload told it was stored"
        );
    }
    assert_eq!(visible(rgw, &bucket).len(), 2);
    assert_eq!(state(rgw, &bucket, "c/"), Vec::<String>::new());
}

#[test]
fn s3_an_upload_cut_by_its_server_stopping_leaves_nothing_visible() {
    let Some(rgw) = rgw() else { return };
    let bucket = rgw.fresh_bucket("cut");
    let mut a = server(rgw, &bucket, Overwrite::Refuse);
    let b = server(rgw, &bucket, Overwrite::Refuse);
    let bytes = data(2 * PART + 10, 5);
    let addr = a.addr();
    let mut d = connect(addr);
    let id = d
        .conn_mut()
        .offer(info("cut.bin", bytes.len() as u64))
        .unwrap();
    assert!(matches!(
        d.next_step().unwrap(),
        Step::Event(Event::Accepted { offset: 0, .. })
    ));
    d.conn_mut().begin(id, Hasher::new()).unwrap();
    for chunk in bytes[..PART + 5].chunks(1 << 20) {
        d.send_body(chunk).unwrap();
    }
    d.flush().unwrap();
    // The server stops with the body half sent (after its grace period).
    a.stop();
    drop(d);
    assert_eq!(visible(rgw, &bucket), vec![]);
    let mut other = connect(b.addr());
    assert_eq!(
        common::download(&mut other, "cut.bin").unwrap_err(),
        Code::NotFound
    );
}

#[test]
fn s3_rename_stores_each_upload_under_a_free_name() {
    let Some(rgw) = rgw() else { return };
    let bucket = rgw.fresh_bucket("rename");
    let a = server(rgw, &bucket, Overwrite::Rename);
    let b = server(rgw, &bucket, Overwrite::Rename);
    let one = data(1000, 6);
    let two = data(PART + 1, 7);
    let three = data(2000, 8);
    assert_eq!(upload_once(a.addr(), "r.txt", &one).code, Code::Stored);
    let second = upload_once(b.addr(), "r.txt", &two);
    assert_eq!(second.code, Code::Stored, "{}", second.detail);
    assert_eq!(upload_once(a.addr(), "r.txt", &three).code, Code::Stored);
    let get = |name: &str| rgw.get_object(&bucket, &format!("{PREFIX}/{name}"));
    assert_eq!(get("r.txt"), Some(one));
    assert_eq!(get("r (1).txt"), Some(two));
    assert_eq!(get("r (2).txt"), Some(three));
}

/// Under rename, a re-run finds the copy it made (PROTOCOL.md §4.8, renamed copies): the
/// same file sent again is unchanged in its copy, by mtime and by digest, instead of stored
/// under the next free name.
#[test]
fn s3_under_rename_a_rerun_finds_the_copy_it_made() {
    let Some(rgw) = rgw() else { return };
    let bucket = rgw.fresh_bucket("rerename");
    let srv = server(rgw, &bucket, Overwrite::Rename);
    let mtime = |secs| ferry_proto::Timestamp { secs, nanos: 0 };
    let offer = |bytes: &[u8], secs, opts| {
        let mut info = info("d/b.txt", bytes.len() as u64);
        info.mtime = Some(mtime(secs));
        let o = upload_with(&mut connect(srv.addr()), info, opts, bytes);
        (o.code, o.detail)
    };
    let (one, two) = (data(1000, 16), data(1000, 17));
    let plain = OfferOptions::default;
    assert_eq!(offer(&one, 1, plain()), (Code::Stored, "d/b.txt".into()));
    assert_eq!(
        offer(&two, 2, plain()),
        (Code::Stored, "d/b (1).txt".into())
    );
    assert_eq!(
        offer(&two, 2, plain()),
        (Code::Unchanged, "d/b (1).txt".into())
    );
    let by_digest = OfferOptions::with_digest(Digest::of(&two));
    assert_eq!(
        offer(&two, 9, by_digest),
        (Code::Unchanged, "d/b (1).txt".into())
    );
    assert_eq!(offer(&one, 1, plain()), (Code::Unchanged, "d/b.txt".into()));
    let keys: Vec<String> = visible(rgw, &bucket).into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        [format!("{PREFIX}/d/b (1).txt"), format!("{PREFIX}/d/b.txt")]
    );
}

/// The key of the lease on the upload of (`name`, `size`) by clients without a token (all
/// of them one principal on loopback, where they may download; see the backend's layout).
fn lease_key(name: &str, size: usize) -> String {
    let owned = format!("9:anonymous/{name}");
    let tag: String = ferry_proto::Digest::of(owned.as_bytes()).0[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{PREFIX}/.ferry-state/u/{tag}-{size}/lease")
}

#[test]
fn s3_a_live_lease_is_respected_and_a_lapsed_one_taken_over() {
    let Some(rgw) = rgw() else { return };
    let bucket = rgw.fresh_bucket("lease");
    let a = server(rgw, &bucket, Overwrite::Refuse);
    let b = server(rgw, &bucket, Overwrite::Refuse);
    let bytes = data(2 * PART + 77, 9);
    let cut_and_hold = |name: &str, until_ms: u64| {
        upload_and_cut(&a, name, &bytes, PART + 1);
        let lease = lease_key(name, bytes.len());
        wait_for("A to give its lease up", || {
            !state(rgw, &bucket, "u/").contains(&lease)
        });
        // Another instance holds the upload now (until `until_ms`).
        let body = format!("owner = \"elsewhere\"\nuntil_ms = {until_ms}\n");
        assert_eq!(rgw.put_if_absent(&bucket, &lease, body.as_bytes()), 200);
    };
    // A live lease: the upload goes on from 0 as a fresh one, and is stored.
    cut_and_hold("live.bin", u64::MAX / 2);
    let live = upload_once(b.addr(), "live.bin", &bytes);
    assert_eq!(
        (live.code, live.from),
        (Code::Stored, Some(0)),
        "{}",
        live.detail
    );
    // A lapsed lease (its holder died): taken over, the upload resumes.
    cut_and_hold("lapsed.bin", 1);
    let lapsed = upload_once(b.addr(), "lapsed.bin", &bytes);
    assert_eq!(
        (lapsed.code, lapsed.from),
        (Code::Stored, Some(PART as u64)),
        "{}",
        lapsed.detail
    );
    for name in ["live.bin", "lapsed.bin"] {
        assert_eq!(
            rgw.get_object(&bucket, &format!("{PREFIX}/{name}"))
                .as_ref(),
            Some(&bytes)
        );
    }
}

/// The names a LIST of `path` gives, or the refusal.
fn list(srv: &TestServer, path: &str, recursive: bool) -> Result<Vec<String>, Code> {
    let mut raw = Raw::connect(srv.addr());
    raw.send(&[Frame::List {
        id: 1,
        recursive,
        path: path.to_owned(),
    }]);
    let mut names = Vec::new();
    loop {
        match raw.recv() {
            Some(Frame::Entries { entries, .. }) => {
                names.extend(entries.into_iter().map(|e| e.name.as_str().to_owned()));
            }
            Some(Frame::Listed { count, .. }) => {
                assert_eq!(count, names.len() as u64);
                names.sort();
                return Ok(names);
            }
            Some(Frame::Refuse { code, .. }) => return Err(code),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn s3_listings_folders_and_unchanged_files() {
    let Some(rgw) = rgw() else { return };
    let bucket = rgw.fresh_bucket("listing");
    let srv = server(rgw, &bucket, Overwrite::Refuse);
    let small = data(5000, 11);
    let big = data(PART + 5, 12);
    let mut d = connect(srv.addr());
    for (name, bytes) in [("a.txt", &small), ("d/b.txt", &small), ("d/e/big", &big)] {
        assert_eq!(upload(&mut d, name, bytes).code, Code::Stored, "{name}");
    }
    assert_eq!(
        offer_folder(&mut d, "empty", Some(0o750), None).code,
        Code::Stored
    );
    assert_eq!(
        offer_folder(&mut d, "empty", Some(0o750), None).code,
        Code::Unchanged
    );
    assert_eq!(offer_folder(&mut d, "a.txt", None, None).code, Code::Exists);
    assert_eq!(list(&srv, "", false).unwrap(), ["a.txt", "d", "empty"]);
    assert_eq!(
        list(&srv, "", true).unwrap(),
        ["a.txt", "d/b.txt", "d/e/big", "empty"]
    );
    assert_eq!(list(&srv, "d", false).unwrap(), ["d", "d/b.txt", "d/e"]);
    assert_eq!(list(&srv, "d/b.txt", false).unwrap(), ["d/b.txt"]);
    assert_eq!(list(&srv, "missing", false).unwrap_err(), Code::NotFound);
    // The same contents offered with their digest are unchanged: one in its metadata, the
    // multipart one in its digest record.
    for (name, bytes) in [("a.txt", &small), ("d/e/big", &big)] {
        let opts = OfferOptions::with_digest(Digest::of(bytes));
        let o = upload_with(&mut d, info(name, bytes.len() as u64), opts, bytes);
        assert_eq!(o.code, Code::Unchanged, "{name}: {}", o.detail);
    }
    let other = data(5000, 13);
    let opts = OfferOptions::with_digest(Digest::of(&other));
    let o = upload_with(&mut d, info("a.txt", 5000), opts, &other);
    assert_eq!(o.code, Code::Exists, "{}", o.detail);
}

#[test]
fn s3_store_flags_are_checked_before_serving() {
    let bin = env!("CARGO_BIN_EXE_ferry-server");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin)
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("AWS_ACCESS_KEY_ID", "k")
            .env("AWS_SECRET_ACCESS_KEY", "s")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} started");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run(&["--store", "s3://bucket"]);
    assert!(err.contains("--s3-endpoint"), "{err}");
    let err = run(&["--store", "bucket", "--s3-endpoint", "http://127.0.0.1:1"]);
    assert!(err.contains("s3://BUCKET[/PREFIX]"), "{err}");
    // Nothing listens on port 1: the store is unreachable, and said so by name; the same from
    // the configuration file.
    let unreachable = |err: &str| {
        err.contains("cannot use the object store s3://bucket/p")
            && err.contains("the object store (http://127.0.0.1:1) could not be reached")
    };
    let err = run(&[
        "--store",
        "s3://bucket/p",
        "--s3-endpoint",
        "http://127.0.0.1:1",
    ]);
    assert!(unreachable(&err), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ferry.toml");
    let toml = "store = \"s3://bucket/p\"\ns3-endpoint = \"http://127.0.0.1:1\"\n";
    std::fs::write(&file, toml).unwrap();
    let err = run(&["--config", file.to_str().unwrap()]);
    assert!(unreachable(&err), "{err}");
}

#[test]
fn s3_the_janitor_removes_an_upload_left_for_the_partial_ttl() {
    let Some(rgw) = rgw() else { return };
    let bucket = rgw.fresh_bucket("janitor");
    let srv = start(Config {
        partial_ttl: Some(std::time::Duration::from_secs(2)),
        object_store: Some(ObjectStore {
            url: format!("s3://{bucket}/{PREFIX}"),
            endpoint: rgw.endpoint().to_owned(),
        }),
        ..common::config()
    });
    let bytes = data(PART + 10, 14);
    upload_and_cut(&srv, "left.bin", &bytes, PART + 1);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !state(rgw, &bucket, "u/").is_empty() {
        assert!(
            std::time::Instant::now() < until,
            "the upload is still kept"
        );
        thread::sleep(std::time::Duration::from_millis(200));
    }
    // Nothing is left to resume: the upload starts over, and is stored.
    let o = upload_once(srv.addr(), "left.bin", &bytes);
    assert_eq!((o.code, o.from), (Code::Stored, Some(0)), "{}", o.detail);
}

/// Downloads `name` holding its first `have` bytes already: where the body starts, and the
/// whole file as received (what was held, then the body).
fn download_resumed(srv: &TestServer, name: &str, have: &[u8]) -> (u64, Vec<u8>) {
    let mut d = connect(srv.addr());
    let want = d
        .conn_mut()
        .get(ferry_proto::Name::parse(name).unwrap())
        .unwrap();
    let mut got = have.to_vec();
    let mut from = None;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match d.next_step().unwrap() {
            Step::Event(Event::Offer(o)) => {
                assert_eq!(o.id, want);
                let mut prefix = Hasher::new();
                prefix.update(have);
                d.conn_mut().accept(o.id, prefix).unwrap();
            }
            Step::Event(Event::Begin { from: f, .. }) => {
                got.truncate(usize::try_from(f).unwrap());
                from = Some(f);
            }
            Step::Body(_) => {
                let n = d.read_body(&mut buf).unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            Step::Event(Event::End { id, check, .. }) => {
                assert!(
                    matches!(check, ferry_proto::BodyCheck::Verified(_)),
                    "{check:?}"
                );
                d.conn_mut().finish(id, Code::Stored, "").unwrap();
                d.flush().unwrap();
                return (from.unwrap(), got);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn s3_downloads_resume_by_range_and_replace_replaces() {
    let Some(rgw) = rgw() else { return };
    let bucket = rgw.fresh_bucket("replace");
    let srv = server(rgw, &bucket, Overwrite::Replace);
    let first = data(PART + 3, 15);
    let second = data(PART + 3, 16);
    assert_eq!(upload_once(srv.addr(), "f.bin", &first).code, Code::Stored);
    assert_eq!(upload_once(srv.addr(), "f.bin", &second).code, Code::Stored);
    assert_eq!(
        rgw.get_object(&bucket, &format!("{PREFIX}/f.bin")).as_ref(),
        Some(&second)
    );
    // A download resumed from a held prefix gets the rest by a ranged GET.
    let held = 5 << 20;
    let (from, got) = download_resumed(&srv, "f.bin", &second[..held]);
    assert_eq!(from, held as u64);
    assert!(got == second, "the resumed download differs");
    // A held prefix that is not the file's: the download starts over.
    let (from, got) = download_resumed(&srv, "f.bin", &first[..held]);
    assert_eq!(from, 0);
    assert!(got == second, "the restarted download differs");
}

/// `--on-stored` runs for a file stored on the object store too, with its object's URL as
/// `FERRY_PATH` (there is no local path to give).
#[test]
fn s3_the_hook_gets_the_stored_object_s_url() {
    use std::os::unix::fs::PermissionsExt;
    let Some(rgw) = rgw() else { return };
    let bucket = rgw.fresh_bucket("hook");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("hook.out");
    let hook = tmp.path().join("hook.sh");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nenv | grep '^FERRY_' | sort > '{0}.tmp'\nmv '{0}.tmp' '{0}'\n",
            out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let srv = start(Config {
        on_stored: Some(hook),
        object_store: Some(ObjectStore {
            url: format!("s3://{bucket}/{PREFIX}"),
            endpoint: rgw.endpoint().to_owned(),
        }),
        ..common::config()
    });
    let mut d = connect(srv.addr());
    assert_eq!(upload(&mut d, "in/hooked.txt", b"hello").code, Code::Stored);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !out.exists() && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let env = std::fs::read_to_string(&out).expect("the hook ran");
    let url = format!("FERRY_PATH=s3://{bucket}/{PREFIX}/in/hooked.txt");
    assert!(env.lines().any(|l| l == url), "{url} in {env}");
    assert!(
        env.lines().any(|l| l == "FERRY_NAME=in/hooked.txt"),
        "{env}"
    );
}
