//! TLS 1.3 record protection (RFC 8446 §5) once rustls has finished the handshake: one
//! direction's AEAD key, IV and sequence number, sealing a record into a buffer and opening
//! one in place (the plaintext may land a few bytes earlier, so that records opened one after
//! another end up contiguous in the caller's buffer).
//!
//! rustls derives the keys (and new ones on key updates, see `rustls::kernel`); this module
//! only applies them, with `ring`'s AEADs (the same code rustls itself would call).

use std::ops::Range;

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, NONCE_LEN};
use rustls::ConnectionTrafficSecrets;

/// Bytes of a record header: type, legacy version, length.
pub(crate) const HEADER_LEN: usize = 5;
/// Bytes of the AEAD tag (AES-GCM and ChaCha20-Poly1305 alike).
pub(crate) const TAG_LEN: usize = 16;
/// Most plaintext one record carries (2^14).
pub(crate) const MAX_FRAGMENT: usize = 16 * 1024;
/// Most bytes after the header of a protected record the peer may send (2^14 + 256).
const MAX_CIPHERTEXT: usize = MAX_FRAGMENT + 256;
/// Most bytes of one record on the wire, header included.
pub(crate) const MAX_RECORD: usize = HEADER_LEN + MAX_CIPHERTEXT;
/// Most bytes one record this side seals takes (no padding is added).
pub(crate) const MAX_SEALED: usize = HEADER_LEN + MAX_FRAGMENT + 1 + TAG_LEN;

/// The outer type of every protected TLS 1.3 record.
const OPAQUE_TYPE: u8 = 23;
/// The legacy record version every TLS 1.3 record carries.
const LEGACY_VERSION: [u8; 2] = [3, 3];

/// Inner content type: an alert.
pub(crate) const ALERT: u8 = 21;
/// Inner content type: handshake messages (key updates, session tickets).
pub(crate) const HANDSHAKE: u8 = 22;
/// Inner content type: application data.
pub(crate) const APPLICATION_DATA: u8 = 23;

