//! The storage seam: one trait, [`Storage`], in front of the place files are stored, so that
//! the connection and its policy (see [`crate::session`]) never touch a file system or an
//! object store themselves.
//!
//! A backend answers what an offer, a GET or a LIST needs: whether a file held is unchanged or
//! else where an accepted upload's body goes and from which offset it resumes (one decision,
//! one look at the name), how a complete body is published (atomically, only once its digest
//! was checked), what a download is and how its bytes are read at an offset, and what a
//! listing holds. What stays out of it is policy the connection keeps whatever the backend:
//! access checks, name locks between connections of this process, the group commit of
//! RESULTs ([`crate::commit::Batch`]) and the replies.
//!
//! The file-system backend, [`fs`], is the storage folder of `--dir`.
//!
//! Backend-owned state travels in backend-neutral values: an [`Upload`] carries a
//! [`Reservation`] (what the backend holds for it between offer and body, a locked partial
//! file say), the body is an [`Incoming`] that publishes itself, and an [`Offered`] download
//! carries an opaque version the backend checks when the client accepts it.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferry_proto::{Code, Digest, Entry, FileInfo, Hasher, Name, Offer, Timestamp};

use crate::access::Principal;
use crate::commit::{Flush, Touched};
use crate::config::Config;
use crate::paths::Refusal;

pub(crate) mod fs;
pub(crate) mod s3;

/// Size of the buffers that move file bytes.
pub(crate) const BUF_LEN: usize = 1 << 20;
/// Most accepted uploads one connection may hold a [`Reservation`] for while they wait for
/// their body (each may hold a descriptor and a lock); an offer beyond it is prepared without
/// resume, so that a client cannot make the server hold one reservation per offer.
pub(crate) const MAX_RESERVATIONS: usize = 8;

/// One place files are stored: a folder (see [`fs`]) or an object-store bucket.
///
/// Every name a method gets was validated by the proto crate; the backend resolves it within
/// its own space and refuses names it reserves for itself. A refusal carries the code and the
/// words the client gets.
pub(crate) trait Storage: Send + Sync + fmt::Debug {
    /// Where files are stored, for messages: `/srv/ferry`, `s3://bucket/prefix`.
    fn describe(&self) -> String;

    /// The local folder files are stored in, when they are stored in one (what the
    /// `--on-stored` hook is given a path under); `None` for a remote store.
    fn local_folder(&self) -> Option<&Path>;

    /// Where the file stored as `stored` is, for the `--on-stored` hook (`FERRY_PATH`): its
    /// path, or its object's URL (`s3://BUCKET/KEY`).
    fn locate(&self, stored: &str) -> PathBuf;

    /// The same storage confined to `folder` within it (made if missing): a credential's
    /// folder, with policies and state of its own.
    fn sub_storage(&self, folder: &Name, config: &Config) -> io::Result<Arc<dyn Storage>>;

    /// Whether published files are made durable ([`Storage::flush`]) before their RESULT.
    fn durable(&self) -> bool;

    /// Makes what `what` names durable (see [`crate::commit`]); a no-op for a backend whose
    /// publish is durable by itself.
    fn flush(&self, what: &Flush) -> io::Result<()>;

    /// Stores a folder offer (PROTOCOL.md §4.9): [`Code::Stored`] when it was made now (with
    /// what the flush before its RESULT must cover), [`Code::Unchanged`] when it was there.
    /// A folder made now takes `mode` and `mtime`; one that was there takes them only with
    /// `restyle` (a credential that may download: a stranger leaving files may not change
    /// what others' folders look like). Every folder keeps read, write and search for the
    /// server's own user, so that it can still store into it.
    fn make_folder(
        &self,
        name: &Name,
        mode: Option<u32>,
        mtime: Option<Timestamp>,
        restyle: bool,
    ) -> Result<(Code, Option<Touched>), Refusal>;

    /// Decides a file offer with one look at what is held under `name`. With `compare` (the
    /// offer of a version-2 client whose credential may download: another must learn nothing
    /// of what is held), [`Prepared::Unchanged`] when the file held is unchanged
    /// against it (PROTOCOL.md §4.8: same size and mtime, or the offer's digest), hashing
    /// through `buf` if it must; a name that holds no regular file is not unchanged. Under
    /// [`Overwrite::Rename`](crate::Overwrite::Rename), when `name` holds another file, the
    /// copies the policy made of it (`name (k)`, see [`fs::unchanged_copy`]) are looked at
    /// too, so that a re-run makes no further copy. Else
    /// checks the offer against the backend's policies (size, space, overwrite) and prepares
    /// its upload. With `resume_for` (a resumable upload, and whom it belongs to), it finds
    /// what is held for (that principal, name, size), never what another principal's upload
    /// of the name left, which stays as it is: the returned hasher is over exactly those
    /// bytes, and its length is the resume offset (0: nothing held); what is held stays
    /// reserved for this upload until it is dropped.
    fn prepare_upload(
        &self,
        name: Name,
        meta: FileMeta,
        compare: Option<&Offer>,
        resume_for: Option<&Principal>,
        buf: &mut [u8],
    ) -> Result<Prepared, Refusal>;

