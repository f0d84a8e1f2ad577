//! The connection state machine: bytes in, events out; commands in, bytes out (PROTOCOL.md §2-§7).

use std::collections::VecDeque;
use std::fmt;

use crate::code::Code;
use crate::digest::{Digest, Hasher};
use crate::entry::{Entry, EntryKind, Listing};
use crate::error::{Error, ProtocolError, UsageError};
use crate::event::{
    BadName, BodyCheck, DataHeader, Event, FileInfo, Incoming, Offer, OfferOptions,
};
use crate::name::{escape, Name, NameError, MAX_NAME_LEN};
use crate::wire::{
    self, kind, Frame, FRAME_HEADER_LEN, MAGIC, MAX_CONTROL_PAYLOAD, MAX_REASON_LEN, MIN_VERSION,
    VERSION,
};

/// Identifies one file (upload or download) within a connection; chosen by the client.
pub type FileId = u64;

/// Why a GET or a LIST cannot be answered with Unchanged.
const UNCHANGED_REQUEST: &str = "Unchanged answers an offer, never a GET or a LIST";

/// Most files one side may announce (OFFER, GET or LIST) and not yet start (PROTOCOL.md §7).
pub const MAX_PIPELINE: usize = 1024;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rx {
    Detect,
    Magic(usize),
    SeedName,
    SeedBody,
    Header,
    Payload { kind: u8, len: u32 },
    Body,
    Done,
}

/// An OFFER awaiting its answer.
#[derive(Debug)]
struct Pending {
    id: FileId,
    size: Option<u64>,
    kind: EntryKind,
    /// The offer can be answered Unchanged: a file with size and mtime, or a digest (§4.8).
    comparable: bool,
}

impl Pending {
    fn new(id: FileId, info: &FileInfo, opts: OfferOptions) -> Self {
        Self::of(id, opts.kind, info.size, info.mtime.is_some(), opts.digest)
    }

    fn of(
        id: FileId,
        kind: EntryKind,
        size: Option<u64>,
        has_mtime: bool,
        digest: Option<Digest>,
    ) -> Self {
        let comparable =
            kind == EntryKind::File && size.is_some() && (has_mtime || digest.is_some());
        Self {
            id,
            size,
            kind,
            comparable,
        }
    }

    /// Why `code` cannot answer this offer in a REFUSE, if it cannot.
    fn refusal_error(&self, code: Code) -> Option<&'static str> {
        (code == Code::Unchanged && !self.comparable)
            .then_some("Unchanged answers only a file offered with size and mtime, or a digest")
    }
}

/// A GET or a LIST, in the order the client sent them: each is answered in turn (§7.1).
#[derive(Debug)]
enum Request {
    /// The name asked for; `None` when it was not valid (the server must refuse it).
    Get { id: FileId, name: Option<Name> },
    /// The listing's rules and progress; `None` when its path was not valid.
    List {
        id: FileId,
        listing: Option<Listing>,
    },
}

impl Request {
    fn id(&self) -> FileId {
        match self {
            Request::Get { id, .. } | Request::List { id, .. } => *id,
        }
    }
}

#[derive(Debug)]
struct Accepted {
    id: FileId,
    size: Option<u64>,
    offset: u64,
    prefix: Hasher,
}

#[derive(Debug)]
struct Ready {
    id: FileId,
    size: Option<u64>,
    offset: u64,
    prefix: Digest,
}

#[derive(Debug)]
struct Body {
    id: FileId,
    size: Option<u64>,
    hasher: Hasher,
    frame_left: u64,
}

