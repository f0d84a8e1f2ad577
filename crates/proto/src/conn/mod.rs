//! The connection state machine: bytes in, events out; commands in, bytes out (PROTOCOL.md
//! §2-§7). One concern per module behind [`Connection`]:
//!
//! | module | concern |
//! |---|---|
//! | `deframe` | received bytes → the framing, the magic, the seed name line, frames, DATA headers |
//! | `inbound` | what each frame means in its id's state (the lifecycle table, PROTOCOL.md §4.13) |
//! | `queues` | the per-direction queues whose fronts are the ids' lifecycle states |
//! | `body` | body accounting: counted, hashed, checked against the announced size |
//! | `transmit` | outbound bytes: queued frames, the body fast path, the batching limits |
//! | `seed` | what the seed framing does differently |
//! | `sender`, `receiver` | the commands of each role |

mod body;
mod deframe;
mod inbound;
mod queues;
mod receiver;
mod seed;
mod sender;
mod transmit;

use std::collections::VecDeque;
use std::fmt;

use self::deframe::{Deframer, Rx};
use self::queues::{Flow, Request};
use self::transmit::Transmit;
pub use self::transmit::{BodyQueued, WriteParts, FLUSH_AT, INLINE_BODY_MAX};
use crate::code::Code;
use crate::digest::{Digest, Hasher};
use crate::error::{Error, ProtocolError, UsageError};
use crate::event::{Event, Incoming};
use crate::wire::{self, Frame, MAGIC, MAX_REASON_LEN, MIN_VERSION, VERSION};

/// Why a GET or a LIST cannot be answered with Unchanged.
const UNCHANGED_REQUEST: &str = "Unchanged answers an offer, never a GET or a LIST";

/// Most files one side may announce (OFFER, GET or LIST) and not yet start (PROTOCOL.md §7).
pub const MAX_PIPELINE: usize = 1024;

/// Most bytes of early bodies a sender has in flight: sent after early OFFERs not answered
/// yet (PROTOCOL.md §4.14, §10). The bytes a refused window wastes: at 1 Gbit/s about 34 ms,
/// and above the bandwidth-delay product of 1 Gbit/s over 20 ms (2.5 MB), so that small
/// files stream at such a link's speed.
pub const EARLY_IN_FLIGHT_MAX: u64 = 4 * 1024 * 1024;

/// Which end of the connection this machine is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Opens the connection: uploads with OFFER, downloads with GET.
    Client,
    /// Accepts connections: receives uploads, serves downloads.
    Server,
}

/// Which framing a connection speaks (PROTOCOL.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// The lab report's `<name>\n<body until close>`: one upload, no reply, no checks.
    Seed,
    /// ferry's own framing.
    Ferry,
}

impl Framing {
    /// The framing a connection whose first byte is `first` speaks (PROTOCOL.md §2): the
    /// ferry magic starts with a NUL byte, which no seed name contains.
    #[must_use]
    pub fn detect(first: u8) -> Framing {
        if first == MAGIC[0] {
            Framing::Ferry
        } else {
            Framing::Seed
        }
    }
}

