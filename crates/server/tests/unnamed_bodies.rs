//! Bodies of uploads that are not kept for resume are unnamed files in their destination
//! folder until published: a tree uploaded, deleted and uploaded again (and then replaced) is
//! stored whole with no temp file left, and a server killed in the middle of a body leaves
//! nothing behind in the client tree or in its state folder.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;

use common::*;
use ferry_proto::wire::Frame;
use ferry_proto::Code;
use ferry_server::Overwrite;

const BIN: &str = env!("CARGO_BIN_EXE_ferry-server");

/// Names in `dir` (not recursive).
fn names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

/// Files that process `pid` holds open under `dir` and that have no name (unnamed files, or
/// files deleted while open).
fn unnamed_held(pid: u32, dir: &Path) -> Vec<PathBuf> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    fds.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| {
            target.starts_with(dir) && target.to_string_lossy().ends_with(" (deleted)")
        })
        .collect()
}

#[test]
fn a_tree_uploaded_deleted_uploaded_again_and_replaced_is_stored_with_no_temp_file_left() {
    let srv = start(ferry_server::Config {
        overwrite: Overwrite::Replace,
        ..config()
    });
    let files: Vec<(String, Vec<u8>)> = (0..10)
        .flat_map(|f| (0..20).map(move |i| (format!("f{f}/n{i}.bin"), data(4096 + i, f as u8))))
        .collect();
    let mut d = connect(srv.addr());
    for round in ["fresh", "after a delete", "over the files held"] {
        if round == "after a delete" {
            for f in 0..10 {
                std::fs::remove_dir_all(srv.dir.join(format!("f{f}"))).unwrap();
            }
        }
        for (name, bytes) in &files {
            let o = upload(&mut d, name, bytes);
            assert_eq!(o.code, Code::Stored, "{round}: {name}: {}", o.detail);
        }
        for (name, bytes) in &files {
            assert_eq!(srv.read(name).as_deref(), Some(&bytes[..]), "{round}");
        }
        assert!(names(&srv.state().join("tmp")).is_empty(), "{round}");
        wait_for("no unnamed file held", || {
            unnamed_held(std::process::id(), &srv.dir).is_empty()
        });
    }
    let stored = srv.listing();
    assert_eq!(stored.len(), files.len(), "{stored:?}");
}

/// Kills the server when the test ends, however it ends.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the server binary on `dir`; the process and its address. Its log is drained by a
/// thread that ends with it.
fn spawn(dir: &Path) -> (Reaped, SocketAddr) {
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--dir"])
        .arg(dir)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let reaped = Reaped(child);
    let addr = loop {
        let line = lines
            .next()
            .expect("the server announced its address")
            .unwrap();
        if let Some((_, rest)) = line.split_once("listening on ") {
            break rest.split(',').next().unwrap().parse().unwrap();
        }
    };
    thread::spawn(move || lines.for_each(drop));
    (reaped, addr)
}

#[test]
fn a_server_killed_mid_body_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let (mut server, addr) = spawn(&store);
    let store = store.canonicalize().unwrap();
    assert_eq!(upload_once(addr, "d/first", b"whole").code, Code::Stored);

    // A body of 256 KiB (written as it arrives, past the 64 KiB gathered in memory; not kept
    // for resume), of which half arrives.
    let body = data(256 << 10, 7);
    let mut raw = Raw::connect(addr);
    raw.offer(1, "d/cut.bin", body.len() as u64);
    assert!(matches!(raw.recv(), Some(Frame::Accept { id: 1, .. })));
    raw.send(&[Frame::Begin { id: 1, from: 0 }]);
    for chunk in body[..128 << 10].chunks(32 << 10) {
        raw.data(chunk);
    }
    let pid = server.0.id();
    wait_for("the body's unnamed file in its folder", || {
        !unnamed_held(pid, &store.join("d")).is_empty()
    });
    assert_eq!(names(&store.join("d")), ["first"], "no name while received");

    server.0.kill().unwrap();
    server.0.wait().unwrap();
    drop(raw);
    assert_eq!(names(&store), [".ferry-state", "d"]);
    assert_eq!(names(&store.join("d")), ["first"]);
    let state = store.join(".ferry-state");
    assert!(names(&state.join("tmp")).is_empty());
    assert!(names(&state.join("partials")).is_empty());
}
