//! What a connection passes before the protocol starts: its first byte tells plain from TLS
//! (plain is refused when TLS is required), then the TLS handshake — all within the deadline
//! of the [`Guarded`] socket, so that a silent or trickled handshake cannot hold a thread.
//! Also the polite way to refuse: say why, then let the client read it.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ferry_proto::{Code, Driver, Framing};
use ferry_secure::{Detected, SecureError, ServerTls, Stream};

use crate::stream::{Guarded, Wait};

/// A connection as the session sees it: plain, or TLS over the guarded socket.
pub(crate) type Conn<'a> = Stream<Guarded<'a>>;

/// How long a refused client gets to read our last words before the socket closes.
pub(crate) const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// What a plain ferry client is told by a server that requires TLS.
const TLS_REQUIRED: &str = "this server requires TLS: connect with --tls (and --pin or --ca)";
/// What a seed-framing client is told by a server that requires TLS.
const TLS_REQUIRED_SEED: &str = "this server requires TLS, which the seed framing cannot carry";

/// Opens an accepted connection under `io`'s current wait: with `tls`, waits for the first
/// byte, refuses plain connections (logged; the client is told why) and completes the TLS
/// handshake. Without `tls`, only a TLS handshake is refused (logged); anything else, even a
/// timeout or a stop, is left to the session, which answers it as it always has.
/// `None`: the connection was refused and should be closed.
pub(crate) fn open<'a>(
    mut io: Guarded<'a>,
    peer: SocketAddr,
    tls: Option<&ServerTls>,
) -> Option<Conn<'a>> {
    let first = match (io.peek_first(), tls) {
        (Ok(Some(b)), _) => b,
        (Ok(None) | Err(_), None) => return Some(Stream::plain(io)),
        (Ok(None), Some(_)) => {
            log::debug!("{peer}: closed the connection before sending anything");
            return None;
        }
        (Err(e), Some(_)) => {
            log::info!("{peer}: no TLS handshake: {e}");
            return None;
        }
    };
    // The byte is there: `detect` decides at once.
    match (
        ferry_secure::detect(tls.is_some(), tls.is_some(), io.tcp()),
        tls,
    ) {
        (Ok(Detected::Tls), Some(tls)) => match ferry_secure::accept(tls, io) {
            Ok(stream) => Some(stream),
            Err(e) => {
                log::warn!("{e}");
                None
            }
        },
        (Ok(_), _) => Some(Stream::plain(io)),
        (Err(e @ SecureError::PlainRefused { .. }), _) => {
            // Either framing is told in one ERROR frame (PROTOCOL.md §2.1 for the seed's).
            let why = if Framing::detect(first) == Framing::Ferry {
                log::warn!("{e} (ferry framing; told so)");
                TLS_REQUIRED
            } else {
                log::warn!(
                    "{e} (seed framing, refused whenever TLS or a token is required; told so)"
                );
                TLS_REQUIRED_SEED
            };
            io.close_within(REFUSAL_LINGER);
            let mut d = Driver::new(Stream::plain(io), ferry_proto::Connection::server());
            d.conn_mut().close_with_error(Code::Unsupported, why);
            let _ = d.flush();
            let (mut stream, _) = d.into_parts();
            let _ = stream.shutdown_write();
            linger(&mut stream);
            None
        }
        (Err(e), _) => {
            log::warn!("{e}");
            None
        }
    }
}

/// After our last words and a half-close: reads and drops what the client still sends, until
/// it closes or [`REFUSAL_LINGER`] passes (or the closing deadline, if sooner), so that
/// closing with unread bytes does not reset the connection before the client has read why it
/// was refused or cut off. A stop does not cut it short: the connection is closing already
/// (see [`Guarded::close_within`](crate::stream::Guarded::close_within)).
pub(crate) fn linger(stream: &mut Conn<'_>) {
    stream
        .get_mut()
        .set_wait(Wait::Until(Instant::now() + REFUSAL_LINGER), true);
    let mut sink = [0u8; 4096];
    loop {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

/// Ends the sending half: TLS `close_notify` if TLS, then TCP's. Best effort.
pub(crate) fn shutdown(stream: &mut Conn<'_>) {
    if let Err(e) = stream.shutdown_write() {
        if e.kind() != io::ErrorKind::BrokenPipe && e.kind() != io::ErrorKind::ConnectionReset {
            log::debug!(
                "{}: closing the connection: {e}",
                stream
                    .peer_addr()
                    .map_or_else(|_| "?".to_owned(), |a| a.to_string())
            );
        }
    }
}
