//! The S3 backend: files stored as objects of an S3-compatible bucket (`--store
//! s3://BUCKET[/PREFIX]`), every piece of upload state in the bucket too, so that any number
//! of servers on one bucket serve any client: an upload cut off from one resumes through
//! another, and of concurrent uploads of one name exactly one is stored.
//!
//! - [`client`]: the S3 requests; [`layout`]: keys, records, metadata;
//! - [`holds`]: leases and claims from conditional PutObject;
//! - [`upload`]: upload records, parts, resume from stored chaining values, publishing;
//! - [`download`] and [`listing`]: ranged GETs and paged listings;
//! - [`janitor`]: removes abandoned uploads and stale claims.

mod client;
mod download;
mod holds;
mod janitor;
mod layout;
mod listing;
mod upload;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ferry_proto::{Code, Digest, FileInfo, Hasher, Name, Offer, Timestamp};
use rusty_s3::Credentials;

use self::client::{Client, Cond, Head, S3Error};
use self::layout::{DigestRecord, Location, MAX_RECORD};
use super::fs::unchanged_copy;
use super::{FileMeta, Incoming, Listing, Offered, Outgoing, Prepared, Storage, Upload};
use crate::access::Principal;
use crate::commit::{Flush, Touched};
use crate::config::{Config, ObjectStore, Overwrite};
use crate::paths::{check_reserved, Refusal};

/// Region signed for when `AWS_REGION` is not set.
const DEFAULT_REGION: &str = "us-east-1";

/// What every store of one server shares: the client, the policies, who this instance is.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The bucket.
    client: Client,
    /// The overwrite policy.
    overwrite: Overwrite,
    /// Largest file accepted (`--max-file-size`), in bytes.
    max_file_size: Option<u64>,
    /// How long an upload nobody resumes is kept.
    partial_ttl: Option<Duration>,
    /// This server instance, in leases and claims.
    instance: String,
    /// Numbers the holders of this instance.
    holders: AtomicU64,
}

impl Shared {
    /// A fresh holder name for a lease or a claim.
    fn holder(&self) -> String {
        let n = self.holders.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.instance)
    }

    /// A refusal for a failed request to the store.
    fn refusal(&self, e: &S3Error) -> Refusal {
        Refusal::new(Code::Io, e.to_string())
    }
}

/// A bucket, or a prefix in it, as a [`Storage`].
#[derive(Debug)]
pub(crate) struct S3Store {
    shared: Arc<Shared>,
    loc: Location,
}

