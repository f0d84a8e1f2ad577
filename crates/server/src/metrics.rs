//! `--metrics-listen ADDR`: counters kept by the connections, served as Prometheus text over
//! HTTP on one thread of its own (at most [`MAX_SCRAPES`] connections at once, each closed
//! after [`SCRAPE_DEADLINE`]; requests parsed by `httparse`): connections open and in all,
//! bytes in and out, files stored, refused (by code: `unchanged` among them) and downloaded,
//! listings, failed authentications, and a histogram of the durations of stored uploads.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_proto::Code;
use rustix::event::{poll, PollFd, PollFlags, Timespec};

/// Upper bounds (seconds) of the transfer-duration histogram's buckets.
const BUCKETS: [f64; 7] = [0.01, 0.1, 1.0, 10.0, 60.0, 600.0, 3600.0];

/// The server's counters.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    open: AtomicU64,
    total: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    stored: AtomicU64,
    downloaded: AtomicU64,
    listed: AtomicU64,
    auth_failures: AtomicU64,
    refused: Mutex<BTreeMap<&'static str, u64>>,
    /// Counts per bucket of [`BUCKETS`] (not cumulative), then the sum in microseconds.
    durations: [AtomicU64; BUCKETS.len() + 1],
    duration_sum_us: AtomicU64,
}

/// An open connection, counted until dropped.
pub(crate) struct OpenConnection(Arc<Metrics>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Relaxed);
    }
}

impl Metrics {
    /// Counts a connection as open until the guard is dropped.
    pub(crate) fn connection(self: &Arc<Self>) -> OpenConnection {
        self.open.fetch_add(1, Relaxed);
        self.total.fetch_add(1, Relaxed);
        OpenConnection(Arc::clone(self))
    }

    /// File bytes received.
    pub(crate) fn received(&self, n: usize) {
        self.bytes_in.fetch_add(n as u64, Relaxed);
    }

    /// File bytes sent.
    pub(crate) fn sent(&self, n: usize) {
        self.bytes_out.fetch_add(n as u64, Relaxed);
    }

    /// A file stored, whose upload took `took`.
    pub(crate) fn stored(&self, took: Duration) {
        self.stored.fetch_add(1, Relaxed);
        let secs = took.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        self.durations[bucket].fetch_add(1, Relaxed);
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.duration_sum_us.fetch_add(us, Relaxed);
    }

    /// A file sent that its client confirmed saved (RESULT `Stored`).
    pub(crate) fn downloaded(&self) {
        self.downloaded.fetch_add(1, Relaxed);
    }

    /// A listing answered.
    pub(crate) fn listed(&self) {
        self.listed.fetch_add(1, Relaxed);
    }

    /// An offer refused with `code`.
    pub(crate) fn refused(&self, code: Code) {
        if let Ok(mut m) = self.refused.lock() {
            *m.entry(code.as_str()).or_default() += 1;
        }
    }

    /// A failed authentication.
    pub(crate) fn auth_failure(&self) {
        self.auth_failures.fetch_add(1, Relaxed);
    }

