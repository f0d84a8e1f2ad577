//! A TLS 1.3 connection after the handshake: caller-owned buffers, few copies, big system
//! calls.
//!
//! - **Receiving**: with a caller buffer of at least [`DIRECT_MIN`] bytes (the server's body
//!   buffer, the protocol driver's read buffer), ciphertext is read from the transport straight
//!   into it and each record decrypted in place, its plaintext landing right after the previous
//!   record's: the only user-space copy is of the one partial record at the end of a read. Smaller
//!   reads go through the connection's own inbox (decrypted there, then copied).
//! - **Sending**: up to [`OUTBOX_LEN`] bytes of records are sealed from the caller's buffer
//!   into the outbox (the copy is fused with encryption, in cache) and written with one call.
//! - Key updates (both ways), session tickets, alerts and `close_notify` are handled here, with
//!   the keys rustls derives (`rustls::kernel`).
//!
//! Transport errors (`WouldBlock`, `TimedOut`, ...) leave every buffer and key as it was, so
//! the call can be retried. A write that has accepted bytes returns `Ok` even if sending them
//! then fails; the failure is reported by the next call (as rustls' own streams do).

use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::ops::Range;

use rustls::client::ClientConnectionData;
use rustls::kernel::KernelConnection;
use rustls::server::ServerConnectionData;
use rustls::ExtractedSecrets;

use crate::record::{
    record_len, Protection, RecordError, ALERT, APPLICATION_DATA, HANDSHAKE, HEADER_LEN,
    MAX_FRAGMENT, MAX_RECORD, MAX_SEALED,
};
use crate::Transport;

/// Bytes of the inbox: the handshake (rustls allows handshake messages up to 64 KiB), reads
/// into small caller buffers, and the partial record left over from a direct read.
pub(crate) const INBOX_LEN: usize = 0x1_0000 + 2 * MAX_RECORD;
/// Bytes of the outbox: sealed records are written to the transport this many at a time.
pub(crate) const OUTBOX_LEN: usize = 16 * MAX_SEALED;
/// Caller buffers at least this large are read into directly (ciphertext, decrypted in place).
pub(crate) const DIRECT_MIN: usize = 2 * MAX_RECORD;
/// Records sent under one key before this side moves to the next one (a TLS 1.3 key update),
/// well under the AES-GCM confidentiality limit of 2^24.5 records.
const KEY_UPDATE_AFTER: u64 = 1 << 23;
/// A TLS 1.3 `KeyUpdate` handshake message with `update_not_requested`.
const KEY_UPDATE: [u8; 5] = [24, 0, 0, 1, 0];
/// Handshake message type of a `NewSessionTicket`.
const NEW_SESSION_TICKET: u8 = 4;
/// Handshake message type of a `KeyUpdate`.
const KEY_UPDATE_TYPE: u8 = 24;
/// A `close_notify` alert (level warning).
const CLOSE_NOTIFY: [u8; 2] = [1, 0];

/// What rustls keeps after the handshake: the key schedule (for key updates) and, on the
/// client, the session ticket store.
pub(crate) enum Kernel {
    /// This side is the server.
    Server(KernelConnection<ServerConnectionData>),
    /// This side is the client.
    Client(KernelConnection<ClientConnectionData>),
}

impl Kernel {
    fn next_tx(&mut self) -> Result<Protection, RecordError> {
        let (seq, secrets) = match self {
            Kernel::Server(k) => k.update_tx_secret(),
            Kernel::Client(k) => k.update_tx_secret(),
        }?;
        Protection::new(seq, secrets)
    }

    fn next_rx(&mut self) -> Result<Protection, RecordError> {
        let (seq, secrets) = match self {
            Kernel::Server(k) => k.update_rx_secret(),
            Kernel::Client(k) => k.update_rx_secret(),
        }?;
        Protection::new(seq, secrets)
    }

    fn session_ticket(&mut self, payload: &[u8]) -> Result<(), RecordError> {
        match self {
            Kernel::Client(k) => Ok(k.handle_new_session_ticket(payload)?),
            Kernel::Server(_) => Err(RecordError::Unexpected("a session ticket from a client")),
        }
    }
}

