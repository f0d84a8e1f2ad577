//! Errors, split by who is at fault: the peer ([`ProtocolError`]) or the caller ([`UsageError`]).

use crate::name::NameError;

/// The peer sent something this protocol forbids. Sticky: once raised, the connection is dead
/// and every later input call returns the same error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The first bytes were neither a seed name nor the ferry magic.
    #[error("the peer does not speak ferry: bad magic bytes")]
    BadMagic,
    /// No protocol version in common.
    #[error(
        "no common protocol version (peer offers {min}..={max}, we speak {}..={ours})",
        crate::wire::MIN_VERSION
    )]
    UnsupportedVersion {
        /// Lowest version the peer speaks.
        min: u16,
        /// Highest version the peer speaks.
        max: u16,
        /// The highest version we speak (the lowest is [`crate::wire::MIN_VERSION`]).
        ours: u16,
    },
    /// A frame kind this version does not define.
    #[error("unknown frame kind 0x{0:02x}")]
    UnknownFrame(u8),
    /// A control frame longer than its cap.
    #[error("frame 0x{kind:02x} announces {len} bytes; at most {max} are allowed")]
    FrameTooLarge {
        /// Frame kind.
        kind: u8,
        /// Announced payload length.
        len: u32,
        /// The cap for this kind.
        max: u32,
    },
    /// A frame whose payload does not decode.
    #[error("malformed {frame} frame: {what}")]
    Malformed {
        /// Frame name.
        frame: &'static str,
        /// What is wrong.
        what: &'static str,
    },
    /// A frame that is valid in general but not now, or not from this side.
    #[error("unexpected {frame} frame: {why}")]
    Unexpected {
        /// Frame name.
        frame: &'static str,
        /// Why it is not allowed here.
        why: &'static str,
    },
    /// A frame names a file id that is not the one expected next.
    #[error("{frame} frame for file #{got}, expected #{expected}")]
    WrongId {
        /// Frame name.
        frame: &'static str,
        /// The id expected next, or 0 when none was.
        expected: u64,
        /// The id received.
        got: u64,
    },
    /// The peer announced more files than the pipeline cap allows.
    #[error("more than {max} files announced and not yet started")]
    PipelineFull {
        /// The cap.
        max: usize,
    },
    /// More body bytes than announced.
    #[error("body overrun: {got} bytes for a file of {expected}")]
    BodyOverrun {
        /// Bytes the peer would have sent.
        got: u64,
        /// Bytes announced.
        expected: u64,
    },
    /// END disagrees with the bytes received.
    #[error("END says {announced} bytes but {received} were received")]
    SizeMismatch {
        /// Size in END.
        announced: u64,
        /// Bytes counted.
        received: u64,
    },
    /// A seed-framing name line longer than its cap.
    #[error("seed name line longer than {max} bytes")]
    SeedNameTooLong {
        /// The cap.
        max: usize,
    },
    /// A download offer for a name other than the one requested.
    #[error("the peer offered a file that was not requested")]
    Unrequested,
    /// A name the peer sent where it must be valid (a GET or a download offer).
    #[error("bad name from peer: {0}")]
    BadName(#[from] NameError),
    /// The stream ended inside a frame or a body.
    #[error("connection closed early: got {got} of {expected} bytes")]
    Truncated {
        /// Bytes received.
        got: u64,
        /// Bytes expected.
        expected: u64,
    },
    /// The stream ended cleanly while the peer still owed us frames.
    #[error("connection closed while waiting for {waiting_for}")]
    ClosedEarly {
        /// What was owed.
        waiting_for: &'static str,
    },
    /// Bytes arrived after the peer said it was done or failed.
    #[error("data after the end of the conversation")]
    TrailingData,
    /// An early OFFER announced a file larger than early bodies may be (PROTOCOL.md §4.14).
    #[error("an early OFFER announces {size} bytes; an early body is at most {max}")]
    EarlyTooLarge {
        /// The size announced.
        size: u64,
        /// [`EARLY_MAX`](crate::wire::EARLY_MAX).
        max: u64,
    },
    /// The peer used a feature of a later version than the one negotiated (PROTOCOL.md §4.1).
    #[error("{feature} is not part of protocol version {version}")]
    NotInVersion {
        /// What the peer used, e.g. "the LIST frame".
        feature: &'static str,
        /// The version negotiated.
        version: u16,
    },
}

