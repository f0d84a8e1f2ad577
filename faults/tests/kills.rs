//! Scenario 1: SIGKILL the client, and separately the server, at 0, 1, half, size-1 and size
//! bytes of an upload's body, and of a download's. The kill point is exact: a [`PauseProxy`] between the two
//! counts DATA payload bytes (it follows the frame layout, see `ferry_faults::proxy`) and stops
//! forwarding there; when the server is the victim, the test also waits until its partial
//! file holds every forwarded byte.
//!
//! Afterwards: nothing under the final name, no temp file, the kept partial holds exactly the
//! bytes that arrived (a prefix of the source); a restarted server offers it back, and
//! re-running the client completes the file byte for byte, starting from that offset
//! (`offset` in `ferry --json`). Downloads keep the same promises on the client's side: its
//! `.NAME.ferry-partial` holds what arrived, and `ferry get` run again completes from it.

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};

use ferry_faults::proxy::{Direction, PauseProxy};
use ferry_faults::{
    assert_no_leftovers, assert_same, data, json_str, json_u64, send, send_when_free, spawn_json,
    tree, wait_until, with_prefix, write, ClientRun, ServerProc, PARTIAL_PREFIX, TEMP_PREFIX,
};

/// 3 MiB: several DATA frames (the client sends 1 MiB at a time).
const SIZE: u64 = 3 << 20;
const NAME: &str = "big.bin";

struct Case {
    _tmp: tempfile::TempDir,
    src: PathBuf,
    content: Vec<u8>,
    store: PathBuf,
}

impl Case {
    fn new(seed: u64) -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        let content = data(SIZE as usize, seed);
        let src = tmp.path().join("src").join(NAME);
        write(&src, &content);
        let store = tmp.path().join("store");
        Self {
            _tmp: tmp,
            src,
            content,
            store,
        }
    }

    fn src(&self) -> &str {
        self.src.to_str().expect("UTF-8")
    }

    /// The server's kept partial upload(s), with sizes.
    fn partials(&self) -> Vec<(PathBuf, u64)> {
        with_prefix(&self.store, PARTIAL_PREFIX)
    }

    /// What must hold right after a kill at `point`: nothing published, no temp file, and the
    /// partial (if any) holds exactly the first `point` bytes of the source.
    fn check_after_kill(&self, point: u64, partial_expected: bool) {
        assert!(
            !self.store.join(NAME).exists(),
            "a killed transfer showed up under its final name: {:?}",
            tree(&self.store)
        );
        assert!(with_prefix(&self.store, TEMP_PREFIX).is_empty());
        let partials = self.partials();
        if partial_expected {
            assert_eq!(partials.len(), 1, "{:?}", tree(&self.store));
            let (path, len) = &partials[0];
            assert_eq!(*len, point, "the partial holds what arrived");
            let held = fs::read(path).expect("read partial");
            assert!(
                held[..] == self.content[..point as usize],
                "the partial is a prefix of the source"
            );
        } else {
            assert!(partials.is_empty(), "{partials:?}");
        }
    }

    /// Re-runs the client against `target`: the file completes from `point`.
    fn resume(&self, target: &str, point: u64) {
        let run = send_when_free(target, &[&self.src]);
        assert_resumed(&run, point);
        assert_same(&self.store.join(NAME), &self.content);
        assert_no_leftovers(&self.store);
        assert_eq!(tree(&self.store).len(), 1, "{:?}", tree(&self.store));
    }
}

/// `run` succeeded and stored [`NAME`] by resuming it from `point`.
fn assert_resumed(run: &ClientRun, point: u64) {
    assert_eq!(run.code(), Some(0), "{run}");
    let line = run.file(NAME);
    assert_eq!(json_str(line, "status").as_deref(), Some("stored"), "{run}");
    assert_eq!(
        json_u64(line, "offset"),
        Some(point),
        "resumed from {point}: {run}"
    );
    assert_eq!(json_u64(line, "bytes"), Some(SIZE - point), "{run}");
}

fn points() -> [u64; 5] {
    [0, 1, SIZE / 2, SIZE - 1, SIZE]
}

/// The client dies at `point`; the server keeps serving and offers the partial back.
fn client_killed_at(point: u64) {
    let case = Case::new(0xC11E + point);
    let server = ServerProc::start(&case.store, &[]);
    let proxy = PauseProxy::start(server.addr(), point);
    let mut client = spawn_json("send", &proxy.target(), &[case.src()], None);
    assert_eq!(proxy.wait_paused(), point);
    client.kill();
    let run = client.wait();
    assert_eq!(run.status.signal(), Some(9), "{run}");
    proxy.cut();
    proxy.join();
    server.wait_log("connection closed", 1);

    // A partial of 0 bytes is not worth keeping; any other is.
    case.check_after_kill(point, point > 0);
    case.resume(&server.target(), point);
}