/// Bytes received and not yet used: `buf[start..end]`.
pub(crate) struct Inbox {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Inbox {
    pub(crate) fn new() -> Self {
        Inbox {
            buf: vec![0; INBOX_LEN].into(),
            start: 0,
            end: 0,
        }
    }

    /// The bytes received and not yet used.
    pub(crate) fn pending(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.end]
    }

    /// The first `n` pending bytes are used.
    pub(crate) fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
    }

    /// Reads more from `io` after the pending bytes (moved to the front first); `Ok(0)` at the
    /// end of the stream. Nothing changes on an error.
    pub(crate) fn fill(&mut self, io: &mut impl Read) -> io::Result<usize> {
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        if self.end == self.buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the peer's TLS messages do not fit in the connection's buffer",
            ));
        }
        let n = io.read(&mut self.buf[self.end..])?;
        self.end += n;
        Ok(n)
    }

    /// Replaces the pending bytes with `bytes` (at most the buffer's length).
    fn replace(&mut self, bytes: &[u8]) {
        self.buf[..bytes.len()].copy_from_slice(bytes);
        self.start = 0;
        self.end = bytes.len();
    }
}

/// Bytes to send, in order: `buf[start..end]`.
pub(crate) struct Outbox {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Outbox {
    pub(crate) fn new() -> Self {
        Outbox {
            buf: vec![0; OUTBOX_LEN].into(),
            start: 0,
            end: 0,
        }
    }

    /// Room left after the queued bytes.
    pub(crate) fn free(&self) -> usize {
        self.buf.len() - self.end
    }

    /// The room after the queued bytes, to encode into; then [`Outbox::commit`].
    pub(crate) fn space(&mut self) -> &mut [u8] {
        &mut self.buf[self.end..]
    }

    /// `n` bytes were written into [`Outbox::space`].
    pub(crate) fn commit(&mut self, n: usize) {
        self.end += n;
    }

