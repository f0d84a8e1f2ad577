//! The per-direction queues (PROTOCOL.md §4.13, §7.1): each OFFER, GET and LIST sits at one
//! place in them, and that place is its state in the lifecycle table. Replies are checked
//! against the queue fronts, so an out-of-order or unknown id is a typed error, never a lookup
//! miss. One [`Flow`] type serves both directions.

use std::collections::VecDeque;

use super::body::Body;
use crate::code::Code;
use crate::digest::Digest;
use crate::entry::{EntryKind, Listing};
use crate::error::ProtocolError;
use crate::event::FileId;

/// An OFFER awaiting its answer: lifecycle state *announced*.
#[derive(Debug)]
pub(super) struct Pending {
    pub(super) id: FileId,
    pub(super) size: Option<u64>,
    pub(super) kind: EntryKind,
    /// An early offer (§4.14): its body follows it without waiting for the answer.
    pub(super) early: bool,
    /// The offer can be answered Unchanged: a file with size and mtime, or a digest (§4.8).
    comparable: bool,
}

impl Pending {
    pub(super) fn new(
        id: FileId,
        kind: EntryKind,
        size: Option<u64>,
        has_mtime: bool,
        digest: Option<Digest>,
        early: bool,
    ) -> Self {
        let comparable =
            kind == EntryKind::File && size.is_some() && (has_mtime || digest.is_some());
        Self {
            id,
            size,
            kind,
            early,
            comparable,
        }
    }

    /// An offer of a file whose body the receiver awaits in accept order: a file offer that
    /// is not early. No early offer may overtake one (§4.14).
    pub(super) fn awaits_body_in_order(&self) -> bool {
        self.kind == EntryKind::File && !self.early
    }

    /// Why `code` cannot answer this offer in a REFUSE, if it cannot.
    pub(super) fn refusal_error(&self, code: Code) -> Option<&'static str> {
        (code == Code::Unchanged && !self.comparable)
            .then_some("Unchanged answers only a file offered with size and mtime, or a digest")
    }
}

/// An accepted file whose body has not begun: lifecycle state *accepted*. `P` is what the
/// resume prefix is to this end: the receiver's [`Hasher`](crate::Hasher), which goes on
/// counting, or the digest the sender compares its own prefix with.
#[derive(Debug)]
pub(super) struct Accepted<P> {
    pub(super) id: FileId,
    pub(super) size: Option<u64>,
    pub(super) offset: u64,
    pub(super) prefix: P,
}

/// An answered early offer whose BEGIN comes next (§4.14): lifecycle state *accepted* or
/// *refused* of an early file offer.
#[derive(Debug, Clone, Copy)]
pub(super) struct EarlyBegin {
    pub(super) id: FileId,
    pub(super) size: u64,
    /// Refused: the body is read and dropped by the machine, without an event.
    pub(super) discard: bool,
}

/// The files going one way, each in the queue of its lifecycle state.
#[derive(Debug)]
pub(super) struct Flow<P> {
    /// *announced*: offers awaiting ACCEPT or REFUSE (a folder: RESULT or REFUSE).
    pub(super) unanswered: VecDeque<Pending>,
    /// *accepted*: awaiting BEGIN or CANCEL.
    pub(super) accepted: VecDeque<Accepted<P>>,
    /// Receiving: the early offer answered last, whose BEGIN must be the next frame.
    pub(super) early: Option<EarlyBegin>,
    /// *body*: the one body in progress.
    pub(super) body: Option<Body>,
    /// *ended*: awaiting RESULT.
    pub(super) unfinished: VecDeque<FileId>,
}

impl<P> Default for Flow<P> {
    fn default() -> Self {
        Self {
            unanswered: VecDeque::new(),
            accepted: VecDeque::new(),
            early: None,
            body: None,
            unfinished: VecDeque::new(),
        }
    }
}

impl<P> Flow<P> {
    /// True when no file is in any state short of *done*.
    pub(super) fn is_idle(&self) -> bool {
        self.unanswered.is_empty()
            && self.accepted.is_empty()
            && self.early.is_none()
            && self.body.is_none()
            && self.unfinished.is_empty()
    }

    /// Files announced and not yet begun, counted against [`MAX_PIPELINE`](super::MAX_PIPELINE).
    pub(super) fn announced(&self) -> usize {
        self.unanswered.len() + self.accepted.len()
    }

    /// Bytes of the early offers not answered yet: sending, the early bodies in flight.
    pub(super) fn early_unanswered(&self) -> u64 {
        self.unanswered
            .iter()
            .filter(|p| p.early)
            .map(|p| p.size.unwrap_or(0))
            .sum()
    }

    /// Whether a file offer here waits for its body in accept order (not answered yet, or
    /// accepted and not begun): no early offer may overtake it (§4.14).
    pub(super) fn body_awaited(&self) -> bool {
        !self.accepted.is_empty() || self.unanswered.iter().any(Pending::awaits_body_in_order)
    }
}

/// A GET or a LIST, in the order the client sent them: each is answered in turn (§7.1).
/// Lifecycle state *asked* (a LIST with pages sent: *listing*).
#[derive(Debug)]
pub(super) enum Request {
    /// The name asked for; `None` when it was not valid (the server must refuse it).
    Get {
        id: FileId,
        name: Option<crate::Name>,
    },
    /// The listing's rules and progress; `None` when its path was not valid.
    List {
        id: FileId,
        listing: Option<Listing>,
    },
}

impl Request {
    pub(super) fn id(&self) -> FileId {
        match self {
            Request::Get { id, .. } | Request::List { id, .. } => *id,
        }
    }
}

/// The listing of the request next in line, when it is the LIST `id` with a valid path.
pub(super) fn front_listing(requests: &mut VecDeque<Request>, id: FileId) -> Option<&mut Listing> {
    match requests.front_mut() {
        Some(Request::List {
            id: front,
            listing: Some(listing),
        }) if *front == id => Some(listing),
        _ => None,
    }
}

/// Pops the front of `q` when it satisfies `f`.
pub(super) fn pop_front_if<T>(q: &mut VecDeque<T>, f: impl FnOnce(&T) -> bool) -> Option<T> {
    if q.front().is_some_and(f) {
        q.pop_front()
    } else {
        None
    }
}

/// The peer's frame names an id other than the one next in line (`None`: no id was due).
pub(super) fn wrong_id(
    frame: &'static str,
    expected: Option<FileId>,
    got: FileId,
) -> ProtocolError {
    ProtocolError::WrongId {
        frame,
        expected: expected.unwrap_or(0),
        got,
    }
}