/// The server dies at `point`; a restarted server offers the partial back.
fn server_killed_at(point: u64) {
    let case = Case::new(0x5E7E + point);
    let server = ServerProc::start(&case.store, &[]);
    let proxy = PauseProxy::start(server.addr(), point);
    let client = spawn_json("send", &proxy.target(), &[case.src()], None);
    assert_eq!(proxy.wait_paused(), point);
    // Every forwarded byte is in the partial (the page cache survives SIGKILL).
    wait_until(&format!("the server's partial holds {point} bytes"), || {
        case.partials()
            .first()
            .is_some_and(|(_, len)| *len == point)
    });
    let status = server.kill();
    assert_eq!(status.signal(), Some(9));
    proxy.cut();
    let run = client.wait();
    proxy.join();
    assert_eq!(
        run.code(),
        Some(4),
        "a server that dies is a network error: {run}"
    );
    assert_eq!(
        json_str(run.file(NAME), "status").as_deref(),
        Some("incomplete"),
        "{run}"
    );
    // The dead server left its partial as it was (even an empty one, created at BEGIN).
    case.check_after_kill(point, true);

    let server = ServerProc::start(&case.store, &[]);
    case.check_after_kill(point, true);
    case.resume(&server.target(), point);
}

macro_rules! at_points {
    ($($name:ident: $run:ident($i:expr);)*) => {$(
        #[test]
        fn $name() {
            $run(points()[$i]);
        }
    )*};
}

at_points! {
    client_sigkill_at_0: client_killed_at(0);
    client_sigkill_at_1: client_killed_at(1);
    client_sigkill_at_half: client_killed_at(2);
    client_sigkill_at_size_minus_1: client_killed_at(3);
    client_sigkill_at_size: client_killed_at(4);
    server_sigkill_at_0: server_killed_at(0);
    server_sigkill_at_1: server_killed_at(1);
    server_sigkill_at_half: server_killed_at(2);
    server_sigkill_at_size_minus_1: server_killed_at(3);
    server_sigkill_at_size: server_killed_at(4);
    download_client_sigkill_at_0: download_client_killed_at(0);
    download_client_sigkill_at_1: download_client_killed_at(1);
    download_client_sigkill_at_half: download_client_killed_at(2);
    download_client_sigkill_at_size_minus_1: download_client_killed_at(3);
    download_client_sigkill_at_size: download_client_killed_at(4);
    download_server_sigkill_at_0: download_server_killed_at(0);
    download_server_sigkill_at_1: download_server_killed_at(1);
    download_server_sigkill_at_half: download_server_killed_at(2);
    download_server_sigkill_at_size_minus_1: download_server_killed_at(3);
    download_server_sigkill_at_size: download_server_killed_at(4);
}

/// A download: the server holds the file, `ferry get` writes into `out`.
struct Download {
    case: Case,
    out: PathBuf,
}

impl Download {
    fn new(seed: u64) -> Self {
        let case = Case::new(seed);
        write(&case.store.join(NAME), &case.content);
        // An existing folder receives (`-o` works as `cp` does).
        let out = case._tmp.path().join("out");
        fs::create_dir_all(&out).expect("mkdir out");
        Self { case, out }
    }

    fn out(&self) -> &str {
        self.out.to_str().expect("UTF-8")
    }

    /// The client's partial file.
    fn partial(&self) -> PathBuf {
        self.out.join(format!(".{NAME}.ferry-partial"))
    }

    fn wait_partial(&self, point: u64) {
        wait_until(&format!("the client's partial holds {point} bytes"), || {
            fs::metadata(self.partial()).is_ok_and(|m| m.len() == point)
        });
    }

    /// Nothing under the final name; the partial is exactly the first `point` bytes.
    fn check_after_kill(&self, point: u64) {
        assert!(!self.out.join(NAME).exists(), "{:?}", tree(&self.out));
        let held = fs::read(self.partial()).expect("the client's partial");
        assert!(
            held[..] == self.case.content[..point as usize],
            "the partial is the first {point} bytes of the file ({} held)",
            held.len()
        );
        assert_same(&self.case.store.join(NAME), &self.case.content);
    }

