//! The input half of every driver, without I/O: the read buffer for control frames, and what
//! the next step is. [`Driver`](crate::Driver) and the async adapter (`ferry-tokio`) are loops
//! that read into [`Input::space`] when [`Input::next_step`] says so, and move body bytes
//! through [`Input::body_plan`]: the decisions are made once, here.

use crate::conn::Connection;
use crate::driver::{DriveError, Step, READ_BUF_LEN};
use crate::error::UsageError;
use crate::event::{Event, Incoming};

/// A driver's read buffer and end-of-stream flag.
#[derive(Debug)]
pub struct Input {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    eof: bool,
}

impl Default for Input {
    fn default() -> Self {
        Self::new()
    }
}

/// How to get the next body bytes (see [`Input::body_plan`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum BodyRead {
    /// Done without reading: this many bytes were moved from the buffer (and reported), or 0
    /// when no byte is due.
    Done(usize),
    /// Flush, read at most this many bytes from the stream into the caller's buffer, then
    /// report them with [`Input::body_read`].
    Read(usize),
}

impl Input {
    /// An empty buffer of [`READ_BUF_LEN`] bytes.
    #[must_use]
    pub fn new() -> Self {
        Self {
            buf: vec![0; READ_BUF_LEN].into(),
            start: 0,
            end: 0,
            eof: false,
        }
    }

    /// True when [`next_step`](Self::next_step) can answer without reading: events are
    /// queued, body bytes are due, or received bytes wait in the buffer.
    #[must_use]
    pub fn pending(&self, conn: &Connection) -> bool {
        self.start < self.end || conn.has_events() || conn.incoming().is_some()
    }

    /// The next thing to act on, if the machine has one without reading more: `Ok(None)`
    /// means flush, read into [`space`](Self::space), and report with
    /// [`filled`](Self::filled). After the peer closes, keeps returning [`Event::Closed`].
    /// Fails with [`UsageError::Unanswered`] while the machine
    /// [`is_paused`](Connection::is_paused): reading on would wait for nothing.
    pub fn next_step(&mut self, conn: &mut Connection) -> Result<Option<Step>, DriveError> {
        loop {
            if let Some(e) = conn.poll_event() {
                return Ok(Some(Step::Event(e)));
            }
            if let Some(b) = conn.incoming() {
                return Ok(Some(Step::Body(b)));
            }
            if conn.is_paused() {
                return Err(UsageError::Unanswered.into());
            }
            if self.start < self.end {
                self.start += conn.handle_input(&self.buf[self.start..self.end])?;
                continue;
            }
            if !self.eof {
                return Ok(None);
            }
            if conn.is_closed() {
                // The machine queued `Closed` once; the stream stays closed.
                return Ok(Some(Step::Event(Event::Closed)));
            }
            conn.handle_eof()?;
        }
    }

    /// Where to read the next bytes into; only asked for when the buffer is empty.
    pub fn space(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    /// Reports `n` bytes read into [`space`](Self::space); 0 is the end of the stream.
    pub fn filled(&mut self, n: usize) {
        self.start = 0;
        self.end = n.min(self.buf.len());
        self.eof = n == 0;
    }

    /// Moves the next body bytes into `out` from the buffer if it holds some (reporting them
    /// to the machine), or says how many to read from the stream.
    pub fn body_plan(
        &mut self,
        conn: &mut Connection,
        out: &mut [u8],
    ) -> Result<BodyRead, DriveError> {
        let want = match conn.incoming() {
            Some(Incoming::Bytes(n)) => usize::try_from(n).unwrap_or(usize::MAX).min(out.len()),
            Some(Incoming::UntilEof) => out.len(),
            None => return Err(UsageError::NoBody.into()),
        };
        if want == 0 {
            return Ok(BodyRead::Done(0));
        }
        if self.start == self.end {
            return Ok(BodyRead::Read(want));
        }
        let n = want.min(self.end - self.start);
        out[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
        self.start += n;
        conn.body_received(&out[..n])?;
        Ok(BodyRead::Done(n))
    }

    /// Reports body bytes read from the stream after [`BodyRead::Read`]; an empty `data` is
    /// the end of the stream (which ends a seed body). Returns their count.
    pub fn body_read(&mut self, conn: &mut Connection, data: &[u8]) -> Result<usize, DriveError> {
        if data.is_empty() {
            self.eof = true;
            conn.handle_eof()?;
            return Ok(0);
        }
        conn.body_received(data)?;
        Ok(data.len())
    }
}
