//! A client killed in the middle of a body (SIGKILL, or Ctrl-C: SIGINT) and run again at once
//! resumes where it stopped (PROTOCOL.md §7.2), as the client's own message promises ("run the
//! same command again to resume the rest"). The connection the client left may still be
//! winding down when the new offer comes: writing the body bytes that were on their way when
//! its peer went, or finishing a disk wait, before it lets go of the name. The offer waits for
//! that connection instead of answering `busy`. The server logs the cut (a close mid-body,
//! PROTOCOL.md §9) as the client going away, not as a protocol error.

mod common;
mod ops;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use ferry_proto::{Code, Event, Hasher, Step};
use ops::Bin;
use rustix::process::{kill_process, Pid, Signal};

/// The file the client process uploads, of [`BLOCKS`] MiB: large enough that it is still on
/// its way when the client is killed.
const NAME: &str = "big.bin";
const BLOCKS: usize = 192;
/// Bytes the server holds of the body before the client is killed.
const KILL_AT: u64 = 16 << 20;
/// Tells the client process where the server listens.
const ADDR_VAR: &str = "FERRY_TEST_INTERRUPTED_ADDR";

/// The client process the tests below start (this test binary, `--ignored --exact
/// client_process`) and kill: it uploads [`NAME`] to the server named by [`ADDR_VAR`], and
/// pauses halfway through the body, so that the signal lands mid-body however fast the
/// machine moves the rest.
#[test]
#[ignore = "the client process that the tests of this file start and kill"]
fn client_process() {
    let Ok(addr) = std::env::var(ADDR_VAR) else {
        return;
    };
    // SIGINT ends this process as it ends ferry (exit 130), also where it was started with
    // SIGINT ignored (a script's background job is, and its children inherit that).
    let interrupt = signal_hook::consts::SIGINT;
    signal_hook::flag::register_conditional_shutdown(interrupt, 130, Arc::new(true.into()))
        .unwrap();
    let body = body();
    let mut d = connect(addr.parse().unwrap());
    let id = d.conn_mut().offer(info(NAME, body.len() as u64)).unwrap();
    assert!(matches!(
        d.next_step().unwrap(),
        Step::Event(Event::Accepted { .. })
    ));
    d.conn_mut().begin(id, Hasher::new()).unwrap();
    let (first, rest) = body.split_at(body.len() / 2);
    d.send_body(first).unwrap();
    d.flush().unwrap();
    // The test's signal ends this wait.
    std::thread::sleep(Duration::from_secs(60));
    d.send_body(rest).unwrap();
    d.conn_mut().end().unwrap();
    d.flush().unwrap();
}

/// The bytes of [`NAME`]: a MiB of test bytes, repeated (made at once in a debug build).
fn body() -> Vec<u8> {
    data(1 << 20, 7).repeat(BLOCKS)
}

/// The bytes held in the partials under `partials`.
fn held(partials: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(partials) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// Starts the client process, kills it with `signal` while its body is on its way, sends the
/// same file at once and expects it resumed and stored.
fn rerun_at_once_after(signal: Signal) {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut srv = Bin::start(&["--dir".as_ref(), store.as_os_str()]);
    let body = body();
    let mut client = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "client_process"])
        .env(ADDR_VAR, srv.addr.to_string())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let partials = store.join(".ferry-state/partials");
    wait_for("the body to be on its way", || held(&partials) >= KILL_AT);
    kill_process(Pid::from_child(&client), signal).unwrap();
    let status = client.wait().unwrap();
    assert!(!status.success(), "the client was killed: {status}");

    let o = upload_once(srv.addr, NAME, &body);
    assert_eq!(o.code, Code::Stored, "{o:?}; server log: {:#?}", srv.log());
    let from = o.from.unwrap();
    assert!(from >= KILL_AT, "resumed where it stopped: {o:?}");
    assert!(std::fs::read(store.join(NAME)).unwrap() == body);
    assert_eq!(held(&partials), 0, "the partial was published");

    let line = srv.wait_line("went away mid-body");
    assert!(
        line.contains(&format!("{NAME} at ")) && line.ends_with("kept for resume"),
        "{line}"
    );
    let log = srv.log();
    assert!(
        !log.iter().any(|l| l.contains("protocol error")),
        "the cut is not a protocol error: {log:#?}"
    );
    srv.stop();
}

#[test]
fn a_client_killed_mid_body_and_run_again_at_once_resumes() {
    rerun_at_once_after(Signal::KILL);
}

#[test]
fn a_client_interrupted_mid_body_and_run_again_at_once_resumes() {
    rerun_at_once_after(Signal::INT);
}
