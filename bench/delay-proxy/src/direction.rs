//! One direction of one connection: a reader thread queues what it reads with the time it is
//! due, a writer thread delivers it then, paced at the link's rate.
//!
//! Both threads block (in `read`, `write`, on a condition variable or in `sleep`), never
//! poll. The queue is bounded by [`Link::queue_limit`]: when it is full the reader stops
//! reading, the kernel's socket buffers fill and the sender waits.

use crate::{Link, CHUNK, PACE};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::mem;
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::Instant;

/// Emptied read buffers kept per direction for the reader to reuse (the rest are freed).
const SPARE_MAX: usize = 4;

/// What the reader hands the writer.
enum Item {
    /// Bytes to deliver.
    Data(Vec<u8>),
    /// The source sent EOF: half-close the destination.
    Eof,
    /// Reading the source failed: end the connection.
    Failed,
}

/// The queue between the reader and the writer of one direction.
struct State {
    /// What was read, each with the time it is due at the destination, oldest first.
    queue: VecDeque<(Instant, Item)>,
    /// Bytes of data in `queue`.
    held: usize,
    /// The writer has stopped: the reader stops too.
    closed: bool,
    /// Read buffers of [`CHUNK`] bytes' capacity the writer has delivered.
    spare: Vec<Vec<u8>>,
}

/// What the two threads of one direction share.
struct Shared {
    /// The queue.
    state: Mutex<State>,
    /// Signalled when an item is queued into an empty queue.
    queued: Condvar,
    /// Signalled when `held` drops below the limit, or the writer stops.
    drained: Condvar,
    /// [`Link::queue_limit`] of the link.
    limit: usize,
}

impl Shared {
    /// Locks the queue; a thread that panicked holding it leaves nothing half-updated that
    /// matters here, so the lock is taken over rather than panicking again.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Starts the reader (from `src`) and the writer (to `dst`) of one direction, their threads
/// named after `name`.
pub(crate) fn start(name: &str, src: &TcpStream, dst: &TcpStream, link: Link) -> io::Result<()> {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            held: 0,
            closed: false,
            spare: Vec::new(),
        }),
        queued: Condvar::new(),
        drained: Condvar::new(),
        limit: link.queue_limit(),
    });
    let reader = Reader {
        src: src.try_clone()?,
        shared: Arc::clone(&shared),
        link,
    };
    let writer = Writer {
        src: src.try_clone()?,
        dst: dst.try_clone()?,
        shared,
        link,
    };
    // The reader first: without a writer it still ends, at the EOF that the caller's
    // shutdown on failure produces; a writer without a reader would wait for ever.
    thread::Builder::new()
        .name(format!("{name}-read"))
        .spawn(move || reader.run())?;
    thread::Builder::new()
        .name(format!("{name}-write"))
        .spawn(move || writer.run())?;
    Ok(())
}

/// Sleeps until `due`, if it is still ahead.
fn sleep_until(due: Instant) {
    let now = Instant::now();
    if due > now {
        thread::sleep(due - now);
    }
}

/// The reading half of a direction.
struct Reader {
    /// The socket read.
    src: TcpStream,
    /// The queue to the writer.
    shared: Arc<Shared>,
    /// The link's delay.
    link: Link,
}

impl Reader {
    /// Reads until EOF, an error or the writer's end, queueing each read with its due time;
    /// waits while the queue is full.
    fn run(mut self) {
        let mut buf = vec![0; CHUNK];
        loop {
            let item = match self.src.read(&mut buf) {
                Ok(0) => Item::Eof,
                // A big read hands its buffer over; a small one is copied, so a stream of
                // small reads does not pin a CHUNK each.
                Ok(n) if n >= CHUNK / 2 => {
                    let mut data = mem::take(&mut buf);
                    data.truncate(n);
                    Item::Data(data)
                }
                Ok(n) => Item::Data(buf[..n].to_vec()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => Item::Failed,
            };
            // (due time, bytes of data, the last item of this direction)
            let (due, bytes, last) = match &item {
                Item::Data(data) => (Instant::now() + self.link.delay, data.len(), false),
                Item::Eof => (Instant::now() + self.link.delay, 0, true),
                // Nothing after a failure is worth delaying for.
                Item::Failed => (Instant::now(), 0, true),
            };
            let mut state = self.shared.lock();
            if state.queue.is_empty() {
                self.shared.queued.notify_one();
            }
            state.queue.push_back((due, item));
            state.held += bytes;
            if last {
                return;
            }
            if buf.is_empty() {
                buf = state.spare.pop().unwrap_or_default();
            }
            while state.held >= self.shared.limit && !state.closed {
                state = self
                    .shared
                    .drained
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if state.closed {
                return;
            }
            drop(state);
            buf.resize(CHUNK, 0);
        }
    }
}

/// The writing half of a direction.
struct Writer {
    /// The reader's socket, shut down when the connection fails.
    src: TcpStream,
    /// The socket written.
    dst: TcpStream,
    /// The queue from the reader.
    shared: Arc<Shared>,
    /// The link's rate.
    link: Link,
}

impl Writer {
    /// Delivers the queue until EOF; on any failure ends the connection both ways, as a
    /// broken link would. Either way tells the reader to stop.
    fn run(mut self) {
        if self.deliver().is_err() {
            for socket in [&self.src, &self.dst] {
                // Already shut down by the other direction is fine.
                let _ = socket.shutdown(Shutdown::Both);
            }
        }
        self.shared.lock().closed = true;
        self.shared.drained.notify_one();
    }

    /// Delivers each item once it is due, in bursts of at most [`PACE`] bytes spaced so the
    /// rate never exceeds the link's by more than one burst; returns after passing EOF on.
    fn deliver(&mut self) -> io::Result<()> {
        // When the link is free to send again.
        let mut free = Instant::now();
        loop {
            let (due, item) = self.next();
            sleep_until(due);
            let data = match item {
                Item::Data(data) => data,
                Item::Eof => return self.dst.shutdown(Shutdown::Write),
                Item::Failed => return Err(io::Error::other("reading the other side failed")),
            };
            for piece in data.chunks(PACE) {
                // Each burst starts no earlier than the last one's airtime after it; a sleep
                // that overshoots does not push the schedule back.
                let start = free.max(Instant::now());
                sleep_until(start);
                free = start + self.link.airtime(piece.len());
                self.dst.write_all(piece)?;
            }
            self.recycle(data);
        }
    }

    /// Takes the oldest item off the queue, waiting for one.
    fn next(&self) -> (Instant, Item) {
        let mut state = self.shared.lock();
        loop {
            if let Some((due, item)) = state.queue.pop_front() {
                if let Item::Data(data) = &item {
                    let was_full = state.held >= self.shared.limit;
                    state.held -= data.len();
                    if was_full && state.held < self.shared.limit {
                        self.shared.drained.notify_one();
                    }
                }
                return (due, item);
            }
            state = self
                .shared
                .queued
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Gives a delivered read buffer back to the reader, if it is one of full size. Its bytes
    /// stay: the reader only grows it back to [`CHUNK`], so a full one costs no `memset`.
    fn recycle(&self, data: Vec<u8>) {
        if data.capacity() == CHUNK {
            let mut state = self.shared.lock();
            if state.spare.len() < SPARE_MAX {
                state.spare.push(data);
            }
        }
    }
}
