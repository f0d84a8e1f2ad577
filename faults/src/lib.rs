//! Helpers for the fault-injection suite in `tests/`: the real `ferry-server` and `ferry`
//! binaries as child processes (so that SIGKILL is a real crash), proxies that stop or break a
//! connection at chosen points ([`proxy`]), a tmpfs mount guard and `/proc` readings
//! ([`sys`]), and file-system checks.
//!
//! Everything listens on 127.0.0.1, port 0. Every wait is bounded in time and panics with
//! what it waited for; no test asserts on wall-clock durations.

pub mod proxy;
pub mod sys;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Upper bound for any single wait in the suite (a hung peer fails the test, not the CI).
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The prefix of every file the server keeps for itself (temp files and partials).
pub const RESERVED_PREFIX: &str = ".ferry-";
/// The server's digest cache (kept in its private state folder): not a file anyone sent, and
/// left out of [`tree`].
pub const DIGEST_CACHE: &str = ".ferry-state/digests";
/// Temp files: uploads that cannot be resumed (unknown size, seed framing).
pub const TEMP_PREFIX: &str = ".ferry-tmp.";
/// Partial uploads kept for resume.
pub const PARTIAL_PREFIX: &str = ".ferry-partial.";

// ----- the binaries ----------------------------------------------------------------------------

/// The folder holding the workspace binaries: the test executable lives in
/// `target/<profile>/deps/`, the binaries in `target/<profile>/`.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("path of the test executable");
    let deps = exe.parent().expect("the test executable's folder");
    let dir = if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().expect("target/<profile>")
    } else {
        deps
    };
    dir.to_path_buf()
}

/// Builds `ferry-server` and `ferry` once per test process, into the same target folder and
/// profile as the running tests (`cargo test -p ferry-faults` does not build other packages'
/// binaries, and a binary left from an earlier build may be stale). A failed build is fatal
/// only when no binary exists; otherwise the old binaries are used with a loud warning.
/// `FERRY_FAULTS_NO_BUILD=1` skips the build (the binaries must then exist).
fn ensure_built() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = bin_dir();
        let have = |d: &Path| d.join("ferry-server").is_file() && d.join("ferry").is_file();
        if std::env::var_os("FERRY_FAULTS_NO_BUILD").is_some() {
            assert!(
                have(&dir),
                "FERRY_FAULTS_NO_BUILD is set but {}/ferry-server or ferry is missing: run \
                 `cargo build --workspace` (with the same CARGO_TARGET_DIR and profile)",
                dir.display()
            );
            return dir;
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace root")
            .join("Cargo.toml");
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "ferry-server",
            "-p",
            "ferry-client",
        ])
        .arg("--manifest-path")
        .arg(&manifest);
        if let (Some(profile), Some(target)) = (dir.file_name(), dir.parent()) {
            cmd.arg("--target-dir").arg(target);
            match profile.to_str() {
                Some("debug") => {}
                Some("release") => {
                    cmd.arg("--release");
                }
                Some(other) => {
                    cmd.args(["--profile", other]);
                }
                None => {}
            }
        }
        let out = cmd.stdin(Stdio::null()).output();
        let failure = match out {
            Ok(o) if o.status.success() => None,
            Ok(o) => Some(format!(
                "{}\n{}",
                o.status,
                String::from_utf8_lossy(&o.stderr)
            )),
            Err(e) => Some(e.to_string()),
        };
        if let Some(why) = failure {
            assert!(
                have(&dir),
                "cannot build ferry-server and ferry into {} ({why}); run `cargo build \
                 --workspace` with the same CARGO_TARGET_DIR and profile",
                dir.display()
            );
            eprintln!(
                "WARNING: `cargo build -p ferry-server -p ferry-client` failed ({why}); \
                 testing the binaries already in {}",
                dir.display()
            );
        }
        dir
    })
}

/// The `ferry-server` binary.
pub fn server_bin() -> PathBuf {
    ensure_built().join("ferry-server")
}

/// The `ferry` binary.
pub fn client_bin() -> PathBuf {
    ensure_built().join("ferry")
}

// ----- the server ------------------------------------------------------------------------------

