//! What a GET and a LIST mean: access checks, the downloads offered and sent (read from the
//! [`Storage`](crate::storage::Storage) at the offset the client accepted), and listings sent
//! page by page.

use std::io;
use std::sync::atomic::Ordering;
use std::time::Instant;

use ferry_proto::{BadName, Code, DriveError, Entry, FileId, Name, OfferOptions};

use super::{body_buf, Session};
use crate::access::Action;
use crate::logging::clip;
use crate::paths::Refusal;
use crate::storage::{Listing, Offered};
use crate::units::{Bytes, Rate};

/// Most downloads one connection may have offered and not yet accepted or refused (each
/// costs memory, not a descriptor: the file is opened again on ACCEPT); more GETs are refused
/// as busy. The protocol's own pipeline limit does not count these.
const MAX_OFFERED_DOWNLOADS: usize = ferry_proto::MAX_PIPELINE;

/// A download whose OFFER was sent; its body is sent on ACCEPT.
pub(super) struct Serving {
    id: FileId,
    offered: Offered,
}

/// A download whose body was sent; its RESULT is due.
pub(super) struct Sent {
    id: FileId,
    name: Name,
    bytes: u64,
    started: Instant,
}

/// Encoded bytes of entries gathered before a listing page is queued: one ENTRIES frame's
/// worth, so that a page is full and at most one more entry waits in memory.
const PAGE_BYTES: usize = ferry_proto::wire::MAX_CONTROL_PAYLOAD as usize;

/// Bytes of an encoded entry besides its name: kind, size, mtime, mode, name length
/// (PROTOCOL.md §3).
const ENTRY_FIXED: usize = 1 + 8 + 12 + 4 + 2;

impl<'a> Session<'a> {
    pub(super) fn on_get(
        &mut self,
        id: FileId,
        name: Result<Name, ferry_proto::BadName>,
    ) -> Result<(), DriveError> {
        let opened = if self.shared.stop.draining.load(Ordering::Relaxed) {
            Err(Refusal::new(
                Code::ShuttingDown,
                "the server is shutting down",
            ))
        } else if self.serving.len() >= MAX_OFFERED_DOWNLOADS {
            Err(Refusal::new(
                Code::Busy,
                format!(
                    "{MAX_OFFERED_DOWNLOADS} downloads on this connection wait for an answer \
                     to their offer; accept or refuse them first"
                ),
            ))
        } else {
            self.allow(Action::Download)
                .and_then(|()| name.map_err(|bad| Refusal::new(Code::BadName, bad.to_string())))
                .and_then(|n| self.shared.store.offer_download(n))
        };
        match opened {
            Ok(offered) => {
                let opts = match offered.digest {
                    Some(d) if self.v2() => OfferOptions::with_digest(d),
                    _ => OfferOptions::default(),
                };
                self.d
                    .conn_mut()
                    .serve_with(id, offered.info.clone(), opts)?;
                self.serving.push_back(Serving { id, offered });
            }
            Err(r) => {
                let reason = clip(&r.reason);
                self.note(
                    log::Level::Warn,
                    format_args!("download #{id} refused: {}: {reason}", r.code),
                );
                self.d.conn_mut().refuse(id, r.code, &r.reason)?;
            }
        }
        Ok(())
    }

    /// Forgets the download `id`, which the client declined.
    pub(super) fn on_refused(&mut self, id: FileId, code: Code, reason: &str) {
        self.serving.retain(|s| s.id != id);
        let reason = clip(&ferry_proto::name::escape(reason));
        self.note(
            log::Level::Info,
            format_args!("download #{id} declined by the client: {code}: {reason}"),
        );
    }