impl S3Store {
    /// Opens the object store `store` names, with credentials from `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`) and the region from `AWS_REGION`,
    /// checks that the bucket can be listed, and starts the janitor.
    pub(crate) fn open(config: &Config, store: &ObjectStore) -> io::Result<Self> {
        let loc = Location::parse(&store.url).map_err(io::Error::other)?;
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let (Some(key), Some(secret)) = (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY"))
        else {
            return Err(io::Error::other(
                "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for the object store",
            ));
        };
        let credentials = match var("AWS_SESSION_TOKEN") {
            Some(token) => Credentials::new_with_token(key, secret, token),
            None => Credentials::new(key, secret),
        };
        let region = var("AWS_REGION").unwrap_or_else(|| DEFAULT_REGION.to_owned());
        let client = Client::new(&store.endpoint, &loc.bucket, &region, credentials)
            .map_err(io::Error::other)?;
        client
            .list(&loc.list_prefix(), true, None, 1)
            .map_err(io::Error::other)?;
        let started = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let seed = format!("{}:{}", std::process::id(), started.as_nanos());
        let shared = Arc::new(Shared {
            client,
            overwrite: config.overwrite,
            max_file_size: config.max_file_size,
            partial_ttl: config.partial_ttl,
            instance: layout::hex(&Digest::of(seed.as_bytes()).0[..8]),
            holders: AtomicU64::new(0),
        });
        janitor::start(&shared, loc.clone());
        Ok(Self { shared, loc })
    }

    /// What is stored under `name`: its HEAD, or `None`.
    fn head(&self, name: &Name) -> Result<Option<Head>, Refusal> {
        let key = self.key(name)?;
        self.shared
            .client
            .head(&key)
            .map_err(|e| self.shared.refusal(&e))
    }

    /// The key of `name`, or why it cannot have one.
    fn key(&self, name: &Name) -> Result<String, Refusal> {
        check_reserved(name)?;
        self.loc.object(name.as_str()).ok_or_else(|| {
            Refusal::new(
                Code::BadName,
                format!(
                    "{name}: too long for the object store (keys are at most {} bytes)",
                    layout::MAX_KEY_LEN
                ),
            )
        })
    }

    /// The digest of the object `name` described by `head`, when the store holds it: in its
    /// metadata (single-part objects) or its digest record (multipart ones, while the record
    /// names this version).
    fn known_digest(&self, name: &Name, head: &Head) -> Option<Digest> {
        if let Some(d) = head
            .meta(layout::META_BLAKE3)
            .and_then(layout::parse_digest)
        {
            return Some(d);
        }
        let key = self.loc.digest(&self.key(name).ok()?);
        let (bytes, _) = self.shared.client.get_small(&key, MAX_RECORD).ok()??;
        let record: DigestRecord = layout::decode(&bytes)?;
        (record.etag == head.etag && record.size == head.size)
            .then(|| layout::parse_digest(&record.blake3))
            .flatten()
    }

    /// Whether the object `name` described by `head` is unchanged against `offer` (PROTOCOL.md
    /// §4.8), reading it through `buf` when its digest is not known.
    fn unchanged(
        &self,
        name: &Name,
        offer: &Offer,
        head: &Head,
        buf: &mut [u8],
    ) -> Result<bool, Refusal> {
        let Some(mtime) = mtime_of(head) else {
            return Ok(false);
        };
        offer.unchanged(head.size, mtime, || match self.known_digest(name, head) {
            Some(d) => Ok(d),
            None => {
                let mut body = download::Body::new(&self.shared, self.key(name)?, head);
                let h = super::hash_at(|at, b| body.read(at, b), head.size, buf)
                    .map_err(|e| Refusal::io("cannot read the object held under that name", &e))?;
                Ok(h.finalize())
            }
        })
    }

    /// Where the object offered as `name`, described by `head`, is held unchanged
    /// (PROTOCOL.md §4.8): `name` itself (see [`Self::unchanged`]) or, under
    /// [`Overwrite::Rename`], the copy of it the policy made that holds it (see
    /// [`unchanged_copy`]; one HEAD per copy looked at). A copy that cannot be looked at or
    /// read is not unchanged.
    fn unchanged_as(
        &self,
        name: &Name,
        offer: &Offer,
        head: &Head,
        buf: &mut [u8],
    ) -> Result<Option<String>, Refusal> {
        if self.unchanged(name, offer, head, buf)? {
            return Ok(Some(name.to_string()));
        }
        if self.shared.overwrite != Overwrite::Rename {
            return Ok(None);
        }
        let copy = unchanged_copy(
            name,
            |copy| self.head(copy).ok().flatten(),
            |copy, head| self.unchanged(copy, offer, head, buf) == Ok(true),
        );
        Ok(copy.map(|copy| copy.to_string()))
    }

    /// What a stored object is, for an OFFER or a listing.
    fn info(name: Name, head: &Head) -> FileInfo {
        FileInfo {
            name,
            size: Some(head.size),
            mtime: mtime_of(head),
            mode: head.meta(layout::META_MODE).and_then(layout::parse_mode),
        }
    }

    /// Refuses a size over the per-file limit or over what the object store can hold.
    fn check_size(&self, name: &Name, size: Option<u64>) -> Result<(), Refusal> {
        let max = self
            .shared
            .max_file_size
            .map_or(layout::MAX_FILE, |m| m.min(layout::MAX_FILE));
        match size {
            Some(size) if size > max => Err(Refusal::new(
                Code::TooLarge,
                format!(
                    "{name} is {} but this server accepts at most {} per file",
                    crate::units::Bytes(size),
                    crate::units::Bytes(max)
                ),
            )),
            _ => Ok(()),
        }
    }
}

impl Storage for S3Store {
    fn describe(&self) -> String {
        let prefix = match self.loc.prefix.as_str() {
            "" => String::new(),
            p => format!("/{p}"),
        };
        format!(
            "s3://{}{prefix} at {}",
            self.loc.bucket,
            self.shared.client.endpoint()
        )
    }

    fn local_folder(&self) -> Option<&Path> {
        None
    }

    fn locate(&self, stored: &str) -> PathBuf {
        let key = self.loc.object(stored).unwrap_or_else(|| stored.to_owned());
        PathBuf::from(format!("s3://{}/{key}", self.loc.bucket))
    }

    fn sub_storage(&self, folder: &Name, _config: &Config) -> io::Result<Arc<dyn Storage>> {
        let loc = self.loc.sub(folder);
        janitor::start(&self.shared, loc.clone());
        Ok(Arc::new(Self {
            shared: Arc::clone(&self.shared),
            loc,
        }))
    }

    /// A completed object is durable by the store's own guarantee: no flush.
    fn durable(&self) -> bool {
        false
    }

    fn flush(&self, _what: &Flush) -> io::Result<()> {
        Ok(())
    }

