use super::*;
use crate::locks::NameLocks;
use crate::slots::Activity;
use crate::storage::FileMeta;
use crate::Config;

/// Where the jobs of a test go (never touched: the tests' runners do not store).
fn store() -> (tempfile::TempDir, Arc<dyn Storage>) {
    let tmp = tempfile::tempdir().unwrap();
    let config = Config {
        dir: tmp.path().join("store"),
        ..Config::default()
    };
    let store = crate::storage::open(&config).unwrap();
    (tmp, store)
}

/// A job for `f{id}` with `len` bytes into `store`, and its ticket.
fn job(store: &Arc<dyn Storage>, locks: &Arc<NameLocks>, id: u64, len: usize) -> (Job, Ticket) {
    named(store, locks, id, &format!("f{id}"), len)
}

/// A job for `name` (id `id`) with `len` bytes into `store`, and its ticket.
fn named(
    store: &Arc<dyn Storage>,
    locks: &Arc<NameLocks>,
    id: u64,
    name: &str,
    len: usize,
) -> (Job, Ticket) {
    let name = Name::parse(name).unwrap();
    let meta = FileMeta {
        size: Some(len as u64),
        mtime: None,
        mode: None,
    };
    let lock = locks.try_lock(name.as_str(), &Activity::new()).unwrap();
    let bytes = vec![0; len];
    let digest = Digest::of(&bytes);
    let ticket = Ticket {
        id,
        name: name.clone(),
        size: len as u64,
        from: 0,
        check: BodyCheck::Unverified(digest),
        started: Instant::now(),
    };
    let upload = Upload::new(name, meta, None);
    let job = Job {
        store: Arc::clone(store),
        upload,
        lock,
        bytes,
        digest,
        track: false,
    };
    (job, ticket)
}

/// A storer holding at most `caps` whose runner "stores" each job as its own name, and
/// panics on the name `f{panic_at}`.
fn counting(caps: (usize, usize), panic_at: u64) -> Storer {
    let run: Runner = Arc::new(move |job: Job| {
        assert_ne!(job.upload.name.as_str(), format!("f{panic_at}"), "a bug");
        (Ok((job.upload.name.to_string(), None)), job.bytes)
    });
    Storer::with_runner(
        run,
        Arc::new(|_: &dyn Storage, _: &str| None),
        caps,
        "127.0.0.1:1".parse().unwrap(),
    )
}

/// The ids of the outcomes, in the order they came.
fn ids(done: &[Done]) -> Vec<u64> {
    done.iter().map(|d| d.ticket.id).collect()
}

#[test]
fn the_queue_holds_at_most_its_caps_and_outcomes_keep_the_order() {
    let (_tmp, store) = store();
    let locks = Arc::new(NameLocks::default());
    let mut s = counting((4, 10 << 10), u64::MAX);
    let mut done = Vec::new();
    let mut most = 0;
    for id in 0..40 {
        // Jobs of 1..4 KiB: the byte cap binds before the job cap at times.
        let (j, t) = job(&store, &locks, id, 1024 * (1 + id as usize % 4));
        done.extend(s.submit(j, t));
        assert!(s.held.len() <= 4, "{} jobs held", s.held.len());
        assert!(s.bytes <= 10 << 10, "{} bytes held", s.bytes);
        most = most.max(s.held.len());
        if id % 7 == 0 {
            done.extend(s.next(false));
        }
    }
    while let Some(d) = s.next(true) {
        done.push(d);
    }
    assert!(s.is_empty());
    assert_eq!(ids(&done), (0..40).collect::<Vec<_>>());
    assert!(done.iter().all(|d| d.result.is_ok()));
    assert!(most >= 2, "jobs were queued");
    // Every name lock was let go of.
    assert!(locks.try_lock("f0", &Activity::new()).is_ok());
}