/// A `ferry-server` child process on 127.0.0.1 (port 0: it logs the address it bound), with
/// its log captured. Dropping it SIGKILLs it.
pub struct ServerProc {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl ServerProc {
    /// Starts a server storing into `dir` with `--no-fsync` (durability against power cuts
    /// is not what this suite tests) and `extra` arguments, on a port of its choosing.
    pub fn start(dir: &Path, extra: &[&str]) -> Self {
        match Self::try_start(dir, "127.0.0.1:0", extra) {
            Ok(s) => s,
            Err((status, log)) => {
                panic!("ferry-server did not log its address (exit {status:?}); log:\n{log}")
            }
        }
    }

    /// Starts a server on `addr` (a port an earlier server of the test used), retrying
    /// (bounded) while the port is still taken.
    pub fn start_on(dir: &Path, addr: SocketAddr, extra: &[&str]) -> Self {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match Self::try_start(dir, &addr.to_string(), extra) {
                Ok(s) => return s,
                Err((Some(3), _)) if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(20));
                }
                Err((status, log)) => {
                    panic!("ferry-server did not start on {addr} (exit {status:?}); log:\n{log}")
                }
            }
        }
    }

    /// Starts a server listening on `listen`; on failure, its exit code and log.
    fn try_start(dir: &Path, listen: &str, extra: &[&str]) -> Result<Self, (Option<i32>, String)> {
        let mut cmd = Command::new(server_bin());
        cmd.args(["--listen", listen, "--dir"])
            .arg(dir)
            .arg("--no-fsync");
        if !extra.contains(&"--grace") {
            cmd.args(["--grace", "1s"]);
        }
        cmd.args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start ferry-server");
        let stderr = child.stderr.take().expect("server stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = Arc::clone(&log);
        let reader = thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = listening_addr(&line) {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr);
                    }
                }
                sink.lock().expect("log").push(line);
            }
        });
        let addr = match rx.recv_timeout(PATIENCE) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok().and_then(|s| s.code());
                let _ = reader.join();
                let text = log.lock().expect("log").join("\n");
                return Err((status, text));
            }
        };
        Ok(Self {
            child,
            addr,
            dir: dir.to_path_buf(),
            log,
            reader: Some(reader),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT`, for the client's command line.
    pub fn target(&self) -> String {
        self.addr.to_string()
    }

    /// The storage folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The log so far.
    pub fn log(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }

    /// How many log lines contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log
            .lock()
            .expect("log")
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Waits until at least `n` log lines contain `needle`.
    pub fn wait_log(&self, needle: &str, n: usize) {
        wait_until(&format!("{n} server log line(s) with {needle:?}"), || {
            self.log_count(needle) >= n
        });
    }

    /// SIGTERM (a graceful stop), then reaps the process (bounded); returns how it ended.
    pub fn terminate(mut self) -> ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM failed");
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait for ferry-server") {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "ferry-server did not stop on SIGTERM; log:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(10));
        };
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        status
    }

    /// SIGKILL, then reaps the process; returns how it ended.
    pub fn kill(mut self) -> ExitStatus {
        let _ = self.child.kill();
        let status = self.child.wait().expect("reap ferry-server");
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        status
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        if thread::panicking() {
            eprintln!("--- ferry-server log ({}) ---\n{}", self.addr, self.log());
        }
    }
}

/// The address in the server's "listening on ADDR, storing into DIR" log line.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = line.split("listening on ").nth(1)?;
    let word = rest.split([',', ' ']).next()?;
    word.parse().ok()
}

// ----- the client ------------------------------------------------------------------------------

/// A `ferry` run that ended.
#[derive(Debug)]
pub struct ClientRun {
    /// How it ended.
    pub status: ExitStatus,
    /// Standard output (with `--json`, one object per line).
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl ClientRun {
    /// The exit code (`None` when killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// The `"type":"file"` JSON lines.
    pub fn files(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .filter(|l| json_str(l, "type").as_deref() == Some("file"))
            .collect()
    }

    /// The JSON line of the file named `name`.
    pub fn file(&self, name: &str) -> &str {
        self.files()
            .into_iter()
            .find(|l| json_str(l, "name").as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no JSON line for {name} in {self}"))
    }
}

impl std::fmt::Display for ClientRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ferry {}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// A running `ferry` process.
pub struct ClientProc {
    child: Child,
    out: Option<JoinHandle<String>>,
    err: Option<JoinHandle<String>>,
}

/// Starts `ferry ARGS` (stdin from `stdin_file` when given, else empty), with its output
/// captured.
pub fn spawn_ferry(args: &[&str], stdin_file: Option<&Path>) -> ClientProc {
    let stdin = match stdin_file {
        Some(p) => Stdio::from(fs::File::open(p).expect("open stdin file")),
        None => Stdio::null(),
    };
    let mut child = Command::new(client_bin())
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ferry");
    let drain = |mut r: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout")));
    let err = drain(Box::new(child.stderr.take().expect("stderr")));
    ClientProc {
        child,
        out: Some(out),
        err: Some(err),
    }
}

impl ClientProc {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL (the run is then collected with [`ClientProc::wait`]).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
    }

    /// Waits for the end (at most [`PATIENCE`], then SIGKILL and panic).
    pub fn wait(mut self) -> ClientRun {
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            match self.child.try_wait().expect("wait for ferry") {
                Some(s) => break s,
                None if Instant::now() > deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    let run = self.collect(ExitStatus::from_raw(9));
                    panic!("ferry did not finish within {PATIENCE:?}: {run}");
                }
                None => thread::sleep(Duration::from_millis(5)),
            }
        };
        self.collect(status)
    }

    fn collect(&mut self, status: ExitStatus) -> ClientRun {
        let take = |h: Option<JoinHandle<String>>| h.map(|h| h.join().unwrap_or_default());
        ClientRun {
            status,
            stdout: take(self.out.take()).unwrap_or_default(),
            stderr: take(self.err.take()).unwrap_or_default(),
        }
    }
}

impl Drop for ClientProc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `ferry ARGS` to its end (bounded).
pub fn ferry(args: &[&str]) -> ClientRun {
    spawn_ferry(args, None).wait()
}

/// Starts `ferry COMMAND --json --timeout 20 TARGET REST...` (stdin as in [`spawn_ferry`]).
pub fn spawn_json(
    command: &str,
    target: &str,
    rest: &[&str],
    stdin_file: Option<&Path>,
) -> ClientProc {
    let mut args = vec![command, "--json", "--timeout", "20", target];
    args.extend_from_slice(rest);
    spawn_ferry(&args, stdin_file)
}

/// `ferry send --json --timeout 20 TARGET PATHS...`, run to its end.
pub fn send(target: &str, paths: &[&Path]) -> ClientRun {
    let strs: Vec<&str> = paths
        .iter()
        .map(|p| p.to_str().expect("UTF-8 path"))
        .collect();
    spawn_json("send", target, &strs, None).wait()
}

/// Sends again until the server stops answering `busy` for the name (it holds the name until
/// it has finished with a cut connection); bounded.
pub fn send_when_free(target: &str, paths: &[&Path]) -> ClientRun {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let run = send(target, paths);
        let busy = run
            .files()
            .iter()
            .any(|l| json_str(l, "status").as_deref() == Some("busy"));
        if !busy {
            return run;
        }
        assert!(Instant::now() < deadline, "the name stays busy: {run}");
        thread::sleep(Duration::from_millis(50));
    }
}

// ----- JSON lines, without a JSON dependency ---------------------------------------------------

/// The raw text of `"key":VALUE` in a flat, compact JSON object line (serde_json output).
fn json_raw<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("\"{key}\":");
    let at = line.find(&pat)? + pat.len();
    let rest = &line[at..];
    if let Some(s) = rest.strip_prefix('"') {
        let mut escaped = false;
        for (i, c) in s.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                '"' if !escaped => return Some(&rest[..i + 2]),
                _ => escaped = false,
            }
        }
        None
    } else {
        let end = rest.find([',', '}']).unwrap_or(rest.len());
        Some(&rest[..end])
    }
}

/// A string field (escapes other than `\"` and `\\` are left as they are).
pub fn json_str(line: &str, key: &str) -> Option<String> {
    let raw = json_raw(line, key)?;
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    Some(inner.replace("\\\"", "\"").replace("\\\\", "\\"))
}

/// An unsigned number field.
pub fn json_u64(line: &str, key: &str) -> Option<u64> {
    json_raw(line, key)?.parse().ok()
}

// ----- files -----------------------------------------------------------------------------------

/// Deterministic, incompressible-looking bytes (xorshift).
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes `content` to `path`, creating parent folders.
pub fn write(path: &Path, content: &[u8]) {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).expect("mkdir");
    }
    fs::write(path, content).expect("write");
}

