//! A server crash under load: eight `ferry send --retries` clients upload through a slow link
//! (a [`FlakyProxy`] that only delays), the server is SIGKILLed once files are being stored,
//! and a new server starts on the same port and folder. Every client must finish with every
//! file stored (resumed from the kept partials, or confirmed when the crash ate a RESULT),
//! byte-identical, and nothing else left in the folder.

use std::io::Write;
use std::path::PathBuf;
use std::thread;

use ferry_faults::proxy::{Flakiness, FlakyProxy};
use ferry_faults::{
    assert_no_leftovers, assert_same, data, ferry, json_str, tree, wait_until, write, Rng,
    ServerProc,
};

const CLIENTS: usize = 8;
const FILES: usize = 4;

#[test]
fn a_server_crash_under_load_loses_nothing_with_retries() {
    let seed = Rng::seed_from_env(6);
    let line = format!("crash seed: {seed} (replay with FERRY_FAULTS_SEED={seed})");
    println!("{line}");
    let _ = writeln!(std::io::stderr(), "{line}");
    let mut rng = Rng::new(seed);
    let tmp = tempfile::tempdir().expect("temp dir");
    let store = tmp.path().join("store");
    let mut expected: Vec<(String, PathBuf)> = Vec::new();
    for c in 0..CLIENTS {
        for f in 0..FILES {
            // Mostly over 1 MiB (kept for resume), some small (sent again whole).
            let size = if f == 0 {
                rng.range(1, 64 * 1024)
            } else {
                rng.range(1 << 20, 3 << 19)
            };
            let name = format!("c{c}/f{f}.bin");
            let path = tmp.path().join("src").join(&name);
            write(&path, &data(size as usize, rng.next_u64()));
            expected.push((name, path));
        }
    }
    let server = ServerProc::start(&store, &[]);
    let addr = server.addr();
    let proxy = FlakyProxy::start(
        addr,
        Flakiness {
            seed,
            max_cuts: 0,
            cut_percent: 0,
            down_percent: 0,
            cut_after: (0, 0),
            cut_after_down: (0, 0),
            first_min: 0,
            delay_percent: 50,
            max_delay_ms: 4,
            max_piece: 16 * 1024,
        },
    );
    let target = proxy.target();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let folder = tmp.path().join("src").join(format!("c{c}"));
            let target = target.clone();
            thread::spawn(move || {
                ferry(&[
                    "send",
                    "--json",
                    "--timeout",
                    "20",
                    "--retries",
                    "10",
                    &target,
                    folder.to_str().expect("UTF-8"),
                ])
            })
        })
        .collect();
    // Crash once some files are stored and others are on their way (how many: seeded).
    let stored_first = rng.range(CLIENTS as u64, 3 * CLIENTS as u64) as usize;
    wait_until(&format!("{stored_first} files stored"), || {
        tree(&store)
            .keys()
            .filter(|k| !k.contains(".ferry-"))
            .count()
            >= stored_first
    });
    let before = tree(&store);
    server.kill();
    println!("crashed with {} entries on disk: {before:?}", before.len());
    let server = ServerProc::start_on(&store, addr, &[]);

    for (c, h) in clients.into_iter().enumerate() {
        let run = h.join().expect("client thread");
        assert_eq!(run.code(), Some(0), "client {c}: {run}\n{}", server.log());
        for line in run.files() {
            assert_eq!(json_str(line, "status").as_deref(), Some("stored"), "{run}");
        }
    }
    let got: Vec<String> = tree(&store).into_keys().collect();
    let mut want: Vec<String> = expected.iter().map(|(n, _)| n.clone()).collect();
    want.sort();
    assert_eq!(got, want);
    for (name, path) in &expected {
        assert_same(&store.join(name), &std::fs::read(path).expect("source"));
    }
    assert_no_leftovers(&store);
}
