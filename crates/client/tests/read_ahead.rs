//! The send reads small files ahead of it into the system's cache (`src/read_ahead.rs`) only
//! while their bodies go with their offers: a re-run whose files the server holds unchanged
//! reads none of them. Which pages are cached is asked of `fincore` (util-linux); where it is
//! missing, or where file pages cannot be dropped from the cache (tmpfs), the test says so
//! and skips.
#![cfg(target_os = "linux")]

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{data, ferry, json_lines, stderr, write, TestServer};
use ferry_server::Overwrite;
use rustix::fs::{fadvise, Advice};

/// How many of `files` have a page in the system's cache; `None` without `fincore`.
fn cached(files: &[PathBuf]) -> Option<usize> {
    let out = Command::new("fincore")
        .args(["--noheadings", "--bytes", "--output", "RES"])
        .args(files)
        .output()
        .ok()?;
    assert!(out.status.success(), "fincore: {}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    Some(text.lines().filter(|l| l.trim() != "0").count())
}

/// Asks the system to let the pages of `files` go.
fn drop_pages(files: &[PathBuf]) {
    for f in files {
        fadvise(File::open(f).unwrap(), 0, None, Advice::DontNeed).unwrap();
    }
}

fn arg(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_rerun_of_unchanged_files_reads_none_of_them() {
    let server = TestServer::start(Overwrite::Refuse);
    let local = tempfile::tempdir().unwrap();
    let root = local.path().join("tree");
    let files: Vec<PathBuf> = (0..40u32)
        .map(|i| root.join(format!("d{}/f{i}.bin", i % 4)))
        .collect();
    for (i, f) in (0u32..).zip(&files) {
        write(f, &data(4096, i));
    }
    let addr = server.addr().to_string();
    let first = ferry(&["send", &addr, arg(&root)]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));

    drop_pages(&files);
    match cached(&files) {
        None => return eprintln!("SKIPPED: fincore (util-linux) is not installed"),
        Some(n) if n > 0 => {
            return eprintln!("SKIPPED: {n} files stay cached here (tmpfs?)");
        }
        Some(_) => {}
    }
    let again = ferry(&["send", "--json", &addr, arg(&root)]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    let lines = json_lines(&again.stdout);
    let unchanged = lines
        .iter()
        .filter(|l| l["type"] == "file" && l["status"] == "unchanged")
        .count();
    assert_eq!(unchanged, files.len(), "{lines:?}");
    assert_eq!(
        cached(&files),
        Some(0),
        "the re-run read files it did not send"
    );
}
