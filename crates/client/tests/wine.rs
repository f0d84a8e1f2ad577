//! The Windows `ferry.exe`, run under Wine against the Linux `ferry-server` binary on
//! 127.0.0.1: a folder sent and got back, a download resumed after a cut, names Windows cannot
//! store refused, TLS with `--pin`.
//!
//! This test binary builds what it runs, once, into `target/wine` (a target folder of its own:
//! `cargo test` holds the lock of `target/` while tests run, so a nested build there would wait
//! forever): `ferry.exe` with `--target x86_64-pc-windows-gnu` and the host's `ferry-server`.
//! Building here rather than in `.ci/run` keeps `cargo test -p ferry-client --test wine` the
//! same command on a laptop and in CI. Set-up only, never shipped: `bcryptprimitives.dll`
//! (tests/wine/bcryptprimitives.c) beside the `.exe`, since Wine 8 lacks `ProcessPrng`.
//!
//! Without wine64, mingw-w64 or the Rust target, each test prints a loud SKIPPED line and
//! passes; `.ci/run` installs all three. The first run builds for about two minutes on two
//! cores and makes the Wine prefix (`target/wine/prefix`) in seconds; the tests then take a
//! few seconds each.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{cutting_proxy, data, tree, write};

const WINE: &str = "/usr/lib/wine/wine64";
const MINGW: &str = "x86_64-w64-mingw32-gcc";
const WINDOWS: &str = "x86_64-pc-windows-gnu";
/// A wine run that takes longer than this has hung.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// What the tests run: the Windows client (with the shim beside it), the Linux server, and a
/// Wine prefix, all under `target/wine` (the prefix, some 700 MB, is made once and reused).
struct Kit {
    exe: PathBuf,
    server: PathBuf,
    prefix: PathBuf,
}

/// The kit, built once for every test of this binary; `None` (after a SKIPPED line) when a
/// tool is missing.
fn kit() -> Option<&'static Kit> {
    static KIT: OnceLock<Result<Kit, String>> = OnceLock::new();
    match KIT.get_or_init(build) {
        Ok(kit) => Some(kit),
        Err(why) => {
            say(&format!(
                "==================== SKIPPED: {why} ===================="
            ));
            None
        }
    }
}

/// Writes a line to stderr past the test harness's capture, so that CI logs show it.
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn build() -> Result<Kit, String> {
    if !Path::new(WINE).exists() {
        return Err(format!("no {WINE} (apt-get install wine64)"));
    }
    if Command::new(MINGW).arg("--version").output().is_err() {
        return Err(format!("no {MINGW} (apt-get install gcc-mingw-w64-x86-64)"));
    }
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .map_err(|e| format!("rustc: {e}"))?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if !sysroot.join("lib/rustlib").join(WINDOWS).exists() {
        return Err(format!(
            "no Rust target {WINDOWS} (rustup target add {WINDOWS})"
        ));
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target_dir = workspace.join("target/wine");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let started = Instant::now();
    for args in [
        &["--target", WINDOWS, "-p", "ferry-client", "--bin", "ferry"][..],
        &["-p", "ferry-server", "--bin", "ferry-server"][..],
    ] {
        let status = Command::new(&cargo)
            .current_dir(&workspace)
            .env("CARGO_TARGET_DIR", &target_dir)
            .arg("build")
            .args(args)
            .status()
            .expect("run cargo");
        assert!(status.success(), "cargo build {args:?} failed");
    }
    say(&format!("wine kit: built in {:.0?}", started.elapsed()));
    // The shim goes beside a copy of the .exe, never beside the build output.
    let run = target_dir.join("run");
    fs::create_dir_all(&run).expect("run folder");
    let exe = run.join("ferry.exe");
    fs::copy(target_dir.join(WINDOWS).join("debug/ferry.exe"), &exe).expect("copy ferry.exe");
    let shim = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/wine/bcryptprimitives.c");
    let out = Command::new(MINGW)
        .args(["-shared", "-o"])
        .arg(run.join("bcryptprimitives.dll"))
        .arg(shim)
        .arg("-ladvapi32")
        .output()
        .expect("run mingw");
    assert!(out.status.success(), "shim: {}", common::stderr(&out));
    let prefix = target_dir.join("prefix");
    fs::create_dir_all(&prefix).expect("prefix");
    let kit = Kit {
        exe,
        server: target_dir.join("debug/ferry-server"),
        prefix,
    };
    // The first start makes the prefix and starts wineserver: about 4 s, made or not.
    let started = Instant::now();
    let first = kit.ferry(&["--version"], &run);
    assert!(first.status.success(), "{}", text(&first));
    say(&format!(
        "wine kit: first start in {:.0?}",
        started.elapsed()
    ));
    Ok(kit)
}

impl Kit {
    /// Runs `ferry.exe ARGS` under Wine in `cwd`, bounded by [`RUN_LIMIT`].
    fn ferry(&self, args: &[&str], cwd: &Path) -> Output {
        let child = Command::new(WINE)
            .arg(&self.exe)
            .args(args)
            .current_dir(cwd)
            .env("WINEPREFIX", &self.prefix)
            .env("WINEDEBUG", "-all")
            .env_remove("FERRY_TOKEN")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run wine");
        bounded(child, RUN_LIMIT)
    }
}

/// Waits for `child`'s output, killing it once `limit` has passed.
fn bounded(mut child: Child, limit: Duration) -> Output {
    let pid = child.id();
    let watchdog = std::thread::spawn(move || {
        let start = Instant::now();
        while start.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(100));
            if !Path::new(&format!("/proc/{pid}")).exists() {
                return;
            }
        }
        eprintln!("wine run {pid} took over {limit:?}: killing it");
        let _ = Command::new("kill").arg(pid.to_string()).status();
    });
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let mut err_pipe = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let _ = err_pipe.read_to_end(&mut stderr);
        stderr
    });
    let _ = child
        .stdout
        .take()
        .expect("stdout")
        .read_to_end(&mut stdout);
    let stderr = reader.join().expect("stderr reader");
    let status = child.wait().expect("wait");
    let _ = watchdog.join();
    Output {
        status,
        stdout,
        stderr,
    }
}

