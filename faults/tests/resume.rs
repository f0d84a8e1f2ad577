//! Scenario 2: resume at offsets {0, 1, 1 KiB, 1 MiB, size-1, size}. A [`PauseProxy`] stops
//! the first upload after exactly that many body bytes and cuts the connection (the client
//! exits 4); the server keeps those bytes as a partial; running the client again resumes from
//! the offset (`offset` in `ferry --json`), sends only the rest, and the stored file is
//! identical to the source. A partial whose prefix differs from the source (the source
//! changed, or the server's copy was damaged) is detected by its digest and restarted from
//! offset 0, never appended to.

use std::fs;
use std::path::PathBuf;

use ferry_faults::proxy::{Direction, PauseProxy};
use ferry_faults::{
    assert_no_leftovers, assert_same, data, json_str, json_u64, send_when_free, spawn_json, tree,
    with_prefix, write, ServerProc, PARTIAL_PREFIX,
};

/// Over 2 MiB, and odd, so that 1 MiB and size-1 fall inside DATA frames.
const SIZE: u64 = (2 << 20) + 4097;
const NAME: &str = "data.bin";

struct Cut {
    _tmp: tempfile::TempDir,
    server: ServerProc,
    src: PathBuf,
    content: Vec<u8>,
    store: PathBuf,
}

/// Uploads through a proxy that cuts the connection after `point` body bytes.
fn cut_at(point: u64, seed: u64) -> Cut {
    let tmp = tempfile::tempdir().expect("temp dir");
    let content = data(SIZE as usize, seed);
    let src = tmp.path().join("src").join(NAME);
    write(&src, &content);
    let store = tmp.path().join("store");
    let server = ServerProc::start(&store, &[]);
    let proxy = PauseProxy::start(server.addr(), point);
    let client = spawn_json(
        "send",
        &proxy.target(),
        &[src.to_str().expect("UTF-8")],
        None,
    );
    assert_eq!(proxy.wait_paused(), point);
    proxy.cut();
    let run = client.wait();
    proxy.join();
    assert_eq!(run.code(), Some(4), "a cut is a network error: {run}");
    server.wait_log("connection closed", 1);
    assert!(!store.join(NAME).exists(), "nothing published");
    let partials = with_prefix(&store, PARTIAL_PREFIX);
    let expected: Vec<u64> = if point > 0 { vec![point] } else { vec![] };
    assert_eq!(
        partials.iter().map(|p| p.1).collect::<Vec<_>>(),
        expected,
        "{:?}",
        tree(&store)
    );
    Cut {
        _tmp: tmp,
        server,
        src,
        content,
        store,
    }
}

impl Cut {
    /// Sends the source again: returns (offset, bytes sent) after checking the stored file.
    fn send_again(&self) -> (u64, u64) {
        let run = send_when_free(&self.server.target(), &[&self.src]);
        assert_eq!(run.code(), Some(0), "{run}");
        let line = run.file(NAME);
        assert_eq!(json_str(line, "status").as_deref(), Some("stored"), "{run}");
        let current = fs::read(&self.src).expect("source");
        assert_same(&self.store.join(NAME), &current);
        assert_no_leftovers(&self.store);
        (
            json_u64(line, "offset").expect("offset"),
            json_u64(line, "bytes").expect("bytes"),
        )
    }
}

fn resumes_at(point: u64) {
    let cut = cut_at(point, 0xAB + point);
    let (offset, bytes) = cut.send_again();
    assert_eq!(offset, point, "resumed where the cut left off");
    assert_eq!(bytes, SIZE - point, "only the rest crossed the network");
    assert_same(&cut.store.join(NAME), &cut.content);
}

#[test]
fn resume_at_0() {
    resumes_at(0);
}

#[test]
fn resume_at_1() {
    resumes_at(1);
}

#[test]
fn resume_at_1_kib() {
    resumes_at(1024);
}

#[test]
fn resume_at_1_mib() {
    resumes_at(1 << 20);
}

#[test]
fn resume_at_size_minus_1() {
    resumes_at(SIZE - 1);
}

#[test]
fn resume_at_size() {
    resumes_at(SIZE);
}

/// The source changed inside the prefix the server holds (same name, same size): the client's
/// prefix digest differs, so it restarts at 0 and the server discards its partial.
#[test]
fn a_changed_source_prefix_restarts_from_zero() {
    let cut = cut_at(1 << 20, 0xC0);
    let mut changed = cut.content.clone();
    changed[1000] ^= 0xFF;
    write(&cut.src, &changed);
    let (offset, bytes) = cut.send_again();
    assert_eq!(offset, 0, "restarted, not appended");
    assert_eq!(bytes, SIZE);
    assert_same(&cut.store.join(NAME), &changed);
}

