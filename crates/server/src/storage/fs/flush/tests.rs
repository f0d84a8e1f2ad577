use super::*;
use std::io::ErrorKind;
use std::net::TcpStream;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Condvar};
use std::thread;
use std::time::Duration;

use ferry_proto::{Code, Connection, Driver, Event, FileInfo, Hasher, Name, Step};

use crate::storage::fs::Store;
use crate::{Config, Server, ServerHandle};

/// An operation (and a [`Durability`]) that counts its runs and blocks each until the test
/// lets it through: one run per [`Gate::release`], every run once [`Gate::open`].
#[derive(Default, Debug)]
struct Gate {
    runs: AtomicUsize,
    /// Files and folders handed to flushes item by item.
    items: AtomicUsize,
    /// Runs entered; runs that may still pass.
    state: Mutex<(usize, usize)>,
    changed: Condvar,
}

impl Gate {
    fn run(&self) -> io::Result<()> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        let mut s = self.state.lock().unwrap();
        s.0 += 1;
        self.changed.notify_all();
        let (mut s, _) = self
            .changed
            .wait_timeout_while(s, Duration::from_secs(10), |s| s.1 == 0)
            .unwrap();
        if s.1 > 0 {
            s.1 -= 1;
            Ok(())
        } else {
            Err(io::Error::other("the gate never opened"))
        }
    }

    fn wait_entered(&self, n: usize) {
        let s = self.state.lock().unwrap();
        let (s, _) = self
            .changed
            .wait_timeout_while(s, Duration::from_secs(10), |s| s.0 < n)
            .unwrap();
        assert!(s.0 >= n, "the flush never started");
    }

    fn open(&self) {
        self.state.lock().unwrap().1 = usize::MAX;
        self.changed.notify_all();
    }

    /// Lets one more run through.
    fn release(&self) {
        self.state.lock().unwrap().1 += 1;
        self.changed.notify_all();
    }
}

impl Durability for Gate {
    fn flush(&self, what: &Flush) -> io::Result<()> {
        if let Flush::Items(items) = what {
            // What the server's own flusher would have flushed one by one.
            self.items.fetch_add(items.len(), Ordering::SeqCst);
        }
        self.run()
    }
}

/// The next event on a client connection (a body step is a failure here).
fn event(d: &mut Driver<TcpStream>) -> Event {
    match d.next_step().unwrap() {
        Step::Event(e) => e,
        other => panic!("unexpected {other:?}"),
    }
}

/// A durable server on a fresh folder whose flushes go through `durability`; its folder.
fn server_with(durability: Arc<dyn Durability>) -> (ServerHandle, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        dir: tmp.path().join("store"),
        fsync: true,
        ..Config::default()
    };
    let mut store = Store::open(&config).unwrap();
    store.set_durability(durability);
    let server = Server::with_storage(config, Arc::new(store)).unwrap();
    (server.spawn().unwrap(), tmp)
}