/// One end of one connection, in either framing. Pure: no I/O, no clock, no threads.
///
/// Feed received bytes with [`handle_input`](Self::handle_input) and the end of the stream
/// with [`handle_eof`](Self::handle_eof); take events with [`poll_event`](Self::poll_event);
/// move body bytes yourself when [`incoming`](Self::incoming) says so; issue commands; write
/// out [`poll_transmit`](Self::poll_transmit) (or [`poll_write`](Self::poll_write) while a
/// body is written from your buffer) and report each write with [`advance`](Self::advance).
pub struct Connection {
    side: Side,
    framing: Option<Framing>,
    de: Deframer,
    events: VecDeque<Event>,
    out: Transmit,
    error: Option<ProtocolError>,
    closed_locally: bool,
    /// [`Event::Closed`] was queued: it is queued once.
    closed_event: bool,
    /// The highest version this end speaks.
    max_version: u16,
    /// The version negotiated: server, from HELLO; client, from WELCOME.
    version: Option<u16>,
    welcomed: bool,
    next_id: crate::FileId,
    last_peer_id: crate::FileId,
    /// Files the peer sends us; a received body's prefix goes on being hashed.
    inbound: Flow<Hasher>,
    /// Files we send; an accepted file's prefix is the digest the peer holds.
    outbound: Flow<Digest>,
    /// GETs and LISTs: the client's awaiting their answers; the server's awaiting ours.
    requests: VecDeque<Request>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("side", &self.side)
            .field("framing", &self.framing)
            .field("version", &self.version)
            .field("rx", &self.de.rx)
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl Connection {
    fn new(side: Side, framing: Option<Framing>, rx: Rx, max_version: u16) -> Self {
        Self {
            side,
            framing,
            de: Deframer::new(rx),
            events: VecDeque::new(),
            out: Transmit::default(),
            error: None,
            closed_locally: false,
            closed_event: false,
            max_version,
            version: None,
            welcomed: false,
            next_id: 1,
            last_peer_id: 0,
            inbound: Flow::default(),
            outbound: Flow::default(),
            requests: VecDeque::new(),
        }
    }

    /// A server end speaking every version up to [`VERSION`]; the framing is detected from
    /// the first byte received (PROTOCOL.md §2).
    #[must_use]
    pub fn server() -> Self {
        Self::new(Side::Server, None, Rx::Detect, VERSION)
    }

    /// A server end that speaks versions [`MIN_VERSION`]`..=max_version` only (PROTOCOL.md
    /// §4.1): `1` behaves exactly as a version-1 server.
    pub fn server_with_max_version(max_version: u16) -> Result<Self, UsageError> {
        check_version(max_version)?;
        Ok(Self::new(Side::Server, None, Rx::Detect, max_version))
    }

    /// A client end in ferry framing speaking every version up to [`VERSION`]; queues the
    /// magic and HELLO with an optional token.
    pub fn client(token: Option<&[u8]>) -> Result<Self, UsageError> {
        Self::client_with_max_version(token, VERSION)
    }

    /// A client end that offers versions [`MIN_VERSION`]`..=max_version` in its HELLO
    /// (PROTOCOL.md §4.1): `1` behaves exactly as a version-1 client.
    pub fn client_with_max_version(
        token: Option<&[u8]>,
        max_version: u16,
    ) -> Result<Self, UsageError> {
        check_version(max_version)?;
        let token = token.unwrap_or_default();
        check_len("token", token.len(), wire::MAX_TOKEN_LEN)?;
        let mut c = Self::new(Side::Client, Some(Framing::Ferry), Rx::Header, max_version);
        c.out.buf.extend_from_slice(&MAGIC);
        c.emit(&Frame::Hello {
            min: MIN_VERSION,
            max: max_version,
            token: token.to_vec(),
        });
        Ok(c)
    }

    /// A client end in seed framing: one upload, no reply (PROTOCOL.md §2.1).
    #[must_use]
    pub fn seed_client() -> Self {
        Self::new(Side::Client, Some(Framing::Seed), Rx::Done, MIN_VERSION)
    }

    /// The protocol version both ends speak, once negotiated: a server knows it from HELLO,
    /// a client from WELCOME (PROTOCOL.md §4.1). `None` before, and in seed framing.
    #[must_use]
    pub fn version(&self) -> Option<u16> {
        self.version
    }

    /// Which end this is.
    #[must_use]
    pub fn side(&self) -> Side {
        self.side
    }

    /// The framing, once known (a server learns it from the first byte).
    #[must_use]
    pub fn framing(&self) -> Option<Framing> {
        self.framing
    }

    // ----- input -------------------------------------------------------------------------

    /// Feeds received bytes; returns how many were consumed. Consumption stops where raw body
    /// bytes begin (see [`incoming`](Self::incoming)), and while the machine
    /// [`is_paused`](Self::is_paused): the caller keeps the rest.
    pub fn handle_input(&mut self, data: &[u8]) -> Result<usize, Error> {
        self.check_sticky()?;
        let mut used = 0;
        while used < data.len() {
            match self.consume(&data[used..]) {
                Ok(0) => break,
                Ok(n) => used += n,
                Err(e) => return Err(self.fail(e)),
            }
        }
        Ok(used)
    }

    /// Consumes a prefix of `data`; 0 means "stop here".
    fn consume(&mut self, data: &[u8]) -> Result<usize, ProtocolError> {
        if self.is_paused() {
            return Ok(0);
        }
        if self.de.rx == Rx::Discard {
            return self.discard(data);
        }
        if self.de.rx == Rx::Done {
            // After our own close the rest is ignored; after the peer's end it is an error.
            return if self.closed_locally {
                Ok(data.len())
            } else {
                Err(ProtocolError::TrailingData)
            };
        }
        loop {
            let (n, unit) = self.de.step(data)?;
            match unit {
                Some(unit) => self.on_unit(unit)?,
                None => return Ok(n),
            }
            if n > 0 {
                return Ok(n);
            }
        }
    }

    /// Tells the machine the peer closed its sending side. At a clean point this queues
    /// [`Event::Closed`] (once: later calls queue nothing) and [`is_closed`](Self::is_closed)
    /// turns true; inside a frame or a body, or while the peer owes frames, it fails.
    pub fn handle_eof(&mut self) -> Result<(), Error> {
        self.check_sticky()?;
        let result = self.eof();
        self.de.rx = Rx::Done;
        result.map_err(|e| self.fail(e))
    }

    /// The next event, in the order the peer caused them.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// True when events wait to be taken with [`poll_event`](Self::poll_event).
    #[must_use]
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// Whether raw body bytes come next on the wire, and how many.
    #[must_use]
    pub fn incoming(&self) -> Option<Incoming> {
        match (self.de.rx, &self.inbound.body) {
            (Rx::Body, Some(b)) => Some(Incoming::Bytes(b.frame_left())),
            (Rx::SeedBody, Some(_)) => Some(Incoming::UntilEof),
            _ => None,
        }
    }

    /// Reports body bytes the caller took off the wire; they are hashed, not copied.
    pub fn body_received(&mut self, data: &[u8]) -> Result<(), Error> {
        self.check_sticky()?;
        let seed = self.de.rx == Rx::SeedBody;
        let body = match (self.incoming(), self.inbound.body.as_mut()) {
            (Some(_), Some(b)) => b,
            _ => return Err(UsageError::NoBody.into()),
        };
        if seed {
            body.add(data);
        } else if body.take(data)? == 0 {
            self.de.rx = Rx::Header;
        }
        Ok(())
    }

    // ----- output ------------------------------------------------------------------------

    /// Bytes waiting to be sent (the queued frames; see also [`poll_write`](Self::poll_write)).
    #[must_use]
    pub fn poll_transmit(&self) -> &[u8] {
        self.out.queued()
    }

    /// Reports that the first `n` bytes of [`poll_transmit`](Self::poll_transmit) were sent.
    pub fn transmitted(&mut self, n: usize) {
        self.out.transmitted(n);
    }

    /// What to write next: the queued frames, then, while a body slice is written from the
    /// caller's buffer ([`BodyQueued::Direct`]), the rest of its DATA header and of `body`,
    /// which must be that slice (`&[]` when none is open). Write any prefix, then report its
    /// length with [`advance`](Self::advance).
    pub fn poll_write<'a>(&'a self, body: &'a [u8]) -> Result<WriteParts<'a>, UsageError> {
        match self.out.direct_len() {
            Some(len) if len != body.len() => Err(UsageError::Invalid(
                "poll_write takes the body slice that queue_body planned",
            )),
            _ => Ok(self.out.parts(body)),
        }
    }

    /// Reports that the first `n` bytes of [`poll_write`](Self::poll_write) were written, after
    /// a write of any length (0 included); bytes beyond what was due are ignored.
    pub fn advance(&mut self, n: usize) {
        self.out.advance(n);
    }

    /// True while a body slice planned with [`BodyQueued::Direct`] is not wholly written:
    /// nothing else can be queued until it is.
    #[must_use]
    pub fn body_pending(&self) -> bool {
        self.out.direct_len().is_some()
    }

    /// Bytes held for an incomplete control frame or seed name; never above
    /// [`wire::MAX_CONTROL_PAYLOAD`] plus a frame header (or the seed name cap plus one).
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.de.buffered()
    }

