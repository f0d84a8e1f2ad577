//! Log output written by a thread of its own: a connection thread only formats its line and
//! queues it, so one line per stored file costs no `write` on the transfer's path, and a slow
//! or stuck stderr (a terminal, a full pipe to a log collector) does not stall transfers until
//! the queue of [`QUEUE_LINES`] lines is full.

use std::io::{self, BufWriter, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::time::Duration;

/// Lines queued at most; past that, logging waits for the writer thread.
pub const QUEUE_LINES: usize = 4096;
/// How long the writer thread lets lines gather after the first one before writing them: while
/// it waits, queueing a line costs no system call (nobody has to be woken).
pub const LINGER: Duration = Duration::from_millis(5);

enum Msg {
    Line(Vec<u8>),
    Flush(SyncSender<()>),
}

/// The writing end handed to the logger (e.g. `env_logger::Target::Pipe`): every `write` is
/// one record, queued for the writer thread.
#[derive(Debug)]
pub struct Background {
    tx: SyncSender<Msg>,
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
        std::thread::Builder::new()
            .name("ferry-log".into())
            .spawn(move || write_out(&rx, out))?;
        Ok((Background { tx: tx.clone() }, Flusher { tx }))
    }
}

impl Write for Background {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tx
            .send(Msg::Line(buf.to_vec()))
            .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))?;
        Ok(buf.len())
    }

    /// Does not wait: the writer thread writes as soon as the queue runs dry.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Flusher {
    /// Returns once every line queued before the call is written (or the writer is gone).
    pub fn flush(&self) {
        let (done, wait) = mpsc::sync_channel(1);
        if self.tx.send(Msg::Flush(done)).is_ok() {
            let _ = wait.recv();
        }
    }
}

/// Writes queued lines in order, in few writes: after the first line it waits [`LINGER`] for
/// more, then writes all that came. A flush request is answered at once.
fn write_out(rx: &Receiver<Msg>, out: impl Write) {
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
        let _ = out.flush();
        for reply in done {
            let _ = reply.send(());
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
        let (mut bg, flusher) = Background::spawn(sink.clone()).unwrap();
        let lines: Vec<String> = (0..1000).map(|i| format!("line {i}\n")).collect();
        // A stuck stderr: the lines queue up meanwhile, and nobody waits.
        let closed = sink.gate.lock().unwrap();
        for line in &lines {
            bg.write_all(line.as_bytes()).unwrap();
            bg.flush().unwrap();
        }
        drop(closed);
        flusher.flush();
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
        flusher.flush();
        flusher.flush();
    }
}