/// A client connection to `server`, welcomed.
fn connect(server: &ServerHandle) -> Driver<TcpStream> {
    let s = TcpStream::connect(server.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut d = Driver::new(s, Connection::client(None).unwrap());
    assert!(matches!(event(&mut d), Event::Welcome { .. }));
    d
}

/// Offers `d/f{i}` for each `i` in `files`, waits for every ACCEPT, then sends the bodies
/// (`body` each) in one write; their ids.
fn send(d: &mut Driver<TcpStream>, files: std::ops::Range<usize>, body: &[u8]) -> Vec<u64> {
    let ids: Vec<_> = files
        .map(|i| {
            let info = FileInfo {
                name: Name::parse(&format!("d/f{i}")).unwrap(),
                size: Some(body.len() as u64),
                mtime: None,
                mode: None,
            };
            d.conn_mut().offer(info).unwrap()
        })
        .collect();
    d.flush().unwrap();
    for id in &ids {
        match event(d) {
            Event::Accepted { id: a, .. } => assert_eq!(a, *id),
            other => panic!("expected ACCEPT, got {other:?}"),
        }
    }
    for id in &ids {
        d.conn_mut().begin(*id, Hasher::new()).unwrap();
        d.send_body(body).unwrap();
        d.conn_mut().end().unwrap();
    }
    d.flush().unwrap();
    ids
}

/// Checks that no reply has arrived on `d` (none buffered, none on the socket).
fn assert_no_reply(d: &Driver<TcpStream>, when: &str) {
    assert!(!d.input_pending(), "a reply arrived {when}");
    d.stream().set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let early = d.stream().peek(&mut byte);
    d.stream().set_nonblocking(false).unwrap();
    assert!(
        matches!(&early, Err(e) if e.kind() == ErrorKind::WouldBlock),
        "a reply arrived {when}: {early:?}"
    );
}

/// The next events on `d` are RESULTs of `ids`, in that order, with `code`; their details.
fn expect_results(d: &mut Driver<TcpStream>, ids: &[u64], code: Code) -> Vec<String> {
    ids.iter()
        .map(|id| match event(d) {
            Event::Result {
                id: r,
                code: c,
                detail,
            } => {
                assert_eq!((r, c), (*id, code), "{detail}");
                detail
            }
            other => panic!("expected RESULT, got {other:?}"),
        })
        .collect()
}

#[test]
fn results_leave_only_after_the_flush_of_their_batch() {
    const FILES: usize = 3;
    let gate = Arc::new(Gate::default());
    let (server, _tmp) = server_with(Arc::clone(&gate) as Arc<dyn Durability>);
    let root = server.dir().to_path_buf();
    let mut d = connect(&server);
    let body = vec![7u8; 4096];
    // The bodies go out in one write: the server has them all at hand.
    let ids = send(&mut d, 0..FILES, &body);

    // The server published what it had, then began the flush, which the gate holds.
    gate.wait_entered(1);
    assert!(root.join("d/f0").is_file(), "published before the flush");
    assert_no_reply(&d, "before the flush");

    gate.open();
    expect_results(&mut d, &ids, Code::Stored);
    let flushes = gate.runs.load(Ordering::SeqCst);
    assert!((1..=FILES).contains(&flushes), "{flushes} flushes");
    assert_eq!(
        gate.items.load(Ordering::SeqCst),
        FILES,
        "each file tracked once"
    );
    for i in 0..FILES {
        assert_eq!(std::fs::read(root.join(format!("d/f{i}"))).unwrap(), body);
    }
    drop(d);
    server.shutdown().unwrap();
}

#[test]
fn a_request_made_during_a_flush_waits_for_a_flush_of_its_own() {
    let gate = Arc::new(Gate::default());
    let g = Arc::clone(&gate);
    let shared = Arc::new(Coalesced::new(move || g.run()));
    let first = {
        let c = Arc::clone(&shared);
        thread::spawn(move || c.flush())
    };
    gate.wait_entered(1);
    // Published after the first run started: that run does not cover it.
    let second = {
        let c = Arc::clone(&shared);
        thread::spawn(move || c.flush())
    };
    while shared.issued.load(Ordering::SeqCst) < 2 {
        thread::yield_now();
    }
    gate.open();
    first.join().unwrap().unwrap();
    second.join().unwrap().unwrap();
    assert_eq!(gate.runs.load(Ordering::SeqCst), 2);
    // Requests that queue behind one run share the next.
    let callers: Vec<_> = (0..8)
        .map(|_| {
            let c = Arc::clone(&shared);
            thread::spawn(move || c.flush())
        })
        .collect();
    for c in callers {
        c.join().unwrap().unwrap();
    }
    let runs = gate.runs.load(Ordering::SeqCst);
    assert!((3..=10).contains(&runs), "{runs} runs");
}

#[test]
fn a_failed_flush_fails_every_request_it_covered() {
    let fail = Arc::new(AtomicUsize::new(1));
    let f = Arc::clone(&fail);
    let c = Coalesced::new(move || {
        if f.load(Ordering::SeqCst) == 1 {
            Err(io::Error::other("EIO from the disk"))
        } else {
            Ok(())
        }
    });
    let e = c.flush().unwrap_err();
    assert!(e.to_string().contains("EIO"), "{e}");
    fail.store(0, Ordering::SeqCst);
    c.flush().unwrap();
    // A ticket the failed run covered still learns of it when it asks late.
    assert!(c.runs.lock().unwrap().failed.is_some());
}

/// Waits (at most 10 s) until `path` is a file.
fn wait_published(path: &std::path::Path) {
    for _ in 0..1000 {
        if path.is_file() {
            return;
        }
        thread::sleep(Duration::from_millis(10));
    }
    panic!("{} was never published", path.display());
}

#[test]
fn the_next_batch_is_received_while_one_flushes_and_results_keep_their_order() {
    let gate = Arc::new(Gate::default());
    let (server, _tmp) = server_with(Arc::clone(&gate) as Arc<dyn Durability>);
    let root = server.dir().to_path_buf();
    let mut d = connect(&server);
    let body = vec![3u8; 4096];

    // Batch 1: one file, whose flush the gate holds.
    let first = send(&mut d, 0..1, &body);
    gate.wait_entered(1);
    // Batch 2 is accepted, received and published while that flush runs.
    let rest = send(&mut d, 1..4, &body);
    for i in 1..4 {
        wait_published(&root.join(format!("d/f{i}")));
    }
    assert_no_reply(&d, "before the first flush returned");
    assert_eq!(gate.runs.load(Ordering::SeqCst), 1, "one flush at a time");

    // The first flush returns: its RESULT goes out; batch 2's flush starts.
    gate.release();
    expect_results(&mut d, &first, Code::Stored);
    gate.wait_entered(2);
    assert_no_reply(&d, "before the second flush returned");
    assert_eq!(
        gate.items.load(Ordering::SeqCst),
        4,
        "each file in one flush"
    );

    gate.open();
    expect_results(&mut d, &rest, Code::Stored);
    drop(d);
    server.shutdown().unwrap();
}

/// A [`Durability`] whose first flush fails.
#[derive(Debug, Default)]
struct FailsOnce {
    runs: AtomicUsize,
}

impl Durability for FailsOnce {
    fn flush(&self, _: &Flush) -> io::Result<()> {
        match self.runs.fetch_add(1, Ordering::SeqCst) {
            0 => Err(io::Error::other("EIO from the disk")),
            _ => Ok(()),
        }
    }
}

#[test]
fn a_failed_flush_reports_its_batch_as_not_durable() {
    let durability = Arc::new(FailsOnce::default());
    let (server, _tmp) = server_with(Arc::clone(&durability) as Arc<dyn Durability>);
    let mut d = connect(&server);
    let body = vec![5u8; 4096];
    let failed = send(&mut d, 0..1, &body);
    for why in expect_results(&mut d, &failed, Code::Io) {
        assert!(
            why.contains("could not flush it to disk (EIO from the disk)"),
            "{why}"
        );
    }
    // The next batch's flush succeeds.
    let stored = send(&mut d, 1..2, &body);
    expect_results(&mut d, &stored, Code::Stored);
    assert_eq!(durability.runs.load(Ordering::SeqCst), 2);
    drop(d);
    server.shutdown().unwrap();
}

#[test]
fn write_behind_flushes_past_each_step_and_bounds_what_it_has_not_covered() {
    let file = tempfile::tempfile().unwrap();
    let mut behind = WriteBehind::new(0);
    behind.wrote(&file, WRITE_BEHIND - 1);
    assert!(behind.kick.is_none(), "a small file never starts a thread");
    behind.wrote(&file, WRITE_BEHIND);
    assert!(behind.kick.is_some() && !behind.off, "{behind:?}");
    // Past MAX_UNFLUSHED the writer waits until the thread takes the kick.
    behind.wrote(&file, MAX_UNFLUSHED + WRITE_BEHIND);
    assert_eq!(behind.from, MAX_UNFLUSHED + WRITE_BEHIND);

    // A resumed file counts from where it resumed.
    let mut resumed = WriteBehind::new(10 * WRITE_BEHIND);
    resumed.wrote(&file, 11 * WRITE_BEHIND - 1);
    assert!(resumed.kick.is_none());
}
