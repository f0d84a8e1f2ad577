//! A real HAProxy in TCP mode in front of ferry servers, sending PROXY v2 headers.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::PATIENCE;

/// A running `haproxy -db`, killed on drop.
pub struct HaProxy {
    child: Child,
    /// Where clients connect.
    pub front: SocketAddr,
    _dir: tempfile::TempDir,
}

impl HaProxy {
    /// Starts HAProxy in TCP mode in front of `backends` (round robin: connection N goes to
    /// backend N modulo their number), sending PROXY v2 headers, and waits until it listens;
    /// `None` (after a loud line) when haproxy is not installed.
    pub fn start(backends: &[SocketAddr]) -> Option<HaProxy> {
        if Command::new("haproxy").arg("-v").output().is_err() {
            eprintln!("SKIPPED: haproxy not installed (apt-get install haproxy)");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("haproxy.cfg");
        let servers: String = backends
            .iter()
            .enumerate()
            .map(|(i, b)| format!("  server s{} {b} send-proxy-v2\n", i + 1))
            .collect();
        std::fs::write(
            &cfg,
            format!(
                "defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  \
                 timeout server 30s\n\
                 frontend front\n  bind 127.0.0.1:{port}\n  default_backend ferry\n\
                 backend ferry\n  balance roundrobin\n{servers}"
            ),
        )
        .unwrap();
        let child = Command::new("haproxy")
            .arg("-f")
            .arg(&cfg)
            .arg("-db")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut proxy = HaProxy {
            child,
            front: SocketAddr::from(([127, 0, 0, 1], port)),
            _dir: dir,
        };
        let until = Instant::now() + PATIENCE;
        while !listening(port) {
            if let Some(status) = proxy.child.try_wait().unwrap() {
                panic!("haproxy exited ({status}) before listening on {port}");
            }
            assert!(Instant::now() < until, "haproxy does not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(proxy)
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether something listens on 127.0.0.1:`port` (read from /proc, without connecting: a
/// probe through HAProxy would reach the server too).
fn listening(port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let local = format!("0100007F:{port:04X}");
    table.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(1) == Some(&local.as_str()) && f.get(3) == Some(&"0A")
    })
}
