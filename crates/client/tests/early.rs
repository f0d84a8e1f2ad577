//! Early offers end to end (issue 14 item 5, PROTOCOL.md §4.14): a tree of small files through
//! a real ferry-server arrives byte for byte, and the client streams it. Counted, not timed: a
//! proxy lets the server's WELCOME and first ACCEPT (the client's probe) through, then holds
//! every byte the server sends until the client has sent the END of every file. A client that
//! waited for an ACCEPT per body would never get there; this one completes.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::{data, write, TestServer};
use ferry_client::{upload, Status, Target};
use ferry_proto::wire::{self, kind, offer_flag, FRAME_HEADER_LEN, MAGIC};
use ferry_proto::{Code, EntryKind};
use ferry_server::Overwrite;

/// Small files: all of them fit the early bytes in flight (4 MiB) and the reply budget.
const FILES: usize = 300;
const SIZE: usize = 4096;
/// How long the proxy holds the server's bytes at most: a client that waits for them fails
/// the test instead of hanging it.
const HOLD_AT_MOST: Duration = Duration::from_secs(15);

/// What the client sent, counted frame by frame, while the server's replies were held.
#[derive(Debug, Default, Clone, Copy)]
struct Counted {
    /// OFFER frames with the early flag.
    early_offers: usize,
    /// All OFFER frames.
    offers: usize,
    /// END frames: bodies complete.
    ends: usize,
}

/// Cuts a byte stream into frames (after the magic, when `magic`), incrementally.
struct Frames {
    buf: Vec<u8>,
    magic_left: usize,
}

impl Frames {
    fn new(magic: bool) -> Self {
        Self {
            buf: Vec::new(),
            magic_left: if magic { MAGIC.len() } else { 0 },
        }
    }

    /// Takes `bytes`; returns the (kind, first payload byte after the id) of each frame
    /// completed.
    fn push(&mut self, bytes: &[u8]) -> Vec<(u8, Option<u8>)> {
        let skip = self.magic_left.min(bytes.len());
        self.magic_left -= skip;
        self.buf.extend_from_slice(&bytes[skip..]);
        let mut out = Vec::new();
        loop {
            let Ok(header) = <[u8; FRAME_HEADER_LEN]>::try_from(
                self.buf.get(..FRAME_HEADER_LEN).unwrap_or_default(),
            ) else {
                return out;
            };
            let (kind, len) = wire::parse_header(header).expect("a frame header");
            let end = FRAME_HEADER_LEN + len as usize;
            if self.buf.len() < end {
                return out;
            }
            // An OFFER's flags byte follows its 8-byte id.
            out.push((kind, self.buf.get(FRAME_HEADER_LEN + 8).copied()));
            self.buf.drain(..end);
        }
    }
}