/// What is wrong with a record the peer sent, or with the keys this side was given.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum RecordError {
    /// The header is not that of a protected TLS 1.3 record.
    #[error("the peer sent a malformed TLS record header {0:02x?} (not TLS 1.3 application data)")]
    BadHeader([u8; HEADER_LEN]),
    /// The length field is out of range.
    #[error("the peer sent a TLS record of {0} bytes (at most {MAX_CIPHERTEXT} are allowed)")]
    BadLength(usize),
    /// Authentication failed: the bytes were corrupted or tampered with on the way.
    #[error("a TLS record from the peer failed authentication: the data was corrupted or tampered with on the way")]
    Decrypt,
    /// The decrypted record has no content type, or too much content.
    #[error("the peer sent a TLS record with invalid inner plaintext")]
    BadPlaintext,
    /// Something other than what TLS 1.3 allows after the handshake.
    #[error("the peer sent an unexpected TLS message after the handshake: {0}")]
    Unexpected(&'static str),
    /// The peer sent a fatal alert.
    #[error("the peer ended the TLS connection with the alert {0:?}")]
    Alert(rustls::AlertDescription),
    /// rustls could not derive the next keys, or refused a message.
    #[error("TLS key schedule: {0}")]
    Tls(#[from] rustls::Error),
    /// The negotiated suite's AEAD is not one this layer implements (a bug: the provider
    /// offers only AES-GCM and ChaCha20-Poly1305).
    #[error("the negotiated TLS cipher suite is not supported by ferry's record layer")]
    UnsupportedSuite,
    /// More records than a sequence number can count.
    #[error("TLS sequence numbers exhausted")]
    SequenceExhausted,
}

/// The length of the whole record (header included) that starts `bytes`, once all of it is
/// there (`None`: more bytes are needed). Checks the header on the way.
pub(crate) fn record_len(bytes: &[u8]) -> Result<Option<usize>, RecordError> {
    let Some(header) = bytes.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    if header[0] != OPAQUE_TYPE || header[1..3] != LEGACY_VERSION {
        return Err(RecordError::BadHeader(*header));
    }
    let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
    if !(TAG_LEN + 1..=MAX_CIPHERTEXT).contains(&len) {
        return Err(RecordError::BadLength(len));
    }
    let total = HEADER_LEN + len;
    Ok((bytes.len() >= total).then_some(total))
}

/// One direction's record protection: key, IV, next sequence number.
pub(crate) struct Protection {
    key: LessSafeKey,
    iv: [u8; NONCE_LEN],
    seq: u64,
}

impl std::fmt::Debug for Protection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key or IV.
        f.debug_struct("Protection")
            .field("algorithm", self.key.algorithm())
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl Drop for Protection {
    fn drop(&mut self) {
        // ring does not expose its expanded key to clear; the IV at least goes.
        zeroize::Zeroize::zeroize(&mut self.iv);
    }
}

impl Protection {
    /// Keys from rustls (after the handshake or a key update), starting at `seq`.
    pub(crate) fn new(seq: u64, secrets: ConnectionTrafficSecrets) -> Result<Self, RecordError> {
        let (algorithm, key, iv) = match &secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (&aead::CHACHA20_POLY1305, key, iv)
            }
            _ => return Err(RecordError::UnsupportedSuite),
        };
        let key =
            UnboundKey::new(algorithm, key.as_ref()).map_err(|_| RecordError::UnsupportedSuite)?;
        let iv = iv
            .as_ref()
            .try_into()
            .map_err(|_| RecordError::UnsupportedSuite)?;
        Ok(Protection {
            key: LessSafeKey::new(key),
            iv,
            seq,
        })
    }

    /// Records protected with this key so far (the next sequence number).
    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }

    /// The nonce of the next record (IV xor sequence number), which then counts as used.
    fn next_nonce(&mut self) -> Result<Nonce, RecordError> {
        let mut nonce = self.iv;
        for (n, s) in nonce[NONCE_LEN - 8..]
            .iter_mut()
            .zip(self.seq.to_be_bytes())
        {
            *n ^= s;
        }
        self.seq = self
            .seq
            .checked_add(1)
            .ok_or(RecordError::SequenceExhausted)?;
        Ok(Nonce::assume_unique_for_key(nonce))
    }

    /// Seals `content` of inner type `kind` as one record at the start of `out`, which must
    /// hold [`MAX_SEALED`] bytes (and `content` at most [`MAX_FRAGMENT`]); returns its length.
    pub(crate) fn seal(
        &mut self,
        kind: u8,
        content: &[u8],
        out: &mut [u8],
    ) -> Result<usize, RecordError> {
        debug_assert!(content.len() <= MAX_FRAGMENT && out.len() >= MAX_SEALED);
        let inner = content.len() + 1;
        let body = inner + TAG_LEN;
        let [hi, lo] = u16::try_from(body)
            .map_err(|_| RecordError::BadLength(body))?
            .to_be_bytes();
        let header = [OPAQUE_TYPE, LEGACY_VERSION[0], LEGACY_VERSION[1], hi, lo];
        out[..HEADER_LEN].copy_from_slice(&header);
        let plain = &mut out[HEADER_LEN..HEADER_LEN + inner];
        plain[..content.len()].copy_from_slice(content);
        plain[content.len()] = kind;
        let nonce = self.next_nonce()?;
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(header), plain)
            .map_err(|_| RecordError::SequenceExhausted)?;
        out[HEADER_LEN + inner..HEADER_LEN + body].copy_from_slice(tag.as_ref());
        Ok(HEADER_LEN + body)
    }

    /// Opens the complete record `buf[record]` (see [`record_len`]), writing its content to
    /// `buf[to..]` (`to` at most where the record's ciphertext starts). Returns the inner
    /// content type and the content's length.
    pub(crate) fn open(
        &mut self,
        buf: &mut [u8],
        record: Range<usize>,
        to: usize,
    ) -> Result<(u8, usize), RecordError> {
        let header: [u8; HEADER_LEN] = buf[record.start..record.start + HEADER_LEN]
            .try_into()
            .map_err(|_| RecordError::BadLength(record.len()))?;
        let from = record.start + HEADER_LEN;
        debug_assert!(to <= from);
        let nonce = self.next_nonce()?;
        let plain = self
            .key
            .open_within(
                nonce,
                Aad::from(header),
                &mut buf[to..record.end],
                from - to..,
            )
            .map_err(|_| RecordError::Decrypt)?;
        // Content, then the type, then zero padding.
        let end = plain
            .iter()
            .rposition(|&b| b != 0)
            .ok_or(RecordError::BadPlaintext)?;
        if end > MAX_FRAGMENT {
            return Err(RecordError::BadPlaintext);
        }
        Ok((plain[end], end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Protection, Protection) {
        let secrets = || ConnectionTrafficSecrets::Aes256Gcm {
            key: rustls::crypto::cipher::AeadKey::from([7; 32]),
            iv: rustls::crypto::cipher::Iv::from([9; NONCE_LEN]),
        };
        (
            Protection::new(0, secrets()).unwrap(),
            Protection::new(0, secrets()).unwrap(),
        )
    }

    #[test]
    fn sealed_records_open_contiguously_and_tampering_is_caught() {
        let (mut tx, mut rx) = pair();
        let mut wire = vec![0; 3 * MAX_SEALED];
        let a = tx.seal(APPLICATION_DATA, b"hello ", &mut wire).unwrap();
        let b = tx.seal(APPLICATION_DATA, b"world", &mut wire[a..]).unwrap();
        wire.truncate(a + b);
        assert_eq!(record_len(&wire[..a - 1]).unwrap(), None);
        assert_eq!(record_len(&wire).unwrap(), Some(a));
        let mut copy = wire.clone();
        let (kind, n) = rx.open(&mut wire, 0..a, 0).unwrap();
        assert_eq!((kind, n), (APPLICATION_DATA, 6));
        let (_, m) = rx.open(&mut wire, a..a + b, n).unwrap();
        assert_eq!(&wire[..n + m], b"hello world");

        // A replayed record, a flipped bit, a bad header: all refused.
        let mut replay = copy.clone();
        assert_eq!(rx.open(&mut replay, 0..a, 0), Err(RecordError::Decrypt));
        let (_, mut rx) = pair();
        copy[HEADER_LEN] ^= 1;
        assert_eq!(rx.open(&mut copy, 0..a, 0), Err(RecordError::Decrypt));
        let mut bad = [22, 3, 3, 0, 40];
        assert!(matches!(record_len(&bad), Err(RecordError::BadHeader(_))));
        bad = [23, 3, 3, 0x48, 0x01];
        assert_eq!(record_len(&bad), Err(RecordError::BadLength(0x4801)));
    }
}
