//! # ferry-tokio
//!
//! An async driver for [`ferry_proto::Connection`] over any tokio
//! `AsyncRead + AsyncWrite` (a `TcpStream`, a `UnixStream`, a TLS stream, a `duplex` pipe).
//! It is the blocking [`ferry_proto::Driver`] with `.await`s: the machine decides what to
//! read and write, in which order and batches ([`ferry_proto::Input`],
//! [`Connection::queue_body`], [`Connection::poll_write`]); this crate only moves the bytes.
//! The same machine runs in memory, under the blocking driver and here, and the bytes on the
//! wire are the same.
//!
//! Cancellation: every write is reported to the machine as soon as it completes, so a future
//! dropped halfway (a `select!` with a timeout, say) leaves the machine exact. Call the same
//! method again with the same arguments to resume, or close the stream.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::io;

use ferry_proto::{BodyQueued, BodyRead, Connection, DriveError, Input, Step};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A [`Connection`] bound to an async stream.
#[derive(Debug)]
pub struct AsyncDriver<S> {
    stream: S,
    conn: Connection,
    input: Input,
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncDriver<S> {
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

    /// The machine, to issue commands; their bytes go out at the next flush or read.
    pub fn conn_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// The stream.
    pub fn stream(&self) -> &S {
        &self.stream
    }

    /// The stream, mutably.
    pub fn stream_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// True when the next [`next_step`](Self::next_step) can answer without reading.
    #[must_use]
    pub fn input_pending(&self) -> bool {
        self.input.pending(&self.conn)
    }

    /// Writes out everything the machine has queued.
    pub async fn flush(&mut self) -> Result<(), DriveError> {
        while !self.conn.poll_transmit().is_empty() {
            let n = self.stream.write(self.conn.poll_transmit()).await?;
            written(n)?;
            self.conn.advance(n);
        }
        self.stream.flush().await?;
        Ok(())
    }

    /// Returns the next thing to act on, reading from the stream (after flushing what is
    /// queued) only when the machine has nothing else. After the peer closes, keeps returning
    /// [`Event::Closed`](ferry_proto::Event::Closed).
    pub async fn next_step(&mut self) -> Result<Step, DriveError> {
        loop {
            if let Some(step) = self.input.next_step(&mut self.conn)? {
                return Ok(step);
            }
            self.flush().await?;
            let n = self.stream.read(self.input.space()).await?;
            self.input.filled(n);
        }
    }

    /// Moves the next body bytes into `out` (up to its length and the bytes due) and reports
    /// them to the machine. Returns 0 when the seed framing's body ended with the stream.
    pub async fn read_body(&mut self, out: &mut [u8]) -> Result<usize, DriveError> {
        match self.input.body_plan(&mut self.conn, out)? {
            BodyRead::Done(n) => Ok(n),
            BodyRead::Read(want) => {
                self.flush().await?;
                let n = self.stream.read(&mut out[..want]).await?;
                self.input.body_read(&mut self.conn, &out[..n])
            }
        }
    }

    /// Sends body bytes for the file begun with [`Connection::begin`], as
    /// [`Connection::queue_body`] plans them (small slices queued, large ones written from
    /// `data` in vectored writes). After an error or a cancellation, calling again with the
    /// same `data` resumes exactly where the writes stopped.
    pub async fn send_body(&mut self, data: &[u8]) -> Result<(), DriveError> {
        let mut rest = data;
        loop {
            match self.conn.queue_body(rest)? {
                BodyQueued::Flush => self.flush().await?,
                BodyQueued::Inline(n) => rest = &rest[n..],
                BodyQueued::Direct(n) => {
                    self.write_direct(&rest[..n]).await?;
                    rest = &rest[n..];
                }
            }
            if rest.is_empty() {
                return Ok(());
            }
        }
    }

    /// Writes the queue, the DATA header and `body` until the direct slice is out.
    async fn write_direct(&mut self, body: &[u8]) -> Result<(), DriveError> {
        while self.conn.body_pending() {
            let parts = self.conn.poll_write(body)?.io_slices();
            let n = self.stream.write_vectored(&parts).await?;
            written(n)?;
            self.conn.advance(n);
        }
        Ok(())
    }

    /// Flushes, then shuts down the writing half: the peer sees the end of the stream.
    pub async fn close(&mut self) -> Result<(), DriveError> {
        self.flush().await?;
        self.stream.shutdown().await?;
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
