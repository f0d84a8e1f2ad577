//! The TLS handshake with rustls' unbuffered API over a [`Transport`], into this crate's
//! buffers, then the hand-over of the keys to [`Tls`]; and why a handshake failed, in words
//! for the user.

use std::io;
use std::ops::DerefMut;

use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::kernel::KernelConnection;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, UnbufferedConnectionCommon, UnbufferedStatus};
use rustls::ExtractedSecrets;

use crate::record::MAX_RECORD;
use crate::tls::{Inbox, Kernel, Outbox, Tls};
use crate::{Fingerprint, SecureError, Transport};

/// Alerts and the like still owed to the peer are flushed in at most this many steps.
const ALERT_STEPS: usize = 8;

/// One side of rustls' unbuffered connection, `C` (whose records carry `D`), for
/// [`handshake`]: both sides have these methods, under the same names but in no common trait.
pub(crate) struct Side<C, D> {
    /// `process_tls_records`.
    process: for<'c, 'i> fn(
        &'c mut UnbufferedConnectionCommon<D>,
        &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, D>,
    /// `dangerous_into_kernel_connection`: the keys, and rustls' key schedule.
    into_kernel: fn(C) -> Result<Keys<D>, rustls::Error>,
    /// The key schedule as this side's [`Kernel`].
    kernel: fn(KernelConnection<D>) -> Kernel,
}

/// The keys, and rustls' key schedule, after the handshake.
type Keys<D> = (ExtractedSecrets, KernelConnection<D>);

/// The server's side, for [`crate::accept`].
pub(crate) const SERVER: Side<UnbufferedServerConnection, ServerConnectionData> = Side {
    process: UnbufferedConnectionCommon::<ServerConnectionData>::process_tls_records,
    into_kernel: UnbufferedServerConnection::dangerous_into_kernel_connection,
    kernel: Kernel::Server,
};

/// The client's side, for [`crate::connect`].
pub(crate) const CLIENT: Side<UnbufferedClientConnection, ClientConnectionData> = Side {
    process: UnbufferedConnectionCommon::<ClientConnectionData>::process_tls_records,
    into_kernel: UnbufferedClientConnection::dangerous_into_kernel_connection,
    kernel: Kernel::Client,
};

/// What one step of the handshake asks for.
enum Next {
    /// Call rustls again.
    Again,
    /// Send what is queued.
    Send,
    /// Read more from the peer (after sending what is queued).
    Read,
    /// rustls allows application data: done unless it is still handshaking.
    Traffic,
    /// The handshake failed.
    Fail(HandshakeFailure),
}

/// Runs the handshake over `io` to completion (a `WouldBlock`/`TimedOut` from `io` ends it: the
/// transport bounds it), then hands the keys over. Returns the connection and the peer's leaf
/// certificate's fingerprint.
pub(crate) fn handshake<C, D, T>(
    side: &Side<C, D>,
    mut conn: C,
    mut io: T,
) -> Result<(Tls<T>, Option<Fingerprint>), HandshakeFailure>
where
    C: DerefMut<Target = UnbufferedConnectionCommon<D>>,
    T: Transport,
{
    let mut inbox = Inbox::new();
    let mut outbox = Outbox::new();
    let mut early = Vec::new();
    loop {
        if outbox.free() < MAX_RECORD {
            outbox.send(&mut io)?;
        }
        // Once the handshake is done, records are left for `Tls`.
        let handshaking = conn.is_handshaking();
        let mut done: [u8; 0] = [];
        let incoming = if handshaking {
            inbox.pending()
        } else {
            &mut done[..]
        };
        let UnbufferedStatus { discard, state } = (side.process)(&mut conn, incoming);
        let next = match state {
            Err(e) => Next::Fail(HandshakeFailure::Tls(e)),
            Ok(ConnectionState::EncodeTlsData(mut data)) => match data.encode(outbox.space()) {
                Ok(n) => {
                    outbox.commit(n);
                    Next::Again
                }
                Err(e) => Next::Fail(HandshakeFailure::Tls(rustls::Error::General(e.to_string()))),
            },
            Ok(ConnectionState::TransmitTlsData(data)) => {
                data.done();
                Next::Send
            }
            Ok(ConnectionState::BlockedHandshake) => Next::Read,
            Ok(ConnectionState::WriteTraffic(_)) => Next::Traffic,
            Ok(ConnectionState::ReadTraffic(mut records)) => {
                let mut next = Next::Again;
                while let Some(record) = records.next_record() {
                    match record {
                        Ok(r) => early.extend_from_slice(r.payload),
                        Err(e) => {
                            next = Next::Fail(HandshakeFailure::Tls(e));
                            break;
                        }
                    }
                }
                next
            }
            Ok(ConnectionState::PeerClosed | ConnectionState::Closed) => {
                Next::Fail(HandshakeFailure::Io(io::ErrorKind::UnexpectedEof.into()))
            }
            Ok(other) => Next::Fail(HandshakeFailure::Tls(rustls::Error::General(format!(
                "unexpected state during the handshake: {other:?}"
            )))),
        };
        inbox.consume(discard);
        match next {
            Next::Again => {}
            Next::Send => outbox.send(&mut io)?,
            Next::Traffic if !conn.is_handshaking() => break,
            Next::Read | Next::Traffic => {
                outbox.send(&mut io)?;
                if inbox.fill(&mut io)? == 0 {
                    return Err(HandshakeFailure::Io(io::ErrorKind::UnexpectedEof.into()));
                }
            }
            Next::Fail(failure) => {
                send_alert(&failure, side, &mut conn, &mut inbox, &mut outbox, &mut io);
                return Err(failure);
            }
        }
    }
    // Push out anything queued at the end (the server's session tickets), so the peer is not
    // left waiting on it; if the transport is not ready, it goes out before the next record.
    match outbox.send(&mut io) {
        Err(e)
            if !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            return Err(HandshakeFailure::Io(e));
        }
        _ => {}
    }
    let peer = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| Fingerprint::of_der(c));
    let (secrets, kernel) = (side.into_kernel)(conn).map_err(HandshakeFailure::Tls)?;
    let kernel = (secrets, (side.kernel)(kernel));
    let tls = Tls::new(io, kernel, inbox, outbox, early)
        .map_err(|e| HandshakeFailure::Io(io::Error::new(io::ErrorKind::InvalidData, e)))?;
    Ok((tls, peer))
}

