//! What the first bytes a server sent say about it, when the conversation failed before the
//! server said WELCOME: an HTTP or SSH server, a TLS server spoken to in plain, or a ferry
//! server's refusal that arrived where a TLS handshake was expected.

use std::io::Read;
use std::sync::{Arc, Mutex, PoisonError};

use ferry_proto::wire::{self, Frame, FRAME_HEADER_LEN};
use ferry_proto::Code;

/// How many of the first bytes received on a connection are kept for [`identify`].
pub(crate) const SNIFF_BYTES: usize = 512;

/// Most bytes read for a server's last words after a failed write.
const LAST_WORDS_BYTES: usize = 64 * 1024;

/// Longest excerpt of a foreign server's first line shown in messages.
const SHOWN_CHARS: usize = 60;

/// The first [`SNIFF_BYTES`] bytes received on a connection, shared between the socket that
/// records them and whoever explains a failure (the socket itself may be gone by then, as when
/// a TLS handshake fails).
#[derive(Debug, Clone, Default)]
pub(crate) struct FirstBytes(Arc<Mutex<Vec<u8>>>);

impl FirstBytes {
    /// Keeps what of `bytes` still fits.
    pub(crate) fn record(&self, bytes: &[u8]) {
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let room = SNIFF_BYTES.saturating_sub(kept.len());
        kept.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    /// A copy of what was kept.
    pub(crate) fn get(&self) -> Vec<u8> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// What a server's first bytes show it to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Peer {
    /// Nothing came.
    Silent,
    /// A ferry server's ERROR frame (a refusal), read in plain.
    FerryError {
        /// Its code.
        code: Code,
        /// Its words (not yet escaped).
        reason: String,
    },
    /// Something that is not ferry: how it looks, for "it answered like ...".
    Foreign(String),
    /// A TLS record: a TLS server (spoken to in plain), or the handshake's own answer.
    Tls,
    /// Ferry frames, or bytes too few to tell.
    Unknown,
}

/// Reads `first` (the first bytes a server sent).
pub(crate) fn identify(first: &[u8]) -> Peer {
    if first.is_empty() {
        return Peer::Silent;
    }
    if let Some(refusal) = ferry_error(first) {
        return refusal;
    }
    let line = first_line(first);
    if first.starts_with(b"HTTP/") {
        Peer::Foreign(format!("like an HTTP server ({line})"))
    } else if first.starts_with(b"SSH-") {
        Peer::Foreign(format!("like an SSH server ({line})"))
    } else if matches!(first, [0x15 | 0x16, 0x03, ..]) {
        Peer::Tls
    } else if first[0].is_ascii_graphic() {
        Peer::Foreign(format!("with {line:?}"))
    } else {
        Peer::Unknown
    }
}

/// After a write to the server failed (it stopped reading and closed): reads what it still
/// had to say, bounded by `input`'s own deadline and [`LAST_WORDS_BYTES`], and returns the
/// ERROR frame among it, if any (replies about earlier files may come first).
pub(crate) fn last_words(input: &mut impl Read) -> Option<(Code, String)> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < LAST_WORDS_BYTES {
        match input.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let mut rest = got.as_slice();
    while !rest.is_empty() {
        if let Some(Peer::FerryError { code, reason }) = ferry_error(rest) {
            return Some((code, reason));
        }
        let header: [u8; FRAME_HEADER_LEN] = rest.get(..FRAME_HEADER_LEN)?.try_into().ok()?;
        let (_, len) = wire::parse_header(header).ok()?;
        let next = FRAME_HEADER_LEN.checked_add(usize::try_from(len).ok()?)?;
        rest = rest.get(next..)?;
    }
    None
}

/// A whole ERROR frame at the start of `first`.
fn ferry_error(first: &[u8]) -> Option<Peer> {
    let header: [u8; FRAME_HEADER_LEN] = first.get(..FRAME_HEADER_LEN)?.try_into().ok()?;
    let (kind, len) = wire::parse_header(header).ok()?;
    if kind != wire::kind::ERROR {
        return None;
    }
    let end = FRAME_HEADER_LEN.checked_add(usize::try_from(len).ok()?)?;
    match Frame::decode(kind, first.get(FRAME_HEADER_LEN..end)?).ok()? {
        Frame::Error { code, reason } => Some(Peer::FerryError { code, reason }),
        _ => None,
    }
}

/// The first line of `bytes`, printable and short.
fn first_line(bytes: &[u8]) -> String {
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches('\r');
    let short: String = text.chars().take(SHOWN_CHARS).collect();
    let shown = ferry_proto::name::escape(&short);
    if text.chars().count() > SHOWN_CHARS {
        format!("{shown}...")
    } else {
        shown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_servers_are_named_by_their_first_line() {
        assert_eq!(
            identify(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"),
            Peer::Foreign("like an HTTP server (HTTP/1.1 400 Bad Request)".into())
        );
        assert_eq!(
            identify(b"SSH-2.0-OpenSSH_9.2\r\n"),
            Peer::Foreign("like an SSH server (SSH-2.0-OpenSSH_9.2)".into())
        );
        assert_eq!(identify(&[0x15, 0x03, 0x03, 0, 2, 2, 40]), Peer::Tls);
        assert_eq!(identify(b""), Peer::Silent);
        assert_eq!(
            identify(&[wire::kind::WELCOME, 0, 0, 0, 2, 0, 2]),
            Peer::Unknown
        );
        let long = identify(&[b'x'; 300]);
        assert!(
            matches!(&long, Peer::Foreign(t) if t.len() < 100),
            "{long:?}"
        );
        assert!(matches!(identify(b"220 smtp \x1b[2J\n"), Peer::Foreign(t) if !t.contains('\x1b')));
    }

    #[test]
    fn a_ferry_refusal_is_read_out_and_kept_bytes_are_capped() {
        let mut bytes = Vec::new();
        Frame::Error {
            code: Code::Denied,
            reason: "blocked".into(),
        }
        .encode(&mut bytes);
        let first = FirstBytes::default();
        first.record(&bytes);
        first.record(&[0; SNIFF_BYTES]);
        assert_eq!(first.get().len(), SNIFF_BYTES);
        assert_eq!(
            identify(&first.get()),
            Peer::FerryError {
                code: Code::Denied,
                reason: "blocked".into()
            }
        );
        // Cut short, it is not read as a refusal.
        assert_eq!(identify(&bytes[..bytes.len() - 1]), Peer::Unknown);
    }

    #[test]
    fn last_words_skip_replies_to_find_the_error() {
        let mut bytes = Vec::new();
        Frame::Welcome { version: 2 }.encode(&mut bytes);
        Frame::Error {
            code: Code::TooLarge,
            reason: "over 3 MiB".into(),
        }
        .encode(&mut bytes);
        assert_eq!(
            last_words(&mut bytes.as_slice()),
            Some((Code::TooLarge, "over 3 MiB".into()))
        );
        assert_eq!(last_words(&mut &bytes[..7]), None);
        assert_eq!(last_words(&mut &b"HTTP/1.1 400"[..]), None);
    }
}
