//! The `ferry-server` binary: help, exit codes, a graceful stop on SIGTERM, and TLS and token
//! settings from the command line.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Lines, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use ferry_proto::wire::{Frame, MAGIC, VERSION};

const BIN: &str = env!("CARGO_BIN_EXE_ferry-server");

#[test]
fn help_shows_examples_and_exit_codes() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in ["Examples:", "--overwrite", "--no-seed", "Exit status"] {
        assert!(text.contains(needle), "{needle} missing from --help");
    }
}

#[test]
fn help_shows_every_cap_and_timeout_with_its_default() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for (flag, default) in [
        ("--max-connections", "64"),
        ("--max-per-source", "8"),
        ("--stall-timeout", "60s"),
        ("--evict-after", "2s"),
        ("--takeover-after", "3s"),
        ("--max-refusal-logs", "16"),
    ] {
        let at = text.find(&format!("{flag} <")).expect(flag);
        let rest = &text[at..];
        let entry = &rest[..rest[2..].find("\n  --").map_or(rest.len(), |e| e + 2)];
        assert!(
            entry.contains(&format!("[default: {default}]")),
            "{flag}: {entry}"
        );
    }
}

#[test]
fn a_bad_command_line_exits_2_with_a_hint() {
    let out = Command::new(BIN)
        .args(["--max-file-size", "10X"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("10G"));
}

#[test]
fn a_timeout_of_zero_is_a_bad_command_line_naming_the_flag() {
    let out = Command::new(BIN)
        .args(["--stall-timeout", "0s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--stall-timeout") && err.contains("must be longer than zero"),
        "{err}"
    );
}

#[test]
fn an_address_in_use_exits_3() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg("--listen")
        .arg(taken.local_addr().unwrap().to_string())
        .arg("--dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen"));
}

/// Starts the binary with `args` and info logs into `dir/store`; returns it, its log lines
/// after the one announcing its address, and that address.
fn start_logged(dir: &Path, args: &[&str]) -> (Child, Lines<BufReader<ChildStderr>>, String) {
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .arg("--dir")
        .arg(dir.join("store"))
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = lines
        .by_ref()
        .map(Result::unwrap)
        .find_map(|l| {
            Some(
                l.split("listening on ")
                    .nth(1)?
                    .split(',')
                    .next()?
                    .to_owned(),
            )
        })
        .expect("the server announced its address");
    (child, lines, addr)
}

/// Sends SIGTERM to `child`.
fn sigterm(child: &Child) {
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
}

#[test]
fn sigterm_stops_the_server_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, lines, _) = start_logged(dir.path(), &[]);
    sigterm(&child);
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    assert!(child.wait().unwrap().success(), "{rest:?}");
    assert!(
        rest.iter().any(|l| l.contains("server stopped")),
        "{rest:?}"
    );
    assert!(dir.path().join("store").is_dir());
}

/// QA L6: a second SIGTERM, while a transfer in flight holds the graceful stop, stops the
/// server at once, and that is a stop on request too: exit 0 (README's table), not 1.
#[test]
fn a_second_signal_stops_at_once_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, mut lines, addr) = start_logged(dir.path(), &["--grace", "60s"]);
    // A seed upload in flight: the first signal waits --grace for it.
    let mut upload = TcpStream::connect(addr.as_str()).unwrap();
    upload.write_all(b"slow.bin\nthe first bytes").unwrap();
    sigterm(&child);
    lines
        .by_ref()
        .map(Result::unwrap)
        .find(|l| l.contains("stopping (send it again to stop at once)"))
        .expect("the first signal was taken");
    let second = Instant::now();
    sigterm(&child);
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{rest:?}");
    assert!(second.elapsed() < Duration::from_secs(30), "at once");
    assert!(
        rest.iter()
            .any(|l| l.contains("second signal: stopping now")),
        "{rest:?}"
    );
    drop(upload);
}

#[test]
fn the_descriptor_table_is_grown_before_the_first_connection() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let srv = Running::start(&["--dir".as_ref(), store.as_os_str()]);
    let proc_file = |f: &str| std::fs::read_to_string(format!("/proc/{}/{f}", srv.child.id()));
    let table: u64 = proc_file("status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("FDSize:"))
        .expect("an FDSize line")
        .trim()
        .parse()
        .unwrap();
    // "Max open files  SOFT  HARD  files"; the soft limit may be "unlimited".
    let limits = proc_file("limits").unwrap();
    let soft = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(u64::MAX);
    // Grown by then, a table is never doubled (with a wait for a grace period) while a
    // connection's threads share it.
    assert!(
        table >= soft.min(4096),
        "FDSize {table}, open files limit {soft}"
    );
    srv.stop();
}