    fn resume(&self, target: &str, point: u64) {
        let run = spawn_json("get", target, &[NAME, "-o", self.out()], None).wait();
        assert_resumed(&run, point);
        assert_same(&self.out.join(NAME), &self.case.content);
        assert_eq!(
            tree(&self.out).len(),
            1,
            "partial gone: {:?}",
            tree(&self.out)
        );
    }
}

/// `ferry get` dies at `point`; running it again completes from its partial.
fn download_client_killed_at(point: u64) {
    let dl = Download::new(0xD0C + point);
    let server = ServerProc::start(&dl.case.store, &[]);
    let proxy = PauseProxy::start_dir(server.addr(), point, Direction::Down);
    let mut client = spawn_json("get", &proxy.target(), &[NAME, "-o", dl.out()], None);
    assert_eq!(proxy.wait_paused(), point);
    dl.wait_partial(point);
    client.kill();
    let run = client.wait();
    assert_eq!(run.status.signal(), Some(9), "{run}");
    proxy.cut();
    proxy.join();
    dl.check_after_kill(point);
    dl.resume(&server.target(), point);
}

/// The server dies while sending, at `point`; `ferry get` exits 4 and, against a restarted
/// server, completes from its partial.
fn download_server_killed_at(point: u64) {
    let dl = Download::new(0xD05 + point);
    let server = ServerProc::start(&dl.case.store, &[]);
    let proxy = PauseProxy::start_dir(server.addr(), point, Direction::Down);
    let client = spawn_json("get", &proxy.target(), &[NAME, "-o", dl.out()], None);
    assert_eq!(proxy.wait_paused(), point);
    dl.wait_partial(point);
    server.kill();
    proxy.cut();
    let run = client.wait();
    proxy.join();
    assert_eq!(run.code(), Some(4), "{run}");
    dl.check_after_kill(point);
    let server = ServerProc::start(&dl.case.store, &[]);
    dl.resume(&server.target(), point);
    assert_eq!(tree(&dl.case.store).len(), 1, "{:?}", tree(&dl.case.store));
}

/// Standard input has no size, so it cannot be resumed: the server writes it to an unnamed
/// file in its destination folder (`O_TMPFILE`), named only when published. A server killed
/// mid-way leaves nothing behind (the kernel frees the unnamed file with the process), and the
/// stream sent again is stored whole.
#[test]
fn server_sigkill_mid_stream_leaves_nothing_behind() {
    const DEEP: &str = "deep/er/stream.bin";
    let case = Case::new(0x57);
    let half = SIZE / 2;
    fs::create_dir_all(case.store.join("deep/er")).unwrap();
    let server = ServerProc::start(&case.store, &[]);
    let proxy = PauseProxy::start(server.addr(), half);
    let client = spawn_json(
        "send",
        &proxy.target(),
        &["-", "--name", DEEP],
        Some(&case.src),
    );
    assert_eq!(proxy.wait_paused(), half);
    let pid = server.pid();
    wait_until("the server's unnamed body holds half the stream", || {
        unnamed_held(pid, &case.store.join("deep/er")).contains(&half)
    });
    server.kill();
    proxy.cut();
    let run = client.wait();
    proxy.join();
    assert_eq!(run.code(), Some(4), "{run}");
    assert!(!case.store.join(DEEP).exists());
    let files = tree(&case.store);
    assert!(
        files.keys().all(|f| f.starts_with(".ferry-state/")),
        "nothing but the server's own state is left in the store: {files:?}"
    );
    assert!(
        with_prefix(&case.store, TEMP_PREFIX).is_empty(),
        "{files:?}"
    );

    let server = ServerProc::start(&case.store, &[]);
    let run = spawn_json(
        "send",
        &server.target(),
        &["-", "--name", DEEP],
        Some(&case.src),
    )
    .wait();
    assert_eq!(run.code(), Some(0), "{run}");
    assert_eq!(json_u64(run.file(DEEP), "offset"), Some(0), "{run}");
    assert_same(&case.store.join(DEEP), &case.content);
    assert_no_leftovers(&case.store);
}

/// The sizes of the files process `pid` holds open in `dir` that have no name (`O_TMPFILE`
/// bodies, which `/proc` shows as `dir/#inode (deleted)`).
fn unnamed_held(pid: u32, dir: &Path) -> Vec<u64> {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    fds.filter_map(|e| {
        let fd = e.ok()?.path();
        let target = fs::read_link(&fd).ok()?;
        let unnamed =
            target.parent() == Some(dir) && target.to_string_lossy().ends_with(" (deleted)");
        unnamed.then(|| fs::metadata(&fd).ok().map(|m| m.len()))?
    })
    .collect()
}

