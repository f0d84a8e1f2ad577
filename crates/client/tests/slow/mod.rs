//! A proxy that slows uploads down, so that a test can act while a file is on its way
//! (truncate it, interrupt the client). Listens on 127.0.0.1 port 0; every thread it starts
//! ends when its sockets close or the proxy is dropped.
#![allow(dead_code)] // each test file uses its own part of this module

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Bytes forwarded client to server per tick.
const STEP: usize = 16 * 1024;
/// The pause after each step: about 1.6 MB/s.
const TICK: Duration = Duration::from_millis(10);

/// Forwards every connection to an upstream server, client-to-server bytes slowly.
pub struct SlowProxy {
    pub addr: SocketAddr,
    /// Client-to-server bytes forwarded so far, over all connections.
    pub up: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl SlowProxy {
    pub fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let up = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (up2, stop2) = (Arc::clone(&up), Arc::clone(&stop));
        thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).expect("blocking");
                        let server = TcpStream::connect(upstream).expect("connect upstream");
                        pipe(&client, &server, Some(Arc::clone(&up2)), &stop2);
                        pipe(&server, &client, None, &stop2);
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self { addr, up, stop }
    }

    /// Waits until at least `bytes` went upstream (at most 20 s).
    pub fn wait_for(&self, bytes: u64) {
        let start = Instant::now();
        while self.up.load(Ordering::Relaxed) < bytes {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the upload never got going"
            );
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for SlowProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Copies `from` into `to` on a thread, slowly when `count` is given (and counted there).
fn pipe(from: &TcpStream, to: &TcpStream, count: Option<Arc<AtomicU64>>, stop: &Arc<AtomicBool>) {
    let (mut from, mut to) = (
        from.try_clone().expect("clone"),
        to.try_clone().expect("clone"),
    );
    let stop = Arc::clone(stop);
    from.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    thread::spawn(move || {
        let mut buf = vec![0u8; STEP];
        while !stop.load(Ordering::Relaxed) {
            match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    if let Some(c) = &count {
                        c.fetch_add(n as u64, Ordering::Relaxed);
                        thread::sleep(TICK);
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break,
            }
        }
        let _ = to.shutdown(Shutdown::Write);
        let _ = from.shutdown(Shutdown::Read);
    });
}
