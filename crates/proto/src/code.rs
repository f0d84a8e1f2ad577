//! Status codes carried by REFUSE, RESULT and ERROR frames (PROTOCOL.md §8).

use std::fmt;

/// A status code: why something was refused or how a file ended.
///
/// Unknown values from a newer peer are kept as [`Code::Other`] rather than rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Code {
    /// The file was stored (RESULT only).
    Stored,
    /// A file of that name exists and the receiver's policy refuses to replace it.
    Exists,
    /// The name is not a valid relative path.
    BadName,
    /// The file is larger than the receiver allows.
    TooLarge,
    /// The receiver has no space left.
    NoSpace,
    /// The requested file does not exist.
    NotFound,
    /// Authentication failed or is required.
    Denied,
    /// The receiver is at its connection limit.
    Busy,
    /// A local I/O error on the receiver.
    Io,
    /// The body's BLAKE3 digest did not match the END frame.
    DigestMismatch,
    /// The body was longer or shorter than announced.
    SizeMismatch,
    /// An unsupported protocol version or feature.
    Unsupported,
    /// The peer broke the protocol.
    Protocol,
    /// The peer was too slow.
    Timeout,
    /// The server is shutting down.
    ShuttingDown,
    /// Version 2: the receiver already holds this file (same size and mtime, or the same
    /// digest), or this folder; not a failure (PROTOCOL.md §4.9, §8).
    Unchanged,
    /// A code this implementation does not know.
    Other(u16),
}

impl Code {
    /// The wire value.
    #[must_use]
    pub fn to_u16(self) -> u16 {
        match self {
            Code::Stored => 0,
            Code::Exists => 1,
            Code::BadName => 2,
            Code::TooLarge => 3,
            Code::NoSpace => 4,
            Code::NotFound => 5,
            Code::Denied => 6,
            Code::Busy => 7,
            Code::Io => 8,
            Code::DigestMismatch => 9,
            Code::SizeMismatch => 10,
            Code::Unsupported => 11,
            Code::Protocol => 12,
            Code::Timeout => 13,
            Code::ShuttingDown => 14,
            Code::Unchanged => 15,
            Code::Other(v) => v,
        }
    }

    /// Decodes a wire value; unknown values become [`Code::Other`].
    #[must_use]
    pub fn from_u16(v: u16) -> Self {
        match v {
            0 => Code::Stored,
            1 => Code::Exists,
            2 => Code::BadName,
            3 => Code::TooLarge,
            4 => Code::NoSpace,
            5 => Code::NotFound,
            6 => Code::Denied,
            7 => Code::Busy,
            8 => Code::Io,
            9 => Code::DigestMismatch,
            10 => Code::SizeMismatch,
            11 => Code::Unsupported,
            12 => Code::Protocol,
            13 => Code::Timeout,
            14 => Code::ShuttingDown,
            15 => Code::Unchanged,
            other => Code::Other(other),
        }
    }

    /// A short stable identifier, used in JSON output (`"exists"`, `"no_space"`, ...).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Stored => "stored",
            Code::Exists => "exists",
            Code::BadName => "bad_name",
            Code::TooLarge => "too_large",
            Code::NoSpace => "no_space",
            Code::NotFound => "not_found",
            Code::Denied => "denied",
            Code::Busy => "busy",
            Code::Io => "io_error",
            Code::DigestMismatch => "digest_mismatch",
            Code::SizeMismatch => "size_mismatch",
            Code::Unsupported => "unsupported",
            Code::Protocol => "protocol_error",
            Code::Timeout => "timeout",
            Code::ShuttingDown => "shutting_down",
            Code::Unchanged => "unchanged",
            Code::Other(_) => "other",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Code::Other(v) => write!(f, "code {v}"),
            c => f.write_str(&c.as_str().replace('_', " ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips() {
        for v in 0..=20u16 {
            assert_eq!(Code::from_u16(v).to_u16(), v);
        }
        assert_eq!(Code::from_u16(4), Code::NoSpace);
        assert_eq!(Code::NoSpace.to_string(), "no space");
        assert_eq!(Code::Other(999).to_string(), "code 999");
        assert_eq!(Code::from_u16(15), Code::Unchanged);
        assert_eq!(Code::Unchanged.as_str(), "unchanged");
    }
}