    /// True when part of a message (the magic, a control frame, a seed name line) has arrived
    /// and the rest is awaited: when an adapter's per-message deadline should be running.
    #[must_use]
    pub fn frame_in_progress(&self) -> bool {
        self.de.in_progress()
    }

    /// True when no file is in flight in either direction and nothing waits to be sent.
    #[must_use]
    pub fn is_idle(&self) -> bool {
        self.poll_transmit().is_empty()
            && !self.body_pending()
            && self.events.is_empty()
            && self.inbound.is_idle()
            && self.outbound.is_idle()
            && self.requests.is_empty()
    }

    /// True once nothing more will be read: the peer closed ([`Event::Closed`]) or sent
    /// ERROR, this end closed ([`close_with_error`](Self::close_with_error), a refused seed
    /// upload), or a protocol error ended the connection. What is left to do is transmit
    /// what is queued and close.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.de.rx == Rx::Done || self.error.is_some()
    }

    /// True when [`handle_input`](Self::handle_input) takes no more bytes until the caller
    /// acts on an event: the seed upload's offer (PROTOCOL.md §2.1) or an early offer (§4.14)
    /// awaits `accept` or `refuse`. Raw body bytes due ([`incoming`](Self::incoming)) are not
    /// a pause.
    #[must_use]
    pub fn is_paused(&self) -> bool {
        let seed = self.de.rx == Rx::SeedBody && self.inbound.body.is_none();
        let early = self.inbound.unanswered.back().is_some_and(|p| p.early);
        self.error.is_none() && (seed || early)
    }

    /// How many more files this side may offer or request (GET, LIST) before it must wait
    /// for replies.
    #[must_use]
    pub fn pipeline_room(&self) -> usize {
        MAX_PIPELINE.saturating_sub(self.outbound.announced() + self.requests.len())
    }

    /// How many more bytes of early bodies this side may send now (PROTOCOL.md §4.14):
    /// [`EARLY_IN_FLIGHT_MAX`] less the sizes of its early offers not answered yet; 0 before
    /// version 3 is negotiated, and on a server (downloads are never early).
    #[must_use]
    pub fn early_room(&self) -> u64 {
        if self.side != Side::Client || self.version.is_none_or(|v| v < 3) {
            return 0;
        }
        EARLY_IN_FLIGHT_MAX.saturating_sub(self.outbound.early_unanswered())
    }

    /// How many sent files still await their RESULT.
    #[must_use]
    pub fn results_owed(&self) -> usize {
        self.outbound.unfinished.len()
    }

    // ----- commands: connection ------------------------------------------------------------

    /// Server: accepts the client after [`Event::Hello`], with the version negotiated.
    pub fn welcome(&mut self) -> Result<(), UsageError> {
        self.ready_to_queue()?;
        let version = match self.version {
            Some(v) if self.side == Side::Server && !self.welcomed => v,
            _ => return Err(UsageError::WrongSide("welcome")),
        };
        self.welcomed = true;
        self.emit(&Frame::Welcome { version });
        Ok(())
    }

    /// Sends a fatal ERROR and stops: later input is ignored, later commands fail with
    /// [`UsageError::Closed`]. The caller closes the stream after transmitting. Nothing is sent
    /// in seed framing; a server that has not read a byte yet (say, at its connection limit)
    /// sends the ERROR anyway, which a ferry client reads and a seed client ignores.
    pub fn close_with_error(&mut self, code: Code, reason: &str) {
        if !self.closed_locally && self.frame_open().is_ok() {
            let reason = truncate(reason, MAX_REASON_LEN);
            self.emit(&Frame::Error { code, reason });
        }
        self.closed_locally = true;
        self.de.rx = Rx::Done;
        self.events.clear();
    }

    // ----- internals ----------------------------------------------------------------------

    fn check_sticky(&self) -> Result<(), Error> {
        match &self.error {
            Some(e) => Err(e.clone().into()),
            None => Ok(()),
        }
    }

    /// Records a sticky protocol error and, in ferry framing, queues an ERROR frame telling
    /// the peer why, so the caller only has to flush and close.
    fn fail(&mut self, e: ProtocolError) -> Error {
        // A server that fails before it knows the framing (bad magic) says nothing.
        if self.framing.is_some() && !self.closed_locally && self.frame_open().is_ok() {
            let reason = truncate(&e.to_string(), MAX_REASON_LEN);
            self.emit(&Frame::Error {
                code: e.code(),
                reason,
            });
        }
        self.closed_locally = true;
        self.error = Some(e.clone());
        e.into()
    }

    /// Fails while raw body bytes are owed: queued bytes would land inside a DATA frame.
    fn frame_open(&self) -> Result<(), UsageError> {
        let remaining = match self.out.direct_remaining() {
            Some(direct) => direct as u64,
            None => self
                .outbound
                .body
                .as_ref()
                .map_or(0, body::Body::frame_left),
        };
        match remaining {
            0 => Ok(()),
            remaining => Err(UsageError::FrameOpen { remaining }),
        }
    }

    fn ready_to_queue(&self) -> Result<(), UsageError> {
        if self.closed_locally || self.error.is_some() {
            return Err(UsageError::Closed);
        }
        self.frame_open()
    }

    /// Checks that a client may send another GET or LIST now.
    fn ready_to_request(&self, call: &'static str) -> Result<(), UsageError> {
        self.ready_to_queue()?;
        if self.side != Side::Client || self.framing != Some(Framing::Ferry) {
            return Err(UsageError::WrongSide(call));
        }
        if self.pipeline_room() == 0 {
            return Err(UsageError::PipelineFull { max: MAX_PIPELINE });
        }
        Ok(())
    }

    /// Refuses to send a frame of a later version before that version is negotiated
    /// (PROTOCOL.md §4.1).
    fn may_send(&self, frame: &Frame) -> Result<(), UsageError> {
        match frame.needs_version() {
            Some((feature, needs)) if self.version.is_none_or(|v| v < needs) => {
                Err(UsageError::NeedsVersion {
                    feature,
                    needs,
                    version: self.version,
                })
            }
            _ => Ok(()),
        }
    }
}

