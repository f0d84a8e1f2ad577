//! Helpers for the operator tests: the `ferry-server` binary started with a command line, its
//! log lines collected on a thread, and clients that present a token.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_proto::wire::Frame;
use ferry_proto::{Code, Connection, Driver};

use crate::common::{Raw, PATIENCE};

/// The server binary.
pub const BIN: &str = env!("CARGO_BIN_EXE_ferry-server");

/// A running `ferry-server`, killed on drop.
pub struct Bin {
    pub child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Bin {
    /// Starts the binary with `args` (and `--listen 127.0.0.1:0` first) and waits until it
    /// listens.
    pub fn start<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Bin {
        Bin::start_with_env(args, &[])
    }

    /// [`Bin::start`] with `env` added to the server's environment.
    pub fn start_with_env<S: AsRef<std::ffi::OsStr>>(args: &[S], env: &[(&str, &str)]) -> Bin {
        let mut child = Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--no-fsync"])
            .args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut bin = Bin {
            child,
            addr: "127.0.0.1:1".parse().unwrap(),
            log,
        };
        let line = bin.wait_line("listening on ");
        let rest = line.split_once("listening on ").unwrap().1;
        bin.addr = rest.split(',').next().unwrap().parse().unwrap();
        bin
    }

    /// Every log line so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Waits (up to [`PATIENCE`]) for a log line containing `needle`; returns it.
    pub fn wait_line(&mut self, needle: &str) -> String {
        let until = Instant::now() + PATIENCE;
        loop {
            if let Some(l) = self.log().into_iter().find(|l| l.contains(needle)) {
                return l;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the server exited ({status}) without {needle:?}: {:?}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < until,
                "no line with {needle:?} in {:?}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits (up to [`PATIENCE`]) for a successful exit.
    pub fn stop(mut self) {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let until = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "{status}: {:?}", self.log());
                return;
            }
            assert!(
                Instant::now() < until,
                "no exit after SIGTERM: {:?}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Bin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary with `args` to its end; its exit code and stderr.
pub fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A file in `dir` holding `text`, with `mode`.
pub fn file(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// A ferry client presenting `token` (none when `None`), welcomed or denied.
pub fn client(addr: SocketAddr, token: Option<&[u8]>) -> Driver<TcpStream> {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut d = Driver::new(s, Connection::client(token).unwrap());
    d.flush().unwrap();
    match d.next_step().unwrap() {
        ferry_proto::Step::Event(ferry_proto::Event::Welcome { .. }) => d,
        other => panic!("expected WELCOME, got {other:?}"),
    }
}

/// A raw-frame client presenting `token`, after WELCOME.
pub fn raw(addr: SocketAddr, token: &[u8]) -> Raw {
    Raw::connect_with_token(addr, token)
}

/// Lists the top folder: the names, or the code of the refusal.
pub fn list(addr: SocketAddr, token: &[u8]) -> Result<Vec<String>, Code> {
    let mut r = raw(addr, token);
    r.send(&[Frame::List {
        id: 1,
        recursive: true,
        path: String::new(),
    }]);
    let mut names = Vec::new();
    loop {
        match r.recv() {
            Some(Frame::Entries { entries, .. }) => {
                names.extend(entries.into_iter().map(|e| e.name.as_str().to_owned()))
            }
            Some(Frame::Listed { .. }) => return Ok(names),
            Some(Frame::Refuse { code, .. }) => return Err(code),
            other => panic!("unexpected {other:?}"),
        }
    }
}
