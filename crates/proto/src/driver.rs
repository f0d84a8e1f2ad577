//! A thin blocking driver that runs a [`Connection`] over any `Read + Write` (PROTOCOL.md §9).
//!
//! It knows nothing about sockets: a `TcpStream`, a `UnixStream`, a TLS stream or an in-memory
//! pipe all work. It owns one read buffer; body bytes go straight between the stream and the
//! caller's buffers.

use std::io::{self, IoSlice, Read, Write};

use crate::conn::Connection;
use crate::error::{Error, ProtocolError, UsageError};
use crate::event::{Event, Incoming};

/// Size of the driver's read buffer for control frames.
pub const READ_BUF_LEN: usize = 64 * 1024;
/// Body slices up to this size are copied into the transmit buffer so that many small files
/// share one write; larger ones are written directly from the caller's buffer.
pub const INLINE_BODY_MAX: usize = 16 * 1024;
/// Once this many bytes are queued, [`Driver::send_body`] writes them out without waiting for
/// the next blocking read: a burst of small files then streams to the peer, which starts
/// storing them while the rest are read, instead of arriving as one late batch.
pub const FLUSH_AT: usize = 64 * 1024;

/// What the caller should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Step {
    /// Act on this event.
    Event(Event),
    /// Raw body bytes are next: call [`Driver::read_body`].
    Body(Incoming),
}

/// An I/O failure or a protocol failure while driving a connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriveError {
    /// The stream failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// The peer or the caller broke the protocol.
    #[error(transparent)]
    Proto(#[from] Error),
}

impl From<ProtocolError> for DriveError {
    fn from(e: ProtocolError) -> Self {
        DriveError::Proto(e.into())
    }
}

impl From<UsageError> for DriveError {
    fn from(e: UsageError) -> Self {
        DriveError::Proto(e.into())
    }
}

/// A [`Connection`] bound to a blocking stream.
#[derive(Debug)]
pub struct Driver<S> {
    stream: S,
    conn: Connection,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    eof: bool,
}

impl<S: Read + Write> Driver<S> {
    /// Binds `conn` to `stream`.
    pub fn new(stream: S, conn: Connection) -> Self {
        Self {
            stream,
            conn,
            buf: vec![0; READ_BUF_LEN].into(),
            start: 0,
            end: 0,
            eof: false,
        }
    }

    /// The machine, to inspect.
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// The machine, to issue commands; their bytes go out at the next flush or blocking read.
    pub fn conn_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// The stream.
    pub fn stream(&self) -> &S {
        &self.stream
    }

    /// The stream, mutably (to set timeouts, say).
    pub fn stream_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// True when the next [`next_step`](Self::next_step) can answer without reading from the
    /// stream: events are queued or received bytes wait in the buffer. An adapter that batches
    /// its replies flushes only when this is false.
    #[must_use]
    pub fn input_pending(&self) -> bool {
        self.start < self.end || self.conn.has_events() || self.conn.incoming().is_some()
    }

    /// Writes out everything the machine has queued.
    pub fn flush(&mut self) -> Result<(), DriveError> {
        while !self.conn.poll_transmit().is_empty() {
            let n = retry(|| self.stream.write(self.conn.poll_transmit()))?;
            if n == 0 {
                return Err(io::Error::from(io::ErrorKind::WriteZero).into());
            }
            self.conn.transmitted(n);
        }
        self.stream.flush()?;
        Ok(())
    }

    /// Returns the next thing to act on, reading from the stream (after flushing what is
    /// queued) only when the machine has nothing else. After the peer closes, keeps returning
    /// [`Event::Closed`].
    pub fn next_step(&mut self) -> Result<Step, DriveError> {
        loop {
            if let Some(e) = self.conn.poll_event() {
                return Ok(Step::Event(e));
            }
            if let Some(b) = self.conn.incoming() {
                return Ok(Step::Body(b));
            }
            if self.start < self.end {
                let n = self.conn.handle_input(&self.buf[self.start..self.end])?;
                if n == 0 {
                    return Err(UsageError::Unanswered.into());
                }
                self.start += n;
                continue;
            }
            if self.eof {
                // Idempotent: the first call queues the final events, later ones nothing.
                self.conn.handle_eof()?;
                return Ok(Step::Event(self.conn.poll_event().unwrap_or(Event::Closed)));
            }
            self.fill()?;
        }
    }

    /// Moves the next body bytes into `out` (up to its length and the bytes due) and reports
    /// them to the machine. Returns 0 when the seed framing's body ended with the stream.
    pub fn read_body(&mut self, out: &mut [u8]) -> Result<usize, DriveError> {
        let want = match self.conn.incoming() {
            Some(Incoming::Bytes(n)) => usize::try_from(n).unwrap_or(usize::MAX).min(out.len()),
            Some(Incoming::UntilEof) => out.len(),
            None => return Err(UsageError::NoBody.into()),
        };
        if want == 0 {
            return Ok(0);
        }
        let n = if self.start < self.end {
            let n = want.min(self.end - self.start);
            out[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
            self.start += n;
            n
        } else {
            self.flush()?;
            let n = retry(|| self.stream.read(&mut out[..want]))?;
            if n == 0 {
                self.eof = true;
                self.conn.handle_eof()?;
                return Ok(0);
            }
            n
        };
        self.conn.body_received(&out[..n])?;
        Ok(n)
    }

    /// Sends body bytes for the file begun with [`Connection::begin`]: small slices are queued
    /// inline (and the queue written out once it holds [`FLUSH_AT`] bytes), large ones written
    /// straight from `data` together with anything queued, in one vectored write.
    pub fn send_body(&mut self, data: &[u8]) -> Result<(), DriveError> {
        if data.len() <= INLINE_BODY_MAX {
            self.conn.send_data(data)?;
            if self.conn.poll_transmit().len() >= FLUSH_AT {
                self.flush()?;
            }
            return Ok(());
        }
        for chunk in data.chunks(crate::wire::MAX_DATA_PAYLOAD as usize) {
            let header = self.conn.data_frame(chunk.len() as u32)?;
            let queued = self.conn.poll_transmit();
            let parts = [queued, header.as_bytes(), chunk];
            write_all_parts(&mut self.stream, &parts)?;
            let queued_len = queued.len();
            self.conn.transmitted(queued_len);
            self.conn.body_sent(chunk)?;
        }
        Ok(())
    }

    /// Gives back the stream and the machine.
    pub fn into_parts(self) -> (S, Connection) {
        (self.stream, self.conn)
    }

    fn fill(&mut self) -> Result<(), DriveError> {
        self.flush()?;
        let n = retry(|| self.stream.read(&mut self.buf))?;
        self.start = 0;
        self.end = n;
        self.eof = n == 0;
        Ok(())
    }
}

/// Writes all of `parts`, in order, with as few vectored writes as the stream allows.
fn write_all_parts<W: Write>(w: &mut W, parts: &[&[u8]]) -> io::Result<()> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut done = 0;
    while done < total {
        let mut skip = done;
        let slices: Vec<IoSlice<'_>> = parts
            .iter()
            .filter_map(|p| {
                let s = &p[skip.min(p.len())..];
                skip = skip.saturating_sub(p.len());
                (!s.is_empty()).then(|| IoSlice::new(s))
            })
            .collect();
        let n = retry(|| w.write_vectored(&slices))?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        done += n;
    }
    Ok(())
}

fn retry<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}
