//! Shared-secret tokens: loading with permission checks, constant-time comparison.

use std::fmt;
use std::fs;
use std::io::Read;
use std::path::Path;

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::{check_private_file, check_private_metadata, SecureError};

/// The longest token, in bytes (the limit of the HELLO frame).
pub const MAX_TOKEN_LEN: usize = 1024;

/// The environment variable the client reads its token from.
pub const TOKEN_ENV: &str = "FERRY_TOKEN";

/// A shared secret; 1 to 1024 bytes. Never printed (`Debug` shows `Token(***)`), wiped on drop.
#[derive(Clone)]
pub struct Token(Zeroizing<Vec<u8>>);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

impl Token {
    /// A token from bytes as they are, checked to be non-empty and at most [`MAX_TOKEN_LEN`]
    /// bytes.
    pub fn new(bytes: Vec<u8>) -> Result<Self, SecureError> {
        Self::checked(Zeroizing::new(bytes), "the caller")
    }

    /// Removes one trailing `\n` or `\r\n`, then checks.
    fn trimmed(mut bytes: Zeroizing<Vec<u8>>, origin: &str) -> Result<Self, SecureError> {
        let len = bytes.len();
        if bytes.ends_with(b"\r\n") {
            bytes.truncate(len - 2);
        } else if bytes.ends_with(b"\n") {
            bytes.truncate(len - 1);
        }
        Self::checked(bytes, origin)
    }

    fn checked(bytes: Zeroizing<Vec<u8>>, origin: &str) -> Result<Self, SecureError> {
        let bad = |reason: String| SecureError::BadToken {
            origin: origin.to_string(),
            reason,
        };
        if bytes.is_empty() {
            return Err(bad("is empty".into()));
        }
        if bytes.len() > MAX_TOKEN_LEN {
            return Err(bad(format!(
                "is longer than {MAX_TOKEN_LEN} bytes (it has {})",
                bytes.len()
            )));
        }
        Ok(Token(bytes))
    }

    /// `--token-file`: reads a token file, refusing one that group or others can access
    /// (Unix); one trailing newline (`\n` or `\r\n`) is removed.
    pub fn from_file(path: &Path) -> Result<Self, SecureError> {
        let file =
            fs::File::open(path).map_err(|e| SecureError::file("read the token file", path, e))?;
        let meta = file
            .metadata()
            .map_err(|e| SecureError::file("inspect the token file", path, e))?;
        if !meta.is_file() {
            return Err(SecureError::BadToken {
                origin: path.display().to_string(),
                reason: "is not a regular file".into(),
            });
        }
        check_private_metadata(path, &meta)?;
        let mut bytes = Zeroizing::new(Vec::with_capacity(MAX_TOKEN_LEN + 2));
        file.take(MAX_TOKEN_LEN as u64 + 3)
            .read_to_end(&mut bytes)
            .map_err(|e| SecureError::file("read the token file", path, e))?;
        Self::trimmed(bytes, &path.display().to_string())
    }

    /// The client's token from `FERRY_TOKEN` (one trailing newline removed); `None` when unset
    /// or empty.
    pub fn from_env() -> Result<Option<Self>, SecureError> {
        match std::env::var_os(TOKEN_ENV) {
            None => Ok(None),
            Some(v) if v.is_empty() => Ok(None),
            Some(v) => Self::trimmed(Zeroizing::new(v.into_encoded_bytes()), TOKEN_ENV).map(Some),
        }
    }

    /// The client's token: `--token-file` if given (it wins), else `FERRY_TOKEN`, else none.
    pub fn for_client(token_file: Option<&Path>) -> Result<Option<Self>, SecureError> {
        match token_file {
            Some(path) => Self::from_file(path).map(Some),
            None => Self::from_env(),
        }
    }

    /// The secret bytes, for `Connection::client(Some(token.as_bytes()))`.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Whether `offered` (from `Event::Hello { token }`) is this token, in constant time.
    ///
    /// Both sides are hashed with SHA-256 and the digests compared with `subtle`, so neither the
    /// content nor the length of the token leaks through timing. `None` is never accepted.
    pub fn verify(&self, offered: Option<&[u8]>) -> bool {
        TokenDigest::of(self).verify(offered)
    }
}

/// The SHA-256 digest of a token: what a server needs to check one, so that a configuration
/// file can name a token without holding it (`sha256:<64 hex digits>`, as printed by
/// `printf %s TOKEN | sha256sum`). `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenDigest([u8; 32]);

impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenDigest(***)")
    }
}

/// The prefix of a token digest in a configuration file.
pub const TOKEN_DIGEST_PREFIX: &str = "sha256:";

impl TokenDigest {
    /// The digest of `token`.
    pub fn of(token: &Token) -> Self {
        Self::of_bytes(token.as_bytes())
    }

    fn of_bytes(bytes: &[u8]) -> Self {
        let d = ring::digest::digest(&ring::digest::SHA256, bytes);
        let mut out = [0; 32];
        out.copy_from_slice(d.as_ref());
        Self(out)
    }

    /// Parses `sha256:` (any case) then 64 hex digits (either case); `origin` names where the
    /// text came from, for the error.
    pub fn parse(text: &str, origin: &str) -> Result<Self, SecureError> {
        let bad = || SecureError::BadToken {
            origin: origin.to_string(),
            reason: format!(
                "is not `{TOKEN_DIGEST_PREFIX}` then 64 hex digits (make one with \
                 `printf %s \"$TOKEN\" | sha256sum`)"
            ),
        };
        let hex = text
            .get(..TOKEN_DIGEST_PREFIX.len())
            .filter(|p| p.eq_ignore_ascii_case(TOKEN_DIGEST_PREFIX))
            .map(|_| &text[TOKEN_DIGEST_PREFIX.len()..])
            .ok_or_else(bad)?;
        if hex.len() != 64 || !hex.is_ascii() {
            return Err(bad());
        }
        let mut out = [0; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Self(out))
    }

    /// Whether `offered` (from `Event::Hello { token }`) is the token of this digest, in
    /// constant time (the offered token is hashed, and the digests compared with `subtle`).
    /// `None` is never accepted.
    pub fn verify(&self, offered: Option<&[u8]>) -> bool {
        let theirs = Self::of_bytes(offered.unwrap_or_default());
        let equal: bool = self.0.ct_eq(&theirs.0).into();
        equal && offered.is_some()
    }
}

/// Refuses a file holding secrets (a configuration file with a token in it, say) that group
/// or others can access (Unix; elsewhere always fine), as token files are refused.
pub fn check_private_secret_file(path: &Path) -> Result<(), SecureError> {
    check_private_file(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_checks_the_token_it_was_made_from() {
        let token = Token::new(b"s3cret".to_vec()).unwrap();
        // printf %s s3cret | sha256sum
        let text = "SHA256:1EC1C26B50D5D3C58D9583181AF8076655FE00756BF7285940BA3670F99FCBA0";
        let digest = TokenDigest::parse(text, "t").unwrap();
        assert_eq!(digest, TokenDigest::of(&token));
        assert!(digest.verify(Some(b"s3cret")));
        assert!(!digest.verify(Some(b"s3cret ")));
        assert!(!digest.verify(None));
        for bad in [
            "",
            "sha256:",
            "md5:00",
            "sha256:zz",
            &format!("sha256:{}", "é".repeat(32)),
        ] {
            assert!(TokenDigest::parse(bad, "t").is_err(), "{bad}");
        }
    }
}
