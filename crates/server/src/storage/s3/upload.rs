//! Uploads into the bucket. A body is cut into parts of one power-of-two length; a file
//! shorter than a part is stored with one PutObject once its digest is checked, a longer one
//! goes through a multipart upload that shows nothing under its key until it is completed;
//! parts go to the store on threads of their own while the next arrive, up to
//! [`MAX_IN_FLIGHT_BYTES`] of them at a time.
//!
//! A resumable upload (ferry framing, known size of at least a part) has an *upload record*
//! keyed by (name, size), created with `If-None-Match: *` and naming its multipart upload, a
//! *lease* saying which connection writes it now, and one *part record* per stored part (its
//! size, ETag and BLAKE3 chaining value). Resuming, through any instance, lists the parts
//! and their records and rebuilds the prefix hasher from the chaining values of the
//! contiguous run of parts whose ETags agree: nothing is read back.
//!
//! Publishing under refuse or rename first *claims* the final name (a conditional PutObject
//! of a claim object), checks that nothing is stored there, then completes the upload (or
//! puts the small object with `If-None-Match: *`) and gives the claim up: completing is not
//! conditional on the stores this runs on, the claim is what lets exactly one of concurrent
//! uploads of a name publish it.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ferry_proto::{hash_part, Code, Digest, Hasher, Name, PartDigest};

use super::client::{Client, Cond, S3Error};
use super::holds::{self, Hold, Taken};
use super::layout::{self, DigestRecord, Location, PartRecord, UploadRecord, MAX_RECORD};
use super::Shared;
use crate::access::Principal;
use crate::config::Overwrite;
use crate::paths::Refusal;
use crate::storage::fs::{first_free, numbered};
use crate::storage::{FileMeta, Incoming, Reservation, Upload};

/// How long a lease on an upload lasts unless renewed (renewed as the body comes): how
/// long a connection cut off without the server noticing keeps its upload from being resumed
/// elsewhere.
pub(crate) const LEASE_TTL: Duration = Duration::from_secs(20);
/// How long a claim on a final name lasts: a publish takes far less; a claim left by a
/// server that died while publishing is taken over after it.
pub(crate) const CLAIM_TTL: Duration = Duration::from_secs(60);
/// How long a publish waits for the claim another upload holds on its name.
const CLAIM_WAIT: Duration = Duration::from_secs(10);
/// First pause between two tries of a claim (doubled up to eight times that).
const CLAIM_POLL: Duration = Duration::from_millis(50);
/// Times a free `name (n)` is looked for again when a concurrent upload takes the one found.
const MAX_RENAME_RACES: usize = 8;
/// Most bytes of parts one upload has on their way to the store at a time (at least one part):
/// four 8 MiB parts, so that an upload does not wait on each part's round trip to the store;
/// with the part being filled, at most 40 MiB of memory per upload.
const MAX_IN_FLIGHT_BYTES: u64 = 32 << 20;
/// Most keys read from one upload's folder (its part records, record and lease).
const MAX_STATE_KEYS: usize = layout::MAX_PARTS as usize + 16;

/// The part size for an upload of `size` (checked against the limits before).
pub(crate) fn part_len(size: Option<u64>) -> u64 {
    layout::part_len(size).unwrap_or(layout::MAX_PART_LEN)
}

/// The uploads of one store: its shared client and policies and its place in the bucket.
pub(crate) struct Uploads<'a> {
    /// The shared client and policies.
    pub shared: &'a Arc<Shared>,
    /// Where the store is.
    pub loc: &'a Location,
}

/// What a resumable upload holds between its offer and its body: the upload record, the
/// lease on it and the stored parts that count.
#[derive(Debug)]
struct Reserved {
    shared: Arc<Shared>,
    loc: Location,
    /// The upload's state folder.
    dir: String,
    rec: UploadRecord,
    /// Released when the reservation is dropped unused.
    lease: Option<Hold>,
    /// ETags of the parts held, part 1 first.
    held: Vec<String>,
}

