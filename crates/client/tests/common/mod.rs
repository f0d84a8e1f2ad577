//! Shared by the end-to-end tests: an in-process ferry server, the `ferry` binary, a proxy
//! that cuts connections, and a raw-frame peer for scripting hostile servers. Everything
//! listens on 127.0.0.1 port 0.
#![allow(dead_code)] // each test file uses its own part of this module

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ferry_client::walk::{self, Source};
use ferry_client::{Options, Outcome, Target};
use ferry_proto::wire::{self, kind, Frame, FRAME_HEADER_LEN, MAGIC};
use ferry_proto::{Code, Digest};
use ferry_server::{Config, Overwrite, Server, ServerHandle};

/// A running in-process server and the folder it stores into.
pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub handle: Option<ServerHandle>,
}

impl TestServer {
    pub fn start(overwrite: Overwrite) -> Self {
        Self::with(|c| c.overwrite = overwrite)
    }

    /// A server on a free port with the settings `tweak` makes (TLS, a token, ...).
    pub fn with(tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config {
            listen: "127.0.0.1:0".parse().expect("address"),
            dir: dir.path().to_owned(),
            grace: Duration::from_millis(200),
            ..Config::default()
        };
        tweak(&mut config);
        let handle = Server::bind(config).expect("bind").spawn().expect("spawn");
        Self {
            dir,
            handle: Some(handle),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.handle.as_ref().expect("running").addr()
    }

    pub fn target(&self) -> Target {
        Target::from(self.addr())
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            let _ = h.shutdown();
        }
    }
}

/// Options for tests: a short timeout so that a hung peer fails the test rather than the CI.
pub fn opts() -> Options {
    Options {
        timeout: Duration::from_secs(20),
        ..Options::default()
    }
}

/// Deterministic, incompressible-looking bytes.
pub fn data(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

pub fn write(path: &Path, content: &[u8]) {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).expect("mkdir");
    }
    fs::write(path, content).expect("write");
}

pub fn sources(paths: &[&Path]) -> Vec<Source> {
    let paths: Vec<PathBuf> = paths.iter().map(|p| p.to_path_buf()).collect();
    walk::collect(&paths, None, None).expect("collect").sources
}

/// Sends `paths` with the library.
pub fn send(target: &Target, paths: &[&Path]) -> Outcome {
    ferry_client::upload::send(target, sources(paths), &opts(), &mut ())
}

/// The server's own state folder (its digest cache), which `tree` leaves out.
pub const SERVER_STATE: &str = ".ferry-state";

/// Every file in `dir`, recursively, as sorted relative `/`-paths (hidden ones included, but
/// not a server's [`SERVER_STATE`] folder).
pub fn tree(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(dir).expect("read_dir") {
            let p = e.expect("entry").path();
            if dir == root && p.file_name().is_some_and(|n| n == SERVER_STATE) {
                continue;
            }
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).expect("under root");
                // Joined with `/` whatever the system's separator: a `\` is a name's own on Unix.
                let parts: Vec<_> = rel.iter().map(|c| c.to_string_lossy()).collect();
                out.push(parts.join("/"));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Waits until `cond` holds (a background thread finishing its work), failing after a while.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "gave up waiting: {what}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

// ----- the binary ---------------------------------------------------------------------------

pub fn ferry(args: &[&str]) -> Output {
    ferry_with_stdin(args, None)
}

pub fn ferry_with_stdin(args: &[&str], stdin: Option<&[u8]>) -> Output {
    ferry_full(args, &[], stdin)
}

/// Runs `ferry` with environment variables set (and `FERRY_TOKEN` removed unless given).
pub fn ferry_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    ferry_full(args, env, None)
}

fn ferry_full(args: &[&str], env: &[(&str, &str)], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.env_remove("FERRY_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ferry");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(input).expect("feed stdin");
    }
    child.wait_with_output().expect("ferry output")
}

/// Each line of `stdout` (a `--json` run's) as a JSON value.
pub fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8(stdout.to_vec())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Waits for `child` to exit; past `limit`, kills it and panics with `what_hung()`.
pub fn wait_child(
    child: &mut Child,
    limit: Duration,
    what_hung: impl FnOnce() -> String,
) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{}", what_hung());
        }
        thread::sleep(Duration::from_millis(20));
    }
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// An address where nothing listens (a port just released).
pub fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

// ----- a proxy that cuts ----------------------------------------------------------------------