/// The proxy: forwards one connection to `upstream`. Client to server: everything, counting
/// frames. Server to client: frames up to the first ACCEPT, then nothing until the client has
/// sent `FILES` ENDs (or [`HOLD_AT_MOST`] passed), then the rest. The handle returns the count
/// at the moment the server's bytes were released, and whether the count released them.
fn holding_proxy(upstream: SocketAddr) -> (SocketAddr, JoinHandle<(Counted, bool)>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
    let addr = listener.local_addr().expect("addr");
    let handle = thread::spawn(move || {
        let (client, _) = listener.accept().expect("accept");
        let server = TcpStream::connect(upstream).expect("connect upstream");
        let (tx, rx) = mpsc::channel::<Counted>();
        let (mut from_client, mut to_server) =
            (client.try_clone().unwrap(), server.try_clone().unwrap());
        let up = thread::spawn(move || {
            let mut frames = Frames::new(true);
            let mut counted = Counted::default();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match from_client.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                for (k, flags) in frames.push(&buf[..n]) {
                    match k {
                        kind::OFFER => {
                            counted.offers += 1;
                            if flags.is_some_and(|f| f & offer_flag::EARLY != 0) {
                                counted.early_offers += 1;
                            }
                        }
                        kind::END => counted.ends += 1,
                        _ => {}
                    }
                }
                let _ = tx.send(counted);
                if to_server.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = to_server.shutdown(Shutdown::Write);
        });
        let (mut from_server, mut to_client) =
            (server.try_clone().unwrap(), client.try_clone().unwrap());
        let mut frames = Frames::new(false);
        let mut buf = vec![0u8; 64 * 1024];
        let mut held = Vec::new();
        let mut holding = false;
        let mut seen = Counted::default();
        let mut released_by_count = false;
        // Until the first ACCEPT: forward whole frames; from then on, hold.
        while !holding {
            let n = match from_server.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            // Byte by byte: only the first few frames pass here.
            let mut cut = n;
            for (i, b) in buf[..n].iter().enumerate() {
                let done = frames.push(std::slice::from_ref(b));
                if done.iter().any(|&(k, _)| k == kind::ACCEPT) {
                    holding = true;
                    cut = i + 1;
                    break;
                }
            }
            to_client.write_all(&buf[..cut]).expect("to client");
            held.extend_from_slice(&buf[cut..n]);
        }
        // Hold the server's bytes (reading them, so it never blocks) until the count.
        from_server
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let deadline = Instant::now() + HOLD_AT_MOST;
        while Instant::now() < deadline {
            while let Ok(c) = rx.try_recv() {
                seen = c;
            }
            if seen.ends >= FILES {
                released_by_count = true;
                break;
            }
            match from_server.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => held.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
        from_server.set_read_timeout(None).unwrap();
        to_client.write_all(&held).expect("release");
        loop {
            match from_server.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to_client.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to_client.shutdown(Shutdown::Write);
        let _ = up.join();
        (seen, released_by_count)
    });
    (addr, handle)
}

#[test]
fn a_tree_of_small_files_streams_before_any_accept_and_arrives_whole() {
    let server = TestServer::start(Overwrite::Refuse);
    let local = tempfile::tempdir().unwrap();
    let root = local.path().join("tree");
    for i in 0..FILES {
        write(
            &root.join(format!("d{}/f{i:03}", i % 5)),
            &data(SIZE, i as u32),
        );
    }
    let (proxy, counted) = holding_proxy(server.addr());

    let outcome = upload::send(
        &Target::from(proxy),
        common::sources(&[&root]),
        &common::opts(),
        &mut (),
    );

    let (seen, released_by_count) = counted.join().unwrap();
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    assert!(
        released_by_count,
        "the client stopped before sending every body: {seen:?}"
    );
    assert_eq!(seen.ends, FILES, "{seen:?}");
    // The first file is the probe, offered plainly; every other went early.
    assert_eq!(seen.early_offers, FILES - 1, "{seen:?}");
    assert_eq!(
        outcome.exit_code(),
        ferry_client::exit::OK,
        "{:?}",
        outcome.files
    );
    let stored = outcome
        .files
        .iter()
        .filter(|f| f.kind == EntryKind::File && f.status == Status::Code(Code::Stored))
        .count();
    assert_eq!(stored, FILES);
    let folders = outcome.files.len() - FILES;
    assert_eq!(folders, 6, "tree and its 5 folders");
    for i in 0..FILES {
        let name = format!("tree/d{}/f{i:03}", i % 5);
        assert!(
            std::fs::read(server.path(&name)).unwrap() == data(SIZE, i as u32),
            "{name}"
        );
    }
}

/// A second run over the same tree moves no body: the probe is refused Unchanged, so nothing
/// goes early (PROTOCOL.md §4.8, §4.14).
#[test]
fn a_rerun_sends_no_early_body() {
    let server = TestServer::start(Overwrite::Refuse);
    let local = tempfile::tempdir().unwrap();
    let root = local.path().join("tree");
    for i in 0..50 {
        write(&root.join(format!("f{i:02}")), &data(1000, i));
    }
    let first = common::send(&server.target(), &[&root]);
    assert!(first.error.is_none(), "{:?}", first.error);
    let again = common::send(&server.target(), &[&root]);
    assert!(again.error.is_none(), "{:?}", again.error);
    let unchanged = again
        .files
        .iter()
        .filter(|f| f.status == Status::Code(Code::Unchanged))
        .count();
    assert_eq!(unchanged, 51, "50 files and their folder");
    assert_eq!(again.files.iter().map(|f| f.bytes).sum::<u64>(), 0);
}