    /// Answers a LIST (version 2): its pages go out one at a time, each written before the
    /// next is read from the storage, so that a listing is never held whole (see
    /// [`Listing`]); the bytes of the pages count as progress.
    pub(super) fn on_list(
        &mut self,
        id: FileId,
        path: Result<Option<Name>, BadName>,
        recursive: bool,
    ) -> Result<(), DriveError> {
        let opened = if self.shared.stop.draining.load(Ordering::Relaxed) {
            Err(Refusal::new(
                Code::ShuttingDown,
                "the server is shutting down",
            ))
        } else {
            self.allow(Action::List)
                .and_then(|()| path.map_err(|bad| Refusal::new(Code::BadName, bad.to_string())))
                .and_then(|p| self.shared.store.list(p, recursive))
        };
        let mut lister = match opened {
            Ok(l) => l,
            Err(r) => {
                let reason = clip(&r.reason);
                self.note(
                    log::Level::Warn,
                    format_args!("listing #{id} refused: {}: {reason}", r.code),
                );
                self.d.conn_mut().refuse(id, r.code, &r.reason)?;
                return Ok(());
            }
        };
        self.io().set_body(true);
        let count = self.send_pages(id, lister.as_mut())?;
        let skipped = lister.skipped();
        self.d.conn_mut().listed(id, skipped)?;
        self.shared.metrics.listed();
        // A listing answered is work done, as a file completed is, however few its pages.
        self.activity.progress();
        log::info!(
            "{}: listed {count} entries ({skipped} skipped) for #{id}",
            self.peer
        );
        Ok(())
    }

    /// Sends the entries of `lister` as ENTRIES pages of the listing `id`, each written out
    /// before the next is gathered; returns how many were sent.
    fn send_pages(&mut self, id: FileId, lister: &mut dyn Listing) -> Result<u64, DriveError> {
        let cost = |e: &Entry| ENTRY_FIXED + e.name.as_str().len();
        let mut page: Vec<Entry> = Vec::new();
        let mut sent = 0u64;
        loop {
            let mut bytes: usize = page.iter().map(cost).sum();
            while bytes < PAGE_BYTES {
                let Some(e) = lister.next_entry() else {
                    break;
                };
                bytes += cost(&e);
                page.push(e);
            }
            if page.is_empty() {
                return Ok(sent);
            }
            let taken = self.d.conn_mut().list_page(id, &page)?;
            page.drain(..taken);
            sent += taken as u64;
            self.d.flush()?;
        }
    }

    pub(super) fn send_download(&mut self, id: FileId, offset: u64) -> Result<(), DriveError> {
        let Some(Serving { offered, .. }) = self.serving.pop_front().filter(|s| s.id == id) else {
            log::error!(
                "{}: ACCEPT for #{id} does not match the served files",
                self.peer
            );
            return Ok(());
        };
        let mut file = match self.shared.store.open_download(offered) {
            Ok(d) => d,
            Err(why) => {
                log::warn!("{}: download #{id} cancelled: {why}", self.peer);
                self.d.conn_mut().cancel(id, &why)?;
                return Ok(());
            }
        };
        let name = file.info().name.clone();
        let size = file.info().size.unwrap_or(0);
        let started = Instant::now();
        let prefix = file.prefix(offset, body_buf(&mut self.buf));
        let from = self.d.conn_mut().begin(id, prefix)?;
        let mut at = from;
        while at < size {
            let want = usize::try_from(size - at)
                .unwrap_or(usize::MAX)
                .min(self.buf.len());
            let n = match file.read_at(at, &mut self.buf[..want]) {
                Ok(0) => {
                    log::warn!("{}: {name} shrank while being sent; cancelled", self.peer);
                    self.d
                        .conn_mut()
                        .cancel(id, "the file changed on the server while being sent")?;
                    return Ok(());
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("{}: reading {name} failed: {e}", self.peer);
                    self.d
                        .conn_mut()
                        .cancel(id, &format!("the server cannot read the file: {e}"))?;
                    return Ok(());
                }
            };
            self.d.send_body(&self.buf[..n])?;
            self.tally.sent += n as u64;
            self.shared.metrics.sent(n);
            at += n as u64;
        }
        self.d.conn_mut().end()?;
        self.sent.push_back(Sent {
            id,
            name,
            bytes: size.saturating_sub(from),
            started,
        });
        Ok(())
    }

    pub(super) fn on_result(&mut self, id: FileId, code: Code, detail: &str) {
        let at = self.sent.iter().position(|s| s.id == id);
        let Some(s) = at.and_then(|i| self.sent.remove(i)) else {
            return;
        };
        let rate = Rate {
            bytes: s.bytes,
            elapsed: s.started.elapsed(),
        };
        if code == Code::Stored {
            self.shared.metrics.downloaded();
            log::info!(
                "{}: sent {} ({}, {rate})",
                self.peer,
                s.name,
                Bytes(s.bytes)
            );
        } else {
            let detail = clip(&ferry_proto::name::escape(detail));
            self.note(
                log::Level::Warn,
                format_args!("sent {} but the client says {code}: {detail}", s.name),
            );
        }
    }
}
