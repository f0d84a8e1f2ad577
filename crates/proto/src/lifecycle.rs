//! The lifecycle of every OFFER, GET and LIST, by its id (PROTOCOL.md §4.13), as data, in the
//! manner of h11's `_state.py`. The machine keeps each id in the queue of its state
//! (`conn::queues`), and `conn::inbound` moves it along these rows only: a frame that fits no
//! row is a [`ProtocolError`](crate::ProtocolError). The tests check that this table is the
//! document's, row for row, and walk every row (and every frame that fits none) through the
//! machines.
//!
//! The rows of an early file offer (§4.14) are in the order the receiver reads the frames:
//! it answers the OFFER before it reads on, so its BEGIN always finds the offer answered. The
//! sender sends the BEGIN, DATA and END before the answer reaches it, and takes the answer in
//! whichever of its states the id is.

use crate::wire::kind;

/// What an id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subject {
    /// A file OFFER (an upload, or a download answering a GET, roles swapped).
    FileOffer,
    /// An early file OFFER (version 3, an upload): its body follows at once.
    EarlyFileOffer,
    /// A folder OFFER (version 2).
    FolderOffer,
    /// A GET.
    Get,
    /// A LIST (version 2).
    List,
}

/// Where an id is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Offered, awaiting its answer.
    Announced,
    /// Accepted, awaiting BEGIN or CANCEL (an early offer: BEGIN, next).
    Accepted,
    /// An early offer refused: its BEGIN comes next, and its body is dropped.
    Refused,
    /// The body of a refused early offer is being dropped.
    Discarding,
    /// Its body is being sent.
    Body,
    /// Its body ended, awaiting RESULT.
    Ended,
    /// A request awaiting its answer.
    Asked,
    /// A LIST with pages sent, awaiting more or its end.
    Listing,
    /// Finished: no frame names it any more.
    Done,
}

/// Who sends a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum By {
    /// The side that offered the file.
    Sender,
    /// The side the file was offered to.
    Receiver,
    /// The server (answering a GET or a LIST).
    Server,
}

/// One row of the table: `frame`, sent by `by` about an id of `subject` in state `from`,
/// moves it to `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Transition {
    /// What the id names.
    pub subject: Subject,
    /// Its state before the frame.
    pub from: State,
    /// The frame kind ([`crate::wire::kind`]).
    pub frame: u8,
    /// Who sends the frame.
    pub by: By,
    /// Its state after the frame.
    pub to: State,
}

const fn row(subject: Subject, from: State, frame: u8, by: By, to: State) -> Transition {
    Transition {
        subject,
        from,
        frame,
        by,
        to,
    }
}

use By::{Receiver, Sender, Server};
use State::{Accepted, Announced, Asked, Body, Discarding, Done, Ended, Listing, Refused};
use Subject::{EarlyFileOffer, FileOffer, FolderOffer, Get, List};

/// Every legal move, in the order of PROTOCOL.md §4.13.
pub const TRANSITIONS: &[Transition] = &[
    row(FileOffer, Announced, kind::ACCEPT, Receiver, Accepted),
    row(FileOffer, Announced, kind::REFUSE, Receiver, Done),
    row(FileOffer, Accepted, kind::BEGIN, Sender, Body),
    row(FileOffer, Accepted, kind::CANCEL, Sender, Done),
    row(FileOffer, Body, kind::DATA, Sender, Body),
    row(FileOffer, Body, kind::CANCEL, Sender, Done),
    row(FileOffer, Body, kind::END, Sender, Ended),
    row(FileOffer, Ended, kind::RESULT, Receiver, Done),
    row(EarlyFileOffer, Announced, kind::ACCEPT, Receiver, Accepted),
    row(EarlyFileOffer, Announced, kind::REFUSE, Receiver, Refused),
    row(EarlyFileOffer, Accepted, kind::BEGIN, Sender, Body),
    row(EarlyFileOffer, Refused, kind::BEGIN, Sender, Discarding),
    row(EarlyFileOffer, Body, kind::DATA, Sender, Body),
    row(EarlyFileOffer, Body, kind::CANCEL, Sender, Done),
    row(EarlyFileOffer, Body, kind::END, Sender, Ended),
    row(EarlyFileOffer, Ended, kind::RESULT, Receiver, Done),
    row(EarlyFileOffer, Discarding, kind::DATA, Sender, Discarding),
    row(EarlyFileOffer, Discarding, kind::CANCEL, Sender, Done),
    row(EarlyFileOffer, Discarding, kind::END, Sender, Done),
    row(FolderOffer, Announced, kind::RESULT, Receiver, Done),
    row(FolderOffer, Announced, kind::REFUSE, Receiver, Done),
    row(Get, Asked, kind::OFFER, Server, Done),
    row(Get, Asked, kind::REFUSE, Server, Done),
    row(List, Asked, kind::ENTRIES, Server, Listing),
    row(List, Listing, kind::ENTRIES, Server, Listing),
    row(List, Asked, kind::LISTED, Server, Done),
    row(List, Listing, kind::LISTED, Server, Done),
    row(List, Asked, kind::REFUSE, Server, Done),
    row(List, Listing, kind::REFUSE, Server, Done),
];

/// The state `frame` moves an id of `subject` in state `from` to, or `None` when no row
/// allows it (a fatal protocol error).
#[must_use]
pub fn next(subject: Subject, from: State, frame: u8) -> Option<State> {
    TRANSITIONS
        .iter()
        .find(|t| t.subject == subject && t.from == from && t.frame == frame)
        .map(|t| t.to)
}

impl Subject {
    /// The name PROTOCOL.md §4.13 gives it.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            FileOffer => "file offer",
            EarlyFileOffer => "early file offer",
            FolderOffer => "folder offer",
            Get => "GET",
            List => "LIST",
        }
    }
}

impl State {
    /// The name PROTOCOL.md §4.13 gives it.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Announced => "announced",
            Accepted => "accepted",
            Refused => "refused",
            Discarding => "discarding",
            Body => "body",
            Ended => "ended",
            Asked => "asked",
            Listing => "listing",
            Done => "done",
        }
    }
}

impl By {
    /// The name PROTOCOL.md §4.13 gives it.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Sender => "sender",
            Receiver => "receiver",
            Server => "server",
        }
    }
}