#[test]
fn a_job_larger_than_the_byte_cap_goes_alone() {
    let (_tmp, store) = store();
    let locks = Arc::new(NameLocks::default());
    let mut s = counting((4, 1024), u64::MAX);
    let (j, t) = job(&store, &locks, 1, 100);
    assert!(s.submit(j, t).is_empty());
    let (j, t) = job(&store, &locks, 2, 4096);
    // Waits for job 1 first.
    assert_eq!(ids(&s.submit(j, t)), [1]);
    assert_eq!(s.held.len(), 1);
    assert_eq!(s.next(true).map(|d| d.ticket.id), Some(2));
}

#[test]
fn a_panic_in_the_storer_fails_the_jobs_it_held_without_hanging() {
    let (_tmp, store) = store();
    let locks = Arc::new(NameLocks::default());
    let mut s = counting((8, 1 << 20), 3);
    let mut done = Vec::new();
    for id in 0..8 {
        let (j, t) = job(&store, &locks, id, 10);
        done.extend(s.submit(j, t));
    }
    while let Some(d) = s.next(true) {
        done.push(d);
    }
    // One more after the thread ended fails at once.
    let (j, t) = job(&store, &locks, 8, 10);
    done.extend(s.submit(j, t));
    assert_eq!(ids(&done), (0..9).collect::<Vec<_>>());
    for d in &done {
        let failed = d.ticket.id >= 3;
        assert_eq!(d.result.is_err(), failed, "#{}", d.ticket.id);
        if let Err(f) = &d.result {
            assert_eq!(f.code, Code::Io);
        }
    }
    // The panicking job's lock and the failed ones' were let go of.
    assert!(locks.try_lock("f3", &Activity::new()).is_ok());
    assert!(locks.try_lock("f7", &Activity::new()).is_ok());
}

#[test]
fn a_folder_waits_only_for_the_jobs_that_touch_it_and_those_before_them() {
    let (_tmp, store) = store();
    let locks = Arc::new(NameLocks::default());
    let mut s = counting((8, 1 << 20), u64::MAX);
    for (id, name) in ["a/x", "b/y", "a/sub/z", "c"].into_iter().enumerate() {
        let (j, t) = named(&store, &locks, id as u64, name, 10);
        assert!(s.submit(j, t).is_empty());
    }
    let through = |s: &Storer, n: &str| s.held_through(&Name::parse(n).unwrap());
    // The last job under `a` is the third: it and the two before it.
    assert_eq!(through(&s, "a"), 3);
    assert_eq!(through(&s, "a/sub"), 3);
    assert_eq!(through(&s, "b"), 2);
    // The name itself, and a folder under a file's name.
    assert_eq!(through(&s, "c"), 4);
    assert_eq!(through(&s, "c/d"), 4);
    // Nothing touches these: no wait.
    assert_eq!(through(&s, "e"), 0);
    assert_eq!(through(&s, "ab"), 0);
    while s.next(true).is_some() {}
    assert_eq!(through(&s, "a"), 0);
}

