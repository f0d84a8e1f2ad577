//! Shared-secret tokens: loading with permission checks, constant-time comparison.

use std::fmt;
use std::fs;
use std::io::Read;
use std::path::Path;

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::{check_private_metadata, SecureError};

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
        let mine = ring::digest::digest(&ring::digest::SHA256, &self.0);
        let theirs = ring::digest::digest(&ring::digest::SHA256, offered.unwrap_or_default());
        let equal: bool = mine.as_ref().ct_eq(theirs.as_ref()).into();
        equal && offered.is_some()
    }
}