// ----- TLS and tokens -------------------------------------------------------------------------

/// A token file with `mode`.
fn token_file(dir: &Path, mode: u32) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("token");
    std::fs::write(&path, "s3cret-token\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// A server started from the command line, its log lines, and its address.
struct Running {
    child: std::process::Child,
    lines: std::io::Lines<BufReader<std::process::ChildStderr>>,
    addr: SocketAddr,
    seen: Vec<String>,
}

impl Running {
    fn start(args: &[&std::ffi::OsStr]) -> Running {
        let mut child = Command::new(BIN)
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut seen = Vec::new();
        let addr = loop {
            let line = lines
                .next()
                .expect("the server announced its address")
                .unwrap();
            seen.push(line.clone());
            if let Some((_, rest)) = line.split_once("listening on ") {
                break rest.split(',').next().unwrap().parse().unwrap();
            }
        };
        Running {
            child,
            lines,
            addr,
            seen,
        }
    }

    /// Reads log lines until one contains `needle`; returns it.
    fn expect_line(&mut self, needle: &str) -> String {
        if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        for line in self.lines.by_ref() {
            let line = line.unwrap();
            self.seen.push(line.clone());
            if line.contains(needle) {
                return line;
            }
        }
        panic!("no log line with {needle:?} in {:?}", self.seen);
    }

    fn stop(mut self) {
        let killed = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let rest: Vec<String> = self.lines.map(Result::unwrap).collect();
        assert!(self.child.wait().unwrap().success(), "{rest:?}");
    }
}

#[test]
fn help_shows_a_tls_and_token_example() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--tls-self-signed --token-file",
        "--tls-cert cert.pem --tls-key key.pem",
        "--max-auth-failures",
        "--state-dir",
    ] {
        assert!(text.contains(needle), "{needle} missing from --help");
    }
}

#[test]
fn a_token_file_others_can_read_is_refused_with_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path(), 0o644);
    let out = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--dir"])
        .arg(dir.path().join("store"))
        .arg("--token-file")
        .arg(&token)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--token-file"), "{err}");
    assert!(err.contains("accessible by other users"), "{err}");
    assert!(err.contains("chmod 600"), "{err}");
    assert!(!err.contains("s3cret"), "the token is never printed: {err}");
    assert!(!dir.path().join("store").exists(), "nothing started");
}

