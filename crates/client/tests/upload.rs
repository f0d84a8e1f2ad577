//! Uploads against the in-process ferry server.

mod common;

use std::fs;

use common::{data, send, write, TestServer};
use ferry_client::{Status, Target};
use ferry_proto::{Code, Digest};
use ferry_server::Overwrite;

#[test]
fn single_file_arrives_identical_with_its_digest() {
    let server = TestServer::start(Overwrite::Refuse);
    let local = tempfile::tempdir().unwrap();
    let content = data(3_000_000, 1);
    let path = local.path().join("big.bin");
    write(&path, &content);

    let outcome = send(&server.target(), &[&path]);

    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    assert_eq!(outcome.exit_code(), 0);
    let r = &outcome.files[0];
    assert_eq!(r.status, Status::Code(Code::Stored));
    assert_eq!(r.digest, Some(Digest::of(&content)));
    assert_eq!((r.bytes, r.offset), (content.len() as u64, 0));
    assert_eq!(r.detail, "big.bin", "the stored name comes back");
    assert!(fs::read(server.path("big.bin")).unwrap() == content);
}

#[test]
fn folder_tree_keeps_relative_paths_over_one_pipelined_connection() {
    let server = TestServer::start(Overwrite::Refuse);
    let local = tempfile::tempdir().unwrap();
    let root = local.path().join("photos");
    // Enough small files to fill the offer window several times.
    for i in 0..150u32 {
        write(
            &root.join(format!("d{}/f{i}.txt", i % 4)),
            &data(i as usize * 37, i),
        );
    }
    write(&root.join("empty.txt"), b"");
    let solo = local.path().join("notes.txt");
    write(&solo, b"notes");

    let outcome = send(&server.target(), &[&root, &solo]);

    assert_eq!(outcome.exit_code(), 0, "{:?}", outcome.error);
    // 152 files, and the folders photos, photos/d0 .. photos/d3 after their contents.
    assert_eq!(outcome.files.len(), 157);
    let folders: Vec<&str> = outcome
        .files
        .iter()
        .filter(|f| f.kind == ferry_proto::EntryKind::Folder)
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(folders.len(), 5, "{folders:?}");
    assert!(outcome.files.iter().all(|f| f.status.is_success()));
    for i in 0..150u32 {
        let name = format!("photos/d{}/f{i}.txt", i % 4);
        assert_eq!(
            fs::read(server.path(&name)).unwrap(),
            data(i as usize * 37, i),
            "{name}"
        );
    }
    assert_eq!(fs::read(server.path("photos/empty.txt")).unwrap(), b"");
    assert_eq!(fs::read(server.path("notes.txt")).unwrap(), b"notes");
}

#[test]
fn refusal_is_reported_per_file_and_the_rest_go_through() {
    let server = TestServer::start(Overwrite::Refuse);
    write(&server.path("photo.jpg"), b"old");
    let local = tempfile::tempdir().unwrap();
    let photo = local.path().join("photo.jpg");
    let other = local.path().join("other.jpg");
    write(&photo, b"new");
    write(&other, b"other");

    let only = send(&server.target(), &[&photo]);
    assert_eq!(only.exit_code(), 3, "every file refused");
    assert!(only.files[0].refused);
    assert_eq!(only.files[0].status, Status::Code(Code::Exists));
    assert!(
        only.files[0].detail.contains("exists"),
        "{}",
        only.files[0].detail
    );

    let both = send(&server.target(), &[&photo, &other]);
    assert_eq!(both.exit_code(), 1, "one refused, one stored");
    assert_eq!(fs::read(server.path("photo.jpg")).unwrap(), b"old");
    assert_eq!(fs::read(server.path("other.jpg")).unwrap(), b"other");
}

#[test]
fn a_renaming_server_reports_the_name_it_used() {
    let server = TestServer::start(Overwrite::Rename);
    write(&server.path("a.txt"), b"old");
    let local = tempfile::tempdir().unwrap();
    let a = local.path().join("a.txt");
    write(&a, b"new");

    let outcome = send(&server.target(), &[&a]);

    assert_eq!(outcome.exit_code(), 0);
    let stored = &outcome.files[0].detail;
    assert_ne!(stored, "a.txt");
    assert_eq!(fs::read(server.path(stored)).unwrap(), b"new");
}

#[test]
fn host_names_resolve() {
    let server = TestServer::start(Overwrite::Refuse);
    let local = tempfile::tempdir().unwrap();
    let f = local.path().join("f");
    write(&f, b"by name");
    let target: Target = format!("localhost:{}", server.addr().port())
        .parse()
        .unwrap();

    let outcome = send(&target, &[&f]);

    assert_eq!(outcome.exit_code(), 0, "{:?}", outcome.error);
    assert_eq!(fs::read(server.path("f")).unwrap(), b"by name");
}

#[test]
fn nothing_listening_is_a_network_error_with_a_hint() {
    let local = tempfile::tempdir().unwrap();
    let f = local.path().join("f");
    write(&f, b"x");
    let target = Target::from(common::dead_addr());

    let outcome = send(&target, &[&f]);

    assert_eq!(outcome.exit_code(), 4);
    let msg = outcome.error.unwrap().to_string();
    assert_eq!(
        msg,
        format!("connection refused: is ferry-server running on {target}?")
    );
}