/// A client killed mid-stream: the server discards the temp file at once.
#[test]
fn client_sigkill_mid_stream_leaves_nothing() {
    let case = Case::new(0x58);
    let server = ServerProc::start(&case.store, &[]);
    let proxy = PauseProxy::start(server.addr(), SIZE / 2);
    let mut client = spawn_json(
        "send",
        &proxy.target(),
        &["-", "--name", NAME],
        Some(&case.src),
    );
    proxy.wait_paused();
    client.kill();
    client.wait();
    proxy.cut();
    proxy.join();
    server.wait_log("connection closed", 1);
    assert!(tree(&case.store).is_empty(), "{:?}", tree(&case.store));
    let run = send(&server.target(), &[Path::new(case.src())]);
    assert_eq!(run.code(), Some(0), "{run}");
    assert_same(&case.store.join(NAME), &case.content);
    assert_no_leftovers(&case.store);
}

/// Not a kill but the polite stop: SIGTERM while an upload is stuck half-way. The server
/// waits `--grace`, then cuts the transfer, keeps the partial for resume, publishes nothing
/// and exits 0; a restarted server resumes the upload.
#[test]
fn server_sigterm_mid_upload_keeps_the_partial_after_grace() {
    let case = Case::new(0x7E);
    let half = SIZE / 2;
    let server = ServerProc::start(&case.store, &["--grace", "200ms"]);
    let proxy = PauseProxy::start(server.addr(), half);
    let client = spawn_json("send", &proxy.target(), &[case.src()], None);
    assert_eq!(proxy.wait_paused(), half);
    wait_until("the server's partial holds half the file", || {
        case.partials().first().is_some_and(|(_, len)| *len == half)
    });
    let status = server.terminate();
    assert_eq!(status.code(), Some(0), "stopped on request");
    proxy.cut();
    let run = client.wait();
    proxy.join();
    assert_eq!(run.code(), Some(4), "{run}");
    case.check_after_kill(half, true);
    let server = ServerProc::start(&case.store, &[]);
    case.resume(&server.target(), half);
}

/// A folder of many files pipelined on one connection, the client killed inside the 16th
/// body: the files before it are stored whole, the one cut short is nowhere under its name,
/// nothing is left half-written; sending the folder again stores the rest (the stored ones
/// are reported unchanged, PROTOCOL.md §4.8) and every file matches its source.
#[test]
fn client_sigkill_mid_folder_leaves_only_whole_files() {
    const FILES: usize = 30;
    const EACH: usize = 100 * 1024;
    let tmp = tempfile::tempdir().expect("temp dir");
    let folder = tmp.path().join("box");
    let mut contents = Vec::new();
    for i in 0..FILES {
        let content = data(EACH, 0xF0 + i as u64);
        write(&folder.join(format!("f{i:02}.bin")), &content);
        contents.push(content);
    }
    let store = tmp.path().join("store");
    let server = ServerProc::start(&store, &[]);
    let point = 15 * EACH as u64 + 1234;
    let proxy = PauseProxy::start(server.addr(), point);
    let mut client = spawn_json(
        "send",
        &proxy.target(),
        &[folder.to_str().expect("UTF-8")],
        None,
    );
    assert_eq!(proxy.wait_paused(), point);
    // The server has stored the first 15 before the 16th body began.
    wait_until("the first 15 files are stored", || {
        (0..15).all(|i| store.join(format!("box/f{i:02}.bin")).exists())
    });
    client.kill();
    client.wait();
    proxy.cut();
    proxy.join();
    server.wait_log("connection closed", 1);
    let after: Vec<String> = tree(&store).into_keys().collect();
    let want: Vec<String> = (0..15).map(|i| format!("box/f{i:02}.bin")).collect();
    assert_eq!(after, want, "only whole files, no temp file or partial");
    for (i, content) in contents.iter().enumerate().take(15) {
        assert_same(&store.join(format!("box/f{i:02}.bin")), content);
    }

    let run = send_when_free(&server.target(), &[&folder]);
    assert_eq!(run.code(), Some(0), "the stored ones are unchanged: {run}");
    for (i, content) in contents.iter().enumerate() {
        let name = format!("box/f{i:02}.bin");
        let want = if i < 15 { "unchanged" } else { "stored" };
        assert_eq!(
            json_str(run.file(&name), "status").as_deref(),
            Some(want),
            "{run}"
        );
        assert_same(&store.join(&name), content);
    }
    assert_no_leftovers(&store);
}