#[test]
fn names_going_into_the_folder_just_stored_into_are_looked_up_ahead() {
    let (_tmp, store) = store();
    let locks = Arc::new(NameLocks::default());
    let log = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let (open, gate) = mpsc::channel::<()>();
    let gate = std::sync::Mutex::new(gate);
    let stored = Arc::clone(&log);
    let run: Runner = Arc::new(move |job: Job| {
        let name = job.upload.name.to_string();
        if name == "a/1" {
            // Stored once every job is queued behind it.
            gate.lock().unwrap().recv().unwrap();
        }
        stored.lock().unwrap().push(format!("store {name}"));
        (Ok((name, None)), job.bytes)
    });
    /// Logs each name looked up in its folder.
    struct Logged(String, Arc<std::sync::Mutex<Vec<String>>>);
    impl Lookout for Logged {
        fn look(&self, leaf: &str) {
            let name = format!("look {}/{leaf}", self.0);
            self.1.lock().unwrap().push(name);
        }
    }
    let looked = Arc::clone(&log);
    let look: Looker = Arc::new(move |_: &dyn Storage, folder: &str| {
        looked.lock().unwrap().push(format!("open {folder}"));
        Some(Box::new(Logged(folder.to_owned(), Arc::clone(&looked))) as Box<dyn Lookout>)
    });
    let mut s = Storer::with_runner(run, look, (8, 1 << 20), "127.0.0.1:1".parse().unwrap());
    for (id, name) in ["a/1", "a/2", "a/3", "b/1", "b/2", "c"]
        .into_iter()
        .enumerate()
    {
        let (j, t) = named(&store, &locks, id as u64, name, 10);
        assert!(s.submit(j, t).is_empty());
    }
    open.send(()).unwrap();
    while s.next(true).is_some() {}
    // Each folder's names once a body is in it (so that it exists), never another's, each
    // name once, and before its own body; each folder opened once for its names.
    let expected = [
        "store a/1",
        "open a",
        "look a/2",
        "look a/3",
        "store a/2",
        "store a/3",
        "store b/1",
        "open b",
        "look b/2",
        "store b/2",
        "store c",
    ];
    assert_eq!(*log.lock().unwrap(), expected);
}

#[test]
fn body_buffers_come_back_to_be_used_again_within_the_byte_cap() {
    let (_tmp, store) = store();
    let locks = Arc::new(NameLocks::default());
    let mut s = counting((8, 10 << 10), u64::MAX);
    for id in 0..3 {
        let (mut j, t) = job(&store, &locks, id, 0);
        j.bytes = s.buffer(4 << 10);
        j.bytes.resize(4 << 10, 1);
        // The third waits for the first to be stored: 12 KiB would be over the cap.
        s.submit(j, t);
    }
    while s.next(true).is_some() {}
    // Two of the three fit in the 10 KiB cap; they come back empty, with their room.
    let again: Vec<Vec<u8>> = (0..3).map(|_| s.buffer(100)).collect();
    assert!(again.iter().all(Vec::is_empty));
    let kept = again.iter().filter(|b| b.capacity() >= 4 << 10).count();
    assert_eq!(kept, 2);
    assert!(again.iter().all(|b| b.capacity() >= 100));
}

#[test]
fn a_full_queue_takes_jobs_again_once_a_quarter_of_them_have_ended() {
    let (_tmp, store) = store();
    let locks = Arc::new(NameLocks::default());
    let (open, gate) = mpsc::channel::<()>();
    let gate = std::sync::Mutex::new(gate);
    let run: Runner = Arc::new(move |job: Job| {
        // Each job is stored once let through.
        gate.lock().unwrap().recv().unwrap();
        (Ok((job.upload.name.to_string(), None)), job.bytes)
    });
    let look: Looker = Arc::new(|_: &dyn Storage, _: &str| None);
    let mut s = Storer::with_runner(run, look, (8, 1 << 20), "127.0.0.1:1".parse().unwrap());
    for id in 0..8 {
        let (j, t) = job(&store, &locks, id, 10);
        assert!(s.submit(j, t).is_empty());
    }
    // The first job ends at once, the second well after: a queue that took a job again
    // as soon as one ended would hand back the first alone.
    let opener = thread::spawn(move || {
        open.send(()).unwrap();
        thread::sleep(std::time::Duration::from_millis(200));
        open.send(()).unwrap();
        open
    });
    let (j, t) = job(&store, &locks, 8, 10);
    assert_eq!(ids(&s.submit(j, t)), [0, 1]);
    let open = opener.join().unwrap();
    for _ in 2..9 {
        open.send(()).unwrap();
    }
    let rest: Vec<u64> = std::iter::from_fn(|| s.next(true).map(|d| d.ticket.id)).collect();
    assert_eq!(rest, (2..9).collect::<Vec<_>>());
}
