//! [`Stream`]: a connection, plain or wrapped in TLS, as one `Read + Write`.

use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use crate::tls::Tls;
use crate::Fingerprint;

/// The byte transport under TLS: a `TcpStream`, or the adapter's own wrapper around one
/// (deadlines, stop flags). Implement it for such a wrapper to run the handshake through it.
///
/// Reads and writes may fail with `WouldBlock`/`TimedOut` (socket timeouts) and be retried:
/// [`Stream`] keeps its state across such errors. During the handshake such an error ends it
/// (a wrapper retries inside its own deadline, as the server's and client's do).
pub trait Transport: Read + Write {
    /// The peer's address (the client uses its port for the known-hosts key).
    fn peer_addr(&self) -> io::Result<SocketAddr>;
    /// Ends the sending half (TCP `shutdown(Write)`).
    fn shutdown_write(&mut self) -> io::Result<()>;
}

impl Transport for TcpStream {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        TcpStream::peer_addr(self)
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        match self.shutdown(Shutdown::Write) {
            // A peer that is already gone is not an error here.
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            other => other,
        }
    }
}

/// A connected byte stream, plain or TLS over a [`Transport`] (a `TcpStream` by default), for
/// `ferry_proto::Driver`.
///
/// Made by [`crate::accept`], [`crate::accept_any`], [`crate::connect`] or [`Stream::plain`].
/// With TLS, end of stream is only reported (`Ok(0)`) after the peer's `close_notify`; a TCP
/// close without it reads as an `UnexpectedEof` error, so a truncated transfer cannot pass for a
/// complete one. Call [`Stream::shutdown_write`] when done sending so the peer sees a clean end.
/// With TLS, `flush` really writes (to the transport) and can fail or time out.
///
/// TLS moves records with few copies and big transport calls (see the `tls` module): a read
/// into a buffer of 33 KiB (two records) or more decrypts in place in it; a write seals up to
/// 16 records at a time and sends them in one call.
pub struct Stream<T: Transport = TcpStream> {
    inner: Inner<T>,
    peer_fingerprint: Option<Fingerprint>,
    newly_trusted: bool,
}

enum Inner<T: Transport> {
    Plain(T),
    Tls(Box<Tls<T>>),
}

impl<T: Transport + fmt::Debug> fmt::Debug for Stream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Stream");
        match &self.inner {
            Inner::Plain(io) => s.field("plain", io),
            Inner::Tls(tls) => s.field("tls", tls),
        };
        s.field("peer_fingerprint", &self.peer_fingerprint)
            .field("newly_trusted", &self.newly_trusted)
            .finish()
    }
}

impl<T: Transport> Stream<T> {
    /// Wraps a transport without encryption.
    pub fn plain(io: T) -> Self {
        Stream {
            inner: Inner::Plain(io),
            peer_fingerprint: None,
            newly_trusted: false,
        }
    }

    /// An established TLS connection; the fingerprint and first-use flag are the client's.
    pub(crate) fn tls(
        tls: Tls<T>,
        peer_fingerprint: Option<Fingerprint>,
        newly_trusted: bool,
    ) -> Self {
        Stream {
            inner: Inner::Tls(Box::new(tls)),
            peer_fingerprint,
            newly_trusted,
        }
    }

    /// Whether the stream is encrypted.
    pub fn is_tls(&self) -> bool {
        !matches!(self.inner, Inner::Plain(_))
    }

    /// The transport (for addresses, timeouts, options; reading or writing it directly would
    /// corrupt a TLS stream).
    pub fn get_ref(&self) -> &T {
        match &self.inner {
            Inner::Plain(s) => s,
            Inner::Tls(s) => s.io(),
        }
    }

    /// The transport, mutably (same caveat as [`Stream::get_ref`]).
    pub fn get_mut(&mut self) -> &mut T {
        match &mut self.inner {
            Inner::Plain(s) => s,
            Inner::Tls(s) => s.io_mut(),
        }
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.get_ref().peer_addr()
    }

    /// Client side: the SHA-256 fingerprint of the server's certificate (`None` when plain or
    /// on the server side).
    pub fn peer_fingerprint(&self) -> Option<Fingerprint> {
        self.peer_fingerprint
    }

    /// Client side: whether this connection just added the server to the known-hosts file
    /// (trust on first use); the client should tell the user, as ssh does.
    pub fn newly_trusted(&self) -> bool {
        self.newly_trusted
    }

    /// Ends the sending half: sends TLS `close_notify` (if TLS), flushes, shuts down TCP writes.
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        match &mut self.inner {
            Inner::Plain(s) => s.shutdown_write(),
            Inner::Tls(s) => s.shutdown_write(),
        }
    }
}

impl Stream<TcpStream> {
    /// The underlying TCP stream (for addresses, timeouts, `nodelay`; never read or write it).
    pub fn tcp(&self) -> &TcpStream {
        self.get_ref()
    }

    /// Sets the read timeout of the underlying TCP stream.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.tcp().set_read_timeout(timeout)
    }

    /// Sets the write timeout of the underlying TCP stream.
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.tcp().set_write_timeout(timeout)
    }
}

impl<T: Transport> Read for Stream<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.inner {
            Inner::Plain(s) => s.read(buf),
            Inner::Tls(s) => s.read(buf),
        }
    }
}

impl<T: Transport> Write for Stream<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.inner {
            Inner::Plain(s) => s.write(buf),
            Inner::Tls(s) => s.write_vectored(&[IoSlice::new(buf)]),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match &mut self.inner {
            Inner::Plain(s) => s.write_vectored(bufs),
            Inner::Tls(s) => s.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            Inner::Plain(s) => s.flush(),
            Inner::Tls(s) => s.flush(),
        }
    }
}
