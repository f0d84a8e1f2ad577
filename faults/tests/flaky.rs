//! Scenario 4: a flaky link. A [`FlakyProxy`] between `ferry` and `ferry-server` splits the
//! byte stream into random pieces, delays some of them, and cuts connections at random points
//! in either direction (mid-body, mid-frame, or losing an ACCEPT or a RESULT). `ferry send
//! --retries N` reconnects and resumes; every file must arrive intact, with nothing else left
//! in the storage folder. The seed is printed (`FERRY_FAULTS_SEED=N` replays a run).

use std::io::Write;
use std::path::PathBuf;

use ferry_faults::proxy::{Flakiness, FlakyProxy};
use ferry_faults::{
    assert_no_leftovers, assert_same, data, ferry, json_str, json_u64, tree, write, ClientRun, Rng,
    ServerProc,
};

/// The files of one round: sizes that span several DATA frames, one, a few bytes and none.
const SIZES: &[(&str, usize)] = &[
    ("a.bin", (1 << 20) + 3),
    ("b.bin", 700_001),
    ("c.bin", 300 * 1024),
    ("d.txt", 10 * 1024),
    ("e.txt", 1),
    ("empty", 0),
];
/// Client-to-server cuts fall below this: a whole upload of [`SIZES`] puts about 2.07 MB on
/// the wire, so the first connection (always cut) is really cut. Server-to-client cuts fall
/// within the first 300 bytes: WELCOME and six ACCEPTs alone are 277. The first connection
/// is cut only once WELCOME went through (see [`Flakiness::first_min`]).
const TOTAL: u64 = 1_900_000;

/// Prints `WHAT seed: N` to stdout and stderr, with how to replay it.
fn announce(what: &str, seed: u64) {
    let line = format!("{what} seed: {seed} (replay with FERRY_FAULTS_SEED={seed})");
    println!("{line}");
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Runs `ferry COMMAND --json --timeout 20 --retries 12 PROXY OPERANDS...` through a flaky
/// proxy before `server`; checks that it succeeded and that the link was cut at least once.
fn run_through_flaky_link(
    server: &ServerProc,
    how: Flakiness,
    command: &str,
    operands: &[&str],
) -> ClientRun {
    let seed = how.seed;
    let proxy = FlakyProxy::start(server.addr(), how);
    let target = proxy.target();
    let mut args = vec![
        command,
        "--json",
        "--timeout",
        "20",
        "--retries",
        "12",
        &target,
    ];
    args.extend_from_slice(operands);
    let run = ferry(&args);
    println!(
        "{} connection(s), {} cut; client: {}",
        proxy.connections(),
        proxy.cuts(),
        run.stdout.lines().last().unwrap_or("")
    );
    assert_eq!(run.code(), Some(0), "seed {seed}: {run}\n{}", server.log());
    assert!(proxy.cuts() >= 1, "the link was cut at least once");
    run
}

/// The names of [`SIZES`], sorted as [`tree`] lists them.
fn sorted_names() -> Vec<String> {
    let mut want: Vec<String> = SIZES.iter().map(|(n, _)| (*n).to_owned()).collect();
    want.sort();
    want
}

/// One upload of every file through a flaky proxy, with `--retries`.
fn round(seed: u64) {
    announce("flaky link", seed);
    let tmp = tempfile::tempdir().expect("temp dir");
    let src = tmp.path().join("src");
    let store = tmp.path().join("store");
    let mut paths: Vec<PathBuf> = Vec::new();
    let mut rng = Rng::new(seed);
    for (name, size) in SIZES {
        let p = src.join(name);
        write(&p, &data(*size, rng.next_u64()));
        paths.push(p);
    }
    let server = ServerProc::start(&store, &[]);
    let operands: Vec<&str> = paths.iter().map(|p| p.to_str().expect("UTF-8")).collect();
    let run = run_through_flaky_link(
        &server,
        Flakiness {
            seed,
            max_cuts: 4,
            // The first connections are all cut; their cut point may lie past their end.
            cut_percent: 100,
            down_percent: 30,
            cut_after: (0, TOTAL),
            cut_after_down: (0, 300),
            // The first connection is cut only once WELCOME (7 bytes) reached the client.
            first_min: 7,
            delay_percent: 20,
            max_delay_ms: 3,
            max_piece: 32 * 1024,
        },
        "send",
        &operands,
    );
    for (p, (name, _)) in paths.iter().zip(SIZES) {
        let line = run.file(name);
        assert_eq!(
            json_str(line, "status").as_deref(),
            Some("stored"),
            "seed {seed}: {run}"
        );
        assert!(json_u64(line, "offset").is_some());
        assert_same(&store.join(name), &std::fs::read(p).expect("source"));
    }
    let names: Vec<String> = tree(&store).into_keys().collect();
    assert_eq!(names, sorted_names(), "seed {seed}");
    assert_no_leftovers(&store);
}

#[test]
fn a_flaky_link_with_retries_gets_every_file_across_intact() {
    round(Rng::seed_from_env(1));
}

#[test]
fn a_flaky_link_with_retries_another_seed() {
    round(Rng::seed_from_env(2));
}

#[test]
fn a_flaky_link_with_retries_a_third_seed() {
    round(Rng::seed_from_env(3));
}

/// Client-to-server bytes of a download of [`SIZES`] (HELLO, GETs, ACCEPTs, RESULTs): about
/// 530; cuts of that direction fall below 400.
const DOWNLOAD_UP: u64 = 400;

/// One download of every file through a flaky proxy, with `--retries`: the body now flows
/// from the server, so most cuts are on that side.
fn download_round(seed: u64) {
    announce("flaky download", seed);
    let tmp = tempfile::tempdir().expect("temp dir");
    let store = tmp.path().join("store");
    let out = tmp.path().join("out");
    let mut rng = Rng::new(seed);
    let mut contents = Vec::new();
    for (name, size) in SIZES {
        let content = data(*size, rng.next_u64());
        write(&store.join(name), &content);
        contents.push(content);
    }
    let server = ServerProc::start(&store, &[]);
    let mut operands: Vec<&str> = SIZES.iter().map(|(n, _)| *n).collect();
    operands.extend(["-o", out.to_str().expect("UTF-8")]);
    let run = run_through_flaky_link(
        &server,
        Flakiness {
            seed,
            max_cuts: 3,
            cut_percent: 100,
            down_percent: 70,
            cut_after: (0, DOWNLOAD_UP),
            cut_after_down: (0, TOTAL),
            first_min: 7,
            delay_percent: 20,
            max_delay_ms: 3,
            max_piece: 32 * 1024,
        },
        "get",
        &operands,
    );
    for (content, (name, _)) in contents.iter().zip(SIZES) {
        let line = run.file(name);
        assert_eq!(
            json_str(line, "status").as_deref(),
            Some("stored"),
            "seed {seed}: {run}"
        );
        assert_same(&out.join(name), content);
        assert_same(&store.join(name), content);
    }
    let names: Vec<String> = tree(&out).into_keys().collect();
    assert_eq!(names, sorted_names(), "no partial left behind; seed {seed}");
}

#[test]
fn a_flaky_link_with_retries_gets_every_download_across_intact() {
    download_round(Rng::seed_from_env(4));
}
