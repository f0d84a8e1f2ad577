//! Ferry-framing uploads and downloads: round trips, name rules, overwrite policies, limits.

mod common;

use std::os::unix::fs::{symlink, MetadataExt};
use std::time::{Duration, UNIX_EPOCH};

use common::*;
use ferry_proto::{Code, FileInfo, Name};
use ferry_server::{Config, Overwrite};

/// The process umask, read from /proc (reading it with umask(2) would change it).
fn umask() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Umask:")).unwrap();
    u32::from_str_radix(line["Umask:".len()..].trim(), 8).unwrap()
}

#[test]
fn a_stored_file_has_the_offered_mode_less_the_umask_and_no_set_id_bits() {
    let srv = start(config());
    let mut d = connect(srv.addr());
    // Small files land through a temp file, large ones through a resumable partial.
    for (name, size, mode) in [
        ("open", 10, 0o666),
        ("suid", 10, 0o4777),
        ("big", 2 << 20, 0o664),
        ("big-read-only", 2 << 20, 0o444),
    ] {
        let body = data(size, 3);
        let info = FileInfo {
            name: Name::parse(name).unwrap(),
            size: Some(size as u64),
            mtime: None,
            mode: Some(mode),
        };
        assert_eq!(upload_info(&mut d, info, &body).code, Code::Stored);
        let meta = std::fs::metadata(srv.dir.join(name)).unwrap();
        assert_eq!(meta.mode() & 0o7777, mode & 0o777 & !umask(), "{name}");
    }
}

#[test]
fn upload_then_download_round_trip_with_metadata() {
    // The default, durable path.
    let mut srv = start(Config {
        fsync: true,
        ..config()
    });
    let body = data(3 << 20, 1);
    let mut d = connect(srv.addr());
    let info = FileInfo {
        name: Name::parse("docs/2024/report.bin").unwrap(),
        size: Some(body.len() as u64),
        mtime: Some(timestamp(1_600_000_000)),
        mode: Some(0o640),
    };
    let o = upload_info(&mut d, info, &body);
    assert_eq!(
        (o.code, o.detail.as_str()),
        (Code::Stored, "docs/2024/report.bin")
    );
    assert_eq!(upload(&mut d, "small.txt", b"hi").code, Code::Stored);
    assert_eq!(upload(&mut d, "empty", b"").code, Code::Stored);

    let meta = std::fs::metadata(srv.dir.join("docs/2024/report.bin")).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o640);
    assert_eq!(
        meta.modified().unwrap(),
        UNIX_EPOCH + Duration::from_secs(1_600_000_000)
    );
    assert_eq!(srv.read("docs/2024/report.bin").unwrap(), body);

    let (got, info) = download(&mut d, "docs/2024/report.bin").unwrap();
    assert!(got == body, "downloaded bytes differ");
    assert_eq!(info.size, Some(body.len() as u64));
    assert_eq!(info.mode, Some(0o640));
    assert_eq!(info.mtime, Some(timestamp(1_600_000_000)));
    assert_eq!(download(&mut d, "empty").unwrap().0, b"");
    assert_eq!(download(&mut d, "missing.txt").unwrap_err(), Code::NotFound);
    assert_eq!(download(&mut d, "docs").unwrap_err(), Code::NotFound);
    assert_eq!(download(&mut d, "nowhere/x").unwrap_err(), Code::NotFound);
    drop(d);
    srv.stop();
    assert_eq!(
        srv.listing(),
        vec!["docs/2024/report.bin", "empty", "small.txt"]
    );
}

#[test]
fn symbolic_links_are_never_followed() {
    let mut srv = start(Config {
        overwrite: Overwrite::Replace,
        ..config()
    });
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), b"secret").unwrap();
    symlink(outside.path(), srv.dir.join("out")).unwrap();
    symlink(outside.path().join("secret"), srv.dir.join("link.txt")).unwrap();

    let mut d = connect(srv.addr());
    assert_eq!(upload(&mut d, "out/x.txt", b"x").code, Code::BadName);
    assert_eq!(upload(&mut d, "out/new/x.txt", b"x").code, Code::BadName);
    assert_eq!(upload(&mut d, "link.txt", b"overwrite").code, Code::BadName);
    assert_eq!(download(&mut d, "link.txt").unwrap_err(), Code::BadName);
    assert_eq!(download(&mut d, "out/secret").unwrap_err(), Code::BadName);
    drop(d);
    srv.stop();
    assert_eq!(
        std::fs::read(outside.path().join("secret")).unwrap(),
        b"secret"
    );
    let names: Vec<_> = std::fs::read_dir(outside.path()).unwrap().collect();
    assert_eq!(names.len(), 1);
}