/// The server's partial was damaged (one byte flipped): its prefix digest no longer matches
/// the source, so the upload restarts at 0 and the stored file is the source, not a mix.
#[test]
fn a_damaged_partial_on_the_server_restarts_from_zero() {
    let cut = cut_at(1 << 20, 0xC1);
    let partials = with_prefix(&cut.store, PARTIAL_PREFIX);
    let path = &partials[0].0;
    let mut held = fs::read(path).expect("partial");
    held[12345] ^= 0x01;
    fs::write(path, &held).expect("damage the partial");
    let (offset, bytes) = cut.send_again();
    assert_eq!(offset, 0, "restarted, not appended");
    assert_eq!(bytes, SIZE);
    assert_same(&cut.store.join(NAME), &cut.content);
}

/// The source changed only after the prefix the server holds: resuming is right (the prefix
/// matches), and the whole-file digest at END covers the changed tail.
#[test]
fn a_source_changed_after_the_prefix_resumes_and_stores_the_new_bytes() {
    let point = 1 << 20;
    let cut = cut_at(point, 0xC2);
    let mut changed = cut.content.clone();
    changed[(SIZE - 10) as usize] ^= 0xFF;
    write(&cut.src, &changed);
    let (offset, bytes) = cut.send_again();
    assert_eq!(offset, point);
    assert_eq!(bytes, SIZE - point);
    assert_same(&cut.store.join(NAME), &changed);
}

/// Cut twice: at 1000 bytes, then 1 MiB further into the resumed upload; each run resumes
/// where the previous one stopped.
#[test]
fn a_resumed_upload_cut_again_resumes_again() {
    let cut = cut_at(1000, 0xC3);
    // The second connection only carries the rest: its body count starts at the offset.
    let proxy = PauseProxy::start(cut.server.addr(), 1 << 20);
    let client = spawn_json(
        "send",
        &proxy.target(),
        &[cut.src.to_str().expect("UTF-8")],
        None,
    );
    proxy.wait_paused();
    proxy.cut();
    let run = client.wait();
    proxy.join();
    assert_eq!(run.code(), Some(4), "{run}");
    assert_eq!(json_u64(run.file(NAME), "offset"), Some(1000), "{run}");
    cut.server.wait_log("connection closed", 2);
    let (offset, bytes) = cut.send_again();
    assert_eq!(offset, 1000 + (1 << 20));
    assert_eq!(bytes, SIZE - offset);
    assert_same(&cut.store.join(NAME), &cut.content);
}

/// Downloads too: `ferry get` cut at 1 MiB keeps its partial; if the server's file changed
/// meanwhile (same size, other bytes), the partial no longer matches the server's prefix and
/// the download restarts at 0 with the new bytes; if not, it resumes at 1 MiB.
#[test]
fn a_download_resumes_or_restarts_when_the_servers_file_changed() {
    for changed in [false, true] {
        let tmp = tempfile::tempdir().expect("temp dir");
        let store = tmp.path().join("store");
        // An existing folder receives (`-o` works as `cp` does).
        let out = tmp.path().join("out");
        fs::create_dir_all(&out).expect("mkdir out");
        let content = data(SIZE as usize, 0xD1);
        write(&store.join(NAME), &content);
        let server = ServerProc::start(&store, &[]);
        let point = 1 << 20;
        let proxy = PauseProxy::start_dir(server.addr(), point, Direction::Down);
        let get_args = [NAME, "-o", out.to_str().expect("UTF-8")];
        let client = spawn_json("get", &proxy.target(), &get_args, None);
        proxy.wait_paused();
        let partial = out.join(format!(".{NAME}.ferry-partial"));
        ferry_faults::wait_until("the client's partial holds 1 MiB", || {
            fs::metadata(&partial).is_ok_and(|m| m.len() == point)
        });
        proxy.cut();
        let run = client.wait();
        proxy.join();
        assert_eq!(run.code(), Some(4), "{run}");
        let mut now = content.clone();
        if changed {
            now[10] ^= 0xFF;
            // Replaced the way an upload would: a new file under the same name.
            let tmp_path = store.join("replacement");
            fs::write(&tmp_path, &now).expect("write");
            fs::rename(&tmp_path, store.join(NAME)).expect("rename");
        }
        let run = spawn_json("get", &server.target(), &get_args, None).wait();
        assert_eq!(run.code(), Some(0), "{run}");
        let line = run.file(NAME);
        let (offset, bytes) = if changed {
            (0, SIZE)
        } else {
            (point, SIZE - point)
        };
        assert_eq!(
            json_u64(line, "offset"),
            Some(offset),
            "changed={changed}: {run}"
        );
        assert_eq!(
            json_u64(line, "bytes"),
            Some(bytes),
            "changed={changed}: {run}"
        );
        assert_same(&out.join(NAME), &now);
        assert_eq!(tree(&out).len(), 1, "partial gone: {:?}", tree(&out));
    }
}
