//! The receiver's commands and the client's requests (PROTOCOL.md §4.3, §4.5-§4.6, §4.9-§4.11):
//! get, accept, refuse, finish, list, and the server's listing pages.

use super::queues::{front_listing, Accepted, EarlyBegin, Request};
use super::{truncate, Connection, Side, UNCHANGED_REQUEST};
use crate::code::Code;
use crate::digest::Hasher;
use crate::entry::{Entry, EntryKind, Listing};
use crate::error::UsageError;
use crate::event::FileId;
use crate::name::Name;
use crate::wire::{self, Frame, MAX_CONTROL_PAYLOAD, MAX_REASON_LEN};

impl Connection {
    /// Client: asks for a file; the server answers with an OFFER or a REFUSE. Returns its id.
    pub fn get(&mut self, name: Name) -> Result<FileId, UsageError> {
        self.ready_to_request("get")?;
        let id = self.next_id;
        self.next_id += 1;
        self.emit(&Frame::Get {
            id,
            name: name.as_str().to_owned(),
        });
        self.requests.push_back(Request::Get {
            id,
            name: Some(name),
        });
        Ok(id)
    }

    /// Accepts the next offer. `prefix` is a hasher over the bytes already held for this file
    /// (empty for none); its length is the resume offset (PROTOCOL.md §7). An early offer
    /// cannot resume: it is accepted at offset 0 whatever `prefix` holds (§4.14).
    pub fn accept(&mut self, id: FileId, prefix: Hasher) -> Result<(), UsageError> {
        self.ready_to_queue()?;
        let (size, early) = match self.inbound.unanswered.front() {
            Some(p) if p.id == id && p.kind == EntryKind::File => (p.size, p.early),
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
        let prefix = if early { Hasher::new() } else { prefix };
        let offset = prefix.len();
        if offset > 0 && size.is_none_or(|s| offset > s) {
            return Err(UsageError::BadOffset { offset });
        }
        self.inbound.unanswered.pop_front();
        if self.is_seed() {
            self.seed_accept(id);
            return Ok(());
        }
        self.emit(&Frame::Accept {
            id,
            offset,
            prefix: prefix.finalize(),
        });
        if early {
            self.early_answered(id, size, false);
            return Ok(());
        }
        self.inbound.accepted.push_back(Accepted {
            id,
            size,
            offset,
            prefix,
        });
        Ok(())
    }

    /// Refuses the next offer, or (server) the next GET or LIST, even after some of the
    /// LIST's pages. In seed framing it goes as an ERROR frame: the caller closes the stream.
    ///
    /// Version 2: [`Code::Unchanged`] answers a file offer that passed the unchanged-file
    /// check ([`Offer::unchanged`](crate::Offer::unchanged), PROTOCOL.md §4.8); it is not a
    /// failure.
    pub fn refuse(&mut self, id: FileId, code: Code, reason: &str) -> Result<(), UsageError> {
        self.ready_to_queue()?;
        let reason = truncate(reason, MAX_REASON_LEN);
        let frame = Frame::Refuse { id, code, reason };
        self.may_send(&frame)?;
        if let Some(p) = self.inbound.unanswered.front().filter(|p| p.id == id) {
            if let Some(why) = p.refusal_error(code) {
                return Err(UsageError::Invalid(why));
            }
            let (early, size) = (p.early, p.size);
            self.inbound.unanswered.pop_front();
            if early {
                self.early_answered(id, size, true);
            }
        } else if self.side == Side::Server && self.requests.front().is_some_and(|r| r.id() == id) {
            if code == Code::Unchanged {
                return Err(UsageError::Invalid(UNCHANGED_REQUEST));
            }
            self.requests.pop_front();
        } else {
            let expected = self.inbound.unanswered.front().map_or(0, |p| p.id);
            return Err(UsageError::NotNext {
                call: "refuse",
                expected,
                got: id,
            });
        }
        self.emit(&frame);
        if self.is_seed() {
            self.seed_refuse();
        }
        Ok(())
    }

    /// Sends the final word on a received file, after [`Event::End`](crate::Event::End), or
    /// (version 2) on a folder offer, in place of accepting it: [`Code::Stored`] with the
    /// stored name, a failure code with a reason, or [`Code::Unchanged`] (a folder that
    /// already existed, or a body that only confirmed the file held; PROTOCOL.md
    /// §4.8-§4.9). In seed framing only a failure is sent, as an ERROR frame.
    pub fn finish(&mut self, id: FileId, code: Code, detail: &str) -> Result<(), UsageError> {
        self.ready_to_queue()?;
        let detail = truncate(detail, MAX_REASON_LEN);
        let frame = Frame::Result { id, code, detail };
        self.may_send(&frame)?;
        if self
            .inbound
            .unanswered
            .front()
            .is_some_and(|p| p.id == id && p.kind == EntryKind::Folder)
        {
            self.inbound.unanswered.pop_front();
        } else if self.inbound.unfinished.front() == Some(&id) {
            self.inbound.unfinished.pop_front();
        } else {
            let expected = self.inbound.unfinished.front().copied().unwrap_or(0);
            return Err(UsageError::NotNext {
                call: "finish",
                expected,
                got: id,
            });
        }
        self.emit(&frame);
        Ok(())
    }

    /// Client (version 2, after WELCOME): asks what the server holds under `path` (`None`:
    /// the root), one level or everything below (PROTOCOL.md §4.10). The answer arrives as
    /// [`Event::Entries`](crate::Event::Entries) pages, then
    /// [`Event::Listed`](crate::Event::Listed), or [`Event::Refused`](crate::Event::Refused).
    /// Returns its id.
    pub fn list(&mut self, path: Option<Name>, recursive: bool) -> Result<FileId, UsageError> {
        self.ready_to_request("list")?;
        let id = self.next_id;
        let frame = Frame::List {
            id,
            recursive,
            path: path.as_ref().map_or("", Name::as_str).to_owned(),
        };
        self.may_send(&frame)?;
        self.emit(&frame);
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
        let listing = self.server_listing(id, "list_page")?;
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
            wire::encode_entries(&mut self.out.buf, id, &entries[..taken]);
            *self.server_listing(id, "list_page")? = next;
        }
        Ok(taken)
    }

    /// Server: ends the listing `id` with LISTED; `skipped` counts the entries left out
    /// (special files, unreadable folders, names outside §5.1; PROTOCOL.md §4.10). A listing
    /// of a path must have sent the path itself: refuse the LIST otherwise.
    pub fn listed(&mut self, id: FileId, skipped: u64) -> Result<(), UsageError> {
        self.ready_to_queue()?;
        let listing = self.server_listing(id, "listed")?;
        let count = listing.count();
        listing.end(count).map_err(UsageError::Invalid)?;
        self.requests.pop_front();
        self.emit(&Frame::Listed { id, count, skipped });
        Ok(())
    }

    /// The early offer `id` of `size` bytes is answered: its BEGIN comes next, and with
    /// `discard` (refused) the machine drops its body without an event (§4.14).
    fn early_answered(&mut self, id: FileId, size: Option<u64>, discard: bool) {
        self.inbound.early = Some(EarlyBegin {
            id,
            size: size.unwrap_or(0),
            discard,
        });
    }

    /// Server: the listing the front request holds, when it is the LIST `id`.
    fn server_listing(
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
}