fn check_version(max_version: u16) -> Result<(), UsageError> {
    if !(MIN_VERSION..=VERSION).contains(&max_version) {
        return Err(UsageError::Invalid("a version this crate does not speak"));
    }
    Ok(())
}

fn check_len(what: &'static str, len: usize, max: usize) -> Result<(), UsageError> {
    if len > max {
        return Err(UsageError::TooLong { what, len, max });
    }
    Ok(())
}

/// Cuts `s` to at most `max` bytes on a character boundary.
fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (cargo fuzz, `server_stream`): an OFFER or GET after one with id u64::MAX
    /// overflowed computing the id expected next, a panic in debug builds.
    #[test]
    fn an_id_after_the_largest_is_a_wrong_id_not_an_overflow() {
        let mut server = Connection::server();
        let mut input = Connection::client(None).unwrap().poll_transmit().to_vec();
        for id in [u64::MAX, 7] {
            let name = "a".to_owned();
            Frame::Get { id, name }.encode(&mut input);
        }
        let err = server.handle_input(&input).unwrap_err();
        let want = ProtocolError::WrongId {
            frame: "GET",
            expected: u64::MAX,
            got: 7,
        };
        assert_eq!(err, Error::Protocol(want.clone()));
        assert_eq!(server.handle_input(b"x"), Err(Error::Protocol(want)));
    }
}
