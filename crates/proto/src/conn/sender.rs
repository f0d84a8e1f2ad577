//! The sender's commands (PROTOCOL.md §4.2-§4.7, §6): offer or serve a file, begin, send the
//! body (inline, in DATA frames the caller writes, or through the body fast path), end,
//! cancel.

use super::body::Body;
use super::queues::Pending;
use super::transmit::{BodyQueued, INLINE_BODY_MAX};
use super::{truncate, Connection, Framing, Request, Side, MAX_PIPELINE};
use crate::digest::{Digest, Hasher};
use crate::entry::EntryKind;
use crate::error::UsageError;
use crate::event::{DataHeader, FileId, FileInfo, OfferOptions};
use crate::wire::{self, Frame, FRAME_HEADER_LEN, MAX_REASON_LEN};

impl Connection {
    /// Client: offers a file for upload; returns its id. In seed framing, once per connection.
    pub fn offer(&mut self, info: FileInfo) -> Result<FileId, UsageError> {
        self.offer_with(info, OfferOptions::default())
    }

    /// Client: offers a file or, in version 2, a folder or a file with its digest
    /// (PROTOCOL.md §4.2, §4.8-§4.9); returns its id. A folder is answered with
    /// [`Event::Result`](crate::Event::Result) (or [`Event::Refused`](crate::Event::Refused))
    /// and has no body.
    ///
    /// Version 3, [`OfferOptions::early`] (§4.14): a file of a known size of at most
    /// [`EARLY_MAX`](crate::wire::EARLY_MAX) bytes, within [`early_room`](Self::early_room),
    /// offered while no body is open and no file offered before awaits its ACCEPT or BEGIN.
    /// The OFFER and its BEGIN (from 0) are queued together: send the whole body and
    /// [`end`](Self::end) it at once, without waiting for the answer.
    pub fn offer_with(&mut self, info: FileInfo, opts: OfferOptions) -> Result<FileId, UsageError> {
        self.ready_to_queue()?;
        if self.side != Side::Client {
            return Err(UsageError::WrongSide("offer"));
        }
        if self.pipeline_room() == 0 {
            return Err(UsageError::PipelineFull { max: MAX_PIPELINE });
        }
        let id = self.next_id;
        if self.is_seed() {
            self.seed_offer(id, &info, opts == OfferOptions::default())?;
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
        if opts.early {
            return Err(UsageError::Invalid("a download is never early"));
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

    /// Queues an OFFER: the file or folder is *announced*.
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
        if opts.early && (opts.kind != EntryKind::File || info.size.is_none()) {
            return Err(UsageError::Invalid(
                "an early offer is a file of a known size",
            ));
        }
        let frame = Frame::Offer {
            id,
            kind: opts.kind,
            size: info.size,
            mtime: info.mtime,
            mode: info.mode,
            name: info.name.as_str().to_owned(),
            digest: opts.digest,
            early: opts.early,
        };
        self.may_send(&frame)?;
        if opts.early {
            self.may_send_early(info.size.unwrap_or(0))?;
        }
        self.emit(&frame);
        self.outbound.unanswered.push_back(Pending::new(
            id,
            opts.kind,
            info.size,
            info.mtime.is_some(),
            opts.digest,
            opts.early,
        ));
        if opts.early {
            self.emit(&Frame::Begin { id, from: 0 });
            self.outbound.body = Some(Body::new(id, info.size, Hasher::new()));
        }
        Ok(())
    }

    /// Whether an early offer of a file of `size` bytes may be made now (PROTOCOL.md §4.14):
    /// a client past a WELCOME of version 3, with room in the pipeline and in
    /// [`early_room`](Self::early_room), no body open, and no file offered before awaiting its
    /// ACCEPT or BEGIN. When not, a plain offer still may be made, or the caller waits for
    /// answers.
    #[must_use]
    pub fn can_offer_early(&self, size: u64) -> bool {
        self.ready_to_queue().is_ok()
            && self.side == Side::Client
            && self.version.is_some_and(|v| v >= 3)
            && self.pipeline_room() > 0
            && self.may_send_early(size).is_ok()
    }

    /// Checks the rules of an early offer of `size` bytes (PROTOCOL.md §4.14): within
    /// [`EARLY_MAX`](crate::wire::EARLY_MAX) and [`early_room`](Self::early_room), no body
    /// open, no file offered before it awaiting its ACCEPT or BEGIN.
    fn may_send_early(&self, size: u64) -> Result<(), UsageError> {
        if size > wire::EARLY_MAX {
            return Err(UsageError::Invalid(
                "an early offer is of at most EARLY_MAX bytes",
            ));
        }
        if size > self.early_room() {
            return Err(UsageError::Invalid(
                "early bodies in flight would pass EARLY_IN_FLIGHT_MAX: wait for answers",
            ));
        }
        if self.outbound.body.is_some() || self.outbound.body_awaited() {
            return Err(UsageError::Invalid(
                "an early offer may not overtake a body in progress or awaited",
            ));
        }
        Ok(())
    }

    /// Starts the body of an accepted file. `local_prefix` is the sender's hasher over the
    /// first `offset` bytes of its file (see [`Event::Accepted`](crate::Event::Accepted)); if
    /// it matches the peer's prefix the body resumes there, otherwise it restarts at 0.
    /// Returns the start offset.
    pub fn begin(&mut self, id: FileId, local_prefix: Hasher) -> Result<u64, UsageError> {
        self.ready_to_queue()?;
        if self.outbound.body.is_some() {
            return Err(UsageError::NotNext {
                call: "begin",
                expected: 0,
                got: id,
            });
        }
        let ready = match self.outbound.accepted.front() {
            Some(r) if r.id == id => self.outbound.accepted.pop_front(),
            _ => None,
        };
        let Some(ready) = ready else {
            let expected = self.outbound.accepted.front().map_or(0, |r| r.id);
            return Err(UsageError::NotNext {
                call: "begin",
                expected,
                got: id,
            });
        };
        let resume = ready.offset > 0
            && local_prefix.len() == ready.offset
            && local_prefix.finalize() == ready.prefix;
        let (from, hasher) = if resume {
            (ready.offset, local_prefix)
        } else {
            (0, Hasher::new())
        };
        self.emit(&Frame::Begin { id, from });
        self.outbound.body = Some(Body::new(id, ready.size, hasher));
        Ok(from)
    }

    /// The body in progress, checked to take `more` bytes.
    fn body_with_room(&mut self, more: u64) -> Result<&mut Body, UsageError> {
        let body = self.outbound.body.as_mut().ok_or(UsageError::NoBody)?;
        body.room(more)?;
        Ok(body)
    }

    /// Queues body bytes inline (copied into the transmit buffer): right for small files.
    pub fn send_data(&mut self, data: &[u8]) -> Result<(), UsageError> {
        self.ready_to_queue()?;
        self.body_with_room(data.len() as u64)?;
        for chunk in data.chunks(wire::MAX_DATA_PAYLOAD as usize) {
            self.emit(&Frame::Data {
                len: chunk.len() as u32,
            });
            self.out.buf.extend_from_slice(chunk);
        }
        self.body_with_room(0)?.add(data);
        Ok(())
    }

    /// The body fast path: takes the next body bytes of the file begun with
    /// [`begin`](Self::begin), the way every driver sends them. A slice of at most
    /// [`INLINE_BODY_MAX`](crate::INLINE_BODY_MAX) bytes is copied into the transmit queue
    /// ([`BodyQueued::Inline`]) unless the queue would grow past
    /// [`FLUSH_AT`](crate::FLUSH_AT) ([`BodyQueued::Flush`]: write it out first); a larger one
    /// opens a DATA frame that the caller writes from its own buffer after the queue
    /// ([`BodyQueued::Direct`]: [`poll_write`](Self::poll_write), [`advance`](Self::advance)).
    ///
    /// A write that fails halfway leaves the machine exact: while the direct slice is
    /// [`body_pending`](Self::body_pending), calling again with the same bytes resumes it
    /// (returns the same `Direct(n)` and takes nothing new).
    pub fn queue_body(&mut self, data: &[u8]) -> Result<BodyQueued, UsageError> {
        if let Some(len) = self.out.direct_len() {
            if data.len() < len {
                return Err(UsageError::Invalid(
                    "resume a direct body slice with the same bytes",
                ));
            }
            return Ok(BodyQueued::Direct(len));
        }
        self.ready_to_queue()?;
        if data.len() <= INLINE_BODY_MAX {
            self.body_with_room(data.len() as u64)?;
            if self.out.full_for(data.len() + FRAME_HEADER_LEN) {
                return Ok(BodyQueued::Flush);
            }
            self.send_data(data)?;
            return Ok(BodyQueued::Inline(data.len()));
        }
        let len = data.len().min(wire::MAX_DATA_PAYLOAD as usize);
        let (header, header_len) = self.header_for(len as u32);
        self.body_with_room(len as u64)?.add(&data[..len]);
        self.out.open_direct(header, header_len, len);
        Ok(BodyQueued::Direct(len))
    }

    /// The DATA header for `len` raw bytes, and how many of its bytes are sent: none in seed
    /// framing, which has no frames.
    fn header_for(&self, len: u32) -> ([u8; FRAME_HEADER_LEN], usize) {
        let sent = if self.framing == Some(Framing::Ferry) {
            FRAME_HEADER_LEN
        } else {
            0
        };
        (wire::data_header(len), sent)
    }

    /// Opens a DATA frame of `len` bytes that the caller writes itself, after
    /// [`poll_transmit`](Self::poll_transmit) and the returned header; report them with
    /// [`body_sent`](Self::body_sent). Nothing else can be queued until all are reported.
    /// [`queue_body`](Self::queue_body) does the same with the write order kept by the machine.
    pub fn data_frame(&mut self, len: u32) -> Result<DataHeader, UsageError> {
        self.ready_to_queue()?;
        let (bytes, header_len) = self.header_for(len);
        self.outbound
            .body
            .as_mut()
            .ok_or(UsageError::NoBody)?
            .open_frame(len)?;
        Ok(DataHeader {
            bytes,
            len: header_len,
        })
    }

    /// Reports raw body bytes written for the open DATA frame; they are hashed, not copied.
    pub fn body_sent(&mut self, data: &[u8]) -> Result<(), UsageError> {
        let body = self.outbound.body.as_mut().ok_or(UsageError::NoBody)?;
        body.take(data)?;
        Ok(())
    }

    /// Ends the body: queues END with the digest of the whole file and returns that digest.
    pub fn end(&mut self) -> Result<Digest, UsageError> {
        self.ready_to_queue()?;
        let body = self.outbound.body.as_ref().ok_or(UsageError::NoBody)?;
        let digest = body.finish()?;
        let (id, size, refused) = (body.id, body.len(), body.discard);
        self.outbound.body = None;
        // A refused early body is owed no RESULT (§4.14).
        if self.emit(&Frame::End { id, size, digest }) && !refused {
            self.outbound.unfinished.push_back(id);
        }
        Ok(digest)
    }

    /// Abandons an accepted file (before or between DATA frames); the peer drops it.
    pub fn cancel(&mut self, id: FileId, reason: &str) -> Result<(), UsageError> {
        self.ready_to_queue()?;
        if self.outbound.body.as_ref().is_some_and(|b| b.id == id) {
            self.outbound.body = None;
        } else if self.outbound.accepted.front().is_some_and(|r| r.id == id) {
            self.outbound.accepted.pop_front();
        } else {
            let expected = self.outbound.accepted.front().map_or(0, |r| r.id);
            return Err(UsageError::NotNext {
                call: "cancel",
                expected,
                got: id,
            });
        }
        self.emit(&Frame::Cancel {
            id,
            reason: truncate(reason, MAX_REASON_LEN),
        });
        Ok(())
    }
}
