//! Inbound dispatch (PROTOCOL.md §4, §7): what each unit the deframer completes means in the
//! state its id is in. Every arm follows a row of the lifecycle table (PROTOCOL.md §4.13,
//! [`crate::lifecycle::TRANSITIONS`]); a frame that fits no row is a [`ProtocolError`].

use super::body::Body;
use super::deframe::{Rx, Unit};
use super::queues::{front_listing, pop_front_if, wrong_id, Accepted, Pending, Request};
use super::{Connection, Side, MAX_PIPELINE, UNCHANGED_REQUEST};
use crate::code::Code;
use crate::digest::Hasher;
use crate::entry::{EntryKind, Listing};
use crate::error::ProtocolError;
use crate::event::{BadName, BodyCheck, Event, FileId, Offer};
use crate::name::{escape, Name};
use crate::wire::{self, Frame, MIN_VERSION};

/// Why a frame other than its BEGIN cannot follow an answered early offer.
const EARLY_BEGIN_FIRST: &str = "an early OFFER is followed at once by its BEGIN";

impl Connection {
    /// Gives a completed unit its meaning.
    pub(super) fn on_unit(&mut self, unit: Unit) -> Result<(), ProtocolError> {
        match unit {
            Unit::Framing(f) => {
                self.framing = Some(f);
                Ok(())
            }
            Unit::SeedName(raw) => {
                self.seed_name_arrived(raw);
                Ok(())
            }
            Unit::Frame(frame) => {
                self.early_begin_due(&frame)?;
                self.dispatch(frame)
            }
            Unit::Data(len) => {
                if self.inbound.early.is_some() {
                    return Err(ProtocolError::Unexpected {
                        frame: "DATA",
                        why: EARLY_BEGIN_FIRST,
                    });
                }
                self.data_arrived(len)
            }
        }
    }

    /// After an early offer's answer, its BEGIN is the next frame (§4.14).
    fn early_begin_due(&self, frame: &Frame) -> Result<(), ProtocolError> {
        match (self.inbound.early, frame) {
            (None, _) => Ok(()),
            (Some(e), Frame::Begin { id, .. }) if *id == e.id => Ok(()),
            (Some(_), f) => Err(ProtocolError::Unexpected {
                frame: wire::frame_name(f.kind()).unwrap_or("?"),
                why: EARLY_BEGIN_FIRST,
            }),
        }
    }

    /// Drops raw bytes of a refused early body (§4.14); returns how many were taken.
    pub(super) fn discard(&mut self, data: &[u8]) -> Result<usize, ProtocolError> {
        let Some(body) = self.inbound.body.as_mut() else {
            return Err(ProtocolError::Unexpected {
                frame: "DATA",
                why: "no body was begun",
            });
        };
        let n = usize::try_from(body.frame_left())
            .unwrap_or(usize::MAX)
            .min(data.len());
        // Within the frame by construction; the usage error cannot arise.
        let left = body
            .take(&data[..n])
            .map_err(|_| ProtocolError::Malformed {
                frame: "DATA",
                what: "more bytes than announced",
            })?;
        if left == 0 {
            self.de.rx = Rx::Header;
        }
        Ok(n)
    }