/// A multipart upload in progress.
#[derive(Debug)]
struct Multipart {
    /// The key it completes to.
    key: String,
    upload_id: String,
    /// ETags of the parts stored, part 1 first.
    etags: Vec<String>,
    /// Its record's folder and the lease, when it is resumable.
    recorded: Option<(String, Hold)>,
}

/// A body being received.
pub(crate) struct Body {
    shared: Arc<Shared>,
    loc: Location,
    /// The key a single-part body is stored under (before a rename).
    key: String,
    part_len: u64,
    /// The part being filled.
    buf: Vec<u8>,
    /// The parts before it on their way to the store, oldest first (see
    /// [`Body::store_part`]).
    in_flight: VecDeque<JoinHandle<io::Result<StoredPart>>>,
    /// Buffers of parts stored, for the parts to come.
    spare: Vec<Vec<u8>>,
    /// Bytes held, the resumed prefix included.
    len: u64,
    multipart: Option<Multipart>,
    /// The mtime and mode metadata.
    meta: Vec<(&'static str, String)>,
    /// Published or interrupted: nothing to clean up when dropped.
    finished: bool,
    /// The lease was taken over: the upload is someone else's now.
    lost: bool,
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Body")
            .field("key", &self.key)
            .field("len", &self.len)
            .field("multipart", &self.multipart)
            .finish_non_exhaustive()
    }
}

impl Uploads<'_> {
    fn client(&self) -> &Client {
        &self.shared.client
    }

    fn fail(&self, e: &S3Error) -> Refusal {
        self.shared.refusal(e)
    }

    /// Finds or creates the upload record of (`owner`, `name`, `size`) and takes its lease
    /// (another principal's upload of the name has a record of its own, never seen here); returns
    /// the reservation and a hasher over the parts held (their chaining values merged). No
    /// reservation when another connection holds the lease: the upload then goes on as a
    /// fresh one, and the claim at publish decides between them.
    pub(crate) fn reserve(
        &self,
        owner: &Principal,
        name: &Name,
        key: String,
        size: u64,
        meta: &FileMeta,
    ) -> Result<(Option<Box<dyn Reservation>>, Hasher), Refusal> {
        let dir = self.loc.upload_dir(&owner.own(name.as_str()), size);
        let rec_key = format!("{dir}record");
        let lease_key = format!("{dir}lease");
        let part_len = part_len(Some(size));
        let none = || Ok((None, Hasher::new()));
        // Bounded: a record that vanishes or is abandoned meanwhile is looked for again.
        for _ in 0..3 {
            let found = self
                .client()
                .get_small(&rec_key, MAX_RECORD)
                .map_err(|e| self.fail(&e))?;
            let rec = match found {
                Some((bytes, _)) => {
                    let rec = layout::decode::<UploadRecord>(&bytes).filter(|r| {
                        r.name == name.as_str() && r.size == size && r.part_len == part_len
                    });
                    let Some(rec) = rec else {
                        log::warn!("{name}: removing an unreadable upload record");
                        remove_upload(self.client(), &dir, None);
                        continue;
                    };
                    rec
                }
                None => {
                    let (_, _, key) = self.destination(name, key.clone())?;
                    let file_meta = layout::file_meta(meta.mtime, meta.mode, None);
                    let upload_id = self
                        .client()
                        .create_multipart(&key, &file_meta)
                        .map_err(|e| self.fail(&e))?;
                    let rec = UploadRecord {
                        name: name.as_str().to_owned(),
                        size,
                        key,
                        upload_id,
                        part_len,
                    };
                    let made = self
                        .client()
                        .put(&rec_key, &layout::encode(&rec), Cond::Absent, &[])
                        .map_err(|e| self.fail(&e))?;
                    if made.is_none() {
                        // Another instance recorded this upload first: use theirs.
                        let _ = self.client().abort(&rec.key, &rec.upload_id);
                        continue;
                    }
                    rec
                }
            };
            let owner = self.shared.holder();
            let lease = match holds::take(self.client(), &lease_key, &owner, LEASE_TTL) {
                Ok(Taken::Held(h)) => h,
                Ok(Taken::Busy) => return none(),
                Err(e) => return Err(self.fail(&e)),
            };
            let (held, prefix) = match self.resume_point(&dir, &rec) {
                Ok(found) => found,
                Err(e) if e.is_not_found() => {
                    // The multipart upload is gone (aborted as abandoned): start anew.
                    lease.release(self.client());
                    remove_upload(self.client(), &dir, None);
                    continue;
                }
                Err(e) => {
                    lease.release(self.client());
                    return Err(self.fail(&e));
                }
            };
            let reserved = Reserved {
                shared: Arc::clone(self.shared),
                loc: self.loc.clone(),
                dir,
                rec,
                lease: Some(lease),
                held,
            };
            return Ok((Some(Box::new(reserved)), prefix));
        }
        none()
    }

    /// The parts of `rec` that count (the contiguous run from part 1 of full parts whose
    /// ETag its part record confirms) and a hasher over them.
    fn resume_point(
        &self,
        dir: &str,
        rec: &UploadRecord,
    ) -> Result<(Vec<String>, Hasher), S3Error> {
        let max_parts = usize::try_from(rec.size / rec.part_len).unwrap_or(usize::MAX);
        let listed = self
            .client()
            .list_parts(&rec.key, &rec.upload_id, max_parts)?;
        let parts_dir = Location::parts_dir(dir, &rec.upload_id);
        let records: Vec<PartRecord> = list_keys(self.client(), &parts_dir, MAX_STATE_KEYS)?
            .iter()
            .filter_map(|k| PartRecord::parse(k.strip_prefix(&parts_dir)?))
            .collect();
        let mut etags = Vec::new();
        let mut digests = Vec::new();
        for (i, part) in listed.iter().enumerate() {
            let confirmed = records
                .iter()
                .find(|r| r.number == part.number && r.etag == part.etag && r.size == part.size);
            match confirmed {
                Some(r) if usize::from(part.number) == i + 1 && part.size == rec.part_len => {
                    etags.push(part.etag.clone());
                    digests.push(PartDigest {
                        chaining_value: r.chaining_value,
                        root: r.root.map(Digest),
                    });
                }
                _ => break,
            }
        }
        if etags.is_empty() {
            return Ok((etags, Hasher::new()));
        }
        match Hasher::from_parts(rec.part_len, &digests) {
            Some(h) => Ok((etags, h)),
            None => Ok((Vec::new(), Hasher::new())),
        }
    }

    /// Where an upload of `name` goes: its own key, or under rename a free `name (n)` when
    /// its own is taken. Returns the name and key.
    fn destination(&self, name: &Name, key: String) -> Result<(u32, String, String), Refusal> {
        destination(self.shared, self.loc, name.as_str(), key, 0)
    }
}

