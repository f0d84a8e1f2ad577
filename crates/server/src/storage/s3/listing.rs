//! Listings of the bucket: ListObjectsV2 pages fetched one at a time as the client reads,
//! grouped by `/` unless recursive, the server's state and names the protocol cannot carry
//! left out.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::SystemTime;

use ferry_proto::{Entry, EntryKind, Name, Timestamp};

use super::client::{Head, S3Error};
use super::layout::{self, Location};
use super::Shared;
use crate::paths::RESERVED_PREFIX;
use crate::storage::fs::to_timestamp;
use crate::storage::Listing;

/// Keys asked for per page.
const PAGE: usize = 1000;
/// Permission bits shown for an object stored without them, and for a folder.
const FILE_MODE: u32 = 0o644;
/// See [`FILE_MODE`].
const FOLDER_MODE: u32 = 0o755;

/// A listing in progress.
pub(crate) struct Lister {
    shared: Option<Arc<Shared>>,
    loc: Location,
    recursive: bool,
    /// The key prefix listed.
    base: String,
    pending: VecDeque<Entry>,
    /// The next page's token; `None` with `started`: no more pages.
    token: Option<String>,
    started: bool,
    skipped: u64,
}

impl Lister {
    /// A listing in `loc`; see [`Lister::folder`].
    pub(crate) fn new(shared: Arc<Shared>, loc: Location, recursive: bool) -> Self {
        Self {
            shared: Some(shared),
            base: loc.list_prefix(),
            loc,
            recursive,
            pending: VecDeque::new(),
            token: None,
            started: false,
            skipped: 0,
        }
    }

    /// Lists the folder `name` (`None`: everything), which comes first itself.
    pub(crate) fn folder(mut self, name: Option<Name>) -> Self {
        if let Some(name) = name {
            self.base = format!("{}{}/", self.base, name.as_str());
            self.pending.push_back(Entry {
                kind: EntryKind::Folder,
                name,
                size: 0,
                mtime: Timestamp { secs: 0, nanos: 0 },
                mode: FOLDER_MODE,
            });
        }
        self
    }

    /// A listing of the one object `name`.
    pub(crate) fn file(name: &Name, head: &Head) -> Self {
        let mut l = Self {
            shared: None,
            loc: Location {
                bucket: String::new(),
                prefix: String::new(),
                root: String::new(),
            },
            recursive: false,
            base: String::new(),
            pending: VecDeque::new(),
            token: None,
            started: true,
            skipped: 0,
        };
        l.pending.push_back(Entry {
            kind: EntryKind::File,
            name: name.clone(),
            size: head.size,
            mtime: super::mtime_of(head).unwrap_or(Timestamp { secs: 0, nanos: 0 }),
            mode: head
                .meta(layout::META_MODE)
                .and_then(layout::parse_mode)
                .unwrap_or(FILE_MODE),
        });
        l
    }

    /// The listing if its folder holds anything (its first page is read now), else `None`.
    pub(crate) fn non_empty(mut self) -> Result<Option<Self>, S3Error> {
        let before = self.pending.len();
        while self.pending.len() == before && self.more() {
            self.fetch()?;
        }
        Ok((self.pending.len() > before).then_some(self))
    }

    /// Whether pages are left to read.
    fn more(&self) -> bool {
        self.shared.is_some() && (!self.started || self.token.is_some())
    }

    /// Reads the next page into `pending`.
    fn fetch(&mut self) -> Result<(), S3Error> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        let page = shared
            .client
            .list(&self.base, !self.recursive, self.token.as_deref(), PAGE)?;
        self.started = true;
        self.token = page.next.filter(|t| Some(t) != self.token.as_ref());
        for prefix in page.prefixes {
            self.push(prefix.trim_end_matches('/'), EntryKind::Folder, 0, None);
        }
        for (key, size, when) in page.objects {
            match key.strip_suffix('/') {
                // A folder marker (see `make_folder`); the listed folder's own is skipped.
                Some(folder) if key != self.base => {
                    self.push(folder, EntryKind::Folder, 0, when);
                }
                Some(_) => {}
                None => self.push(&key, EntryKind::File, size, when),
            }
        }
        Ok(())
    }

    /// Queues the entry of `key`, unless it is the server's or not a name.
    fn push(&mut self, key: &str, kind: EntryKind, size: u64, when: Option<SystemTime>) {
        let Some(rel) = self.loc.name_of(key) else {
            self.skipped += 1;
            return;
        };
        if rel.split('/').any(|c| c.starts_with(RESERVED_PREFIX)) {
            return;
        }
        let Ok(name) = Name::parse(rel) else {
            self.skipped += 1;
            return;
        };
        self.pending.push_back(Entry {
            kind,
            name,
            size,
            mtime: when
                .and_then(to_timestamp)
                .unwrap_or(Timestamp { secs: 0, nanos: 0 }),
            mode: match kind {
                EntryKind::File => FILE_MODE,
                _ => FOLDER_MODE,
            },
        });
    }
}

impl Listing for Lister {
    fn next_entry(&mut self) -> Option<Entry> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some(e);
            }
            if !self.more() {
                return None;
            }
            if let Err(e) = self.fetch() {
                // The listing ends here; the client sees it shorter.
                log::warn!("listing {} stopped: {e}", self.base);
                self.shared = None;
            }
        }
    }

    fn skipped(&self) -> u64 {
        self.skipped
    }
}
