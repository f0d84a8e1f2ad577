//! Scenario 3: the server's disk fills up. The server stores into a 4 MiB tmpfs mounted by the
//! test (CI runs as root; where mounting is impossible each test prints a loud `SKIPPED` line
//! on the terminal and returns). Three ways to run out of space, each ending with the client
//! told `no_space` (a status of its own, exit 3 when refused up front, 1 when the write
//! failed), no temp file or partial left, the file stored earlier untouched, and the same
//! server still storing a small file afterwards.

use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use ferry_faults::proxy::PauseProxy;
use ferry_faults::sys::TmpfsMount;
use ferry_faults::{
    assert_no_leftovers, assert_same, data, json_str, send, spawn_json, tree, wait_until,
    with_prefix, write, ServerProc, PARTIAL_PREFIX,
};

const EXISTING: &str = "existing.bin";
const SMALL: &str = "small.txt";

/// A mounted 4 MiB tmpfs whose `store/` is the server's folder, holding one file stored
/// through the server beforehand. Field order matters: the server dies before the unmount.
struct Full {
    server: ServerProc,
    store: PathBuf,
    src: PathBuf,
    existing: Vec<u8>,
    existing_mtime: SystemTime,
    mount: TmpfsMount,
    _tmp: tempfile::TempDir,
}

fn mount_or_skip(test: &str) -> Option<Full> {
    let tmp = tempfile::tempdir().expect("temp dir");
    let mount = match TmpfsMount::mount(&tmp.path().join("small-disk"), "4m") {
        Ok(m) => m,
        Err(why) => {
            let line = format!("SKIPPED: cannot mount tmpfs ({why}): {test} did not run");
            // Straight to the terminal (the test harness captures println!), and captured too.
            let _ = writeln!(std::io::stderr(), "\n{line}\n");
            println!("{line}");
            return None;
        }
    };
    let store = mount.path().join("store");
    let src = tmp.path().join("src");
    let server = ServerProc::start(&store, &[]);
    let existing = data(1 << 20, 0xE1);
    write(&src.join(EXISTING), &existing);
    let run = send(&server.target(), &[&src.join(EXISTING)]);
    assert_eq!(run.code(), Some(0), "{run}");
    let existing_mtime = fs::metadata(store.join(EXISTING))
        .and_then(|m| m.modified())
        .expect("mtime");
    write(&src.join(SMALL), b"still serving\n");
    Some(Full {
        server,
        store,
        src,
        existing,
        existing_mtime,
        mount,
        _tmp: tmp,
    })
}

impl Full {
    /// Fills the file system (outside the server's folder) until it reports ENOSPC.
    fn fill(&self) -> PathBuf {
        let path = self.mount.path().join("filler");
        let mut f = File::create(&path).expect("filler");
        let chunk = vec![0xA5u8; 64 * 1024];
        for _ in 0..1024 {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::StorageFull => break,
                Err(e) => panic!("filling the tmpfs: {e}"),
            }
        }
        path
    }

    /// The promises that hold after any disk-full failure.
    fn check_survived(&mut self, failed: &str) {
        assert!(!self.store.join(failed).exists(), "{:?}", tree(&self.store));
        assert_no_leftovers(&self.store);
        assert_same(&self.store.join(EXISTING), &self.existing);
        let mtime = fs::metadata(self.store.join(EXISTING))
            .and_then(|m| m.modified())
            .expect("mtime");
        assert_eq!(
            mtime, self.existing_mtime,
            "the existing file was not touched"
        );
        assert!(self.server.is_running(), "the server survived");
        let run = send(&self.server.target(), &[&self.src.join(SMALL)]);
        assert_eq!(run.code(), Some(0), "the server still stores files: {run}");
        assert_same(&self.store.join(SMALL), b"still serving\n");
        assert_no_leftovers(&self.store);
    }
}

fn status(run: &ferry_faults::ClientRun, name: &str) -> Option<String> {
    json_str(run.file(name), "status")
}