/// See [`Uploads::destination`]; looks above `name (after)` (0: from `name` itself).
/// Returns the number, name and key.
fn destination(
    shared: &Shared,
    loc: &Location,
    name: &str,
    key: String,
    after: u32,
) -> Result<(u32, String, String), Refusal> {
    if shared.overwrite != Overwrite::Rename {
        return Ok((0, name.to_owned(), key));
    }
    let (parent, file_name) = match name.rsplit_once('/') {
        Some((p, f)) => (Some(p), f),
        None => (None, name),
    };
    let candidate = |n: u32| {
        let file = numbered(file_name, n)?;
        let name = parent.map_or_else(|| file.clone(), |p| format!("{p}/{file}"));
        let key = loc.object(&name)?;
        Some((name, key))
    };
    let mut failure = None;
    let mut taken = |n: u32| match candidate(n) {
        None => true,
        Some((_, key)) => match shared.client.head(&key) {
            Ok(found) => found.is_some(),
            Err(e) => {
                failure.get_or_insert(e);
                true
            }
        },
    };
    let free = if after == 0 && !taken(0) {
        Some(0)
    } else {
        first_free(after, &mut taken)
    };
    if let Some(e) = failure {
        return Err(shared.refusal(&e));
    }
    free.and_then(|n| candidate(n).map(|(name, key)| (n, name, key)))
        .ok_or_else(|| Refusal::new(Code::Exists, format!("{name} has no free name")))
}