#[test]
fn tls_without_a_certificate_source_or_key_is_a_usage_error() {
    let out = Command::new(BIN)
        .args(["--tls-cert", "cert.pem"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(BIN)
        .args([
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--tls-self-signed",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // And a token on the command line does not exist.
    let out = Command::new(BIN).args(["--token", "x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn with_a_token_the_seed_framing_is_refused_with_a_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path(), 0o600);
    let store = dir.path().join("store");
    let mut srv = Running::start(&[
        "--dir".as_ref(),
        store.as_os_str(),
        "--token-file".as_ref(),
        token.as_os_str(),
    ]);
    let mut s = TcpStream::connect(srv.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(b"report.pdf\nno token here");
    let _ = s.shutdown(std::net::Shutdown::Write);
    let _ = s.read_to_end(&mut Vec::new());
    let line = srv.expect_line("seed framing refused");
    assert!(line.contains("requires one"), "{line}");
    srv.stop();
    // Nothing but the server's own (empty) state folder.
    let names: Vec<_> = std::fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [".ferry-state"]);
}

#[test]
fn a_self_signed_server_logs_the_fingerprint_clients_pin() {
    use ferry_proto::{Code, Connection, Driver, Event, FileInfo, Hasher, Name, Step};
    use ferry_secure::{ClientTls, Fingerprint, Trust};

    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path(), 0o600);
    let store = dir.path().join("store");
    let state = dir.path().join("state");
    let mut srv = Running::start(&[
        "--dir".as_ref(),
        store.as_os_str(),
        "--tls-self-signed".as_ref(),
        "--state-dir".as_ref(),
        state.as_os_str(),
        "--token-file".as_ref(),
        token.as_os_str(),
    ]);
    srv.expect_line("generated a self-signed TLS certificate");
    let line = srv.expect_line("certificate fingerprint: SHA256:");
    let fp: Fingerprint = line
        .split_whitespace()
        .find(|w| w.starts_with("SHA256:"))
        .unwrap()
        .parse()
        .unwrap();
    assert!(state.join("cert.pem").exists());

    let tcp = TcpStream::connect(srv.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let tls = ClientTls::new(Trust::Pin(fp)).unwrap();
    let stream = ferry_secure::connect(&tls, "localhost", tcp).unwrap();
    let mut d = Driver::new(stream, Connection::client(Some(b"s3cret-token")).unwrap());
    let id = d
        .conn_mut()
        .offer(FileInfo {
            name: Name::parse("pinned.txt").unwrap(),
            size: Some(2),
            mtime: None,
            mode: None,
        })
        .unwrap();
    let code = loop {
        match d.next_step().unwrap() {
            Step::Event(Event::Welcome { .. }) => {}
            Step::Event(Event::Accepted { .. }) => {
                d.conn_mut().begin(id, Hasher::new()).unwrap();
                d.send_body(b"ok").unwrap();
                d.conn_mut().end().unwrap();
            }
            Step::Event(Event::Result { code, .. }) => break code,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(code, Code::Stored);
    let (mut stream, _) = d.into_parts();
    stream.shutdown_write().unwrap();
    let _ = stream.read_to_end(&mut Vec::new());
    srv.expect_line("stored pinned.txt");
    srv.stop();
    assert_eq!(std::fs::read(store.join("pinned.txt")).unwrap(), b"ok");
}

// ----- what one client can make the server log -----------------------------------------------

/// Kills the server when a test ends, however it ends.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// HELLO, then `offers` OFFERs of names full of control characters (refused as bad names).
fn hello_and_bad_offers(offers: u64) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    Frame::Hello {
        min: VERSION,
        max: VERSION,
        token: Vec::new(),
    }
    .encode(&mut out);
    for id in 1..=offers {
        common::file_offer(id, format!("{id}{}", "\u{1}\u{1b}[2J".repeat(40)), 1).encode(&mut out);
    }
    out
}

/// Sends `bytes` on a new connection, then reads what the server says until it closes (or
/// `patience` passes).
fn send_and_drain(addr: SocketAddr, bytes: &[u8], patience: Duration) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return;
    };
    s.set_read_timeout(Some(patience)).unwrap();
    s.set_write_timeout(Some(patience)).unwrap();
    let mut reader = s.try_clone().unwrap();
    let drain = thread::spawn(move || {
        let _ = reader.read_to_end(&mut Vec::new());
    });
    if s.write_all(bytes).is_ok() {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    drain.join().unwrap();
}

#[test]
fn refused_offers_with_control_character_names_make_a_small_log() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("server.log");
    let child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--dir"])
        .arg(dir.path().join("store"))
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let _server = Reaped(child);
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    common::wait_for("the server to listen", || log().contains("listening on "));
    let addr: SocketAddr = log()
        .split("listening on ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap()
        .parse()
        .unwrap();
    let wire = hello_and_bad_offers(2000);
    send_and_drain(addr, &wire, common::PATIENCE);
    common::wait_for("the connection's closing line", || {
        log().contains("connection closed")
    });
    let text = log();
    assert!(text.contains("log lines suppressed"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "a control character reached the log"
    );
    // Before: about ten bytes of log per byte on the wire.
    assert!(
        text.len() < 32 * 1024 && text.len() * 20 < wire.len(),
        "{} bytes of log for {} bytes on the wire",
        text.len(),
        wire.len()
    );
}

#[test]
fn a_stuck_stderr_stalls_neither_transfers_nor_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--max-per-source", "64", "--dir"])
        .arg(&store)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read up to the address, then never again: the pipe fills up and stays full.
    let mut stuck = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut server = Reaped(child);
    let addr: SocketAddr = stuck
        .by_ref()
        .map(Result::unwrap)
        .find_map(|l| {
            let rest = l.split_once("listening on ")?.1.to_owned();
            rest.split(',').next()?.parse().ok()
        })
        .expect("the server announced its address");
    // Refused offers from many connections, for a few seconds: far more lines than the
    // pipe and the log queue hold.
    let flood_until = Instant::now() + Duration::from_secs(3);
    let wire = Arc::new(hello_and_bad_offers(40));
    let flooders: Vec<_> = (0..4)
        .map(|_| {
            let wire = Arc::clone(&wire);
            thread::spawn(move || {
                while Instant::now() < flood_until {
                    send_and_drain(addr, &wire, Duration::from_secs(1));
                }
            })
        })
        .collect();
    for f in flooders {
        f.join().unwrap();
    }
    // A real upload is still served...
    let body = common::data(1 << 20, 7);
    let mut d = common::connect(addr);
    assert_eq!(
        common::upload(&mut d, "after.bin", &body).code,
        ferry_proto::Code::Stored
    );
    drop(d);
    // ... and SIGTERM still stops the server.
    let asked = Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(15),
            "still running 15 s after SIGTERM"
        );
        thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    assert_eq!(std::fs::read(store.join("after.bin")).unwrap(), body);
    drop(stuck);
}

#[test]
fn a_file_given_as_dir_is_not_a_folder_and_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    std::fs::write(&file, b"root:x:0:0\n").unwrap();
    for path in [file.clone(), file.join("inbox")] {
        let out = Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--dir"])
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{err}");
        assert!(err.contains("not a folder"), "{err}");
        assert!(!err.contains("os error"), "{err}");
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"root:x:0:0\n");
}

#[test]
fn fingerprint_prints_the_certificate_fingerprint_at_any_time() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let run = |args: &[&std::ffi::OsStr]| Command::new(BIN).args(args).output().unwrap();
    // Nothing generated yet: say so, generate nothing.
    let out = run(&[
        "fingerprint".as_ref(),
        "--state-dir".as_ref(),
        state.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no certificate"));
    assert!(!state.exists());

    let tls = ferry_secure::ServerTls::self_signed(&state).unwrap();
    let want = format!("{}\n", tls.fingerprint());
    let out = run(&[
        "fingerprint".as_ref(),
        "--state-dir".as_ref(),
        state.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout), want);
    let cert = state.join(ferry_secure::CERT_FILE);
    let out = run(&[
        "fingerprint".as_ref(),
        "--tls-cert".as_ref(),
        cert.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout), want);
    // Serving options do not mix with it.
    let out = run(&["--no-seed".as_ref(), "fingerprint".as_ref()]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn completions_and_the_man_page_come_from_the_command_line_definition() {
    let out = Command::new(BIN)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let script = String::from_utf8_lossy(&out.stdout);
    for word in [
        "ferry-server",
        "fingerprint",
        "--max-file-size",
        "--tls-self-signed",
    ] {
        assert!(
            script.contains(word),
            "{word} missing from the bash completions"
        );
    }
    for shell in ["zsh", "fish"] {
        let out = Command::new(BIN)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{shell}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("max-file-size"));
    }
    let dir = tempfile::tempdir().unwrap();
    let man = dir.path().join("man1");
    let out = Command::new(BIN)
        .args(["man", "--out"])
        .arg(&man)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = std::fs::read_to_string(man.join("ferry-server.1")).unwrap();
    for section in [
        ".TH ferry-server 1",
        ".SH NAME",
        ".SH SYNOPSIS",
        "\\-\\-max\\-file\\-size",
    ] {
        assert!(
            page.contains(section),
            "{section} missing from the man page"
        );
    }
}

#[test]
fn a_hello_trickled_past_its_deadline_is_logged_as_too_slow_not_silent() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut srv = Running::start(&[
        "--dir".as_ref(),
        store.as_os_str(),
        "--header-timeout".as_ref(),
        "1s".as_ref(),
    ]);
    // The magic, one byte every 200 ms: never silent for long, never finished in time.
    let mut s = TcpStream::connect(srv.addr).unwrap();
    for b in MAGIC.iter().cycle().take(10) {
        if s.write_all(&[*b]).is_err() {
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }
    let line = srv.expect_line("connection closed (timed out");
    assert!(line.contains("did not finish a message in time"), "{line}");
    srv.stop();
}

/// QA L5: `ferry-server completions` writes its script whole or says why: into a full disk,
/// `cannot write to standard output: ...` and exit 1 (no panic, no backtrace); into a pipe
/// whose reader went away (`| true`), nothing said and 141, as tools that SIGPIPE ends.
#[test]
fn completions_into_a_full_or_closed_standard_output() {
    let full = fs::File::options().write(true).open("/dev/full").unwrap();
    let out = Command::new(BIN)
        .args(["completions", "bash"])
        .stdout(full)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with("ferry-server: cannot write to standard output: No space left"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    let (reader, writer) = rustix::pipe::pipe().unwrap();
    drop(reader);
    let out = Command::new(BIN)
        .args(["completions", "bash"])
        .stdout(writer)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(141));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}