    /// Writes everything queued to `io`. On an error, what was written stays written and the
    /// rest queued.
    pub(crate) fn send(&mut self, io: &mut impl Write) -> io::Result<()> {
        while self.start < self.end {
            match io.write(&self.buf[self.start..self.end]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.start += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.start = 0;
        self.end = 0;
        Ok(())
    }
}

/// The keys and what the peer said about the connection.
struct Keys {
    kernel: Kernel,
    rx: Protection,
    tx: Protection,
    /// The peer sent `close_notify`: nothing more will be read.
    peer_closed: bool,
    /// The peer asked for a key update: send one before the next record.
    owe_key_update: bool,
}

impl Keys {
    /// Acts on a record that is not application data: an alert or post-handshake messages.
    fn control(&mut self, kind: u8, msg: &[u8]) -> Result<(), RecordError> {
        match (kind, msg) {
            (ALERT, [_, 0]) => self.peer_closed = true,
            // user_canceled is a warning, followed by close_notify.
            (ALERT, [1, 90]) => {}
            (ALERT, [_, d]) => return Err(RecordError::Alert((*d).into())),
            (ALERT, _) => return Err(RecordError::Unexpected("a malformed alert")),
            (HANDSHAKE, []) => return Err(RecordError::Unexpected("an empty handshake record")),
            (HANDSHAKE, _) => self.handshake_messages(msg)?,
            _ => return Err(RecordError::Unexpected("a record of an unknown type")),
        }
        Ok(())
    }

    fn handshake_messages(&mut self, mut msgs: &[u8]) -> Result<(), RecordError> {
        const FRAGMENTED: RecordError =
            RecordError::Unexpected("a handshake message split across records");
        while let [kind, a, b, c, rest @ ..] = msgs {
            let len = u32::from_be_bytes([0, *a, *b, *c]) as usize;
            let (payload, after) = rest.split_at_checked(len).ok_or(FRAGMENTED)?;
            msgs = after;
            match *kind {
                NEW_SESSION_TICKET => self.kernel.session_ticket(payload)?,
                KEY_UPDATE_TYPE => {
                    if !after.is_empty() {
                        return Err(RecordError::Unexpected(
                            "a key update not at the end of its record",
                        ));
                    }
                    match payload {
                        [0] => {}
                        [1] => self.owe_key_update = true,
                        _ => return Err(RecordError::Unexpected("a malformed key update")),
                    }
                    self.rx = self.kernel.next_rx()?;
                }
                _ => {
                    return Err(RecordError::Unexpected(
                        "a handshake message after the handshake",
                    ))
                }
            }
        }
        if msgs.is_empty() {
            Ok(())
        } else {
            Err(FRAGMENTED)
        }
    }
}

/// An established TLS 1.3 connection over `T`; see the module docs.
pub(crate) struct Tls<T> {
    io: T,
    keys: Keys,
    inbox: Inbox,
    outbox: Outbox,
    /// Decrypted application data in the inbox, not yet read.
    plain: Range<usize>,
    /// Application data that reached rustls during the handshake, not yet read.
    early: Vec<u8>,
    /// This side sent `close_notify`: nothing more may be written.
    sent_close: bool,
    /// The connection failed for good (a bad record, an alert): every later call says why.
    broken: Option<RecordError>,
}

impl<T: fmt::Debug> fmt::Debug for Tls<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("io", &self.io)
            .field("rx", &self.keys.rx)
            .field("tx", &self.keys.tx)
            .field("peer_closed", &self.keys.peer_closed)
            .field("sent_close", &self.sent_close)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl<T: Transport> Tls<T> {
    /// Takes over from rustls after the handshake: `inbox` may already hold the first records,
    /// `outbox` bytes still to send, `early` application data rustls decrypted.
    pub(crate) fn new(
        io: T,
        (secrets, kernel): (ExtractedSecrets, Kernel),
        inbox: Inbox,
        outbox: Outbox,
        early: Vec<u8>,
    ) -> Result<Self, RecordError> {
        let ExtractedSecrets { tx, rx } = secrets;
        Ok(Tls {
            io,
            keys: Keys {
                kernel,
                rx: Protection::new(rx.0, rx.1)?,
                tx: Protection::new(tx.0, tx.1)?,
                peer_closed: false,
                owe_key_update: false,
            },
            inbox,
            outbox,
            plain: 0..0,
            early,
            sent_close: false,
            broken: None,
        })
    }

    /// The transport.
    pub(crate) fn io(&self) -> &T {
        &self.io
    }

    /// The transport, mutably.
    pub(crate) fn io_mut(&mut self) -> &mut T {
        &mut self.io
    }

    /// Remembers a failure for good and turns it into an I/O error.
    fn fail(&mut self, e: RecordError) -> io::Error {
        self.broken = Some(e.clone());
        invalid(e)
    }

    fn check_broken(&self) -> io::Result<()> {
        self.broken.clone().map_or(Ok(()), |e| Err(invalid(e)))
    }

    /// Moves already decrypted application data into `out`.
    fn take_plain(&mut self, out: &mut [u8]) -> usize {
        if !self.early.is_empty() {
            let n = self.early.len().min(out.len());
            out[..n].copy_from_slice(&self.early[..n]);
            self.early.drain(..n);
            return n;
        }
        let n = self.plain.len().min(out.len());
        out[..n].copy_from_slice(&self.inbox.buf[self.plain.start..self.plain.start + n]);
        self.plain.start += n;
        n
    }

    /// Opens the first record in the inbox if it is complete; `Ok(false)` if it is not.
    fn open_in_inbox(&mut self) -> Result<bool, RecordError> {
        let Some(len) = record_len(self.inbox.pending())? else {
            return Ok(false);
        };
        let start = self.inbox.start;
        let content = start + HEADER_LEN;
        let (kind, n) = self
            .keys
            .rx
            .open(&mut self.inbox.buf, start..start + len, content)?;
        self.inbox.consume(len);
        if kind == APPLICATION_DATA {
            self.plain = content..content + n;
        } else {
            self.keys
                .control(kind, &self.inbox.buf[content..content + n])?;
        }
        Ok(true)
    }

    /// Reads ciphertext straight into `out` (after the partial record from the inbox) and
    /// decrypts every complete record in place, the plaintext contiguous from `out[0]`.
    /// Returns the application data bytes (0 when only a partial or control record came).
    fn read_direct(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let carried = self.inbox.end - self.inbox.start;
        out[..carried].copy_from_slice(self.inbox.pending());
        let got = self.io.read(&mut out[carried..])?;
        if got == 0 {
            return Err(truncated());
        }
        let filled = carried + got;
        let (mut pos, mut data) = (0, 0);
        let outcome = loop {
            let len = match record_len(&out[pos..filled]) {
                Ok(Some(len)) => len,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            };
            match self.keys.rx.open(out, pos..pos + len, data) {
                Ok((APPLICATION_DATA, n)) => data += n,
                Ok((kind, n)) => {
                    if let Err(e) = self.keys.control(kind, &out[data..data + n]) {
                        break Err(e);
                    }
                }
                Err(e) => break Err(e),
            }
            pos += len;
            if self.keys.peer_closed {
                // Nothing after close_notify counts.
                pos = filled;
            }
        };
        // A partial record waits in the inbox; after a failure nothing more is read.
        let tail = if outcome.is_ok() {
            pos..filled
        } else {
            filled..filled
        };
        self.inbox.replace(&out[tail]);
        match outcome {
            Ok(()) => Ok(data),
            Err(e) => {
                let err = self.fail(e);
                // Deliver what came before the failure; the next call reports it.
                if data > 0 {
                    Ok(data)
                } else {
                    Err(err)
                }
            }
        }
    }

    /// Reads application data; `Ok(0)` only after the peer's `close_notify`.
    pub(crate) fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            let n = self.take_plain(out);
            if n > 0 {
                return Ok(n);
            }
            if self.keys.peer_closed {
                return Ok(0);
            }
            self.check_broken()?;
            match self.open_in_inbox() {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => return Err(self.fail(e)),
            }
            // Waiting for the peer: first send what it may be waiting for.
            self.outbox.send(&mut self.io)?;
            if out.len() >= DIRECT_MIN {
                let n = self.read_direct(out)?;
                if n > 0 {
                    return Ok(n);
                }
            } else if self.inbox.fill(&mut self.io)? == 0 {
                return Err(truncated());
            }
        }
    }