impl Reservation for Reserved {
    fn start(mut self: Box<Self>, from: u64) -> io::Result<Box<dyn Incoming>> {
        let lease = self.lease.take().expect("a reservation starts once");
        let mut held = std::mem::take(&mut self.held);
        let held_len = held.len() as u64 * self.rec.part_len;
        if from == 0 {
            held.clear();
        } else if from != held_len {
            lease.release(&self.shared.client);
            return Err(io::Error::other(format!(
                "the upload resumes at {from} but the object store holds {held_len} bytes of it"
            )));
        }
        let rec = &self.rec;
        Ok(Box::new(Body {
            shared: Arc::clone(&self.shared),
            loc: self.loc.clone(),
            key: rec.key.clone(),
            part_len: rec.part_len,
            buf: Vec::new(),
            in_flight: VecDeque::new(),
            spare: Vec::new(),
            len: from,
            multipart: Some(Multipart {
                key: rec.key.clone(),
                upload_id: rec.upload_id.clone(),
                etags: held,
                recorded: Some((self.dir.clone(), lease)),
            }),
            meta: Vec::new(),
            finished: false,
            lost: false,
        }))
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.release(&self.shared.client);
        }
    }
}

/// A part the store holds: its ETag, and the buffer it was sent from (for reuse).
type StoredPart = (String, Vec<u8>);

/// One part on its way to the store.
struct PartJob {
    shared: Arc<Shared>,
    key: String,
    upload_id: String,
    number: u16,
    /// Where the part starts in the file.
    offset: u64,
    /// Where its part record goes (resumable uploads).
    records: Option<String>,
}

impl PartJob {
    /// Uploads `part` (and writes its record); its ETag, and the buffer back.
    fn run(self, part: Vec<u8>) -> io::Result<StoredPart> {
        let failed = |e: S3Error| io::Error::other(e.to_string());
        let client = &self.shared.client;
        let etag = client
            .upload_part(&self.key, &self.upload_id, self.number, &part)
            .map_err(failed)?;
        if let Some(dir) = &self.records {
            let record = hash_part(self.offset, &part).map(|d| PartRecord {
                number: self.number,
                size: part.len() as u64,
                etag: etag.clone(),
                chaining_value: d.chaining_value,
                root: d.root.map(|r| r.0),
            });
            if let Some(name) = record.as_ref().and_then(PartRecord::key_name) {
                client
                    .put(&format!("{dir}{name}"), &[], Cond::None, &[])
                    .map_err(failed)?;
            }
        }
        Ok((etag, part))
    }
}

impl Body {
    /// A body with nothing held: stored with one PutObject if it stays under a part, else
    /// through a multipart upload started when the first part is full.
    pub(crate) fn fresh(shared: Arc<Shared>, loc: Location, key: String, up: &Upload) -> Self {
        Self {
            shared,
            loc,
            key,
            part_len: part_len(up.size),
            buf: Vec::new(),
            in_flight: VecDeque::new(),
            spare: Vec::new(),
            len: 0,
            multipart: None,
            meta: layout::file_meta(up.mtime, up.mode, None),
            finished: false,
            lost: false,
        }
    }

    fn client(&self) -> &Client {
        &self.shared.client
    }