/// One end of one connection, in either framing. Pure: no I/O, no clock, no threads.
///
/// Feed received bytes with [`handle_input`](Self::handle_input) and the end of the stream
/// with [`handle_eof`](Self::handle_eof); take events with [`poll_event`](Self::poll_event);
/// move body bytes yourself when [`incoming`](Self::incoming) says so; issue commands; write
/// out [`poll_transmit`](Self::poll_transmit) and report it with
/// [`transmitted`](Self::transmitted).
pub struct Connection {
    side: Side,
    framing: Option<Framing>,
    rx: Rx,
    rx_buf: Vec<u8>,
    events: VecDeque<Event>,
    tx: Vec<u8>,
    tx_pos: usize,
    error: Option<ProtocolError>,
    closed_locally: bool,
    /// The highest version this end speaks.
    max_version: u16,
    /// The version negotiated: server, from HELLO; client, from WELCOME.
    version: Option<u16>,
    welcomed: bool,
    next_id: FileId,
    last_peer_id: FileId,
    // Files the peer sends us.
    rx_unanswered: VecDeque<Pending>,
    rx_accepted: VecDeque<Accepted>,
    rx_body: Option<Body>,
    rx_unfinished: VecDeque<FileId>,
    // Files we send.
    tx_unanswered: VecDeque<Pending>,
    tx_ready: VecDeque<Ready>,
    tx_body: Option<Body>,
    tx_unfinished: VecDeque<FileId>,
    // GETs and LISTs: the client's awaiting their answers; the server's awaiting ours.
    requests: VecDeque<Request>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("side", &self.side)
            .field("framing", &self.framing)
            .field("version", &self.version)
            .field("rx", &self.rx)
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl Connection {
    fn new(side: Side, framing: Option<Framing>, rx: Rx, max_version: u16) -> Self {
        Self {
            side,
            framing,
            rx,
            rx_buf: Vec::new(),
            events: VecDeque::new(),
            tx: Vec::new(),
            tx_pos: 0,
            error: None,
            closed_locally: false,
            max_version,
            version: None,
            welcomed: false,
            next_id: 1,
            last_peer_id: 0,
            rx_unanswered: VecDeque::new(),
            rx_accepted: VecDeque::new(),
            rx_body: None,
            rx_unfinished: VecDeque::new(),
            tx_unanswered: VecDeque::new(),
            tx_ready: VecDeque::new(),
            tx_body: None,
            tx_unfinished: VecDeque::new(),
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
        c.tx.extend_from_slice(&MAGIC);
        Frame::Hello {
            min: MIN_VERSION,
            max: max_version,
            token: token.to_vec(),
        }
        .encode(&mut c.tx);
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
    /// bytes begin (see [`incoming`](Self::incoming)): the caller keeps the rest.
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

    /// Tells the machine the peer closed its sending side.
    pub fn handle_eof(&mut self) -> Result<(), Error> {
        self.check_sticky()?;
        let result = self.eof();
        self.rx = Rx::Done;
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
        match (self.rx, &self.rx_body) {
            (Rx::Body, Some(b)) => Some(Incoming::Bytes(b.frame_left)),
            (Rx::SeedBody, Some(_)) => Some(Incoming::UntilEof),
            _ => None,
        }
    }

    /// Reports body bytes the caller took off the wire; they are hashed, not copied.
    pub fn body_received(&mut self, data: &[u8]) -> Result<(), Error> {
        self.check_sticky()?;
        let seed = self.rx == Rx::SeedBody;
        let body = match (self.incoming(), self.rx_body.as_mut()) {
            (Some(_), Some(b)) => b,
            _ => return Err(UsageError::NoBody.into()),
        };
        if !seed && data.len() as u64 > body.frame_left {
            return Err(UsageError::TooManyBodyBytes {
                got: data.len(),
                remaining: body.frame_left,
            }
            .into());
        }
        body.hasher.update(data);
        if !seed {
            body.frame_left -= data.len() as u64;
            if body.frame_left == 0 {
                self.rx = Rx::Header;
            }
        }
        Ok(())
    }

    // ----- output ------------------------------------------------------------------------

    /// Bytes waiting to be sent.
    #[must_use]
    pub fn poll_transmit(&self) -> &[u8] {
        &self.tx[self.tx_pos..]
    }

    /// Reports that the first `n` bytes of [`poll_transmit`](Self::poll_transmit) were sent.
    pub fn transmitted(&mut self, n: usize) {
        self.tx_pos = (self.tx_pos + n).min(self.tx.len());
        if self.tx_pos == self.tx.len() {
            self.tx.clear();
            self.tx_pos = 0;
        }
    }

    /// Bytes held for an incomplete control frame or seed name; never above
    /// [`wire::MAX_CONTROL_PAYLOAD`] plus a frame header (or the seed name cap plus one).
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.rx_buf.len()
    }

    /// True when part of a message (the magic, a control frame, a seed name line) has arrived
    /// and the rest is awaited: when an adapter's per-message deadline should be running.
    #[must_use]
    pub fn frame_in_progress(&self) -> bool {
        match self.rx {
            Rx::Magic(got) => got > 0,
            Rx::SeedName | Rx::Header => !self.rx_buf.is_empty(),
            Rx::Payload { .. } => true,
            Rx::Detect | Rx::SeedBody | Rx::Body | Rx::Done => false,
        }
    }

    /// True when no file is in flight in either direction and nothing waits to be sent.
    #[must_use]
    pub fn is_idle(&self) -> bool {
        self.poll_transmit().is_empty()
            && self.events.is_empty()
            && self.rx_unanswered.is_empty()
            && self.rx_accepted.is_empty()
            && self.rx_body.is_none()
            && self.rx_unfinished.is_empty()
            && self.tx_unanswered.is_empty()
            && self.tx_ready.is_empty()
            && self.tx_body.is_none()
            && self.tx_unfinished.is_empty()
            && self.requests.is_empty()
    }

    /// How many more files this side may offer or request (GET, LIST) before it must wait
    /// for replies.
    #[must_use]
    pub fn pipeline_room(&self) -> usize {
        MAX_PIPELINE
            .saturating_sub(self.tx_unanswered.len() + self.tx_ready.len() + self.requests.len())
    }

    /// How many sent files still await their RESULT.
    #[must_use]
    pub fn results_owed(&self) -> usize {
        self.tx_unfinished.len()
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
        Frame::Welcome { version }.encode(&mut self.tx);
        Ok(())
    }

    /// Sends a fatal ERROR and stops: later input is ignored, later commands fail with
    /// [`UsageError::Closed`]. The caller closes the stream after transmitting. Nothing is sent
    /// in seed framing; a server that has not read a byte yet (say, at its connection limit)
    /// sends the ERROR anyway, which a ferry client reads and a seed client ignores.
    pub fn close_with_error(&mut self, code: Code, reason: &str) {
        if !self.closed_locally && self.framing != Some(Framing::Seed) && self.frame_open().is_ok()
        {
            let reason = truncate(reason, MAX_REASON_LEN);
            Frame::Error { code, reason }.encode(&mut self.tx);
        }
        self.closed_locally = true;
        self.rx = Rx::Done;
        self.events.clear();
    }

    // ----- commands: sending files ------------------------------------------------------------

    /// Client: offers a file for upload; returns its id. In seed framing, once per connection.
    pub fn offer(&mut self, info: FileInfo) -> Result<FileId, UsageError> {
        self.offer_with(info, OfferOptions::default())
    }

    /// Client: offers a file or, in version 2, a folder or a file with its digest
    /// (PROTOCOL.md §4.2, §4.8-§4.9); returns its id. A folder is answered with
    /// [`Event::Result`] (or [`Event::Refused`]) and has no body.
    pub fn offer_with(&mut self, info: FileInfo, opts: OfferOptions) -> Result<FileId, UsageError> {
        self.ready_to_queue()?;
        if self.side != Side::Client {
            return Err(UsageError::WrongSide("offer"));
        }
        if self.pipeline_room() == 0 {
            return Err(UsageError::PipelineFull { max: MAX_PIPELINE });
        }
        let id = self.next_id;
        if self.framing == Some(Framing::Seed) {
            if id != 1 || info.name.as_str().contains('/') || opts != OfferOptions::default() {
                return Err(UsageError::SeedName);
            }
            self.tx.extend_from_slice(info.name.as_str().as_bytes());
            self.tx.push(b'\n');
            let prefix = Digest::of_empty();
            self.tx_ready.push_back(Ready {
                id,
                size: info.size,
                offset: 0,
                prefix,
            });
        } else {
            self.queue_offer(id, &info, opts)?;
        }
        self.next_id += 1;
        Ok(id)
    }

    /// Server: answers a GET with the file's description; the body follows after ACCEPT.
    pub fn serve(&mut self, id: FileId, info: FileInfo) -> Result<(), UsageError> {
        self.serve_with(id, info, OfferOptions::default())
    }

    /// Server: answers a GET like [`serve`](Self::serve), in version 2 with the file's digest
    /// so that the client can answer Unchanged (PROTOCOL.md §4.8). A download is always a
    /// file: folders reach the client through LIST (§4.10).
    pub fn serve_with(
        &mut self,
        id: FileId,
        info: FileInfo,
        opts: OfferOptions,
    ) -> Result<(), UsageError> {
        self.ready_to_queue()?;
        if self.side != Side::Server {
            return Err(UsageError::WrongSide("serve"));
        }
        if opts.kind != EntryKind::File {
            return Err(UsageError::Invalid("a download is always a file"));
        }
        match self.requests.front() {
            Some(Request::Get {
                id: front,
                name: Some(name),
            }) if *front == id && *name == info.name => {}
            front => {
                return Err(UsageError::NotNext {
                    call: "serve",
                    expected: front.map_or(0, Request::id),
                    got: id,
                })
            }
        }
        self.queue_offer(id, &info, opts)?;
        self.requests.pop_front();
        Ok(())
    }

    fn queue_offer(
        &mut self,
        id: FileId,
        info: &FileInfo,
        opts: OfferOptions,
    ) -> Result<(), UsageError> {
        if opts.kind == EntryKind::Folder && (info.size.is_some() || opts.digest.is_some()) {
            return Err(UsageError::Invalid("a folder has no size and no digest"));
        }
        if opts.digest.is_some() && info.size.is_none() {
            return Err(UsageError::Invalid("a digest needs a size"));
        }
        let frame = Frame::Offer {
            id,
            kind: opts.kind,
            size: info.size,
            mtime: info.mtime,
            mode: info.mode,
            name: info.name.as_str().to_owned(),
            digest: opts.digest,
        };
        self.may_send(&frame)?;
        frame.encode(&mut self.tx);
        self.tx_unanswered.push_back(Pending::new(id, info, opts));
        Ok(())
    }

    /// Starts the body of an accepted file. `local_prefix` is the sender's hasher over the
    /// first `offset` bytes of its file (see [`Event::Accepted`]); if it matches the peer's
    /// prefix the body resumes there, otherwise it restarts at 0. Returns the start offset.
    pub fn begin(&mut self, id: FileId, local_prefix: Hasher) -> Result<u64, UsageError> {
        self.ready_to_queue()?;
        if self.tx_body.is_some() {
            return Err(UsageError::NotNext {
                call: "begin",
                expected: 0,
                got: id,
            });
        }
        let ready = match self.tx_ready.front() {
            Some(r) if r.id == id => self.tx_ready.pop_front().expect("front exists"),
            front => {
                let expected = front.map_or(0, |r| r.id);
                return Err(UsageError::NotNext {
                    call: "begin",
                    expected,
                    got: id,
                });
            }
        };
        let resume = ready.offset > 0
            && local_prefix.len() == ready.offset
            && local_prefix.finalize() == ready.prefix;
        let (from, hasher) = if resume {
            (ready.offset, local_prefix)
        } else {
            (0, Hasher::new())
        };
        if self.framing == Some(Framing::Ferry) {
            Frame::Begin { id, from }.encode(&mut self.tx);
        }
        self.tx_body = Some(Body {
            id,
            size: ready.size,
            hasher,
            frame_left: 0,
        });
        Ok(from)
    }

    /// Queues body bytes inline (copied into the transmit buffer): right for small files.
    pub fn send_data(&mut self, data: &[u8]) -> Result<(), UsageError> {
        self.ready_to_queue()?;
        self.check_body_room(data.len() as u64)?;
        let ferry = self.framing == Some(Framing::Ferry);
        for chunk in data.chunks(wire::MAX_DATA_PAYLOAD as usize) {
            if ferry {
                Frame::Data {
                    len: chunk.len() as u32,
                }
                .encode(&mut self.tx);
            }
            self.tx.extend_from_slice(chunk);
        }
        self.tx_body.as_mut().expect("checked").hasher.update(data);
        Ok(())
    }

    /// Opens a DATA frame of `len` bytes that the caller writes itself, after
    /// [`poll_transmit`](Self::poll_transmit) and the returned header; report them with
    /// [`body_sent`](Self::body_sent). Nothing else can be queued until all are reported.
    pub fn data_frame(&mut self, len: u32) -> Result<DataHeader, UsageError> {
        self.ready_to_queue()?;
        self.check_body_room(u64::from(len))?;
        // The seed framing has no frames: its header is empty.
        let header = DataHeader {
            bytes: wire::data_header(len),
            len: if self.framing == Some(Framing::Ferry) {
                FRAME_HEADER_LEN
            } else {
                0
            },
        };
        self.tx_body.as_mut().expect("checked").frame_left = u64::from(len);
        Ok(header)
    }

    /// Reports raw body bytes written for the open DATA frame; they are hashed, not copied.
    pub fn body_sent(&mut self, data: &[u8]) -> Result<(), UsageError> {
        let body = self.tx_body.as_mut().ok_or(UsageError::NoBody)?;
        if data.len() as u64 > body.frame_left {
            return Err(UsageError::TooManyBodyBytes {
                got: data.len(),
                remaining: body.frame_left,
            });
        }
        body.frame_left -= data.len() as u64;
        body.hasher.update(data);
        Ok(())
    }

    /// Ends the body: queues END with the digest of the whole file and returns that digest.
    pub fn end(&mut self) -> Result<Digest, UsageError> {
        self.ready_to_queue()?;
        let body = self.tx_body.as_ref().ok_or(UsageError::NoBody)?;
        let sent = body.hasher.len();
        if let Some(size) = body.size.filter(|s| *s != sent) {
            return Err(UsageError::BodyLength { sent, size });
        }
        let body = self.tx_body.take().expect("checked");
        let digest = body.hasher.finalize();
        if self.framing == Some(Framing::Ferry) {
            Frame::End {
                id: body.id,
                size: sent,
                digest,
            }
            .encode(&mut self.tx);
            self.tx_unfinished.push_back(body.id);
        }
        Ok(digest)
    }

    /// Abandons an accepted file (before or between DATA frames); the peer drops it.
    pub fn cancel(&mut self, id: FileId, reason: &str) -> Result<(), UsageError> {
        self.ready_to_queue()?;
        if self.tx_body.as_ref().is_some_and(|b| b.id == id) {
            self.tx_body = None;
        } else if self.tx_ready.front().is_some_and(|r| r.id == id) {
            self.tx_ready.pop_front();
        } else {
            let expected = self.tx_ready.front().map_or(0, |r| r.id);
            return Err(UsageError::NotNext {
                call: "cancel",
                expected,
                got: id,
            });
        }
        if self.framing == Some(Framing::Ferry) {
            Frame::Cancel {
                id,
                reason: truncate(reason, MAX_REASON_LEN),
            }
            .encode(&mut self.tx);
        }
        Ok(())
    }

    // ----- commands: receiving files ----------------------------------------------------------

    /// Client: asks for a file; the server answers with an OFFER or a REFUSE. Returns its id.
    pub fn get(&mut self, name: Name) -> Result<FileId, UsageError> {
        self.ready_to_request("get")?;
        let id = self.next_id;
        self.next_id += 1;
        Frame::Get {
            id,
            name: name.as_str().to_owned(),
        }
        .encode(&mut self.tx);
        self.requests.push_back(Request::Get {
            id,
            name: Some(name),
        });
        Ok(id)
    }

    /// Accepts the next offer. `prefix` is a hasher over the bytes already held for this file
    /// (empty for none); its length is the resume offset (PROTOCOL.md §7).
    pub fn accept(&mut self, id: FileId, prefix: Hasher) -> Result<(), UsageError> {
        self.ready_to_queue()?;
        let size = match self.rx_unanswered.front() {
            Some(p) if p.id == id && p.kind == EntryKind::File => p.size,
            Some(p) if p.id == id => {
                return Err(UsageError::Invalid(
                    "a folder offer is answered with finish or refuse",
                ))
            }
            front => {
                let expected = front.map_or(0, |p| p.id);
                return Err(UsageError::NotNext {
                    call: "accept",
                    expected,
                    got: id,
                });
            }
        };
        let offset = prefix.len();
        if offset > 0 && size.is_none_or(|s| offset > s) {
            return Err(UsageError::BadOffset { offset });
        }
        self.rx_unanswered.pop_front();
        if self.framing == Some(Framing::Seed) {
            self.rx_body = Some(Body {
                id,
                size: None,
                hasher: Hasher::new(),
                frame_left: 0,
            });
            self.events.push_back(Event::Begin { id, from: 0 });
            return Ok(());
        }
        Frame::Accept {
            id,
            offset,
            prefix: prefix.finalize(),
        }
        .encode(&mut self.tx);
        self.rx_accepted.push_back(Accepted {
            id,
            size,
            offset,
            prefix,
        });
        Ok(())
    }

    /// Refuses the next offer, or (server) the next GET or LIST, even after some of the
    /// LIST's pages. In seed framing nothing is sent: the caller closes the stream.
    ///
    /// Version 2: [`Code::Unchanged`] answers a file offer that passed the unchanged-file
    /// check ([`Offer::unchanged`], PROTOCOL.md §4.8); it is not a failure.
    pub fn refuse(&mut self, id: FileId, code: Code, reason: &str) -> Result<(), UsageError> {
        self.ready_to_queue()?;
        let reason = truncate(reason, MAX_REASON_LEN);
        let frame = Frame::Refuse { id, code, reason };
        self.may_send(&frame)?;
        if let Some(p) = self.rx_unanswered.front().filter(|p| p.id == id) {
            if let Some(why) = p.refusal_error(code) {
                return Err(UsageError::Invalid(why));
            }
            self.rx_unanswered.pop_front();
        } else if self.side == Side::Server && self.requests.front().is_some_and(|r| r.id() == id) {
            if code == Code::Unchanged {
                return Err(UsageError::Invalid(UNCHANGED_REQUEST));
            }
            self.requests.pop_front();
        } else {
            let expected = self.rx_unanswered.front().map_or(0, |p| p.id);
            return Err(UsageError::NotNext {
                call: "refuse",
                expected,
                got: id,
            });
        }
        if self.framing == Some(Framing::Seed) {
            // The seed framing has no reply: the caller closes, and the rest is ignored.
            self.rx = Rx::Done;
            self.closed_locally = true;
        } else {
            frame.encode(&mut self.tx);
        }
        Ok(())
    }

    /// Sends the final word on a received file, after [`Event::End`], or (version 2) on a
    /// folder offer, in place of accepting it: [`Code::Stored`] with the stored name, a
    /// failure code with a reason, or [`Code::Unchanged`] (a folder that already existed, or
    /// a body that only confirmed the file held; PROTOCOL.md §4.8-§4.9). Nothing is sent in
    /// seed framing.
    pub fn finish(&mut self, id: FileId, code: Code, detail: &str) -> Result<(), UsageError> {
        self.ready_to_queue()?;
        let detail = truncate(detail, MAX_REASON_LEN);
        let frame = Frame::Result { id, code, detail };
        self.may_send(&frame)?;
        if self
            .rx_unanswered
            .front()
            .is_some_and(|p| p.id == id && p.kind == EntryKind::Folder)
        {
            self.rx_unanswered.pop_front();
        } else if self.rx_unfinished.front() == Some(&id) {
            self.rx_unfinished.pop_front();
        } else {
            let expected = self.rx_unfinished.front().copied().unwrap_or(0);
            return Err(UsageError::NotNext {
                call: "finish",
                expected,
                got: id,
            });
        }
        if self.framing == Some(Framing::Ferry) {
            frame.encode(&mut self.tx);
        }
        Ok(())
    }

    // ----- commands: listings (version 2) ------------------------------------------------------

    /// Client (version 2, after WELCOME): asks what the server holds under `path` (`None`:
    /// the root), one level or everything below (PROTOCOL.md §4.10). The answer arrives as
    /// [`Event::Entries`] pages, then [`Event::Listed`], or [`Event::Refused`]. Returns its id.
    pub fn list(&mut self, path: Option<Name>, recursive: bool) -> Result<FileId, UsageError> {
        self.ready_to_request("list")?;
        let id = self.next_id;
        let frame = Frame::List {
            id,
            recursive,
            path: path.as_ref().map_or("", Name::as_str).to_owned(),
        };
        self.may_send(&frame)?;
        frame.encode(&mut self.tx);
        self.next_id += 1;
        self.requests.push_back(Request::List {
            id,
            listing: Some(Listing::new(path, recursive)),
        });
        Ok(id)
    }

    /// Server: sends the next page of the listing `id`: as many of `entries` as fit in one
    /// ENTRIES frame (at least one), in order; returns how many were taken. Transmit, then
    /// call again with the rest: the machine never holds more than the page it queued.
    ///
    /// The entries must keep the rules of PROTOCOL.md §4.11 (for a path, the path itself
    /// first, then only what lies under it, one level unless recursive; a folder's size 0):
    /// [`UsageError::Invalid`] otherwise, and nothing is queued.
    pub fn list_page(&mut self, id: FileId, entries: &[Entry]) -> Result<usize, UsageError> {
        self.ready_to_queue()?;
        let listing = self.front_listing(id, "list_page")?;
        let mut next = listing.clone();
        let mut room = MAX_CONTROL_PAYLOAD as usize - wire::ENTRIES_HEADER_LEN;
        let mut taken = 0;
        for e in entries {
            match room.checked_sub(e.encoded_len()) {
                Some(left) => room = left,
                None => break,
            }
            next.admit(e).map_err(UsageError::Invalid)?;
            taken += 1;
        }
        if taken > 0 {
            wire::encode_entries(&mut self.tx, id, &entries[..taken]);
            *self.front_listing(id, "list_page")? = next;
        }
        Ok(taken)
    }

    /// Server: ends the listing `id` with LISTED; `skipped` counts the entries left out
    /// (special files, unreadable folders, names outside §5.1; PROTOCOL.md §4.10). A listing
    /// of a path must have sent the path itself: refuse the LIST otherwise.
    pub fn listed(&mut self, id: FileId, skipped: u64) -> Result<(), UsageError> {
        self.ready_to_queue()?;
        let listing = self.front_listing(id, "listed")?;
        let count = listing.count();
        listing.end(count).map_err(UsageError::Invalid)?;
        self.requests.pop_front();
        Frame::Listed { id, count, skipped }.encode(&mut self.tx);
        Ok(())
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
        if self.framing == Some(Framing::Ferry) && !self.closed_locally && self.frame_open().is_ok()
        {
            let reason = truncate(&e.to_string(), MAX_REASON_LEN);
            Frame::Error {
                code: e.code(),
                reason,
            }
            .encode(&mut self.tx);
        }
        self.closed_locally = true;
        self.error = Some(e.clone());
        e.into()
    }

    fn frame_open(&self) -> Result<(), UsageError> {
        match &self.tx_body {
            Some(b) if b.frame_left > 0 => Err(UsageError::FrameOpen {
                remaining: b.frame_left,
            }),
            _ => Ok(()),
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

    /// Refuses to send a version-2 frame before version 2 is negotiated (PROTOCOL.md §4.1).
    fn may_send(&self, frame: &Frame) -> Result<(), UsageError> {
        match frame.version_2_feature() {
            Some(feature) if self.version.is_none_or(|v| v < 2) => Err(UsageError::NeedsVersion {
                feature,
                needs: 2,
                version: self.version,
            }),
            _ => Ok(()),
        }
    }

    /// Server: the listing the front request holds, when it is the LIST `id`.
    fn front_listing(
        &mut self,
        id: FileId,
        call: &'static str,
    ) -> Result<&mut Listing, UsageError> {
        if self.side != Side::Server {
            return Err(UsageError::WrongSide(call));
        }
        let front = self.requests.front();
        if matches!(front, Some(Request::List { id: f, listing: None }) if *f == id) {
            return Err(UsageError::Invalid(
                "a LIST whose path is not valid is answered with refuse",
            ));
        }
        let expected = front.map_or(0, Request::id);
        front_listing(&mut self.requests, id).ok_or(UsageError::NotNext {
            call,
            expected,
            got: id,
        })
    }

    fn check_body_room(&self, more: u64) -> Result<(), UsageError> {
        let body = self.tx_body.as_ref().ok_or(UsageError::NoBody)?;
        let sent = body
            .hasher
            .len()
            .checked_add(more)
            .ok_or(UsageError::BodyLength {
                sent: u64::MAX,
                size: body.size.unwrap_or(u64::MAX),
            })?;
        match body.size {
            Some(size) if sent > size => Err(UsageError::BodyLength { sent, size }),
            _ => Ok(()),
        }
    }

    /// Consumes a prefix of `data` in the current state; 0 means "stop here".
    fn consume(&mut self, data: &[u8]) -> Result<usize, ProtocolError> {
        match self.rx {
            Rx::Detect => {
                if data[0] == MAGIC[0] {
                    self.rx = Rx::Magic(0);
                } else {
                    self.framing = Some(Framing::Seed);
                    self.rx = Rx::SeedName;
                }
                self.consume(data)
            }
            Rx::Magic(got) => {
                let n = (MAGIC.len() - got).min(data.len());
                if data[..n] != MAGIC[got..got + n] {
                    return Err(ProtocolError::BadMagic);
                }
                self.rx = if got + n == MAGIC.len() {
                    self.framing = Some(Framing::Ferry);
                    Rx::Header
                } else {
                    Rx::Magic(got + n)
                };
                Ok(n)
            }
            Rx::SeedName => self.seed_name(data),
            Rx::Header => {
                let n = take(&mut self.rx_buf, data, FRAME_HEADER_LEN);
                if self.rx_buf.len() == FRAME_HEADER_LEN {
                    let header: [u8; FRAME_HEADER_LEN] =
                        self.rx_buf[..].try_into().expect("length checked");
                    self.rx_buf.clear();
                    let (kind, len) = wire::parse_header(header)?;
                    if kind == kind::DATA {
                        self.data_header(len)?;
                    } else if len == 0 {
                        self.dispatch(Frame::decode(kind, &[])?)?;
                    } else {
                        self.rx = Rx::Payload { kind, len };
                    }
                }
                Ok(n)
            }
            Rx::Payload { kind, len } => {
                let n = take(&mut self.rx_buf, data, len as usize);
                if self.rx_buf.len() == len as usize {
                    let frame = Frame::decode(kind, &self.rx_buf);
                    self.rx_buf.clear();
                    self.rx = Rx::Header;
                    self.dispatch(frame?)?;
                }
                Ok(n)
            }
            Rx::SeedBody | Rx::Body => Ok(0),
            Rx::Done if self.closed_locally => Ok(data.len()),
            Rx::Done => Err(ProtocolError::TrailingData),
        }
    }

    fn seed_name(&mut self, data: &[u8]) -> Result<usize, ProtocolError> {
        let room = MAX_NAME_LEN + 1 - self.rx_buf.len();
        let window = &data[..data.len().min(room)];
        let Some(pos) = window.iter().position(|b| *b == b'\n') else {
            if window.len() == room {
                return Err(ProtocolError::SeedNameTooLong { max: MAX_NAME_LEN });
            }
            self.rx_buf.extend_from_slice(window);
            return Ok(window.len());
        };
        self.rx_buf.extend_from_slice(&window[..pos]);
        let raw = std::mem::take(&mut self.rx_buf);
        let name = match String::from_utf8(raw) {
            Ok(s) => Name::parse_single(&s).map_err(|error| BadName {
                raw: escape(&s),
                error,
            }),
            Err(e) => {
                let lossy = String::from_utf8_lossy(e.as_bytes()).into_owned();
                Err(BadName {
                    raw: escape(&lossy),
                    error: NameError::ControlChar(0xFFFD),
                })
            }
        };
        self.rx = Rx::SeedBody;
        self.rx_unanswered
            .push_back(Pending::of(1, EntryKind::File, None, false, None));
        self.events.push_back(Event::Offer(Offer {
            id: 1,
            name,
            size: None,
            mtime: None,
            mode: None,
            kind: EntryKind::File,
            digest: None,
        }));
        Ok(pos + 1)
    }

    fn data_header(&mut self, len: u32) -> Result<(), ProtocolError> {
        let body = self.rx_body.as_mut().ok_or(ProtocolError::Unexpected {
            frame: "DATA",
            why: "no body was begun",
        })?;
        let got = body.hasher.len().saturating_add(u64::from(len));
        if let Some(size) = body.size.filter(|s| got > *s) {
            return Err(ProtocolError::BodyOverrun {
                got,
                expected: size,
            });
        }
        body.frame_left = u64::from(len);
        if len > 0 {
            self.rx = Rx::Body;
        }
        Ok(())
    }

    fn expect_side(&self, frame: &'static str, side: Side) -> Result<(), ProtocolError> {
        if self.side != side {
            return Err(ProtocolError::Unexpected {
                frame,
                why: "not sent in this direction",
            });
        }
        Ok(())
    }

    fn new_peer_id(&mut self, frame: &'static str, id: FileId) -> Result<(), ProtocolError> {
        if id <= self.last_peer_id {
            return Err(ProtocolError::WrongId {
                frame,
                // Saturating: after u64::MAX no id can follow (found by cargo fuzz).
                expected: self.last_peer_id.saturating_add(1),
                got: id,
            });
        }
        self.last_peer_id = id;
        let queued = self.rx_unanswered.len() + self.rx_accepted.len() + self.requests.len();
        if queued >= MAX_PIPELINE {
            return Err(ProtocolError::PipelineFull { max: MAX_PIPELINE });
        }
        Ok(())
    }

    fn dispatch(&mut self, frame: Frame) -> Result<(), ProtocolError> {
        let name = wire::frame_name(frame.kind()).unwrap_or("?");
        if self.side == Side::Server
            && self.version.is_none()
            && !matches!(frame, Frame::Hello { .. })
        {
            return Err(ProtocolError::Unexpected {
                frame: name,
                why: "HELLO must come first",
            });
        }
        if self.side == Side::Client
            && !self.welcomed
            && !matches!(frame, Frame::Welcome { .. } | Frame::Error { .. })
        {
            return Err(ProtocolError::Unexpected {
                frame: name,
                why: "WELCOME must come first",
            });
        }
        if let Some(feature) = frame.version_2_feature() {
            let version = self.version.unwrap_or(MIN_VERSION);
            if version < 2 {
                return Err(ProtocolError::NotInVersion { feature, version });
            }
        }
        let event = match frame {
            Frame::Hello { min, max, token } => {
                self.expect_side(name, Side::Server)?;
                if self.version.is_some() {
                    return Err(ProtocolError::Unexpected {
                        frame: name,
                        why: "sent twice",
                    });
                }
                // The highest version both speak (PROTOCOL.md §4.1).
                let version = max.min(self.max_version);
                if version < min.max(MIN_VERSION) {
                    return Err(ProtocolError::UnsupportedVersion {
                        min,
                        max,
                        ours: self.max_version,
                    });
                }
                self.version = Some(version);
                let token = (!token.is_empty()).then_some(token);
                Event::Hello { version, token }
            }
            Frame::Welcome { version } => {
                self.expect_side(name, Side::Client)?;
                if self.welcomed || !(MIN_VERSION..=self.max_version).contains(&version) {
                    return Err(ProtocolError::Unexpected {
                        frame: name,
                        why: "repeated or wrong version",
                    });
                }
                self.welcomed = true;
                self.version = Some(version);
                Event::Welcome { version }
            }
            Frame::Offer {
                id,
                kind,
                size,
                mtime,
                mode,
                name: raw,
                digest,
            } => {
                let name = if self.side == Side::Server {
                    self.new_peer_id(name, id)?;
                    Name::parse(&raw).map_err(|error| BadName {
                        raw: escape(&raw),
                        error,
                    })
                } else {
                    Ok(self.requested_download(id, &raw, kind)?)
                };
                self.rx_unanswered
                    .push_back(Pending::of(id, kind, size, mtime.is_some(), digest));
                Event::Offer(Offer {
                    id,
                    name,
                    size,
                    mtime,
                    mode,
                    kind,
                    digest,
                })
            }
            Frame::Get { id, name: raw } => {
                self.expect_side(name, Side::Server)?;
                self.new_peer_id(name, id)?;
                let parsed = Name::parse(&raw).map_err(|error| BadName {
                    raw: escape(&raw),
                    error,
                });
                self.requests.push_back(Request::Get {
                    id,
                    name: parsed.clone().ok(),
                });
                Event::Get { id, name: parsed }
            }
            Frame::List {
                id,
                recursive,
                path: raw,
            } => {
                self.expect_side(name, Side::Server)?;
                self.new_peer_id(name, id)?;
                let path = if raw.is_empty() {
                    Ok(None)
                } else {
                    Name::parse(&raw).map(Some).map_err(|error| BadName {
                        raw: escape(&raw),
                        error,
                    })
                };
                let listing = path
                    .as_ref()
                    .ok()
                    .map(|p| Listing::new(p.clone(), recursive));
                self.requests.push_back(Request::List { id, listing });
                Event::List {
                    id,
                    path,
                    recursive,
                }
            }
            Frame::Entries { id, entries } => {
                let listing = self.client_listing(name, id)?;
                for e in &entries {
                    listing
                        .admit(e)
                        .map_err(|what| ProtocolError::Malformed { frame: name, what })?;
                }
                Event::Entries { id, entries }
            }
            Frame::Listed { id, count, skipped } => {
                let listing = self.client_listing(name, id)?;
                listing
                    .end(count)
                    .map_err(|what| ProtocolError::Malformed { frame: name, what })?;
                self.requests.pop_front();
                Event::Listed { id, count, skipped }
            }
            Frame::Accept { id, offset, prefix } => {
                let p = pop_front_if(&mut self.tx_unanswered, |p| {
                    p.id == id && p.kind == EntryKind::File
                })
                .ok_or_else(|| wrong_id(name, self.tx_unanswered.front().map(|p| p.id), id))?;
                if offset > 0 && p.size.is_none_or(|s| offset > s) {
                    return Err(ProtocolError::Malformed {
                        frame: name,
                        what: "offset beyond the file",
                    });
                }
                self.tx_ready.push_back(Ready {
                    id,
                    size: p.size,
                    offset,
                    prefix,
                });
                Event::Accepted { id, offset, prefix }
            }
            Frame::Refuse { id, code, reason } => {
                if let Some(p) = self.tx_unanswered.front().filter(|p| p.id == id) {
                    if let Some(why) = p.refusal_error(code) {
                        return Err(ProtocolError::Unexpected { frame: name, why });
                    }
                    self.tx_unanswered.pop_front();
                } else if self.side == Side::Client
                    && self.requests.front().is_some_and(|r| r.id() == id)
                {
                    if code == Code::Unchanged {
                        return Err(ProtocolError::Unexpected {
                            frame: name,
                            why: UNCHANGED_REQUEST,
                        });
                    }
                    self.requests.pop_front();
                } else {
                    return Err(wrong_id(name, self.tx_unanswered.front().map(|p| p.id), id));
                }
                Event::Refused { id, code, reason }
            }
            Frame::Begin { id, from } => {
                if self.rx_body.is_some() {
                    return Err(ProtocolError::Unexpected {
                        frame: name,
                        why: "a body is in progress",
                    });
                }
                let a = pop_front_if(&mut self.rx_accepted, |a| a.id == id)
                    .ok_or_else(|| wrong_id(name, self.rx_accepted.front().map(|a| a.id), id))?;
                let hasher = if from == 0 {
                    Hasher::new()
                } else if from == a.offset {
                    a.prefix
                } else {
                    return Err(ProtocolError::Malformed {
                        frame: name,
                        what: "start is neither 0 nor the offset",
                    });
                };
                self.rx_body = Some(Body {
                    id,
                    size: a.size,
                    hasher,
                    frame_left: 0,
                });
                Event::Begin { id, from }
            }
            Frame::Data { .. } => {
                // DATA headers are handled before decoding; a decoded one is a bug upstream,
                // reported as the peer's malformed frame rather than a panic.
                return Err(ProtocolError::Malformed {
                    frame: name,
                    what: "a DATA payload is never decoded",
                });
            }
            Frame::End { id, size, digest } => {
                let body = match self.rx_body.take() {
                    Some(b) if b.id == id => b,
                    other => {
                        let expected = other.as_ref().map(|b| b.id);
                        return Err(wrong_id(name, expected, id));
                    }
                };
                let received = body.hasher.len();
                if size != received || body.size.is_some_and(|s| s != received) {
                    return Err(ProtocolError::SizeMismatch {
                        announced: size,
                        received,
                    });
                }
                let actual = body.hasher.finalize();
                let check = if actual == digest {
                    BodyCheck::Verified(actual)
                } else {
                    BodyCheck::Mismatch {
                        expected: digest,
                        actual,
                    }
                };
                self.rx_unfinished.push_back(id);
                Event::End { id, size, check }
            }
            Frame::Cancel { id, reason } => {
                if self.rx_body.as_ref().is_some_and(|b| b.id == id) {
                    self.rx_body = None;
                } else if pop_front_if(&mut self.rx_accepted, |a| a.id == id).is_none() {
                    return Err(wrong_id(name, self.rx_accepted.front().map(|a| a.id), id));
                }
                Event::Cancelled { id, reason }
            }
            Frame::Result { id, code, detail } => {
                // A folder's RESULT answers its OFFER, in offer order; a file's its END.
                if pop_front_if(&mut self.tx_unanswered, |p| {
                    p.id == id && p.kind == EntryKind::Folder
                })
                .is_none()
                {
                    pop_front_if(&mut self.tx_unfinished, |f| *f == id)
                        .ok_or_else(|| wrong_id(name, self.tx_unfinished.front().copied(), id))?;
                }
                Event::Result { id, code, detail }
            }
            Frame::Error { code, reason } => {
                self.rx = Rx::Done;
                Event::PeerError { code, reason }
            }
        };
        self.events.push_back(event);
        Ok(())
    }

    /// Client: checks a download OFFER answers the GET next in line, and returns its name.
    fn requested_download(
        &mut self,
        id: FileId,
        raw: &str,
        kind: EntryKind,
    ) -> Result<Name, ProtocolError> {
        match self.requests.front() {
            Some(Request::Get {
                id: want,
                name: Some(n),
            }) if *want == id && n.as_str() == raw => {
                if kind != EntryKind::File {
                    return Err(ProtocolError::Unexpected {
                        frame: "OFFER",
                        why: "a download is always a file",
                    });
                }
                let n = n.clone();
                self.requests.pop_front();
                Ok(n)
            }
            Some(r) if r.id() != id => Err(ProtocolError::WrongId {
                frame: "OFFER",
                expected: r.id(),
                got: id,
            }),
            _ => Err(ProtocolError::Unrequested),
        }
    }

    /// Client: the listing of the LIST next in line, when it is `id`.
    fn client_listing(
        &mut self,
        frame: &'static str,
        id: FileId,
    ) -> Result<&mut Listing, ProtocolError> {
        self.expect_side(frame, Side::Client)?;
        let expected = self.requests.front().map(Request::id);
        front_listing(&mut self.requests, id).ok_or_else(|| wrong_id(frame, expected, id))
    }

    fn eof(&mut self) -> Result<(), ProtocolError> {
        let truncated = |got: usize, expected: usize| ProtocolError::Truncated {
            got: got as u64,
            expected: expected as u64,
        };
        match self.rx {
            Rx::Done => return Ok(()),
            Rx::Detect => {}
            Rx::Magic(got) => return Err(truncated(got, MAGIC.len())),
            Rx::SeedName => return Err(truncated(self.rx_buf.len(), self.rx_buf.len() + 1)),
            Rx::Header if !self.rx_buf.is_empty() => {
                return Err(truncated(self.rx_buf.len(), FRAME_HEADER_LEN))
            }
            Rx::Payload { len, .. } => {
                let got = FRAME_HEADER_LEN + self.rx_buf.len();
                return Err(truncated(got, FRAME_HEADER_LEN + len as usize));
            }
            Rx::SeedBody => {
                if let Some(body) = self.rx_body.take() {
                    let size = body.hasher.len();
                    let check = BodyCheck::Unverified(body.hasher.finalize());
                    self.rx_unfinished.push_back(body.id);
                    self.events.push_back(Event::End {
                        id: body.id,
                        size,
                        check,
                    });
                }
            }
            Rx::Header | Rx::Body => {
                if let Some(body) = &self.rx_body {
                    let got = body.hasher.len();
                    let expected = body
                        .size
                        .unwrap_or(got)
                        .max(got.saturating_add(body.frame_left));
                    return Err(ProtocolError::Truncated { got, expected });
                }
                let request = match self.requests.front() {
                    Some(Request::Get { .. }) if self.side == Side::Client => "the answer to a GET",
                    Some(Request::List { .. }) if self.side == Side::Client => {
                        "the end of a listing"
                    }
                    _ => "",
                };
                let owed = [
                    (!self.tx_unanswered.is_empty(), "ACCEPT or REFUSE"),
                    (!self.tx_unfinished.is_empty(), "RESULT"),
                    (!request.is_empty(), request),
                    (!self.rx_accepted.is_empty(), "BEGIN"),
                    (self.side == Side::Client && !self.welcomed, "WELCOME"),
                ];
                if let Some((_, what)) = owed.iter().find(|(owed, _)| *owed) {
                    return Err(ProtocolError::ClosedEarly { waiting_for: what });
                }
            }
        }
        self.events.push_back(Event::Closed);
        Ok(())
    }
}

fn take(buf: &mut Vec<u8>, data: &[u8], want: usize) -> usize {
    let n = want.saturating_sub(buf.len()).min(data.len());
    buf.extend_from_slice(&data[..n]);
    n
}

/// The listing of the request next in line, when it is the LIST `id` with a valid path.
fn front_listing(requests: &mut VecDeque<Request>, id: FileId) -> Option<&mut Listing> {
    match requests.front_mut() {
        Some(Request::List {
            id: front,
            listing: Some(listing),
        }) if *front == id => Some(listing),
        _ => None,
    }
}

fn pop_front_if<T>(q: &mut VecDeque<T>, f: impl FnOnce(&T) -> bool) -> Option<T> {
    if q.front().is_some_and(f) {
        q.pop_front()
    } else {
        None
    }
}

fn wrong_id(frame: &'static str, expected: Option<FileId>, got: FileId) -> ProtocolError {
    ProtocolError::WrongId {
        frame,
        expected: expected.unwrap_or(0),
        got,
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
