use super::*;
use std::io::ErrorKind;
use std::net::TcpStream;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Condvar};
use std::thread;
use std::time::Duration;

use ferry_proto::{Code, Connection, Driver, Event, FileInfo, Hasher, Name, Step};

use crate::storage::fs::Store;
use crate::{Config, Server};

/// An operation (and a [`Durability`]) that counts its runs and blocks each until the test
/// opens the gate.
#[derive(Default, Debug)]
struct Gate {
    runs: AtomicUsize,
    /// Files and folders handed to flushes item by item.
    items: AtomicUsize,
    state: Mutex<(usize, bool)>,
    changed: Condvar,
}

impl Gate {
    fn run(&self) -> io::Result<()> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        let mut s = self.state.lock().unwrap();
        s.0 += 1;
        self.changed.notify_all();
        let (s, _) = self
            .changed
            .wait_timeout_while(s, Duration::from_secs(10), |s| !s.1)
            .unwrap();
        if s.1 {
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
        self.state.lock().unwrap().1 = true;
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

#[test]
fn results_leave_only_after_the_flush_of_their_batch() {
    const FILES: usize = 3;
    let tmp = tempfile::tempdir().unwrap();
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        dir: tmp.path().join("store"),
        fsync: true,
        ..Config::default()
    };
    let gate = Arc::new(Gate::default());
    let mut store = Store::open(&config).unwrap();
    store.set_durability(Arc::clone(&gate) as Arc<dyn Durability>);
    let server = Server::with_storage(config, Arc::new(store)).unwrap();
    let server = server.spawn().unwrap();
    let root = server.dir().to_path_buf();

    let s = TcpStream::connect(server.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut d = Driver::new(s, Connection::client(None).unwrap());
    assert!(matches!(event(&mut d), Event::Welcome { .. }));
    let body = vec![7u8; 4096];
    let ids: Vec<_> = (0..FILES)
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
    for id in &ids {
        match event(&mut d) {
            Event::Accepted { id: a, .. } => assert_eq!(a, *id),
            other => panic!("expected ACCEPT, got {other:?}"),
        }
    }
    // The bodies go out in one write: the server has them all at hand.
    for id in &ids {
        d.conn_mut().begin(*id, Hasher::new()).unwrap();
        d.send_body(&body).unwrap();
        d.conn_mut().end().unwrap();
    }
    d.flush().unwrap();

    // The server published what it had, then began the flush, which the gate holds.
    gate.wait_entered(1);
    assert!(root.join("d/f0").is_file(), "published before the flush");
    assert!(!d.input_pending());
    d.stream().set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let early = d.stream().peek(&mut byte);
    assert!(
        matches!(&early, Err(e) if e.kind() == ErrorKind::WouldBlock),
        "a reply left before the flush: {early:?}"
    );
    d.stream().set_nonblocking(false).unwrap();

    gate.open();
    for id in &ids {
        match event(&mut d) {
            Event::Result { id: r, code, .. } => {
                assert_eq!((r, code), (*id, Code::Stored));
            }
            other => panic!("expected RESULT, got {other:?}"),
        }
    }
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
