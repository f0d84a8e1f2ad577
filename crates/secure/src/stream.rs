//! [`Stream`]: a connection, plain or wrapped in TLS, as one `Read + Write`.

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use rustls::{ClientConnection, ConnectionCommon, ServerConnection, StreamOwned};

use crate::{Fingerprint, SecureError};

/// The byte transport under TLS: a `TcpStream`, or the adapter's own wrapper around one
/// (deadlines, stop flags). Implement it for such a wrapper to run the handshake through it.
///
/// Reads and writes may fail with `WouldBlock`/`TimedOut` (socket timeouts) and be retried:
/// rustls keeps its state across such errors.
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
#[derive(Debug)]
pub struct Stream<T: Transport = TcpStream> {
    inner: Inner<T>,
    peer_fingerprint: Option<Fingerprint>,
    newly_trusted: bool,
}

#[derive(Debug)]
enum Inner<T: Transport> {
    Plain(T),
    Server(Box<StreamOwned<ServerConnection, T>>),
    Client(Box<StreamOwned<ClientConnection, T>>),
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

    pub(crate) fn server(tls: StreamOwned<ServerConnection, T>) -> Self {
        Stream {
            inner: Inner::Server(Box::new(tls)),
            peer_fingerprint: None,
            newly_trusted: false,
        }
    }

    pub(crate) fn client(
        tls: StreamOwned<ClientConnection, T>,
        peer_fingerprint: Option<Fingerprint>,
        newly_trusted: bool,
    ) -> Self {
        Stream {
            inner: Inner::Client(Box::new(tls)),
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
            Inner::Server(s) => s.get_ref(),
            Inner::Client(s) => s.get_ref(),
        }
    }

    /// The transport, mutably (same caveat as [`Stream::get_ref`]).
    pub fn get_mut(&mut self) -> &mut T {
        match &mut self.inner {
            Inner::Plain(s) => s,
            Inner::Server(s) => s.get_mut(),
            Inner::Client(s) => s.get_mut(),
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
            Inner::Server(s) => close(&mut s.conn, &mut s.sock),
            Inner::Client(s) => close(&mut s.conn, &mut s.sock),
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

fn close<D, T: Transport>(conn: &mut ConnectionCommon<D>, sock: &mut T) -> io::Result<()> {
    conn.send_close_notify();
    while conn.wants_write() {
        match conn.write_tls(sock) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    sock.flush()?;
    sock.shutdown_write()
}

impl<T: Transport> Read for Stream<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.inner {
            Inner::Plain(s) => s.read(buf),
            Inner::Server(s) => s.read(buf),
            Inner::Client(s) => s.read(buf),
        }
    }
}

impl<T: Transport> Write for Stream<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.inner {
            Inner::Plain(s) => s.write(buf),
            Inner::Server(s) => s.write(buf),
            Inner::Client(s) => s.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match &mut self.inner {
            Inner::Plain(s) => s.write_vectored(bufs),
            Inner::Server(s) => rustls::Stream::new(&mut s.conn, &mut s.sock).write_vectored(bufs),
            Inner::Client(s) => rustls::Stream::new(&mut s.conn, &mut s.sock).write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            Inner::Plain(s) => s.flush(),
            Inner::Server(s) => s.flush(),
            Inner::Client(s) => s.flush(),
        }
    }
}

/// Drives a handshake to completion over a blocking socket.
pub(crate) fn handshake<D, T: Transport>(
    conn: &mut ConnectionCommon<D>,
    sock: &mut T,
) -> Result<(), HandshakeFailure> {
    while conn.is_handshaking() {
        match conn.complete_io(sock) {
            Ok((0, 0)) if conn.is_handshaking() => {
                return Err(HandshakeFailure::Io(io::ErrorKind::UnexpectedEof.into()))
            }
            Ok(_) => {}
            Err(e) => return Err(HandshakeFailure::from_io(e)),
        }
    }
    // Push out anything queued at the end (the server's session tickets), so the peer is not
    // left waiting on it.
    while conn.wants_write() {
        match conn.write_tls(sock) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            Err(e) => return Err(HandshakeFailure::Io(e)),
        }
    }
    Ok(())
}

/// Why a handshake failed: the TLS layer or the socket.
#[derive(Debug)]
pub(crate) enum HandshakeFailure {
    Tls(rustls::Error),
    Io(io::Error),
}

impl HandshakeFailure {
    fn from_io(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::InvalidData
            && e.get_ref().is_some_and(|i| i.is::<rustls::Error>())
        {
            let inner = e.into_inner().expect("checked above");
            match inner.downcast::<rustls::Error>() {
                Ok(tls) => HandshakeFailure::Tls(*tls),
                Err(other) => {
                    HandshakeFailure::Io(io::Error::new(io::ErrorKind::InvalidData, other))
                }
            }
        } else {
            HandshakeFailure::Io(e)
        }
    }

    /// The error for the user, with a hint for the side that saw it.
    pub(crate) fn into_error(self, peer: String, client_side: bool) -> SecureError {
        match self {
            HandshakeFailure::Tls(source) => {
                let hint = tls_hint(&source, client_side);
                SecureError::Handshake { peer, source, hint }
            }
            HandshakeFailure::Io(source) => {
                let hint = match source.kind() {
                    io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                        if client_side =>
                    {
                        "; the server closed the connection: it may not run TLS (or not TLS 1.3), or it may be refusing this client"
                    }
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                        "; the peer did not complete the handshake in time"
                    }
                    _ => "",
                };
                SecureError::HandshakeIo { peer, source, hint }
            }
        }
    }
}

fn tls_hint(e: &rustls::Error, client_side: bool) -> &'static str {
    use rustls::{CertificateError as C, Error as E};
    match e {
        E::InvalidCertificate(C::UnknownIssuer) => {
            "; the server's certificate is not signed by a CA this client trusts: pass --ca FILE, or --pin SHA256:... with the fingerprint the server prints, or --known-hosts FILE"
        }
        E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
            "; the certificate does not name this host: connect with a name it lists, or use --pin"
        }
        E::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            "; the server's certificate has expired"
        }
        E::InvalidMessage(_) if client_side => {
            "; the server did not answer in TLS: is it running with TLS?"
        }
        E::InvalidMessage(_) => "; the client did not speak TLS",
        E::PeerIncompatible(_) => "; the peer does not support TLS 1.3 with a common cipher suite",
        E::AlertReceived(rustls::AlertDescription::BadCertificate | rustls::AlertDescription::UnknownCA)
            if !client_side =>
        {
            "; the client refused this server's certificate (it may trust another CA or pin another fingerprint)"
        }
        _ => "",
    }
}