#[test]
fn overwrite_refuse_keeps_the_first_file() {
    let srv = start(config());
    let mut d = connect(srv.addr());
    assert_eq!(upload(&mut d, "a.txt", b"first").code, Code::Stored);
    assert_eq!(upload(&mut d, "a.txt", b"second").code, Code::Exists);
    assert_eq!(srv.read("a.txt").unwrap(), b"first");
}

#[test]
fn overwrite_rename_picks_the_first_free_name() {
    let srv = start(Config {
        overwrite: Overwrite::Rename,
        ..config()
    });
    let mut d = connect(srv.addr());
    let stored: Vec<String> = ["one", "two", "three"]
        .iter()
        .map(|b| upload(&mut d, "dir/a.tar.gz", b.as_bytes()).detail)
        .collect();
    assert_eq!(
        stored,
        ["dir/a.tar.gz", "dir/a (1).tar.gz", "dir/a (2).tar.gz"]
    );
    assert_eq!(srv.read("dir/a (1).tar.gz").unwrap(), b"two");
    assert_eq!(srv.read("dir/a.tar.gz").unwrap(), b"one");
}

#[test]
fn overwrite_replace_swaps_the_content() {
    let srv = start(Config {
        overwrite: Overwrite::Replace,
        ..config()
    });
    let mut d = connect(srv.addr());
    assert_eq!(upload(&mut d, "a.txt", b"first").code, Code::Stored);
    assert_eq!(
        upload(&mut d, "a.txt", b"second, longer").code,
        Code::Stored
    );
    assert_eq!(srv.read("a.txt").unwrap(), b"second, longer");
    // A folder is never replaced by a file.
    assert_eq!(upload(&mut d, "sub/x", b"x").code, Code::Stored);
    assert_eq!(upload(&mut d, "sub", b"x").code, Code::Exists);
}

#[test]
fn size_limit_and_free_space_are_checked_at_offer() {
    let mut srv = start(Config {
        max_file_size: Some(1000),
        ..config()
    });
    let mut d = connect(srv.addr());
    assert_eq!(upload(&mut d, "ok.bin", &data(1000, 0)).code, Code::Stored);
    assert_eq!(
        upload(&mut d, "big.bin", &data(1001, 0)).code,
        Code::TooLarge
    );
    drop(d);
    srv.stop();

    let srv = start(config());
    let mut d = connect(srv.addr());
    let o = upload_info(&mut d, info("huge.bin", 1 << 60), b"");
    assert_eq!(o.code, Code::NoSpace, "{o:?}");
    assert!(srv.listing().is_empty());
}

#[test]
fn a_stream_of_unknown_size_is_stored_or_cut_at_the_size_limit() {
    let mut srv = start(Config {
        max_file_size: Some(1000),
        ..config()
    });
    let stream = |name: &str| FileInfo {
        size: None,
        ..info(name, 0)
    };
    let mut d = connect(srv.addr());
    assert_eq!(
        upload_info(&mut d, stream("ok.bin"), &data(1000, 1)).code,
        Code::Stored
    );

    let id = d.conn_mut().offer(stream("big.bin")).unwrap();
    assert!(matches!(
        d.next_step().unwrap(),
        ferry_proto::Step::Event(ferry_proto::Event::Accepted { .. })
    ));
    d.conn_mut().begin(id, ferry_proto::Hasher::new()).unwrap();
    // The server may close while we still write: both ends of that race are fine.
    let sent = d.send_body(&data(5000, 2)).and_then(|()| d.flush());
    if sent.is_ok() {
        match d.next_step() {
            Ok(ferry_proto::Step::Event(ferry_proto::Event::PeerError { code, .. })) => {
                assert_eq!(code, Code::TooLarge)
            }
            Ok(other) => panic!("expected TOO_LARGE, got {other:?}"),
            Err(_) => {}
        }
    }
    drop(d);
    srv.stop();
    assert_eq!(srv.listing(), vec!["ok.bin"]);
}

#[test]
fn a_download_resumes_from_a_matching_local_prefix_and_restarts_otherwise() {
    let mut srv = start(config());
    let body = data(3 << 20, 13);
    let mut d = connect(srv.addr());
    assert_eq!(upload(&mut d, "dl.bin", &body).code, Code::Stored);

    let half = body.len() / 2;
    let (from, got) = download_resuming(&mut d, "dl.bin", &body[..half]);
    assert_eq!(from, half as u64);
    assert!(got == body, "resumed download differs");

    let mut wrong = body[..half].to_vec();
    wrong[10] ^= 0xff;
    let (from, got) = download_resuming(&mut d, "dl.bin", &wrong);
    assert_eq!(from, 0);
    assert!(got == body, "restarted download differs");
    drop(d);
    srv.stop();
}
