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
    pub(super) unanswered: Offers,
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
            unanswered: Offers::default(),
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
        self.unanswered.early_bytes
    }

    /// Whether a file offer here waits for its body in accept order (not answered yet, or
    /// accepted and not begun): no early offer may overtake it (§4.14).
    pub(super) fn body_awaited(&self) -> bool {
        !self.accepted.is_empty() || self.unanswered.in_order > 0
    }
}

/// The offers awaiting their answer, in offer order, with running totals of what the sender
/// asks of them once per file (so that a window of a thousand files costs no scan of it):
/// kept in step by the only ways in and out, [`push_back`](Self::push_back) and the pops.
#[derive(Debug, Default)]
pub(super) struct Offers {
    queue: VecDeque<Pending>,
    /// The sum of the sizes of the early offers in `queue`.
    early_bytes: u64,
    /// How many offers in `queue` await their body in accept order
    /// ([`Pending::awaits_body_in_order`]).
    in_order: usize,
}

impl Offers {
    /// Adds an offer at the back.
    pub(super) fn push_back(&mut self, p: Pending) {
        self.count(&p, true);
        self.queue.push_back(p);
    }

    /// Removes the offer at the front.
    pub(super) fn pop_front(&mut self) -> Option<Pending> {
        let p = self.queue.pop_front()?;
        self.count(&p, false);
        Some(p)
    }

    /// Removes the offer at the front when it satisfies `f`.
    pub(super) fn pop_front_if(&mut self, f: impl FnOnce(&Pending) -> bool) -> Option<Pending> {
        if self.queue.front().is_some_and(f) {
            self.pop_front()
        } else {
            None
        }
    }

    /// The offer answered next.
    pub(super) fn front(&self) -> Option<&Pending> {
        self.queue.front()
    }

    /// The offer made last.
    pub(super) fn back(&self) -> Option<&Pending> {
        self.queue.back()
    }

    /// How many offers await their answer.
    pub(super) fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether no offer awaits its answer.
    pub(super) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Adds `p` to the running totals (`added`) or takes it out of them. An early offer's
    /// size is at most `EARLY_MAX` (the decoder refuses more, the sender never makes more) and
    /// the queue holds at most `MAX_PIPELINE` offers; a count never passes the queue's length:
    /// neither total can overflow, and each takes out exactly what it added.
    fn count(&mut self, p: &Pending, added: bool) {
        let early = if p.early { p.size.unwrap_or(0) } else { 0 };
        let in_order = usize::from(p.awaits_body_in_order());
        if added {
            self.early_bytes += early;
            self.in_order += in_order;
        } else {
            self.early_bytes -= early;
            self.in_order -= in_order;
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What the running totals must equal: the scans they replace.
    fn scanned(o: &Offers) -> (u64, usize) {
        let early = o
            .queue
            .iter()
            .filter(|p| p.early)
            .map(|p| p.size.unwrap_or(0))
            .sum();
        let in_order = o.queue.iter().filter(|p| p.awaits_body_in_order()).count();
        (early, in_order)
    }

    proptest! {
        /// Any mix of file, folder and early offers pushed, popped and conditionally popped
        /// keeps `early_bytes` and `in_order` equal to a scan of the queue.
        #[test]
        fn offer_totals_match_a_scan(ops in prop::collection::vec((0u8..5, 0u64..=65_536), 0..200)) {
            let mut o = Offers::default();
            for (id, (op, size)) in (1..).zip(ops) {
                match op {
                    0 => o.push_back(Pending::new(id, EntryKind::File, Some(size), true, None, false)),
                    1 => o.push_back(Pending::new(id, EntryKind::File, Some(size), true, None, true)),
                    2 => o.push_back(Pending::new(id, EntryKind::Folder, None, true, None, false)),
                    3 => {
                        o.pop_front();
                    }
                    _ => {
                        o.pop_front_if(|p| p.early);
                    }
                }
                prop_assert_eq!((o.early_bytes, o.in_order), scanned(&o));
            }
            while o.pop_front().is_some() {}
            prop_assert_eq!((o.early_bytes, o.in_order), (0, 0));
        }
    }
}
