//! Test helpers: a server on 127.0.0.1 port 0 in a temp folder, a ferry client built on the
//! proto `Driver`, a raw-frame client for hostile cases and a replica of the seed client.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use ferry_proto::wire::{self, Frame, FRAME_HEADER_LEN, MAGIC, VERSION};
use ferry_proto::{
    BodyCheck, Code, Connection, Digest, Driver, Event, FileInfo, Hasher, Name, OfferOptions, Step,
    Timestamp,
};
use ferry_server::{Config, Server, ServerHandle};

/// The server's digest cache, relative to its root.
pub const DIGEST_CACHE: &str = ".ferry-state/digests";

/// Longest any test waits for the server; a hang fails instead of blocking the suite.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A running server and the temp folder it stores into.
pub struct TestServer {
    config: Config,
    handle: Option<ServerHandle>,
    addr: SocketAddr,
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
}

/// A config for tests: port 0, short timeouts.
pub fn config() -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        header_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(5),
        grace: Duration::from_secs(5),
        // Tests check what is published, not what survives a power cut.
        fsync: false,
        ..Config::default()
    }
}

/// Starts a server with `config` (its `dir` is replaced by a fresh temp folder).
pub fn start(mut config: Config) -> TestServer {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    config.dir = dir.clone();
    let handle = Server::bind(config.clone())
        .expect("bind")
        .spawn()
        .expect("spawn");
    let dir = handle.dir().to_path_buf();
    TestServer {
        config,
        addr: handle.addr(),
        handle: Some(handle),
        dir,
        _tmp: tmp,
    }
}

impl TestServer {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server gracefully and waits for it; the folder stays for inspection.
    pub fn stop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown().expect("clean shutdown");
        }
    }

    /// Stops the server and starts a new one on the same folder (another port).
    pub fn restart(&mut self) {
        self.stop();
        let handle = Server::bind(self.config.clone())
            .expect("bind")
            .spawn()
            .expect("spawn");
        self.addr = handle.addr();
        self.handle = Some(handle);
    }

    /// Asks the server to stop without waiting.
    pub fn request_stop(&self) -> ferry_server::ShutdownHandle {
        self.handle.as_ref().expect("running").shutdown_handle()
    }

    /// Names in the storage folder (recursively, relative, sorted), server files included,
    /// except its digest cache (`.ferry-state/digests`, always there).
    pub fn listing(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![self.dir.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let e = e.unwrap();
                let rel = e
                    .path()
                    .strip_prefix(&self.dir)
                    .unwrap()
                    .display()
                    .to_string();
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                } else if rel != DIGEST_CACHE {
                    out.push(rel);
                }
            }
        }
        out.sort();
        out
    }

    /// The server's private state folder.
    pub fn state(&self) -> PathBuf {
        self.dir.join(".ferry-state")
    }

    /// Partial files kept for resume (relative, sorted), wherever they are: the server keeps
    /// them in `.ferry-state/partials/`.
    pub fn partials(&self) -> Vec<String> {
        self.listing()
            .into_iter()
            .filter(|n| n.rsplit('/').next().unwrap().starts_with(".ferry-partial."))
            .collect()
    }

    pub fn read(&self, name: &str) -> Option<Vec<u8>> {
        std::fs::read(self.dir.join(name)).ok()
    }
}

/// Every regular file under `root` (hidden ones included) with the digest of its bytes.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, Digest> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path);
            } else {
                out.insert(
                    path.clone(),
                    Digest::of(&std::fs::read(&path).unwrap_or_default()),
                );
            }
        }
    }
    out
}

/// Offers `bytes` as `name`, sends the first `cut` bytes of the body, closes the connection
/// and waits until the server has let go of it (its end of the socket closed, so the name is
/// free again) and keeps the partial, `cut` bytes long.
pub fn upload_and_drop(srv: &TestServer, name: &str, bytes: &[u8], cut: usize) {
    drop_mid_body(connect(srv.addr()), name, bytes, cut);
    wait_for("the partial to be kept", || {
        let partials = srv.partials();
        let [partial] = partials.as_slice() else {
            return false;
        };
        std::fs::metadata(srv.dir.join(partial)).is_ok_and(|m| m.len() == cut as u64)
    });
}