    /// A DATA header: body *body* → *body* (§4.13), checked against the announced size.
    fn data_arrived(&mut self, len: u32) -> Result<(), ProtocolError> {
        let body = self
            .inbound
            .body
            .as_mut()
            .ok_or(ProtocolError::Unexpected {
                frame: "DATA",
                why: "no body was begun",
            })?;
        body.frame_arrived(len)?;
        if len > 0 {
            self.de.rx = if body.discard { Rx::Discard } else { Rx::Body };
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

    /// A new id from the client (OFFER, GET, LIST): strictly increasing, within the pipeline.
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
        if self.inbound.announced() + self.requests.len() >= MAX_PIPELINE {
            return Err(ProtocolError::PipelineFull { max: MAX_PIPELINE });
        }
        Ok(())
    }

    /// Checks the connection-level order of §4.1: HELLO first, WELCOME (or ERROR) first, and
    /// no item of a version later than the one negotiated.
    fn check_connection_state(
        &self,
        frame: &Frame,
        name: &'static str,
    ) -> Result<(), ProtocolError> {
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
        if let Some((feature, needs)) = frame.needs_version() {
            let version = self.version.unwrap_or(MIN_VERSION);
            if version < needs {
                return Err(ProtocolError::NotInVersion { feature, version });
            }
        }
        Ok(())
    }

    fn dispatch(&mut self, frame: Frame) -> Result<(), ProtocolError> {
        let name = wire::frame_name(frame.kind()).unwrap_or("?");
        self.check_connection_state(&frame, name)?;
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
                early,
            } => {
                // An upload: a new id, *announced* (an early one's BEGIN follows the answer). A
                // download: GET *asked* → *done*, and the file offer *announced*, roles swapped.
                if early {
                    self.expect_side(name, Side::Server)?;
                    if self.inbound.body.is_some() || self.inbound.body_awaited() {
                        return Err(ProtocolError::Unexpected {
                            frame: name,
                            why: "an early OFFER may not overtake a body in progress or awaited",
                        });
                    }
                }
                let name = if self.side == Side::Server {
                    self.new_peer_id(name, id)?;
                    Name::parse(&raw).map_err(|error| BadName {
                        raw: escape(&raw),
                        error,
                    })
                } else {
                    Ok(self.requested_download(id, &raw, kind)?)
                };
                self.inbound.unanswered.push_back(Pending::new(
                    id,
                    kind,
                    size,
                    mtime.is_some(),
                    digest,
                    early,
                ));
                Event::Offer(Offer {
                    id,
                    name,
                    size,
                    mtime,
                    mode,
                    kind,
                    digest,
                    early,
                })
            }
            Frame::Get { id, name: raw } => {
                // A new id, *asked*.
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
                // A new id, *asked*.
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
                // LIST *asked* or *listing* → *listing*.
                let listing = self.client_listing(name, id)?;
                for e in &entries {
                    listing
                        .admit(e)
                        .map_err(|what| ProtocolError::Malformed { frame: name, what })?;
                }
                Event::Entries { id, entries }
            }
            Frame::Listed { id, count, skipped } => {
                // LIST *asked* or *listing* → *done*.
                let listing = self.client_listing(name, id)?;
                listing
                    .end(count)
                    .map_err(|what| ProtocolError::Malformed { frame: name, what })?;
                self.requests.pop_front();
                Event::Listed { id, count, skipped }
            }
            Frame::Accept { id, offset, prefix } => {
                // File offer *announced* → *accepted*.
                let p = self
                    .outbound
                    .unanswered
                    .pop_front_if(|p| p.id == id && p.kind == EntryKind::File)
                    .ok_or_else(|| {
                        wrong_id(name, self.outbound.unanswered.front().map(|p| p.id), id)
                    })?;
                if offset > 0 && p.size.is_none_or(|s| offset > s) {
                    return Err(ProtocolError::Malformed {
                        frame: name,
                        what: "offset beyond the file",
                    });
                }
                if p.early {
                    // Early: its body went out at once, from 0 (§4.14); nothing more to send.
                    if offset != 0 {
                        return Err(ProtocolError::Malformed {
                            frame: name,
                            what: "an early offer is accepted at offset 0",
                        });
                    }
                    self.events
                        .push_back(Event::Accepted { id, offset, prefix });
                    return Ok(());
                }
                self.outbound.accepted.push_back(Accepted {
                    id,
                    size: p.size,
                    offset,
                    prefix,
                });
                Event::Accepted { id, offset, prefix }
            }
            Frame::Refuse { id, code, reason } => {
                // File or folder offer *announced* → *done*; GET or LIST *asked* (a LIST
                // also *listing*) → *done*.
                if let Some(p) = self.outbound.unanswered.front().filter(|p| p.id == id) {
                    if let Some(why) = p.refusal_error(code) {
                        return Err(ProtocolError::Unexpected { frame: name, why });
                    }
                    if p.early {
                        self.early_refused(id);
                    }
                    self.outbound.unanswered.pop_front();
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
                    return Err(wrong_id(
                        name,
                        self.outbound.unanswered.front().map(|p| p.id),
                        id,
                    ));
                }
                Event::Refused { id, code, reason }
            }
            Frame::Begin { id, from } => {
                // File offer *accepted* → *body*.
                if self.inbound.body.is_some() {
                    return Err(ProtocolError::Unexpected {
                        frame: name,
                        why: "a body is in progress",
                    });
                }
                if let Some(e) = self.inbound.early.take() {
                    // Early file offer *accepted* → *body*, *refused* → *discarding*.
                    if from != 0 {
                        return Err(ProtocolError::Malformed {
                            frame: name,
                            what: "an early body starts at 0",
                        });
                    }
                    let mut body = Body::new(id, Some(e.size), Hasher::new());
                    body.discard = e.discard;
                    self.inbound.body = Some(body);
                    if e.discard {
                        return Ok(());
                    }
                    self.events.push_back(Event::Begin { id, from });
                    return Ok(());
                }
                let a =
                    pop_front_if(&mut self.inbound.accepted, |a| a.id == id).ok_or_else(|| {
                        wrong_id(name, self.inbound.accepted.front().map(|a| a.id), id)
                    })?;
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
                self.inbound.body = Some(Body::new(id, a.size, hasher));
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
                // File offer *body* → *ended*.
                let body = match self.inbound.body.take() {
                    Some(b) if b.id == id => b,
                    other => {
                        let expected = other.as_ref().map(|b| b.id);
                        return Err(wrong_id(name, expected, id));
                    }
                };
                let actual = body.ended(size)?;
                if body.discard {
                    // Early file offer *discarding* → *done*, without an event.
                    return Ok(());
                }
                let check = if actual == digest {
                    BodyCheck::Verified(actual)
                } else {
                    BodyCheck::Mismatch {
                        expected: digest,
                        actual,
                    }
                };
                self.inbound.unfinished.push_back(id);
                Event::End { id, size, check }
            }
            Frame::Cancel { id, reason } => {
                // File offer *body* or *accepted* → *done*.
                if let Some(b) = self.inbound.body.take_if(|b| b.id == id) {
                    if b.discard {
                        // Early file offer *discarding* → *done*, without an event.
                        return Ok(());
                    }
                } else if pop_front_if(&mut self.inbound.accepted, |a| a.id == id).is_none() {
                    return Err(wrong_id(
                        name,
                        self.inbound.accepted.front().map(|a| a.id),
                        id,
                    ));
                }
                Event::Cancelled { id, reason }
            }
            Frame::Result { id, code, detail } => {
                // Folder offer *announced* → *done* (in offer order); file offer *ended* →
                // *done* (in END order).
                if self
                    .outbound
                    .unanswered
                    .pop_front_if(|p| p.id == id && p.kind == EntryKind::Folder)
                    .is_none()
                {
                    pop_front_if(&mut self.outbound.unfinished, |f| *f == id).ok_or_else(|| {
                        wrong_id(name, self.outbound.unfinished.front().copied(), id)
                    })?;
                }
                Event::Result { id, code, detail }
            }
            Frame::Error { code, reason } => {
                self.de.rx = Rx::Done;
                Event::PeerError { code, reason }
            }
        };
        self.events.push_back(event);
        Ok(())
    }

    /// Sender: the early offer `id` was refused. Its body, still open or ended, is owed no
    /// RESULT: an open one is marked so that END adds none, an ended one is taken off the
    /// files awaiting theirs (§4.14).
    fn early_refused(&mut self, id: FileId) {
        match self.outbound.body.as_mut().filter(|b| b.id == id) {
            Some(b) => b.discard = true,
            None => self.outbound.unfinished.retain(|f| *f != id),
        }
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

    /// The end of the peer's stream: fine at a clean point (then [`Event::Closed`], once),
    /// [`ProtocolError::Truncated`] inside a unit or a body, [`ProtocolError::ClosedEarly`]
    /// while the peer owes us frames.
    pub(super) fn eof(&mut self) -> Result<(), ProtocolError> {
        if let Some(e) = self.de.truncated() {
            return Err(e);
        }
        match self.de.rx {
            Rx::SeedBody => self.seed_body_ended(),
            Rx::Header | Rx::Body => {
                if let Some(body) = &self.inbound.body {
                    return Err(body.truncated());
                }
                if let Some(what) = self.owed() {
                    return Err(ProtocolError::ClosedEarly { waiting_for: what });
                }
            }
            _ => {}
        }
        if !self.closed_event {
            self.closed_event = true;
            self.events.push_back(Event::Closed);
        }
        Ok(())
    }

    /// What the peer still owes us, if anything, at the end of its stream.
    fn owed(&self) -> Option<&'static str> {
        let request = match self.requests.front() {
            Some(Request::Get { .. }) if self.side == Side::Client => "the answer to a GET",
            Some(Request::List { .. }) if self.side == Side::Client => "the end of a listing",
            _ => "",
        };
        let owed = [
            (!self.outbound.unanswered.is_empty(), "ACCEPT or REFUSE"),
            (!self.outbound.unfinished.is_empty(), "RESULT"),
            (!request.is_empty(), request),
            (
                !self.inbound.accepted.is_empty() || self.inbound.early.is_some(),
                "BEGIN",
            ),
            (
                self.inbound.unanswered.back().is_some_and(|p| p.early),
                "the body of an early OFFER",
            ),
            (self.side == Side::Client && !self.welcomed, "WELCOME"),
        ];
        owed.iter().find(|(owed, _)| *owed).map(|(_, what)| *what)
    }
}