/// Best effort: sends the alert rustls queued when the handshake failed on a verdict about the
/// peer (its certificate refused, no common parameters), so the peer learns why. rustls hands
/// out queued messages before it looks at the input again (which must still be passed: it
/// refers to it). After input rustls could not parse (the peer does not speak TLS, or broke
/// it), no alert is sent: rustls would parse that input again and fail a second time.
fn send_alert<C, D, T: Transport>(
    failure: &HandshakeFailure,
    side: &Side<C, D>,
    conn: &mut UnbufferedConnectionCommon<D>,
    inbox: &mut Inbox,
    outbox: &mut Outbox,
    io: &mut T,
) {
    use rustls::Error as E;
    let verdict = matches!(
        failure,
        HandshakeFailure::Tls(
            E::InvalidCertificate(_) | E::NoCertificatesPresented | E::PeerIncompatible(_)
        )
    );
    if !verdict {
        return;
    }
    for _ in 0..ALERT_STEPS {
        let UnbufferedStatus { discard, state } = (side.process)(conn, inbox.pending());
        let go_on = match state {
            Ok(ConnectionState::EncodeTlsData(mut data)) => data
                .encode(outbox.space())
                .map(|n| outbox.commit(n))
                .is_ok(),
            Ok(ConnectionState::TransmitTlsData(data)) => {
                data.done();
                true
            }
            _ => false,
        };
        inbox.consume(discard);
        if !go_on {
            break;
        }
    }
    let _ = outbox.send(io);
}

/// Why a handshake failed: the TLS layer or the transport.
#[derive(Debug)]
pub(crate) enum HandshakeFailure {
    Tls(rustls::Error),
    Io(io::Error),
}

impl From<io::Error> for HandshakeFailure {
    fn from(e: io::Error) -> Self {
        HandshakeFailure::Io(e)
    }
}

impl HandshakeFailure {
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
