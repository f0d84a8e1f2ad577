//! The seed framing (PROTOCOL.md §2.1): `<name>\n<body until close>`, one upload, no reply,
//! no checks. Everything the seed framing does differently from the ferry framing is here;
//! the rest of the machine emits frames through [`Connection::emit`], which sends nothing in
//! seed framing.

use super::body::Body;
use super::deframe::Rx;
use super::queues::{Accepted, Pending};
use super::{Connection, Framing};
use crate::code::Code;
use crate::digest::{Digest, Hasher};
use crate::entry::EntryKind;
use crate::error::UsageError;
use crate::event::{BadName, BodyCheck, Event, FileId, FileInfo, Offer};
use crate::name::{escape, Name, NameError};
use crate::wire::Frame;

/// The one file of a seed connection.
const SEED_ID: FileId = 1;

impl Connection {
    /// True in seed framing.
    pub(super) fn is_seed(&self) -> bool {
        self.framing == Some(Framing::Seed)
    }

    /// Queues `frame` in ferry framing. The seed framing has no frames but one: a server's
    /// refusal or failure (REFUSE, a failed RESULT, ERROR) goes out as one ERROR frame before
    /// it closes (PROTOCOL.md §2.1), which a seed sender that reads its peer reports. Returns
    /// whether `frame` itself was queued.
    pub(super) fn emit(&mut self, frame: &Frame) -> bool {
        if !self.is_seed() {
            frame.encode(&mut self.out.buf);
            return true;
        }
        let failure = match frame {
            Frame::Refuse { code, reason, .. } | Frame::Error { code, reason } => {
                Some((*code, reason))
            }
            Frame::Result { code, detail, .. }
                if !matches!(code, Code::Stored | Code::Unchanged) =>
            {
                Some((*code, detail))
            }
            _ => None,
        };
        if let Some((code, reason)) = failure {
            let reason = reason.clone();
            Frame::Error { code, reason }.encode(&mut self.out.buf);
        }
        false
    }

    /// Server: the seed name line arrived; it is offered like a sizeless file (§2.1).
    pub(super) fn seed_name_arrived(&mut self, raw: Vec<u8>) {
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
        self.inbound.unanswered.push_back(Pending::new(
            SEED_ID,
            EntryKind::File,
            None,
            false,
            None,
            false,
        ));
        self.events.push_back(Event::Offer(Offer {
            id: SEED_ID,
            name,
            size: None,
            mtime: None,
            mode: None,
            kind: EntryKind::File,
            digest: None,
            early: false,
        }));
    }

    /// Client: the name line, once per connection; the body may follow at once.
    pub(super) fn seed_offer(
        &mut self,
        id: FileId,
        info: &FileInfo,
        plain: bool,
    ) -> Result<(), UsageError> {
        if id != SEED_ID || info.name.as_str().contains('/') || !plain {
            return Err(UsageError::SeedName);
        }
        self.out
            .buf
            .extend_from_slice(info.name.as_str().as_bytes());
        self.out.buf.push(b'\n');
        self.outbound.accepted.push_back(Accepted {
            id,
            size: info.size,
            offset: 0,
            prefix: Digest::of_empty(),
        });
        Ok(())
    }

    /// Server: accepting the seed upload starts its body at once, until the end of the stream.
    pub(super) fn seed_accept(&mut self, id: FileId) {
        self.inbound.body = Some(Body::new(id, None, Hasher::new()));
        self.events.push_back(Event::Begin { id, from: 0 });
    }

    /// Server: refusing the seed upload closes (after the ERROR [`Connection::emit`] queued);
    /// the rest of the stream is ignored.
    pub(super) fn seed_refuse(&mut self) {
        self.de.rx = Rx::Done;
        self.closed_locally = true;
    }

    /// Server: the end of the stream ends the seed body; nothing to verify it against.
    pub(super) fn seed_body_ended(&mut self) {
        if let Some(body) = self.inbound.body.take() {
            self.inbound.unfinished.push_back(body.id);
            self.events.push_back(Event::End {
                id: body.id,
                size: body.len(),
                check: BodyCheck::Unverified(body.digest()),
            });
        }
    }
}
