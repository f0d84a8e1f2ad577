//! `--metrics-listen ADDR`: counters kept by the connections, served as Prometheus text over
//! HTTP (`tiny_http`) on a thread of its own: connections open and in all, bytes in and out,
//! files stored and refused (by code), failed authentications, and a histogram of the
//! durations of stored uploads.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_proto::Code;

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
    auth_failures: AtomicU64,
    refused: Mutex<BTreeMap<String, u64>>,
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

    /// An offer refused with `code`.
    pub(crate) fn refused(&self, code: Code) {
        if let Ok(mut m) = self.refused.lock() {
            *m.entry(format!("{code:?}")).or_default() += 1;
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

    /// Serves [`Metrics::render`] at `GET /metrics` on `addr`, on a thread of its own (one
    /// request at a time: each answer is small and built from counters).
    pub(crate) fn serve(self: &Arc<Self>, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let server = tiny_http::Server::http(addr).map_err(std::io::Error::other)?;
        let bound = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| std::io::Error::other("the metrics server has no IP address"))?;
        let me = Arc::clone(self);
        std::thread::Builder::new()
            .name("ferry-metrics".into())
            .spawn(move || {
                for request in server.incoming_requests() {
                    let response = if request.url() == "/metrics" {
                        let header = tiny_http::Header::from_bytes(
                            "Content-Type",
                            "text/plain; version=0.0.4; charset=utf-8",
                        )
                        .expect("a valid header");
                        tiny_http::Response::from_string(me.render()).with_header(header)
                    } else {
                        tiny_http::Response::from_string("see /metrics\n").with_status_code(404)
                    };
                    let _ = request.respond(response);
                }
            })?;
        Ok(bound)
    }
}