/// Forwards one connection to `upstream`, cutting both sides once `up` bytes went client to
/// server or `down` bytes server to client. Join the handle to know the cut is complete.
pub fn cutting_proxy(upstream: SocketAddr, up: u64, down: u64) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
    let addr = listener.local_addr().expect("addr");
    let handle = thread::spawn(move || {
        let (client, _) = listener.accept().expect("accept");
        let server = TcpStream::connect(upstream).expect("connect upstream");
        let pairs = [
            (
                client.try_clone().expect("clone"),
                server.try_clone().expect("clone"),
                up,
            ),
            (
                server.try_clone().expect("clone"),
                client.try_clone().expect("clone"),
                down,
            ),
        ];
        let pumps: Vec<_> = pairs
            .into_iter()
            .map(|(mut from, mut to, limit)| {
                let (a, b) = (
                    client.try_clone().expect("c"),
                    server.try_clone().expect("c"),
                );
                thread::spawn(move || {
                    let mut left = limit;
                    let mut buf = vec![0u8; 64 * 1024];
                    while left > 0 {
                        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                        match from.read(&mut buf[..want]) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if to.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                                left -= n as u64;
                            }
                        }
                    }
                    // The cut (or a clean end): both connections go down.
                    let _ = a.shutdown(Shutdown::Both);
                    let _ = b.shutdown(Shutdown::Both);
                })
            })
            .collect();
        for p in pumps {
            let _ = p.join();
        }
    });
    (addr, handle)
}

// ----- a flaky link ---------------------------------------------------------------------------

/// A proxy that serves any number of connections to `upstream`. Connection `i` is cut (both
/// sides shut down) once `cuts[i]` bytes went through it, both directions counted; connections
/// beyond the list are forwarded whole.
pub struct FlakyProxy {
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl FlakyProxy {
    pub fn start(upstream: SocketAddr, cuts: Vec<u64>) -> Self {
        Self::counting(upstream, cuts, true)
    }

    /// Like [`FlakyProxy::start`], counting only the bytes from the server to the client.
    pub fn downstream(upstream: SocketAddr, cuts: Vec<u64>) -> Self {
        Self::counting(upstream, cuts, false)
    }

    fn counting(upstream: SocketAddr, cuts: Vec<u64>, count_up: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        // Lives as long as the test process; each test has its own.
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let i = count.fetch_add(1, Ordering::SeqCst);
                let limit = cuts.get(i).copied().unwrap_or(u64::MAX);
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                forward(client, server, limit, count_up);
            }
        });
        Self { addr, connections }
    }

    pub fn target(&self) -> Target {
        Target::from(self.addr)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// Pumps both ways between client `a` and server `b` until `limit` bytes went through (both
/// ways, or only from `b` unless `count_up`), then cuts.
fn forward(a: TcpStream, b: TcpStream, limit: u64, count_up: bool) {
    let used = Arc::new(AtomicU64::new(0));
    let cut = Arc::new(Mutex::new(()));
    for (mut from, mut to, counted) in [
        (
            a.try_clone().expect("clone"),
            b.try_clone().expect("clone"),
            count_up,
        ),
        (
            b.try_clone().expect("clone"),
            a.try_clone().expect("clone"),
            true,
        ),
    ] {
        let (used, cut) = (used.clone(), cut.clone());
        let (x, y) = (a.try_clone().expect("clone"), b.try_clone().expect("clone"));
        thread::spawn(move || {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = match from.read(&mut buf) {
                    // A clean end passes through as one.
                    Ok(0) => {
                        let _ = to.shutdown(Shutdown::Write);
                        return;
                    }
                    Err(_) => break,
                    Ok(n) => n,
                };
                let _guard = cut.lock().expect("lock");
                let allowed = if counted {
                    let before = used.load(Ordering::SeqCst);
                    let allowed = limit.saturating_sub(before).min(n as u64) as usize;
                    used.store(before + allowed as u64, Ordering::SeqCst);
                    allowed
                } else {
                    n
                };
                if to.write_all(&buf[..allowed]).is_err() || allowed < n {
                    break;
                }
            }
            // The cut: both connections go down.
            let _ = x.shutdown(Shutdown::Both);
            let _ = y.shutdown(Shutdown::Both);
        });
    }
}

/// A server whose first connection is scripted (the script gets a [`Raw`] peer that already
/// read the magic) and whose later connections are forwarded whole to `upstream`.
pub fn scripted_then_forwarded(
    upstream: SocketAddr,
    script: impl FnOnce(Raw) + Send + 'static,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    // Lives as long as the test process; each test has its own.
    thread::spawn(move || {
        let Ok((first, _)) = listener.accept() else {
            return;
        };
        script(Raw::opened(first));
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let Ok(server) = TcpStream::connect(upstream) else {
                continue;
            };
            forward(client, server, u64::MAX, true);
        }
    });
    addr
}