    /// Readies where the body of `up` goes, from the offset `from` the client chose: the
    /// bytes reserved for it (0 drops them) or a fresh destination.
    fn start_body(&self, up: &mut Upload, from: u64) -> io::Result<Box<dyn Incoming>>;

    /// What looks names up ahead in `folder` (a path under the store, empty for its top), so
    /// that the lookups of the publishes of bodies soon stored there are answered from a
    /// cache; `None` when the backend has no use for it or the folder cannot be opened. By
    /// default, none.
    fn lookout(&self, _folder: &str) -> Option<Box<dyn Lookout>> {
        None
    }

    /// Describes `name` for a download's OFFER, if it is a file the backend serves; nothing
    /// stays open (see [`Storage::open_download`]).
    fn offer_download(&self, name: Name) -> Result<Offered, Refusal>;

    /// Opens an accepted download; the reason for the client if the file is gone or no
    /// longer the version that was offered.
    fn open_download(&self, offered: Offered) -> Result<Box<dyn Outgoing>, String>;

    /// Starts a listing of `path` (`None`: everything), a folder or a file.
    fn list(&self, path: Option<Name>, recursive: bool) -> Result<Box<dyn Listing>, Refusal>;
}

/// Looks names up ahead in one folder (see [`Storage::lookout`]).
pub(crate) trait Lookout: Send {
    /// A hint that a body named `leaf` is to be stored in the folder soon: the name is looked
    /// up now. Nothing is made or changed, and what the lookup finds does not matter.
    fn look(&self, leaf: &str);
}

/// What a backend holds for an accepted upload between its offer and its body (a kept
/// partial, open and locked); released when dropped.
pub(crate) trait Reservation: Send + fmt::Debug {
    /// Readies the body's destination from `from`: the bytes held are kept up to it (0:
    /// dropped) and the body extends them.
    fn start(self: Box<Self>, from: u64) -> io::Result<Box<dyn Incoming>>;
}

/// A body being received.
pub(crate) trait Incoming: Send + fmt::Debug {
    /// Appends body bytes.
    fn write(&mut self, data: &[u8]) -> io::Result<()>;

    /// Bytes held, including a resumed prefix.
    fn len(&self) -> u64;

    /// The body was cut off: keep what is held for a resume (`true`) or drop it.
    fn interrupt(self: Box<Self>) -> bool;

    /// Publishes the complete body of `up`, whose bytes have the BLAKE3 `digest` (checked
    /// against the sender's when it sent one), atomically under the overwrite policy: nothing
    /// shows under the final name before this. Returns the name stored as (which may differ
    /// from the offered one) and what the flush before its RESULT must cover (`None`: nothing
    /// tracked; see [`Storage::flush`]). With `track` false (the caller's batch flushes
    /// everything anyway, see [`crate::commit::Batch::tracks`]) nothing is tracked: no
    /// descriptor is kept (duplicated) for the flush.
    fn publish(
        self: Box<Self>,
        up: &Upload,
        digest: Digest,
        track: bool,
    ) -> Result<(String, Option<Touched>), Refusal>;
}

/// A download being sent.
pub(crate) trait Outgoing: Send {
    /// What was offered.
    fn info(&self) -> &FileInfo;

    /// Reads at `offset` into `buf` (a file `pread`, a ranged GET); 0 at the end.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;

    /// A hasher over the first `offset` bytes (a download the client resumes), or an empty
    /// one if the file is shorter or cannot be read: the download then starts over.
    fn prefix(&mut self, offset: u64, buf: &mut [u8]) -> Hasher {
        if offset == 0 {
            return Hasher::new();
        }
        match hash_at(|at, b| self.read_at(at, b), offset, buf) {
            Ok(h) if h.len() == offset => h,
            _ => Hasher::new(),
        }
    }
}