/// The Linux `ferry-server` binary on 127.0.0.1, a free port, storing into a temp folder.
struct Server {
    child: Child,
    dir: tempfile::TempDir,
    addr: String,
}

impl Server {
    fn start(kit: &Kit, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("server.log");
        let store = dir.path().join("store");
        let child = Command::new(&kit.server)
            .args(["--listen", "127.0.0.1:0", "--dir"])
            .arg(&store)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).expect("log"))
            .spawn()
            .expect("run ferry-server");
        let start = Instant::now();
        let addr = loop {
            let text = fs::read_to_string(&log).unwrap_or_default();
            if let Some(rest) = text.split("listening on ").nth(1) {
                break rest.split([',', ' ', '\n']).next().unwrap_or("").to_owned();
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "ferry-server did not start: {text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Self { child, dir, addr }
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `path` as Wine shows it to Windows programs (drive Z: is the Linux root), `\` separated.
fn windows_path(path: &Path) -> String {
    format!("Z:{}", path.display()).replace('/', "\\")
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A folder sent from a Windows path (`\` separators) arrives as `/`-separated names, nested
/// folders, empty folder and bytes intact; got back, it is the same tree and the same bytes.
#[test]
fn a_folder_sent_from_windows_comes_back_identical() {
    let Some(kit) = kit() else { return };
    let server = Server::start(kit, &[]);
    let src = tempfile::tempdir().unwrap();
    let root = src.path().join("photos");
    write(&root.join("a b.txt"), b"hello from windows");
    write(&root.join("2024/big.bin"), &data(300_000, 7));
    fs::create_dir_all(root.join("empty")).unwrap();

    let sent = kit.ferry(&["send", &server.addr, &windows_path(&root)], src.path());
    assert_eq!(sent.status.code(), Some(0), "{}", text(&sent));
    let stored = server.store();
    assert_eq!(
        tree(&stored),
        tree(src.path()),
        "stored under the same relative names"
    );
    assert!(stored.join("photos/empty").is_dir());

    let back = tempfile::tempdir().unwrap();
    let got = kit.ferry(
        &[
            "get",
            &server.addr,
            "photos",
            "-o",
            &windows_path(back.path()),
        ],
        back.path(),
    );
    assert_eq!(got.status.code(), Some(0), "{}", text(&got));
    assert_eq!(tree(back.path()), tree(src.path()));
    for f in ["photos/a b.txt", "photos/2024/big.bin"] {
        assert!(
            fs::read(back.path().join(f)).unwrap() == fs::read(src.path().join(f)).unwrap(),
            "{f} differs"
        );
    }
    assert!(back.path().join("photos/empty").is_dir());
}

/// A download cut mid-way keeps its partial file; the next run resumes from it and the file
/// is whole.
#[test]
fn a_download_cut_off_resumes_from_its_partial() {
    let Some(kit) = kit() else { return };
    const SIZE: usize = 4 << 20;
    const CUT: u64 = 1 << 20;
    let server = Server::start(kit, &[]);
    let content = data(SIZE, 11);
    write(&server.store().join("big.bin"), &content);
    let out = tempfile::tempdir().unwrap();
    let dest = windows_path(out.path());

    let (proxy, cut) = cutting_proxy(server.addr.parse().unwrap(), u64::MAX, CUT);
    let first = kit.ferry(
        &["get", &proxy.to_string(), "big.bin", "-o", &dest],
        out.path(),
    );
    cut.join().unwrap();
    assert_eq!(first.status.code(), Some(4), "{}", text(&first));
    let partial = out.path().join(".big.bin.ferry-partial");
    let held = fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
    assert!(held > 0 && held < CUT, "partial holds {held} bytes");

    let second = kit.ferry(
        &["--json", "get", &server.addr, "big.bin", "-o", &dest],
        out.path(),
    );
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));
    let record: serde_json::Value = String::from_utf8_lossy(&second.stdout)
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .expect("a JSON record");
    assert_eq!(record["offset"], held, "resumed from the partial: {record}");
    assert!(fs::read(out.path().join("big.bin")).unwrap() == content);
    assert_eq!(tree(out.path()), ["big.bin"], "partial gone");
}

/// Names Linux stores but Windows cannot (a `?`, a device name, a trailing dot) are refused by
/// name with the reason; nothing is written for them, in the folder or anywhere else.
#[test]
fn names_windows_cannot_store_are_refused_by_name() {
    let Some(kit) = kit() else { return };
    let server = Server::start(kit, &[]);
    let store = server.store();
    write(&store.join("odd/what?.txt"), b"q");
    write(&store.join("odd/fine.txt"), b"fine");
    write(&store.join("odd/trailing."), b"t");
    write(&store.join("CON"), b"console");
    let out = tempfile::tempdir().unwrap();
    let cwd = tempfile::tempdir().unwrap();

    let got = kit.ferry(
        &[
            "get",
            &server.addr,
            "odd",
            "CON",
            "-o",
            &windows_path(out.path()),
        ],
        cwd.path(),
    );
    let err = String::from_utf8_lossy(&got.stderr);
    assert_eq!(
        got.status.code(),
        Some(1),
        "skipped: exit 1\n{}",
        text(&got)
    );
    for (name, why) in [
        ("what?.txt", "the character '?' cannot be stored on Windows"),
        ("CON", "reserved device name"),
        ("trailing.", "Windows cannot store"),
    ] {
        let line = err
            .lines()
            .find(|l| l.contains("skipped") && l.contains(name))
            .unwrap_or_else(|| panic!("no line for {name}:\n{err}"));
        assert!(
            line.contains("this system cannot store that name") && line.contains(why),
            "{line}"
        );
        assert!(
            !line.contains("\\\\"),
            "the path's separators shown as such: {line}"
        );
    }
    assert_eq!(tree(out.path()), ["odd/fine.txt"]);
    assert!(tree(cwd.path()).is_empty(), "nothing written beside");
}

/// TLS with `--pin`: the right fingerprint gets the file through; a wrong one is refused
/// (exit 6) before anything is stored.
#[test]
fn tls_with_a_pin_sends_and_a_wrong_pin_is_refused() {
    let Some(kit) = kit() else { return };
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().to_str().unwrap();
    let server = Server::start(kit, &["--tls-self-signed", "--state-dir", state_dir]);
    let fp = Command::new(&kit.server)
        .args(["fingerprint", "--state-dir", state_dir])
        .output()
        .unwrap();
    assert!(fp.status.success(), "{}", text(&fp));
    let pin = String::from_utf8_lossy(&fp.stdout).trim().to_owned();
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("secret.bin");
    write(&file, &data(100_000, 3));
    let file = windows_path(&file);

    let mut wrong = pin.clone().into_bytes();
    let last = wrong.len() - 1;
    wrong[last] = if wrong[last] == b'0' { b'1' } else { b'0' };
    let wrong = String::from_utf8(wrong).unwrap();
    let refused = kit.ferry(&["send", &server.addr, &file, "--pin", &wrong], src.path());
    assert_eq!(refused.status.code(), Some(6), "{}", text(&refused));
    assert!(!server.store().join("secret.bin").exists());

    let sent = kit.ferry(&["send", &server.addr, &file, "--pin", &pin], src.path());
    assert_eq!(sent.status.code(), Some(0), "{}", text(&sent));
    assert!(
        fs::read(server.store().join("secret.bin")).unwrap()
            == fs::read(src.path().join("secret.bin")).unwrap()
    );
}