// ----- TLS and tokens -------------------------------------------------------------------------

/// Writes a token file only its owner can read.
pub fn token_file(dir: &Path, token: &str) -> PathBuf {
    private_file(dir, "token", &format!("{token}\n"))
}

/// Writes a file only its owner can read (a token, a private key).
pub fn private_file(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, content).expect("write secret");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    path
}

// ----- a raw-frame peer, for hostile servers --------------------------------------------------

/// A server that speaks in frames the test writes by hand.
pub struct Raw {
    pub stream: TcpStream,
}

/// Listens for one connection; the script gets a [`Raw`] peer that already read the magic.
pub fn raw_server<T: Send + 'static>(
    script: impl FnOnce(Raw) -> T + Send + 'static,
) -> (SocketAddr, JoinHandle<T>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let handle = thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        script(Raw::opened(stream))
    });
    (addr, handle)
}

impl Raw {
    /// The peer on a connection just accepted, once the client's magic is read.
    pub fn opened(mut stream: TcpStream) -> Self {
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut magic = [0u8; MAGIC.len()];
        stream.read_exact(&mut magic).expect("magic");
        assert_eq!(magic, MAGIC);
        Raw { stream }
    }

    /// Reads the client's HELLO and answers WELCOME for version `version` (a plain file offer
    /// may already follow the HELLO, PROTOCOL.md §4.1: it is read after).
    pub fn welcome_as(&mut self, version: u16) {
        self.expect(wire::kind::HELLO);
        self.send(&[Frame::Welcome { version }]);
    }

    /// [`Raw::welcome_as`] version 1: files only, no listing first.
    pub fn welcome(&mut self) {
        self.welcome_as(1);
    }

    /// Welcomes, waits for the OFFER and accepts it at `offset`, with `prefix` as the digest of
    /// the bytes before it; the file's id.
    pub fn accept_offer(&mut self, offset: u64, prefix: Digest) -> u64 {
        self.welcome();
        let id = id_of(&self.expect(kind::OFFER));
        self.send(&[Frame::Accept { id, offset, prefix }]);
        id
    }

    /// Reads up to the END of file `id`'s body and answers RESULT `Stored` as `detail`.
    pub fn store(&mut self, id: u64, detail: &str) {
        self.expect(kind::END);
        self.send(&[Frame::Result {
            id,
            code: Code::Stored,
            detail: detail.into(),
        }]);
    }

    /// Reads the next frame (a DATA frame's body is read and dropped), or `None` at the end.
    pub fn read_frame(&mut self) -> Option<Frame> {
        let mut header = [0u8; FRAME_HEADER_LEN];
        self.stream.read_exact(&mut header).ok()?;
        let (kind, len) = wire::parse_header(header).expect("header");
        let mut payload = vec![0u8; len as usize];
        self.stream.read_exact(&mut payload).ok()?;
        if kind == wire::kind::DATA {
            return Some(Frame::Data { len });
        }
        Some(Frame::decode(kind, &payload).expect("frame"))
    }

    /// Reads frames until one of `kind` arrives.
    pub fn expect(&mut self, kind: u8) -> Frame {
        loop {
            let f = self.read_frame().expect("connection open");
            if f.kind() == kind {
                return f;
            }
        }
    }

    pub fn send(&mut self, frames: &[Frame]) {
        let mut out = Vec::new();
        for f in frames {
            f.encode(&mut out);
        }
        self.stream.write_all(&out).expect("send frames");
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send bytes");
    }

    /// Sends a DATA frame with `body`.
    pub fn send_data(&mut self, body: &[u8]) {
        self.send(&[Frame::Data {
            len: body.len() as u32,
        }]);
        self.send_raw(body);
    }

    /// Reads until the client closes (it may send a last ERROR or RESULT first).
    pub fn drain(&mut self) {
        let mut sink = Vec::new();
        let _ = self.stream.read_to_end(&mut sink);
    }
}

/// Reads a frame's id field where it has one, for scripting replies.
pub fn id_of(f: &Frame) -> u64 {
    match f {
        Frame::Offer { id, .. }
        | Frame::Get { id, .. }
        | Frame::Accept { id, .. }
        | Frame::End { id, .. }
        | Frame::Begin { id, .. }
        | Frame::Result { id, .. } => *id,
        other => panic!("no id in {other:?}"),
    }
}