    /// Seals one record into the outbox (which has room for two), after a key update if one
    /// is due.
    fn seal(&mut self, kind: u8, content: &[u8]) -> Result<(), RecordError> {
        let keys = &mut self.keys;
        if keys.owe_key_update || keys.tx.seq() >= KEY_UPDATE_AFTER {
            let n = keys.tx.seal(HANDSHAKE, &KEY_UPDATE, self.outbox.space())?;
            self.outbox.commit(n);
            keys.tx = keys.kernel.next_tx()?;
            keys.owe_key_update = false;
        }
        let n = keys.tx.seal(kind, content, self.outbox.space())?;
        self.outbox.commit(n);
        Ok(())
    }

    /// Seals as much of `bufs` as the outbox holds and sends it; returns the bytes taken.
    pub(crate) fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.check_broken()?;
        if self.sent_close {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after the TLS connection was closed for writing",
            ));
        }
        // A failure left over from the last call is reported now, before taking anything.
        self.outbox.send(&mut self.io)?;
        let mut taken = 0;
        'bufs: for buf in bufs {
            for chunk in buf.chunks(MAX_FRAGMENT) {
                if self.outbox.free() < 2 * MAX_SEALED {
                    break 'bufs;
                }
                if let Err(e) = self.seal(APPLICATION_DATA, chunk) {
                    let err = self.fail(e);
                    return if taken > 0 { Ok(taken) } else { Err(err) };
                }
                taken += chunk.len();
            }
        }
        if taken > 0 {
            // Reported by the next call (the bytes are taken already).
            let _ = self.outbox.send(&mut self.io);
        }
        Ok(taken)
    }

    /// Sends everything sealed so far, then flushes the transport.
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        self.outbox.send(&mut self.io)?;
        self.io.flush()
    }

    /// Sends `close_notify` (once) and everything before it, then ends the transport's
    /// sending half.
    pub(crate) fn shutdown_write(&mut self) -> io::Result<()> {
        if !self.sent_close {
            if self.outbox.free() < 2 * MAX_SEALED {
                self.outbox.send(&mut self.io)?;
            }
            if let Err(e) = self.seal(ALERT, &CLOSE_NOTIFY) {
                return Err(self.fail(e));
            }
            self.sent_close = true;
        }
        self.flush()?;
        self.io.shutdown_write()
    }
}

fn invalid(e: RecordError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// The transport ended without `close_notify`.
fn truncated() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the peer closed the connection without a TLS close_notify: the data may be truncated",
    )
}
