//! Log output written by a thread of its own: a connection thread only formats its line and
//! queues it, so one line per stored file costs no `write` on the transfer's path, and a slow
//! or stuck stderr (a terminal, a full pipe to a log collector) never stalls a transfer or a
//! shutdown: past [`QUEUE_LINES`] queued lines, new ones are dropped and counted, and the
//! writer thread says how many once it can write again.
//!
//! Also what bounds the log one connection can cause: `LogBudget` and `clip`.

use std::io::{self, BufWriter, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Lines queued at most; past that, new lines are dropped (and counted).
pub const QUEUE_LINES: usize = 4096;
/// Longest a name or a reason is shown in a log line, in characters; the rest is cut.
pub const SHOWN_CHARS: usize = 200;
/// How long the writer thread lets lines gather after the first one before writing them: while
/// it waits, queueing a line costs no system call (nobody has to be woken).
pub const LINGER: Duration = Duration::from_millis(5);

enum Msg {
    Line(Vec<u8>),
    Flush(SyncSender<()>),
}

/// The queueing end, which the logger ([`crate::logger::Logger`]) sends its lines to: each
/// is queued for the writer thread, or dropped and counted when the queue is full.
#[derive(Debug)]
pub struct Background {
    tx: SyncSender<Msg>,
    dropped: Arc<AtomicU64>,
}

/// Waits for the writer thread to write out everything queued so far (call before exiting).
#[derive(Debug, Clone)]
pub struct Flusher {
    tx: SyncSender<Msg>,
}

impl Background {
    /// Starts the writer thread over `out` (stderr, say).
    pub fn spawn(out: impl Write + Send + 'static) -> io::Result<(Background, Flusher)> {
        let (tx, rx) = mpsc::sync_channel(QUEUE_LINES);
        let dropped = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&dropped);
        std::thread::Builder::new()
            .name("ferry-log".into())
            .spawn(move || write_out(&rx, out, &counted))?;
        Ok((
            Background {
                tx: tx.clone(),
                dropped,
            },
            Flusher { tx },
        ))
    }
}

impl Background {
    /// Queues `line` (whole, newline included) for the writer thread. Never waits: a line
    /// that finds the queue full is dropped and counted; one sent after the writer is gone is
    /// dropped.
    pub fn send(&self, line: Vec<u8>) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send(Msg::Line(line)) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Flusher {
    /// Returns once every line queued before the call is written, the writer is gone, or
    /// `within` has passed (the output may be stuck: a pipe nobody reads).
    pub fn flush(&self, within: Duration) {
        let until = Instant::now() + within;
        let (done, wait) = mpsc::sync_channel(1);
        let mut msg = Msg::Flush(done);
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Full(m)) if Instant::now() < until => {
                    msg = m;
                    std::thread::sleep(LINGER);
                }
                Err(_) => return,
            }
        }
        // Written, gone, or given up on: nothing else to do in any case.
        let _ = wait.recv_timeout(until.saturating_duration_since(Instant::now()));
    }
}

/// Writes queued lines in order, in few writes: after the first line it waits [`LINGER`] for
/// more, then writes all that came, and then how many lines were dropped meanwhile, if any.
/// A flush request is answered at once.
fn write_out(rx: &Receiver<Msg>, out: impl Write, dropped: &AtomicU64) {
    let mut out = BufWriter::with_capacity(64 * 1024, out);
    while let Ok(first) = rx.recv() {
        if matches!(first, Msg::Line(_)) {
            std::thread::sleep(LINGER);
        }
        let mut done = Vec::new();
        for msg in std::iter::once(first).chain(rx.try_iter()) {
            match msg {
                // Nowhere to report a failing log stream; the server goes on.
                Msg::Line(line) => drop(out.write_all(&line)),
                Msg::Flush(reply) => done.push(reply),
            }
        }
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            let _ = writeln!(
                out,
                "[ferry-server] {lost} log lines dropped: the log output was not keeping up"
            );
        }
        let _ = out.flush();
        for reply in done {
            let _ = reply.send(());
        }
    }
}

/// Shows at most [`SHOWN_CHARS`] characters of `s` (already escaped), marking the cut.
pub(crate) fn clip(s: &str) -> String {
    match s.char_indices().nth(SHOWN_CHARS) {
        None => s.to_owned(),
        Some((at, _)) => format!("{}... ({} bytes in all)", &s[..at], s.len()),
    }
}