impl ProtocolError {
    /// The code sent to the peer in the ERROR frame that reports this error.
    #[must_use]
    pub fn code(&self) -> crate::Code {
        match self {
            ProtocolError::UnsupportedVersion { .. } | ProtocolError::NotInVersion { .. } => {
                crate::Code::Unsupported
            }
            ProtocolError::BadName(_) => crate::Code::BadName,
            ProtocolError::SizeMismatch { .. } | ProtocolError::BodyOverrun { .. } => {
                crate::Code::SizeMismatch
            }
            _ => crate::Code::Protocol,
        }
    }
}

/// The caller used the machine in a way the protocol does not allow; a bug in the caller.
/// Not sticky: the call had no effect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UsageError {
    /// This call belongs to the other side (client vs server) or the other framing.
    #[error("{0} is not available on this side or framing")]
    WrongSide(&'static str),
    /// A reply names a file other than the one next in line.
    #[error("{call} for file #{got}, but #{expected} is next")]
    NotNext {
        /// The call.
        call: &'static str,
        /// The id next in line (0 when none).
        expected: u64,
        /// The id given.
        got: u64,
    },
    /// Too many offers outstanding; wait for replies first.
    #[error("the pipeline is full ({max} files outstanding)")]
    PipelineFull {
        /// The cap.
        max: usize,
    },
    /// Raw body bytes are owed; finish the DATA frame first.
    #[error("a DATA frame is open: {remaining} raw body bytes are still owed")]
    FrameOpen {
        /// Bytes still owed.
        remaining: u64,
    },
    /// More or fewer body bytes than the file's announced size.
    #[error("body length {sent} does not match the announced size {size}")]
    BodyLength {
        /// Bytes sent or about to be.
        sent: u64,
        /// Announced size.
        size: u64,
    },
    /// No body is being sent or received.
    #[error("no body is in progress")]
    NoBody,
    /// More bytes reported than the frame holds.
    #[error("{got} body bytes reported, only {remaining} were due")]
    TooManyBodyBytes {
        /// Bytes reported.
        got: usize,
        /// Bytes due.
        remaining: u64,
    },
    /// A resume offset larger than the announced size, or offered for a stream.
    #[error("resume offset {offset} is not possible for this file")]
    BadOffset {
        /// The offset.
        offset: u64,
    },
    /// A text field longer than its cap.
    #[error("{what} is {len} bytes; at most {max} are allowed")]
    TooLong {
        /// Which field.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// A seed-framing name that the seed framing cannot carry.
    #[error("the seed framing cannot carry this name")]
    SeedName,
    /// The machine waits for an answer to an offer before it can read on
    /// ([`Connection::is_paused`](crate::Connection::is_paused)); raised by drivers, which
    /// would otherwise wait for input the machine will not take.
    #[error("answer the pending offer (accept or refuse) before reading on")]
    Unanswered,
    /// The connection has ended.
    #[error("the connection is closed")]
    Closed,
    /// A feature of a later protocol version than the one negotiated, or used before the
    /// version is known (a client learns it from WELCOME).
    #[error("{feature} needs protocol version {needs}; {}", match .version {
        Some(v) => format!("this connection speaks version {v}"),
        None => "wait for the peer's WELCOME first".to_owned(),
    })]
    NeedsVersion {
        /// What was asked for, e.g. "a folder OFFER".
        feature: &'static str,
        /// The version that defines it.
        needs: u16,
        /// The version negotiated, if known yet.
        version: Option<u16>,
    },
    /// A call whose arguments the protocol does not allow.
    #[error("not allowed: {0}")]
    Invalid(&'static str),
}

/// Any error from the machine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The peer's fault.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The caller's fault.
    #[error(transparent)]
    Usage(#[from] UsageError),
}
