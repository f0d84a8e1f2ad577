//! The command line: `listening` once it accepts, usage errors with status 2.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// The proxy binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_ferry-delay-proxy");

/// A child process killed (by its PID) and reaped when the test ends, also on panic.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn it_prints_listening_once_it_accepts() {
    // Port 0: a free port; the line is what bench/run.sh's log shows.
    let mut proxy = Running(
        Command::new(BIN)
            .args(["0", "9", "10", "1000"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(proxy.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "listening\n");
}

#[test]
fn a_bad_command_line_is_a_usage_error() {
    for args in [
        &[][..],
        &["1", "2", "10"],
        &["1", "2", "10", "0"],
        &["70000", "2", "10", "1000"],
        &["1", "2", "-1", "1000"],
        &["1", "2", "3600001", "1000"],
    ] {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("usage: ferry-delay-proxy"));
    }
}