    /// An object store has no folders: a folder offer stores an empty marker object
    /// `NAME/` (with the folder's mode and mtime), which listings show as the folder.
    /// A folder marker once made is never changed: `restyle` has nothing to do.
    fn make_folder(
        &self,
        name: &Name,
        mode: Option<u32>,
        mtime: Option<Timestamp>,
        _restyle: bool,
    ) -> Result<(Code, Option<Touched>), Refusal> {
        let key = self.key(name)?;
        if self.head(name)?.is_some() {
            return Err(Refusal::new(
                Code::Exists,
                format!("{name} is a file on the server"),
            ));
        }
        let meta = layout::file_meta(mtime, mode, None);
        let made = self
            .shared
            .client
            .put(&format!("{key}/"), &[], Cond::Absent, &meta)
            .map_err(|e| self.shared.refusal(&e))?;
        Ok((
            if made.is_some() {
                Code::Stored
            } else {
                Code::Unchanged
            },
            None,
        ))
    }

    /// One HEAD, when the offer is compared or the policy refuses to overwrite.
    fn prepare_upload(
        &self,
        name: Name,
        meta: FileMeta,
        compare: Option<&Offer>,
        resume_for: Option<&Principal>,
        buf: &mut [u8],
    ) -> Result<Prepared, Refusal> {
        let key = self.key(&name)?;
        let refuse = self.shared.overwrite == Overwrite::Refuse;
        let head = if compare.is_some() || refuse {
            self.head(&name)?
        } else {
            None
        };
        if let (Some(offer), Some(head)) = (compare, &head) {
            if let Some(held_as) = self.unchanged_as(&name, offer, head, buf)? {
                return Ok(Prepared::Unchanged(held_as));
            }
        }
        self.check_size(&name, meta.size)?;
        if refuse && head.is_some() {
            return Err(Refusal::new(
                Code::Exists,
                "a file of that name exists (server policy: refuse)",
            ));
        }
        let up = upload::Uploads {
            shared: &self.shared,
            loc: &self.loc,
        };
        let (reserved, prefix) = match (resume_for, meta.size) {
            (Some(owner), Some(size)) if size >= upload::part_len(meta.size) => {
                up.reserve(owner, &name, key, size, &meta)?
            }
            _ => (None, Hasher::new()),
        };
        Ok(Prepared::Upload(Upload::new(name, meta, reserved), prefix))
    }

    fn start_body(&self, up: &mut Upload, from: u64) -> io::Result<Box<dyn Incoming>> {
        if let Some(reserved) = up.take_reservation() {
            return reserved.start(from);
        }
        if from != 0 {
            return Err(io::Error::other("nothing is held to resume this upload"));
        }
        let key = self.key(&up.name).map_err(|r| io::Error::other(r.reason))?;
        Ok(Box::new(upload::Body::fresh(
            Arc::clone(&self.shared),
            self.loc.clone(),
            key,
            up,
        )))
    }

    fn offer_download(&self, name: Name) -> Result<Offered, Refusal> {
        let not_found = || Refusal::new(Code::NotFound, format!("{name}: no such file"));
        let head = self.head(&name)?.ok_or_else(not_found)?;
        let digest = self.known_digest(&name, &head);
        let version = head.etag.clone();
        Ok(Offered::new(Self::info(name, &head), digest, version))
    }

    fn open_download(&self, offered: Offered) -> Result<Box<dyn Outgoing>, String> {
        let name = &offered.info.name;
        let key = self.key(name).map_err(|r| r.reason)?;
        let head = self
            .shared
            .client
            .head(&key)
            .map_err(|e| e.to_string())?
            .filter(|h| h.etag == offered.version())
            .ok_or_else(|| {
                format!("{name} changed on the server since it was offered; ask for it again")
            })?;
        Ok(Box::new(download::Download {
            body: download::Body::new(&self.shared, key, &head),
            info: offered.info,
        }))
    }

    fn list(&self, path: Option<Name>, recursive: bool) -> Result<Box<dyn Listing>, Refusal> {
        let lister = listing::Lister::new(Arc::clone(&self.shared), self.loc.clone(), recursive);
        let Some(name) = path else {
            return Ok(Box::new(lister.folder(None)));
        };
        if let Some(head) = self.head(&name)? {
            return Ok(Box::new(listing::Lister::file(&name, &head)));
        }
        lister
            .folder(Some(name.clone()))
            .non_empty()
            .map_err(|e| self.shared.refusal(&e))?
            .map(|l| Box::new(l) as Box<dyn Listing>)
            .ok_or_else(|| Refusal::new(Code::NotFound, format!("{name}: no such file or folder")))
    }
}

/// The mtime of a stored object: from its metadata, else when it was stored.
fn mtime_of(head: &Head) -> Option<Timestamp> {
    head.meta(layout::META_MTIME)
        .and_then(layout::parse_mtime)
        .or_else(|| head.last_modified.and_then(super::fs::to_timestamp))
}