/// A file larger than the free space is refused before any byte moves.
#[test]
fn an_announced_size_over_the_free_space_is_refused_with_no_space() {
    let Some(mut full) =
        mount_or_skip("an_announced_size_over_the_free_space_is_refused_with_no_space")
    else {
        return;
    };
    let big = full.src.join("big.bin");
    write(&big, &data(5 << 20, 0xB1));
    let run = send(&full.server.target(), &[&big]);
    assert_eq!(
        status(&run, "big.bin").as_deref(),
        Some("no_space"),
        "{run}"
    );
    assert_eq!(run.code(), Some(3), "refused up front: {run}");
    full.check_survived("big.bin");
}

/// The disk fills up while a file of known size is arriving: the server's write fails with
/// ENOSPC, it reads the rest of the body, answers `no_space` and deletes its partial.
#[test]
fn a_disk_that_fills_up_mid_upload_gives_no_space_and_leaves_nothing() {
    let Some(mut full) =
        mount_or_skip("a_disk_that_fills_up_mid_upload_gives_no_space_and_leaves_nothing")
    else {
        return;
    };
    let big = full.src.join("big.bin");
    write(&big, &data(2 << 20, 0xB2));
    let held = 64 * 1024;
    let proxy = PauseProxy::start(full.server.addr(), held);
    let client = spawn_json(
        "send",
        &proxy.target(),
        &[big.to_str().expect("UTF-8")],
        None,
    );
    proxy.wait_paused();
    wait_until("the partial holds the first bytes", || {
        with_prefix(&full.store, PARTIAL_PREFIX)
            .first()
            .is_some_and(|(_, len)| *len == held)
    });
    let filler = full.fill();
    proxy.release();
    let run = client.wait();
    proxy.join();
    assert_eq!(
        status(&run, "big.bin").as_deref(),
        Some("no_space"),
        "{run}"
    );
    assert_eq!(run.code(), Some(1), "the file failed: {run}");
    fs::remove_file(filler).expect("remove filler");
    full.check_survived("big.bin");
}

/// A stream of unknown size (standard input) cannot be checked against the free space: it
/// runs into ENOSPC, and its temp file is removed.
#[test]
fn a_stream_larger_than_the_disk_gives_no_space_and_leaves_no_temp_file() {
    let Some(mut full) =
        mount_or_skip("a_stream_larger_than_the_disk_gives_no_space_and_leaves_no_temp_file")
    else {
        return;
    };
    let big = full.src.join("stream.bin");
    write(&big, &data(5 << 20, 0xB3));
    let run = spawn_json(
        "send",
        &full.server.target(),
        &["-", "--name", "stream.bin"],
        Some(Path::new(&big)),
    )
    .wait();
    assert_eq!(
        status(&run, "stream.bin").as_deref(),
        Some("no_space"),
        "{run}"
    );
    assert_eq!(run.code(), Some(1), "{run}");
    full.check_survived("stream.bin");
}

/// A small file (under the size the server checks against the free space when offered) on a
/// disk that is already full: its write fails with ENOSPC, the client gets `no_space`, and
/// the temp file is gone.
#[test]
fn a_small_file_on_a_full_disk_gives_no_space_and_leaves_no_temp_file() {
    let Some(mut full) =
        mount_or_skip("a_small_file_on_a_full_disk_gives_no_space_and_leaves_no_temp_file")
    else {
        return;
    };
    let small = full.src.join("small.bin");
    write(&small, &data(100 * 1024, 0xB4));
    let filler = full.fill();
    let run = send(&full.server.target(), &[&small]);
    assert_eq!(
        status(&run, "small.bin").as_deref(),
        Some("no_space"),
        "{run}"
    );
    assert!(matches!(run.code(), Some(1 | 3)), "{run}");
    fs::remove_file(filler).expect("remove filler");
    full.check_survived("small.bin");
}