/// How many more lines about refusals and unexpected events one connection may log; the rest
/// are only counted, and the count shown in its closing line.
#[derive(Debug)]
pub(crate) struct LogBudget {
    left: u32,
    suppressed: u64,
}

impl LogBudget {
    /// A budget of `lines`.
    pub(crate) fn new(lines: u32) -> Self {
        Self {
            left: lines,
            suppressed: 0,
        }
    }

    /// Spends one line: `Some(true)` for the last one (say that the rest are suppressed),
    /// `Some(false)` for any other, `None` once spent (the line is counted instead).
    pub(crate) fn spend(&mut self) -> Option<bool> {
        if self.left == 0 {
            self.suppressed = self.suppressed.saturating_add(1);
            return None;
        }
        self.left -= 1;
        Some(self.left == 0)
    }

    /// For the closing line: how many lines were suppressed, if any.
    pub(crate) fn summary(&self) -> String {
        match self.suppressed {
            0 => String::new(),
            n => format!(", {n} log lines suppressed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A sink that records every write it gets, and waits on `gate` before each.
    #[derive(Clone, Default)]
    struct Sink {
        writes: Arc<Mutex<Vec<Vec<u8>>>>,
        gate: Arc<Mutex<()>>,
    }

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _open = self.gate.lock().unwrap();
            self.writes.lock().unwrap().push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_arrive_whole_in_order_batched_and_flush_waits_for_them() {
        let sink = Sink::default();
        let (bg, flusher) = Background::spawn(sink.clone()).unwrap();
        let lines: Vec<String> = (0..1000).map(|i| format!("line {i}\n")).collect();
        // A stuck stderr: the lines queue up meanwhile, and nobody waits.
        let closed = sink.gate.lock().unwrap();
        for line in &lines {
            bg.send(line.clone().into_bytes());
        }
        drop(closed);
        flusher.flush(Duration::from_secs(10));
        let writes = sink.writes.lock().unwrap().clone();
        assert_eq!(writes.concat(), lines.concat().into_bytes());
        assert!(
            writes.len() <= 3,
            "{} writes for 1000 queued lines",
            writes.len()
        );
    }

    #[test]
    fn flush_returns_when_nothing_is_queued() {
        let (_bg, flusher) = Background::spawn(Sink::default()).unwrap();
        flusher.flush(Duration::from_secs(10));
        flusher.flush(Duration::from_secs(10));
    }

    #[test]
    fn a_stuck_output_drops_lines_instead_of_waiting_and_says_so_later() {
        let sink = Sink::default();
        let (bg, flusher) = Background::spawn(sink.clone()).unwrap();
        let closed = sink.gate.lock().unwrap();
        for i in 0..QUEUE_LINES * 2 + 10 {
            bg.send(format!("line {i}\n").into_bytes());
        }
        // The writer is stuck: a flush gives up.
        let asked = Instant::now();
        flusher.flush(Duration::from_millis(100));
        assert!(asked.elapsed() < Duration::from_secs(5));
        drop(closed);
        flusher.flush(Duration::from_secs(10));
        let text = String::from_utf8(sink.writes.lock().unwrap().concat()).unwrap();
        assert!(
            text.contains("log lines dropped"),
            "{}",
            &text[text.len() - 200..]
        );
        assert!(text.lines().count() < QUEUE_LINES * 2, "lines were dropped");
    }

    #[test]
    fn clip_cuts_long_text_and_keeps_short_text() {
        assert_eq!(clip("short"), "short");
        let long = "\\u{1}".repeat(100);
        let shown = clip(&long);
        assert!(shown.len() < SHOWN_CHARS + 40, "{shown}");
        assert!(shown.ends_with("(500 bytes in all)"), "{shown}");
    }

    #[test]
    fn a_budget_logs_so_many_lines_then_counts() {
        let mut b = LogBudget::new(2);
        assert_eq!(b.spend(), Some(false));
        assert_eq!(b.spend(), Some(true));
        assert_eq!(b.spend(), None);
        assert_eq!(b.spend(), None);
        assert_eq!(b.summary(), ", 2 log lines suppressed");
    }
}