/// Every regular file under `dir` as relative `/`-path -> size (hidden files included; the
/// server's [`DIGEST_CACHE`] left out).
pub fn tree(dir: &Path) -> BTreeMap<String, u64> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, u64>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(meta) = fs::symlink_metadata(&p) else {
                continue;
            };
            if meta.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).expect("under root");
                if rel == Path::new(DIGEST_CACHE) {
                    continue;
                }
                out.insert(rel.to_string_lossy().into_owned(), meta.len());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Files under `dir` whose last component starts with `prefix`, with their sizes.
pub fn with_prefix(dir: &Path, prefix: &str) -> Vec<(PathBuf, u64)> {
    tree(dir)
        .into_iter()
        .filter(|(p, _)| {
            Path::new(p)
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .map(|(p, len)| (dir.join(p), len))
        .collect()
}

/// Asserts that `dir` holds nothing the server keeps for itself (no temp file, no partial).
pub fn assert_no_leftovers(dir: &Path) {
    let left = with_prefix(dir, RESERVED_PREFIX);
    assert!(
        left.is_empty(),
        "leftover server files in {}: {left:?}",
        dir.display()
    );
}

/// Asserts that the file at `path` holds exactly `content` (compared by length, then bytes,
/// without printing megabytes).
pub fn assert_same(path: &Path, content: &[u8]) {
    let got = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert_eq!(got.len(), content.len(), "size of {}", path.display());
    if let Some(i) = got.iter().zip(content).position(|(a, b)| a != b) {
        panic!("{} differs from its source at byte {i}", path.display());
    }
}

/// Waits until `cond` holds, polling; panics after [`PATIENCE`].
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

// ----- randomness ------------------------------------------------------------------------------

/// A small seeded generator (splitmix64): reproducible runs from a printed seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// `FERRY_FAULTS_SEED` when set (to replay a printed seed), else a seed from the clock
    /// mixed with `salt` (so that tests running at once draw different seeds).
    pub fn seed_from_env(salt: u64) -> u64 {
        if let Some(s) = std::env::var("FERRY_FAULTS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
        {
            return s;
        }
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Rng::new(t.as_nanos() as u64 ^ u64::from(std::process::id()) ^ salt).next_u64()
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `lo..hi` (`lo` when the range is empty).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_fields() {
        let line = r#"{"bytes":12,"detail":"a \"b\"","name":"x.bin","offset":3,"ok":true,"status":"stored","type":"file"}"#;
        assert_eq!(json_u64(line, "offset"), Some(3));
        assert_eq!(json_u64(line, "bytes"), Some(12));
        assert_eq!(json_str(line, "status").as_deref(), Some("stored"));
        assert_eq!(json_str(line, "detail").as_deref(), Some("a \"b\""));
        assert_eq!(json_str(line, "missing"), None);
    }

    #[test]
    fn listening_line() {
        let l = "[2026-01-01T00:00:00Z INFO  ferry_server::server] listening on 127.0.0.1:4242, \
                 storing into /tmp/x";
        assert_eq!(listening_addr(l), Some("127.0.0.1:4242".parse().unwrap()));
        assert_eq!(listening_addr("nothing here"), None);
    }

    #[test]
    fn data_is_deterministic() {
        assert_eq!(data(100, 1), data(100, 1));
        assert_ne!(data(100, 1), data(100, 2));
        assert_eq!(data(13, 5).len(), 13);
    }
}