    /// Sends the full part in the buffer to the store (starting the multipart upload on the
    /// first) on a thread of its own, with its part record when the upload is resumable,
    /// while the next part fills: up to [`MAX_IN_FLIGHT_BYTES`] of parts in flight, the
    /// oldest settled first when there is no room (see [`Body::settle`]).
    fn store_part(&mut self) -> io::Result<()> {
        let failed = |e: S3Error| io::Error::other(e.to_string());
        if self.multipart.is_none() {
            let name = self.loc.name_of(&self.key).unwrap_or(&self.key).to_owned();
            let (_, _, key) = destination(&self.shared, &self.loc, &name, self.key.clone(), 0)
                .map_err(|r| io::Error::other(r.reason))?;
            let upload_id = self
                .client()
                .create_multipart(&key, &self.meta)
                .map_err(failed)?;
            self.multipart = Some(Multipart {
                key,
                upload_id,
                etags: Vec::new(),
                recorded: None,
            });
        }
        let room = usize::try_from(MAX_IN_FLIGHT_BYTES / self.part_len)
            .unwrap_or(1)
            .max(1);
        while self.in_flight.len() >= room {
            self.settle_oldest()?;
        }
        let shared = Arc::clone(&self.shared);
        let in_flight = self.in_flight.len();
        let mp = self.multipart.as_mut().expect("made above");
        let number = mp.etags.len() + in_flight + 1;
        let Some(number) = u16::try_from(number)
            .ok()
            .filter(|n| u64::from(*n) <= layout::MAX_PARTS)
        else {
            return Err(io::Error::other("the upload has more parts than S3 allows"));
        };
        let job = PartJob {
            shared,
            key: mp.key.clone(),
            upload_id: mp.upload_id.clone(),
            number,
            offset: (u64::from(number) - 1) * self.part_len,
            records: mp
                .recorded
                .as_ref()
                .map(|(dir, _)| Location::parts_dir(dir, &mp.upload_id)),
        };
        let part = std::mem::replace(&mut self.buf, self.spare.pop().unwrap_or_default());
        let thread = thread::Builder::new()
            .name("ferry-s3-part".into())
            .spawn(move || job.run(part))?;
        self.in_flight.push_back(thread);
        Ok(())
    }

    /// Renews the lease of a resumable upload when it is due (however slowly the body
    /// comes); an error once another connection took the upload over.
    fn keep_lease(&mut self) -> io::Result<()> {
        let Some((_, lease)) = self.multipart.as_mut().and_then(|m| m.recorded.as_mut()) else {
            return Ok(());
        };
        match lease.renew_if_due(&self.shared.client) {
            Ok(true) => Ok(()),
            Ok(false) => {
                self.lost = true;
                Err(io::Error::other(
                    "the upload was taken over by another connection",
                ))
            }
            Err(e) => Err(io::Error::other(e.to_string())),
        }
    }

    /// Waits for every part in flight, in order: their ETags join the parts stored. After a
    /// part that failed, the later ones are waited for but not counted (the parts stored
    /// stay a contiguous run); the first failure is returned.
    fn settle(&mut self) -> io::Result<()> {
        let mut result = Ok(());
        while !self.in_flight.is_empty() {
            if result.is_ok() {
                result = self.settle_oldest();
            } else if let Some(thread) = self.in_flight.pop_front() {
                // Its part may land, but after a gap it does not count.
                let _ = thread.join();
            }
        }
        result
    }

    /// Waits for the oldest part in flight: its ETag joins the parts stored, its buffer is
    /// kept for a part to come.
    fn settle_oldest(&mut self) -> io::Result<()> {
        let Some(thread) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let (etag, mut buf) = thread
            .join()
            .map_err(|_| io::Error::other("a part upload failed unexpectedly"))??;
        buf.clear();
        self.spare.push(buf);
        if let Some(mp) = &mut self.multipart {
            mp.etags.push(etag);
        }
        Ok(())
    }

    /// Publishes under the overwrite policy; see [`Incoming::publish`]. Returns the name
    /// stored as.
    fn publish_now(&mut self, digest: Digest) -> Result<String, Refusal> {
        if self.multipart.is_none() {
            return self.put_small(digest);
        }
        self.settle()
            .map_err(|e| Refusal::io("cannot store the file", &e))?;
        let fail = |e: S3Error| self.shared.refusal(&e);
        if !self.buf.is_empty() {
            let mp = self.multipart.as_mut().expect("checked above");
            let number = u16::try_from(mp.etags.len() + 1)
                .map_err(|_| Refusal::new(Code::TooLarge, "the upload has too many parts"))?;
            let etag = self
                .shared
                .client
                .upload_part(&mp.key, &mp.upload_id, number, &self.buf)
                .map_err(fail)?;
            mp.etags.push(etag);
        }
        let mp = self.multipart.as_ref().expect("checked above");
        let name = self.loc.name_of(&mp.key).unwrap_or(&mp.key).to_owned();
        let client = self.client();
        let etag = self.exclusively(&name, &mp.key, || {
            client.complete(&mp.key, &mp.upload_id, &mp.etags).map(Some)
        })?;
        let record = DigestRecord {
            etag,
            size: self.len,
            blake3: digest.to_hex(),
        };
        let key = self.loc.digest(&mp.key);
        if let Err(e) = client.put(&key, &layout::encode(&record), Cond::None, &[]) {
            log::warn!("{name}: its digest is not recorded (downloads go without it): {e}");
        }
        if let Some((dir, lease)) = self.multipart.take().and_then(|mp| mp.recorded) {
            lease.release(self.client());
            remove_upload(self.client(), &dir, None);
        }
        Ok(name)
    }

