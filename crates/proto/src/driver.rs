//! A thin blocking driver that runs a [`Connection`] over any `Read + Write` (PROTOCOL.md §9).
//!
//! It knows nothing about sockets: a `TcpStream`, a `UnixStream`, a TLS stream or an in-memory
//! pipe all work. It owns one read buffer; body bytes go straight between the stream and the
//! caller's buffers. What to write, in which order and batches, is the machine's
//! ([`Connection::queue_body`], [`Connection::poll_write`]); the driver only loops over it.
//!
//! After an I/O error (a timeout, `WouldBlock` on a non-blocking stream) the machine still
//! knows exactly which bytes went out, so the failed call can be repeated with the same
//! arguments.

use std::io::{self, Read, Write};

use crate::conn::{BodyQueued, Connection};
use crate::error::{Error, ProtocolError, UsageError};
use crate::event::{Event, Incoming};
use crate::input::{BodyRead, Input};

/// Size of the driver's read buffer for control frames.
pub const READ_BUF_LEN: usize = 64 * 1024;

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
    input: Input,
}

impl<S: Read + Write> Driver<S> {
    /// Binds `conn` to `stream`.
    pub fn new(stream: S, conn: Connection) -> Self {
        Self {
            stream,
            conn,
            input: Input::new(),
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
        self.input.pending(&self.conn)
    }

    /// Writes out everything the machine has queued.
    pub fn flush(&mut self) -> Result<(), DriveError> {
        while !self.conn.poll_transmit().is_empty() {
            let n = retry(|| self.stream.write(self.conn.poll_transmit()))?;
            written(n)?;
            self.conn.advance(n);
        }
        self.stream.flush()?;
        Ok(())
    }

    /// Returns the next thing to act on, reading from the stream (after flushing what is
    /// queued) only when the machine has nothing else. After the peer closes, keeps returning
    /// [`Event::Closed`].
    pub fn next_step(&mut self) -> Result<Step, DriveError> {
        loop {
            if let Some(step) = self.input.next_step(&mut self.conn)? {
                return Ok(step);
            }
            self.flush()?;
            let n = retry(|| self.stream.read(self.input.space()))?;
            self.input.filled(n);
        }
    }

    /// Moves the next body bytes into `out` (up to its length and the bytes due) and reports
    /// them to the machine. Returns 0 when the seed framing's body ended with the stream.
    pub fn read_body(&mut self, out: &mut [u8]) -> Result<usize, DriveError> {
        match self.input.body_plan(&mut self.conn, out)? {
            BodyRead::Done(n) => Ok(n),
            BodyRead::Read(want) => {
                self.flush()?;
                let n = retry(|| self.stream.read(&mut out[..want]))?;
                self.input.body_read(&mut self.conn, &out[..n])
            }
        }
    }

    /// Sends body bytes for the file begun with [`Connection::begin`], as
    /// [`Connection::queue_body`] plans them: small slices are queued (the queue written out
    /// before it would pass [`FLUSH_AT`](crate::FLUSH_AT) bytes), large ones written straight
    /// from `data` after anything queued, in vectored writes.
    ///
    /// After an error, calling again with the same `data` resumes exactly where the writes
    /// stopped (for `data` of at most [`MAX_DATA_PAYLOAD`](crate::wire::MAX_DATA_PAYLOAD)
    /// bytes; beyond, with the bytes after the DATA frames already completed).
    pub fn send_body(&mut self, data: &[u8]) -> Result<(), DriveError> {
        let mut rest = data;
        loop {
            match self.conn.queue_body(rest)? {
                BodyQueued::Flush => self.flush()?,
                BodyQueued::Inline(n) => rest = &rest[n..],
                BodyQueued::Direct(n) => {
                    self.write_direct(&rest[..n])?;
                    rest = &rest[n..];
                }
            }
            if rest.is_empty() {
                return Ok(());
            }
        }
    }

    /// Writes the queue, the DATA header and `body` until the direct slice is out.
    fn write_direct(&mut self, body: &[u8]) -> Result<(), DriveError> {
        while self.conn.body_pending() {
            let parts = self.conn.poll_write(body)?.io_slices();
            let n = retry(|| self.stream.write_vectored(&parts))?;
            written(n)?;
            self.conn.advance(n);
        }
        Ok(())
    }

    /// Gives back the stream and the machine.
    pub fn into_parts(self) -> (S, Connection) {
        (self.stream, self.conn)
    }
}

/// A write of 0 bytes means the stream can take no more.
fn written(n: usize) -> io::Result<()> {
    if n == 0 {
        return Err(io::ErrorKind::WriteZero.into());
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