/// A listing in progress: entries one at a time, so that a listing is never held whole.
pub(crate) trait Listing: Send {
    /// The next entry, or `None` when the listing is complete.
    fn next_entry(&mut self) -> Option<Entry>;

    /// Entries left out so far (links, special files, names the protocol cannot carry).
    fn skipped(&self) -> u64;
}

/// What a file offer says about the file besides its name.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FileMeta {
    /// Its size; `None`: unknown (the seed framing).
    pub size: Option<u64>,
    /// Its modification time.
    pub mtime: Option<Timestamp>,
    /// Its permission bits.
    pub mode: Option<u32>,
}

/// What a file offer comes to (see [`Storage::prepare_upload`]).
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "returned once per offer and taken apart at once; boxing would allocate per file"
)]
pub(crate) enum Prepared {
    /// The file held under this name (the offered one, or under a rename policy a copy of
    /// it) is unchanged against the offer: nothing is sent.
    Unchanged(String),
    /// The accepted upload, and a hasher over the bytes held for it (its length is the resume
    /// offset).
    Upload(Upload, Hasher),
}

#[cfg(test)]
impl Prepared {
    /// The upload prepared; panics if the file held was unchanged.
    pub(crate) fn upload(self) -> (Upload, Hasher) {
        match self {
            Self::Upload(up, prefix) => (up, prefix),
            Self::Unchanged(held_as) => panic!("prepared as unchanged, held as {held_as}"),
        }
    }
}

/// An upload that was accepted and waits for its body.
#[derive(Debug)]
pub(crate) struct Upload {
    /// The name offered.
    pub name: Name,
    /// The size offered; `None`: unknown.
    pub size: Option<u64>,
    /// The mtime the stored file gets.
    pub mtime: Option<Timestamp>,
    /// The permission bits the stored file gets (less the umask on a file system).
    pub mode: Option<u32>,
    /// What the backend holds for it; `None`: a fresh destination at BEGIN.
    reserved: Option<Box<dyn Reservation>>,
}

impl Upload {
    /// The upload of `name` described by `meta`, with what the backend holds for it.
    pub(crate) fn new(name: Name, meta: FileMeta, reserved: Option<Box<dyn Reservation>>) -> Self {
        Self {
            name,
            size: meta.size,
            mtime: meta.mtime,
            mode: meta.mode,
            reserved,
        }
    }

    /// Whether the backend holds something for this upload (see [`MAX_RESERVATIONS`]).
    pub(crate) fn holds_reservation(&self) -> bool {
        self.reserved.is_some()
    }

    /// Takes what the backend holds for this upload (its body starts).
    pub(crate) fn take_reservation(&mut self) -> Option<Box<dyn Reservation>> {
        self.reserved.take()
    }
}

/// A file offered for download: what the OFFER said, and which version of the file it was.
#[derive(Debug)]
pub(crate) struct Offered {
    /// What the OFFER said.
    pub info: FileInfo,
    /// The file's digest, when the backend knows it without reading (sent to version-2
    /// clients).
    pub digest: Option<Digest>,
    /// Tells this version of the file from any other, in the backend's own terms (a file's
    /// device, inode, size and mtime; an object's ETag).
    version: String,
}

impl Offered {
    /// The download of the file described by `info`, at the backend's `version`.
    pub(crate) fn new(info: FileInfo, digest: Option<Digest>, version: String) -> Self {
        Self {
            info,
            digest,
            version,
        }
    }

    /// The version offered (see [`Offered::new`]).
    pub(crate) fn version(&self) -> &str {
        &self.version
    }
}

/// Opens the storage `config` names, creating it if needed: the object store
/// [`Config::object_store`] when set, else the folder [`Config::dir`].
pub(crate) fn open(config: &Config) -> io::Result<Arc<dyn Storage>> {
    if let Some(store) = &config.object_store {
        return Ok(Arc::new(s3::S3Store::open(config, store)?));
    }
    Ok(Arc::new(fs::Store::open(config)?))
}

/// Hashes the first `limit` bytes (fewer if they end first) read by `read_at` (offset,
/// buffer; 0 at the end) through `buf`.
pub(crate) fn hash_at(
    mut read_at: impl FnMut(u64, &mut [u8]) -> io::Result<usize>,
    limit: u64,
    buf: &mut [u8],
) -> io::Result<Hasher> {
    let mut h = Hasher::new();
    while h.len() < limit {
        let want = usize::try_from(limit - h.len())
            .unwrap_or(usize::MAX)
            .min(buf.len());
        match read_at(h.len(), &mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(h)
}

#[cfg(test)]
mod tests;