    /// Stores a body shorter than a part with one PutObject, its digest in its metadata.
    fn put_small(&mut self, digest: Digest) -> Result<String, Refusal> {
        let mut meta = self.meta.clone();
        meta.push((layout::META_BLAKE3, digest.to_hex()));
        let client = self.client();
        let original = self.loc.name_of(&self.key).unwrap_or(&self.key).to_owned();
        let cond = match self.shared.overwrite {
            Overwrite::Replace => Cond::None,
            Overwrite::Refuse | Overwrite::Rename => Cond::Absent,
        };
        let mut after = 0;
        for _ in 0..=MAX_RENAME_RACES {
            let (n, name, key) =
                destination(&self.shared, &self.loc, &original, self.key.clone(), after)?;
            let put = || client.put(&key, &self.buf, cond, &meta);
            match self.exclusively(&name, &key, put) {
                Err(r) if r.code == Code::Exists && self.shared.overwrite == Overwrite::Rename => {
                    after = n;
                }
                done => return done.map(|_| name),
            }
        }
        Err(taken_meanwhile(&original))
    }

    /// Runs `write`, which stores the object `key` of `name` (`None`: its condition did not
    /// hold), under the overwrite policy: as it is under replace; else holding the claim on
    /// `key`, once no object is stored there.
    fn exclusively<T>(
        &self,
        name: &str,
        key: &str,
        write: impl FnOnce() -> Result<Option<T>, S3Error>,
    ) -> Result<T, Refusal> {
        let fail = |e: &S3Error| self.shared.refusal(e);
        if self.shared.overwrite == Overwrite::Replace {
            return write()
                .map_err(|e| fail(&e))?
                .ok_or_else(|| taken_meanwhile(name));
        }
        let claim = self.wait_for_claim(name, key)?;
        let written = match self.client().head(key) {
            Ok(Some(_)) => Ok(None),
            Ok(None) => write(),
            Err(e) => Err(e),
        };
        claim.release(self.client());
        written
            .map_err(|e| fail(&e))?
            .ok_or_else(|| taken_meanwhile(name))
    }

    /// Takes the claim on `key`. Under refuse, waits up to [`CLAIM_WAIT`] while another
    /// upload holds it (it is publishing: when it is done, the object shows and this one is
    /// refused; when it fails, this one may publish); under rename, the name is taken and the
    /// next is tried at once.
    fn wait_for_claim(&self, name: &str, key: &str) -> Result<Hold, Refusal> {
        let owner = self.shared.holder();
        let claim_key = self.loc.claim(key);
        let wait = self.shared.overwrite == Overwrite::Refuse;
        let until = Instant::now() + CLAIM_WAIT;
        let mut pause = CLAIM_POLL;
        loop {
            match holds::take(self.client(), &claim_key, &owner, CLAIM_TTL) {
                Ok(Taken::Held(c)) => return Ok(c),
                Ok(Taken::Busy) if !wait => return Err(taken_meanwhile(name)),
                Ok(Taken::Busy) if Instant::now() + pause < until => {
                    thread::sleep(pause);
                    pause = (pause * 2).min(CLAIM_POLL * 8);
                }
                Ok(Taken::Busy) => {
                    return Err(Refusal::new(
                        Code::Busy,
                        format!("{name} is being stored by another upload; try again later"),
                    ))
                }
                Err(e) => return Err(self.shared.refusal(&e)),
            }
        }
    }