    /// The Prometheus text exposition.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        let mut one = |name: &str, kind: &str, help: &str, v: u64| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
            );
        };
        one(
            "ferry_connections_open",
            "gauge",
            "Connections open now.",
            self.open.load(Relaxed),
        );
        one(
            "ferry_connections_total",
            "counter",
            "Connections accepted.",
            self.total.load(Relaxed),
        );
        one(
            "ferry_received_bytes_total",
            "counter",
            "File bytes received.",
            self.bytes_in.load(Relaxed),
        );
        one(
            "ferry_sent_bytes_total",
            "counter",
            "File bytes sent.",
            self.bytes_out.load(Relaxed),
        );
        one(
            "ferry_files_stored_total",
            "counter",
            "Files stored.",
            self.stored.load(Relaxed),
        );
        one(
            "ferry_files_downloaded_total",
            "counter",
            "Files sent that their client confirmed saved.",
            self.downloaded.load(Relaxed),
        );
        one(
            "ferry_listings_total",
            "counter",
            "Listings answered.",
            self.listed.load(Relaxed),
        );
        one(
            "ferry_auth_failures_total",
            "counter",
            "Failed authentications.",
            self.auth_failures.load(Relaxed),
        );
        out.push_str("# HELP ferry_files_refused_total Offers refused, by reason.\n");
        out.push_str("# TYPE ferry_files_refused_total counter\n");
        if let Ok(m) = self.refused.lock() {
            for (reason, n) in m.iter() {
                let _ = writeln!(out, "ferry_files_refused_total{{reason=\"{reason}\"}} {n}");
            }
        }
        let name = "ferry_upload_duration_seconds";
        let _ = write!(
            out,
            "# HELP {name} Durations of stored uploads.\n# TYPE {name} histogram\n"
        );
        let mut cumulative = 0;
        for (i, le) in BUCKETS
            .iter()
            .map(ToString::to_string)
            .chain(["+Inf".into()])
            .enumerate()
        {
            cumulative += self.durations[i].load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let sum = self.duration_sum_us.load(Relaxed) as f64 / 1e6;
        let _ = write!(out, "{name}_sum {sum}\n{name}_count {cumulative}\n");
        out
    }

    /// Serves [`Metrics::render`] at `GET /metrics` on `addr`, on one thread of its own that
    /// polls at most [`MAX_SCRAPES`] connections at once, each given [`SCRAPE_DEADLINE`] in all
    /// to send its request and take the answer. When all are taken, a newcomer takes the place
    /// of the oldest (closed at once), so that idle connections can neither hold the page nor
    /// take the descriptors and threads of the file service. Returns the bound address.
    pub(crate) fn serve(self: &Arc<Self>, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let bound = listener.local_addr()?;
        let me = Arc::clone(self);
        std::thread::Builder::new()
            .name("ferry-metrics".into())
            .spawn(move || {
                let mut scrapes = Vec::with_capacity(MAX_SCRAPES);
                loop {
                    if let Err(e) = me.serve_round(&listener, &mut scrapes) {
                        log::warn!("metrics: {e}; the page is no longer served");
                        return;
                    }
                }
            })?;
        Ok(bound)
    }

    /// One round of [`Metrics::serve`]: waits until a connection can move or the earliest
    /// deadline, then moves the ready ones, closes the finished and late ones and accepts
    /// newcomers.
    fn serve_round(
        &self,
        listener: &TcpListener,
        scrapes: &mut Vec<Scrape>,
    ) -> std::io::Result<()> {
        let now = Instant::now();
        scrapes.retain(|s| s.deadline > now);
        let wait = scrapes
            .iter()
            .map(|s| s.deadline - now)
            .min()
            .map(Timespec::try_from)
            .transpose()
            .map_err(std::io::Error::other)?;
        let mut fds = Vec::with_capacity(scrapes.len() + 1);
        fds.push(PollFd::new(listener, PollFlags::IN));
        fds.extend(scrapes.iter().map(|s| PollFd::new(&s.stream, s.interest())));
        match poll(&mut fds, wait.as_ref()) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let incoming = !fds[0].revents().is_empty();
        let ready: Vec<bool> = fds[1..].iter().map(|f| !f.revents().is_empty()).collect();
        drop(fds);
        let mut ready = ready.into_iter();
        scrapes.retain_mut(|s| !ready.next().unwrap_or(false) || s.advance(self));
        if incoming {
            for _ in 0..MAX_SCRAPES {
                let stream = match listener.accept() {
                    Ok((stream, _)) => stream,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    // A connection reset before it was accepted, or out of descriptors: the
                    // next round tries again, after a pause (the listener stays ready).
                    Err(_) => {
                        std::thread::sleep(ACCEPT_PAUSE);
                        break;
                    }
                };
                if stream.set_nonblocking(true).is_err() {
                    continue;
                }
                if scrapes.len() == MAX_SCRAPES {
                    scrapes.remove(0);
                }
                scrapes.push(Scrape {
                    stream,
                    deadline: Instant::now() + SCRAPE_DEADLINE,
                    request: Vec::new(),
                    answer: Vec::new(),
                    sent: 0,
                });
            }
        }
        Ok(())
    }
}

/// Most connections to `--metrics-listen` served at once.
pub(crate) const MAX_SCRAPES: usize = 8;
/// Time a connection to `--metrics-listen` has, from accept, to send its request and read the
/// answer; then it is closed.
pub(crate) const SCRAPE_DEADLINE: Duration = Duration::from_secs(2);
/// Longest request head read from a scraper; a longer one is answered 431.
pub(crate) const MAX_REQUEST_HEAD: usize = 4096;
/// Pause after a failed accept (out of descriptors, say) before the metrics thread tries again.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// Most headers in a scraper's request.
const MAX_HEADERS: usize = 32;

/// One connection to `--metrics-listen`: its request so far, then the answer being written.
struct Scrape {
    stream: TcpStream,
    deadline: Instant,
    request: Vec<u8>,
    answer: Vec<u8>,
    sent: usize,
}

impl Scrape {
    /// What to poll for: the request, then room for the answer.
    fn interest(&self) -> PollFlags {
        if self.answer.is_empty() {
            PollFlags::IN
        } else {
            PollFlags::OUT
        }
    }

    /// Reads the request or writes the answer as far as the socket allows; whether the
    /// connection is still to be kept.
    fn advance(&mut self, metrics: &Metrics) -> bool {
        if self.answer.is_empty() {
            let mut buf = [0; 1024];
            let room = MAX_REQUEST_HEAD - self.request.len();
            match self.stream.read(&mut buf[..room.min(1024)]) {
                Ok(0) => return false,
                Ok(n) => self.request.extend_from_slice(&buf[..n]),
                Err(e) => return e.kind() == ErrorKind::WouldBlock,
            }
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut request = httparse::Request::new(&mut headers);
            self.answer = match request.parse(&self.request) {
                Ok(httparse::Status::Complete(_)) => {
                    let path = request.path.unwrap_or_default();
                    let path = path.split_once('?').map_or(path, |(p, _)| p);
                    if request.method == Some("GET") && path == "/metrics" {
                        answer("200 OK", PAGE_TYPE, &metrics.render())
                    } else {
                        answer("404 Not Found", TEXT, "see GET /metrics\n")
                    }
                }
                Ok(httparse::Status::Partial) if self.request.len() < MAX_REQUEST_HEAD => {
                    return true
                }
                Ok(httparse::Status::Partial) => answer(
                    "431 Request Header Fields Too Large",
                    TEXT,
                    "the request is too long\n",
                ),
                Err(e) => answer("400 Bad Request", TEXT, &format!("{e}\n")),
            };
        }
        match self.stream.write(&self.answer[self.sent..]) {
            Ok(n) => {
                self.sent += n;
                self.sent < self.answer.len()
            }
            Err(e) => e.kind() == ErrorKind::WouldBlock,
        }
    }
}

/// The Content-Type of the Prometheus text exposition.
const PAGE_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The Content-Type of the other answers.
const TEXT: &str = "text/plain; charset=utf-8";

/// An HTTP/1.1 answer that closes the connection.
fn answer(status: &str, content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