/// Offers `bytes` as `name` on `d`, expects ACCEPT at 0, sends the first `cut` bytes of the
/// body and closes the connection, reading the server's end of it: the server then keeps the
/// partial (once its connection has ended; see [`upload_and_drop`]).
pub fn drop_mid_body(mut d: Client, name: &str, bytes: &[u8], cut: usize) {
    let id = d.conn_mut().offer(info(name, bytes.len() as u64)).unwrap();
    match d.next_step().unwrap() {
        Step::Event(Event::Accepted { offset: 0, .. }) => {}
        other => panic!("expected ACCEPT at 0, got {other:?}"),
    }
    d.conn_mut().begin(id, Hasher::new()).unwrap();
    d.send_body(&bytes[..cut]).unwrap();
    d.flush().unwrap();
    let s = d.stream_mut();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    // The server's ERROR, then the end of the stream (or a reset).
    let _ = std::io::copy(s, &mut std::io::sink());
}

/// Deterministic test bytes.
pub fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2654435761).to_be_bytes()[0] ^ seed)
        .collect()
}

/// Waits until `f` holds, up to [`PATIENCE`].
pub fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + PATIENCE;
    while !f() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

// ----- ferry client on the proto Driver ------------------------------------------------------

pub type Client = Driver<TcpStream>;

/// A TCP connection to `to` from the local address `from` (any of 127.0.0.0/8 is this host),
/// so that one test can be several sources.
pub fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    use rustix::net::{bind, connect, socket, AddressFamily, SocketType};
    let fd = socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
    bind(&fd, &SocketAddr::from((from, 0))).unwrap();
    connect(&fd, &to).unwrap();
    let s = TcpStream::from(fd);
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s
}

/// Connects from the local address `from` (see [`connect_from`]) in ferry framing, with
/// `token` in HELLO, and waits for WELCOME.
pub fn connect_as(from: [u8; 4], to: SocketAddr, token: Option<&[u8]>) -> Client {
    let mut d = Driver::new(connect_from(from, to), Connection::client(token).unwrap());
    d.flush().unwrap();
    welcomed(d)
}

/// Connects in ferry framing and waits for WELCOME.
pub fn connect(addr: SocketAddr) -> Client {
    welcomed(connect_unwelcomed(addr))
}

/// `d`, once the server's WELCOME has arrived.
fn welcomed(mut d: Client) -> Client {
    match d.next_step().unwrap() {
        Step::Event(Event::Welcome { .. }) => d,
        other => panic!("expected WELCOME, got {other:?}"),
    }
}

/// Connects and queues HELLO without waiting for the answer.
pub fn connect_unwelcomed(addr: SocketAddr) -> Client {
    connect_speaking(addr, VERSION)
}

/// Connects as a client that speaks versions up to `max` and waits for WELCOME `max`.
pub fn connect_version(addr: SocketAddr, max: u16) -> Client {
    let mut d = connect_speaking(addr, max);
    match d.next_step().unwrap() {
        Step::Event(Event::Welcome { version }) if version == max => d,
        other => panic!("expected WELCOME {max}, got {other:?}"),
    }
}

fn connect_speaking(addr: SocketAddr, max: u16) -> Client {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let conn = Connection::client_with_max_version(None, max).unwrap();
    let mut d = Driver::new(s, conn);
    d.flush().unwrap();
    d
}

/// How an upload ended.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    pub code: Code,
    pub detail: String,
    /// Where the body started (None when refused).
    pub from: Option<u64>,
}

pub fn info(name: &str, size: u64) -> FileInfo {
    FileInfo {
        name: Name::parse(name).unwrap(),
        size: Some(size),
        mtime: None,
        mode: None,
    }
}

/// Uploads `bytes` under `info` and waits for the server's verdict.
pub fn upload_info<S: Read + Write>(d: &mut Driver<S>, info: FileInfo, bytes: &[u8]) -> Outcome {
    upload_with(d, info, OfferOptions::default(), bytes)
}

/// Offers a folder (version 2) and waits for the server's answer: RESULT, or REFUSE.
pub fn offer_folder<S: Read + Write>(
    d: &mut Driver<S>,
    name: &str,
    mode: Option<u32>,
    mtime: Option<Timestamp>,
) -> Outcome {
    let info = FileInfo {
        name: Name::parse(name).unwrap(),
        size: None,
        mtime,
        mode,
    };
    upload_with(d, info, OfferOptions::folder(), &[])
}