    /// Gives up what this body holds in the store: the multipart upload, and the upload
    /// record when it is still this connection's.
    fn discard(&mut self) {
        if let Err(e) = self.settle() {
            log::debug!("a part upload failed before the upload was dropped: {e}");
        }
        let Some(mp) = self.multipart.take() else {
            return;
        };
        if self.lost {
            return;
        }
        let client = &self.shared.client;
        match mp.recorded {
            Some((dir, lease)) => {
                remove_upload(client, &dir, Some((&mp.key, &mp.upload_id)));
                lease.release(client);
            }
            None => {
                if let Err(e) = client.abort(&mp.key, &mp.upload_id) {
                    log::warn!("cannot abort an upload to {}: {e}", mp.key);
                }
            }
        }
    }
}

impl Incoming for Body {
    fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        self.keep_lease()?;
        while !data.is_empty() {
            let room = usize::try_from(self.part_len)
                .unwrap_or(usize::MAX)
                .saturating_sub(self.buf.len());
            let (now, rest) = data.split_at(room.min(data.len()));
            self.buf.extend_from_slice(now);
            self.len += now.len() as u64;
            data = rest;
            if self.buf.len() as u64 == self.part_len {
                self.store_part()?;
            }
        }
        Ok(())
    }

    fn len(&self) -> u64 {
        self.len
    }

    /// A resumable upload keeps its stored parts (the part being filled is lost) and gives
    /// its lease up, so that a resume through any instance may start at once.
    fn interrupt(mut self: Box<Self>) -> bool {
        // The part in flight counts if it gets there.
        if let Err(e) = self.settle() {
            log::debug!("a part upload failed as the body was cut off: {e}");
        }
        let kept = match &mut self.multipart {
            Some(Multipart {
                recorded: Some(_),
                etags,
                ..
            }) if !self.lost => !etags.is_empty(),
            _ => false,
        };
        if !kept {
            self.discard();
        } else if let Some((_, lease)) = self.multipart.take().and_then(|mp| mp.recorded) {
            lease.release(self.client());
        }
        self.finished = true;
        kept
    }

    fn publish(
        mut self: Box<Self>,
        _up: &Upload,
        digest: Digest,
        _track: bool,
    ) -> Result<(String, Option<crate::commit::Touched>), Refusal> {
        let stored = self.publish_now(digest)?;
        self.finished = true;
        Ok((stored, None))
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        if !self.finished {
            self.discard();
        }
    }
}

/// The refusal of an upload whose name another upload took first.
fn taken_meanwhile(name: &str) -> Refusal {
    Refusal::new(
        Code::Exists,
        format!("{name} was stored by someone else meanwhile"),
    )
}

/// Removes an upload's state folder `dir` (record, lease, part records), aborting its
/// multipart upload first when given (key, id). Best effort: what is left, the janitor
/// removes later.
pub(crate) fn remove_upload(client: &Client, dir: &str, upload: Option<(&str, &str)>) {
    if let Some((key, id)) = upload {
        if let Err(e) = client.abort(key, id) {
            log::warn!("cannot abort an upload to {key}: {e}");
            return;
        }
    }
    let keys = match list_keys(client, dir, MAX_STATE_KEYS) {
        Ok(keys) => keys,
        Err(e) => {
            log::warn!("cannot list {dir}: {e}");
            return;
        }
    };
    for key in keys {
        if let Err(e) = client.delete(&key) {
            log::warn!("cannot remove {key}: {e}");
            return;
        }
    }
}

/// Every key under `prefix` (at most `max`), page by page.
pub(crate) fn list_keys(client: &Client, prefix: &str, max: usize) -> Result<Vec<String>, S3Error> {
    let mut keys = Vec::new();
    let mut token = None;
    loop {
        let page = client.list(prefix, false, token.as_deref(), max - keys.len())?;
        keys.extend(page.objects.into_iter().map(|(k, _, _)| k));
        match page.next {
            Some(t) if keys.len() < max && Some(&t) != token.as_ref() => token = Some(t),
            _ => return Ok(keys),
        }
    }
}
