//! SHA-256 certificate fingerprints: `SHA256:` followed by 64 lowercase hex digits.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::SecureError;

/// The SHA-256 digest of a DER certificate, shown as `SHA256:<64 lowercase hex digits>`.
///
/// Hex (not base64) so that it can be checked by eye against
/// `openssl x509 -in cert.pem -noout -fingerprint -sha256`, whose colon-separated upper-case
/// form [`FromStr`] also accepts.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER-encoded certificate.
    pub fn of_der(der: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        Fingerprint(out)
    }

    /// The fingerprint of the first (leaf) certificate in a PEM file, as a server using that
    /// file presents it (`ferry-server fingerprint`).
    pub fn of_pem_file(path: &Path) -> Result<Self, SecureError> {
        let pem = std::fs::read(path).map_err(|e| SecureError::file("read", path, e))?;
        let first = CertificateDer::pem_slice_iter(&pem).next();
        match first {
            Some(Ok(der)) => Ok(Self::of_der(&der)),
            Some(Err(e)) => Err(SecureError::Pem {
                path: path.to_path_buf(),
                detail: format!("malformed PEM certificate: {e}"),
            }),
            None => Err(SecureError::Pem {
                path: path.to_path_buf(),
                detail: "no certificate in it".into(),
            }),
        }
    }

    /// The fingerprint from its 32 raw bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Fingerprint(bytes)
    }

    /// The 32 raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SHA256:")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Fingerprint {
    type Err = SecureError;

    /// Parses `SHA256:` (any case) then 64 hex digits of either case, colons ignored; or what
    /// `openssl x509 -noout -fingerprint -sha256` prints: `SHA256 Fingerprint=AB:CD:...`, or
    /// just the 32 colon-separated pairs `AB:CD:...`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || SecureError::BadFingerprint {
            input: s.to_string(),
        };
        let trimmed = s.trim();
        let rest = if let Some(rest) = strip_prefix_ignore_case(trimmed, "sha256:") {
            rest
        } else if let Some(rest) = strip_prefix_ignore_case(trimmed, "sha256 fingerprint=") {
            rest
        } else if is_openssl_pairs(trimmed) {
            trimmed
        } else {
            return Err(bad());
        };
        let mut out = [0u8; 32];
        let mut n = 0usize;
        let mut high: Option<u8> = None;
        for c in rest.chars() {
            if c == ':' {
                continue;
            }
            let v = c.to_digit(16).ok_or_else(bad)? as u8;
            match high.take() {
                None => high = Some(v),
                Some(h) => {
                    if n == 32 {
                        return Err(bad());
                    }
                    out[n] = (h << 4) | v;
                    n += 1;
                }
            }
        }
        if n != 32 || high.is_some() {
            return Err(bad());
        }
        Ok(Fingerprint(out))
    }
}

/// `s` without `prefix`, compared ignoring ASCII case.
fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Whether `s` is 32 pairs of hex digits joined by colons, openssl's form without its label
/// (a bare 64-digit string stays refused: it could be any digest).
fn is_openssl_pairs(s: &str) -> bool {
    let pairs: Vec<&str> = s.split(':').collect();
    pairs.len() == 32
        && pairs
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_openssl_form() {
        let fp = Fingerprint::of_der(b"hello");
        let text = fp.to_string();
        assert!(text.starts_with("SHA256:"));
        assert_eq!(text.len(), 7 + 64);
        assert_eq!(text.parse::<Fingerprint>().unwrap(), fp);
        let openssl: String = fp
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(
            format!("sha256:{openssl}").parse::<Fingerprint>().unwrap(),
            fp
        );
        // What `openssl x509 -noout -fingerprint -sha256` prints, whole or just the pairs.
        for form in [format!("SHA256 Fingerprint={openssl}\n"), openssl.clone()] {
            assert_eq!(form.parse::<Fingerprint>().unwrap(), fp, "{form}");
        }
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "SHA256:",
            "abcd",
            "SHA1:00",
            "SHA256:zz",
            &format!("SHA256:{}", "0".repeat(63)),
            &format!("SHA256:{}", "0".repeat(66)),
            &"0".repeat(64),
            &vec!["00"; 31].join(":"),
            &vec!["0g"; 32].join(":"),
            "SHA256 Fingerprint=00",
        ] {
            assert!(
                matches!(
                    bad.parse::<Fingerprint>(),
                    Err(SecureError::BadFingerprint { .. })
                ),
                "{bad:?}"
            );
        }
    }
}