/// Uploads `bytes` under `info` with the version-2 options `opts` (a digest, or a folder)
/// and waits for the server's verdict.
pub fn upload_with<S: Read + Write>(
    d: &mut Driver<S>,
    info: FileInfo,
    opts: OfferOptions,
    bytes: &[u8],
) -> Outcome {
    let id = d.conn_mut().offer_with(info, opts).unwrap();
    let mut from = None;
    loop {
        match d.next_step().unwrap() {
            Step::Event(Event::Accepted { id: a, offset, .. }) if a == id => {
                let mut prefix = Hasher::new();
                if let Some(p) = bytes.get(..offset as usize) {
                    prefix.update(p);
                }
                let start = d.conn_mut().begin(id, prefix).unwrap();
                for chunk in bytes[start as usize..].chunks(1 << 20) {
                    d.send_body(chunk).unwrap();
                }
                d.conn_mut().end().unwrap();
                from = Some(start);
            }
            Step::Event(Event::Refused { code, reason, .. }) => {
                return Outcome {
                    code,
                    detail: reason,
                    from,
                }
            }
            Step::Event(Event::Result { code, detail, .. }) => {
                return Outcome { code, detail, from }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

pub fn upload<S: Read + Write>(d: &mut Driver<S>, name: &str, bytes: &[u8]) -> Outcome {
    upload_info(d, info(name, bytes.len() as u64), bytes)
}

/// One upload on a fresh connection.
pub fn upload_once(addr: SocketAddr, name: &str, bytes: &[u8]) -> Outcome {
    upload(&mut connect(addr), name, bytes)
}

/// Uploads on fresh connections until the name is no longer busy (a previous connection may
/// still be letting go of it).
pub fn upload_when_free(addr: SocketAddr, name: &str, bytes: &[u8]) -> Outcome {
    let until = Instant::now() + PATIENCE;
    loop {
        let o = upload_once(addr, name, bytes);
        if o.code != Code::Busy || Instant::now() > until {
            return o;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Downloads `name`: its bytes and description, or the refusal code.
pub fn download<S: Read + Write>(
    d: &mut Driver<S>,
    name: &str,
) -> Result<(Vec<u8>, FileInfo), Code> {
    let want = d.conn_mut().get(Name::parse(name).unwrap()).unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut offered = None;
    loop {
        match d.next_step().unwrap() {
            Step::Event(Event::Offer(o)) => {
                assert_eq!(o.id, want);
                offered = Some(FileInfo {
                    name: o.name.clone().unwrap(),
                    size: o.size,
                    mtime: o.mtime,
                    mode: o.mode,
                });
                d.conn_mut().accept(o.id, Hasher::new()).unwrap();
            }
            Step::Event(Event::Refused { code, .. }) => return Err(code),
            Step::Event(Event::Begin { .. }) => got.clear(),
            Step::Body(_) => {
                let n = d.read_body(&mut buf).unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            Step::Event(Event::End { id, check, .. }) => {
                assert!(matches!(check, BodyCheck::Verified(_)), "{check:?}");
                d.conn_mut().finish(id, Code::Stored, "").unwrap();
                d.flush().unwrap();
                return Ok((got, offered.unwrap()));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Downloads `name` holding `local` as the bytes already there; returns where the body
/// started and the whole file as received.
pub fn download_resuming(d: &mut Client, name: &str, local: &[u8]) -> (u64, Vec<u8>) {
    d.conn_mut().get(Name::parse(name).unwrap()).unwrap();
    let mut got = local.to_vec();
    let mut buf = vec![0u8; 1 << 20];
    let mut from = None;
    loop {
        match d.next_step().unwrap() {
            Step::Event(Event::Offer(o)) => {
                let mut prefix = Hasher::new();
                prefix.update(local);
                d.conn_mut().accept(o.id, prefix).unwrap();
            }
            Step::Event(Event::Begin { from: f, .. }) => {
                got.truncate(f as usize);
                from = Some(f);
            }
            Step::Body(_) => {
                let n = d.read_body(&mut buf).unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            Step::Event(Event::End { id, check, .. }) => {
                assert!(matches!(check, BodyCheck::Verified(_)), "{check:?}");
                d.conn_mut().finish(id, Code::Stored, "").unwrap();
                return (from.unwrap(), got);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

pub fn timestamp(secs: i64) -> Timestamp {
    Timestamp { secs, nanos: 0 }
}

// ----- raw frames, for what a well-behaved client cannot send ---------------------------------

/// An OFFER of a file of `size` bytes called `name` (raw, unvalidated), without digest, time
/// or mode.
pub fn file_offer(id: u64, name: impl Into<String>, size: u64) -> Frame {
    Frame::Offer {
        id,
        kind: ferry_proto::EntryKind::File,
        digest: None,
        size: Some(size),
        mtime: None,
        mode: None,
        name: name.into(),
        early: false,
    }
}

/// A client that writes frames by hand and reads the server's frames one by one.
pub struct Raw {
    pub s: TcpStream,
}

impl Raw {
    /// Connects, says HELLO and expects WELCOME.
    pub fn connect(addr: SocketAddr) -> Raw {
        Raw::connect_with_token(addr, &[])
    }

    /// Connects, says HELLO with `token` and expects WELCOME.
    pub fn connect_with_token(addr: SocketAddr, token: &[u8]) -> Raw {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        Raw::hello(s, token)
    }

    /// Connects from the local address `from` (see [`connect_from`]), says HELLO and expects
    /// WELCOME.
    pub fn connect_from(from: [u8; 4], addr: SocketAddr) -> Raw {
        Raw::hello(connect_from(from, addr), &[])
    }

    /// Says HELLO with `token` on `s` and expects WELCOME.
    fn hello(s: TcpStream, token: &[u8]) -> Raw {
        let mut r = Raw { s };
        let mut hello = MAGIC.to_vec();
        Frame::Hello {
            min: VERSION,
            max: VERSION,
            token: token.to_vec(),
        }
        .encode(&mut hello);
        r.bytes(&hello);
        assert_eq!(r.recv(), Some(Frame::Welcome { version: VERSION }));
        r
    }

    pub fn bytes(&mut self, b: &[u8]) {
        self.s.write_all(b).unwrap();
    }

    pub fn send(&mut self, frames: &[Frame]) {
        let mut out = Vec::new();
        for f in frames {
            f.encode(&mut out);
        }
        self.bytes(&out);
    }

    /// Sends a DATA frame with its payload.
    pub fn data(&mut self, payload: &[u8]) {
        let mut out = Vec::new();
        Frame::Data {
            len: payload.len() as u32,
        }
        .encode(&mut out);
        out.extend_from_slice(payload);
        self.bytes(&out);
    }

    /// The next frame from the server, or `None` at the end of the stream.
    pub fn recv(&mut self) -> Option<Frame> {
        let mut h = [0u8; FRAME_HEADER_LEN];
        if let Err(e) = self.s.read_exact(&mut h) {
            assert!(
                matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
                ),
                "{e}"
            );
            return None;
        }
        let (kind, len) = wire::parse_header(h).unwrap();
        let mut payload = vec![0u8; len as usize];
        self.s.read_exact(&mut payload).unwrap();
        Some(Frame::decode(kind, &payload).unwrap())
    }

    /// Sends `body[from..]` of upload `id` (BEGIN, one DATA), then [`Raw::end`]s it.
    pub fn send_body(&mut self, id: u64, body: &[u8], from: usize) -> Code {
        self.send(&[Frame::Begin {
            id,
            from: from as u64,
        }]);
        self.data(&body[from..]);
        self.end(id, body)
    }

    /// Sends the END of upload `id`, whose whole content is `body`; the code of its RESULT.
    pub fn end(&mut self, id: u64, body: &[u8]) -> Code {
        self.send(&[Frame::End {
            id,
            size: body.len() as u64,
            digest: Digest::of(body),
        }]);
        match self.recv() {
            Some(Frame::Result { code, .. }) => code,
            other => panic!("expected RESULT, got {other:?}"),
        }
    }

    /// Offers `name` (raw, unvalidated) with `size` bytes.
    pub fn offer(&mut self, id: u64, name: &str, size: u64) {
        self.send(&[file_offer(id, name, size)]);
    }
}

// ----- the seed client -----------------------------------------------------------------------

/// Byte-exact replica of the lab report's client: `name\n` in one send, the file in 1024-byte
/// sends, then close; nothing is read.
pub fn seed_send(addr: SocketAddr, name: &[u8], body: &[u8]) {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut line = name.to_vec();
    line.push(b'\n');
    s.write_all(&line).unwrap();
    for chunk in body.chunks(1024) {
        // A refusal closes the socket early; the seed client ignores errors too.
        if s.write_all(chunk).is_err() {
            break;
        }
    }
}

/// The seed client script, when the checkout has it.
pub fn seed_client_py() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../seed/client.py");
    p.exists().then_some(p)
}
