//! Where things live in the bucket, and how the small things the server keeps there are
//! written: `s3://BUCKET[/PREFIX]`, the final objects at `PREFIX/NAME`, the server's state
//! under `PREFIX/.ferry-state/` (which no client name can reach: its components may not
//! start with `.ferry-`), part sizes, part records and object metadata.
//!
//! State keys are named after a hash of the client's name, so they stay short whatever the
//! name:
//! - `u/<H>-<SIZE>/record`: the upload record of (principal, name, size), with its multipart
//!   upload id (`<H>` hashes the principal and the name);
//! - `u/<H>-<SIZE>/lease`: which connection is writing that upload now;
//! - `u/<H>-<SIZE>/p/<U>/<N>.<SIZE>.<ETAG>.<CV>.<ROOT>`: one empty object per stored part
//!   of multipart upload `U`, the record in its key (so one listing reads them all);
//! - `c/<K>`: the claim on the object key `K` (hashed) while an upload publishes it;
//! - `d/<K>`: the BLAKE3 digest of the multipart object `K` (its metadata was fixed before
//!   the digest was known).
//!
//! Claims and digests live in the state folder of the `--store` prefix itself, also for a
//! credential's folder (which has its own upload state under `PREFIX/FOLDER/.ferry-state/`),
//! since they are about object keys, which a folder's store and the whole store share.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferry_proto::{Digest, Name, Timestamp};
use serde::{Deserialize, Serialize};

/// The folder, under the prefix, of the server's state.
pub(crate) const STATE_DIR: &str = ".ferry-state";
/// Part size of a multipart upload, unless the file needs bigger parts to fit in
/// [`MAX_PARTS`]: a power of two (each part a BLAKE3 subtree), above S3's 5 MiB minimum.
pub(crate) const PART_LEN: u64 = 8 << 20;
/// Largest part size used: what one upload buffers in memory at most.
pub(crate) const MAX_PART_LEN: u64 = 64 << 20;
/// Most parts of one multipart upload (S3's limit).
pub(crate) const MAX_PARTS: u64 = 10_000;
/// Longest object key S3 accepts, in bytes.
pub(crate) const MAX_KEY_LEN: usize = 1024;
/// Largest record (upload, lease, claim, digest) read back from the store.
pub(crate) const MAX_RECORD: u64 = 4096;
/// User metadata names (after `x-amz-meta-`) of a stored file.
pub(crate) const META_MTIME: &str = "ferry-mtime";
/// See [`META_MTIME`]: the permission bits, octal.
pub(crate) const META_MODE: &str = "ferry-mode";
/// See [`META_MTIME`]: the BLAKE3 digest, hex (single-part objects).
pub(crate) const META_BLAKE3: &str = "ferry-blake3";

/// A bucket and a key prefix: `s3://BUCKET[/PREFIX]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Location {
    /// The bucket's name.
    pub bucket: String,
    /// The prefix, without leading or trailing slashes; empty for the whole bucket.
    pub prefix: String,
    /// The `--store` prefix this one is in (itself, but for a credential's folder).
    pub root: String,
}

impl Location {
    /// Parses `s3://BUCKET[/PREFIX]`.
    pub(crate) fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| format!("{url}: an object store is given as s3://BUCKET[/PREFIX]"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && !bucket.starts_with(['-', '.'])
            && !bucket.ends_with(['-', '.']);
        if !bucket_ok {
            return Err(format!(
                "{url}: {bucket:?} is not a bucket name (3 to 63 lower-case letters, digits, '-' and '.')"
            ));
        }
        let prefix = prefix.trim_matches('/');
        if !prefix.is_empty() {
            let name = Name::parse(prefix).map_err(|e| format!("{url}: the prefix {e}"))?;
            if name.components().any(|c| c.starts_with(".ferry-")) {
                return Err(format!(
                    "{url}: prefix components may not start with .ferry-"
                ));
            }
        }
        Ok(Self {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            root: prefix.to_owned(),
        })
    }

    /// The same bucket with `folder` appended to the prefix (a credential's folder).
    pub(crate) fn sub(&self, folder: &Name) -> Self {
        Self {
            bucket: self.bucket.clone(),
            prefix: self.join(folder.as_str()),
            root: self.root.clone(),
        }
    }

    /// `PREFIX/rel`, or `rel` without a prefix.
    fn join(&self, rel: &str) -> String {
        join(&self.prefix, rel)
    }

    /// The key of the object stored as `name`; `None` when too long for the store.
    pub(crate) fn object(&self, name: &str) -> Option<String> {
        Some(self.join(name)).filter(|k| k.len() <= MAX_KEY_LEN)
    }

    /// What listings cover: `PREFIX/`, or nothing without a prefix.
    pub(crate) fn list_prefix(&self) -> String {
        if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        }
    }

    /// The client's name of the object at `key` (the prefix taken off).
    pub(crate) fn name_of<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(&self.list_prefix())
    }

    /// `PREFIX/.ferry-state/rel`.
    pub(crate) fn state(&self, rel: &str) -> String {
        self.join(&format!("{STATE_DIR}/{rel}"))
    }

    /// The folder of the upload of (`owned`, `size`): record, lease and part records;
    /// `owned` is the name as its principal's (see
    /// [`Principal::own`](crate::access::Principal::own)).
    pub(crate) fn upload_dir(&self, owned: &str, size: u64) -> String {
        self.state(&format!("u/{}-{size}/", tag(owned)))
    }

    /// The folder of the part records of multipart upload `upload` in `dir`.
    pub(crate) fn parts_dir(dir: &str, upload: &str) -> String {
        format!("{dir}p/{}/", tag(upload))
    }

    /// The claim on the object key `key`.
    pub(crate) fn claim(&self, key: &str) -> String {
        self.root_state(&format!("c/{}", tag(key)))
    }

    /// The digest record of the multipart object at `key`.
    pub(crate) fn digest(&self, key: &str) -> String {
        self.root_state(&format!("d/{}", tag(key)))
    }

    /// `ROOT/.ferry-state/rel`, in the `--store` prefix.
    pub(crate) fn root_state(&self, rel: &str) -> String {
        join(&self.root, &format!("{STATE_DIR}/{rel}"))
    }
}

/// `prefix/rel`, or `rel` without a prefix.
fn join(prefix: &str, rel: &str) -> String {
    if prefix.is_empty() {
        rel.to_owned()
    } else {
        format!("{prefix}/{rel}")
    }
}

/// 32 hex digits of the BLAKE3 of `text`: a short, fixed-length key component.
fn tag(text: &str) -> String {
    hex(&Digest::of(text.as_bytes()).0[..16])
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The 32 bytes written as 64 hex digits, or `None`.
pub(crate) fn unhex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The part size for a file of `size` bytes (`None`: a stream): [`PART_LEN`], doubled until
/// the file fits in [`MAX_PARTS`] parts; `None` when even [`MAX_PART_LEN`] is too small.
pub(crate) fn part_len(size: Option<u64>) -> Option<u64> {
    let Some(size) = size else {
        return Some(PART_LEN);
    };
    let mut len = PART_LEN;
    while size.div_ceil(len) > MAX_PARTS {
        len *= 2;
        if len > MAX_PART_LEN {
            return None;
        }
    }
    Some(len)
}

/// The largest file the S3 backend stores.
pub(crate) const MAX_FILE: u64 = MAX_PART_LEN * MAX_PARTS;

/// A stored part, as its part record tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartRecord {
    /// Part number, from 1.
    pub number: u16,
    /// Bytes in the part.
    pub size: u64,
    /// The ETag the store gave the part.
    pub etag: String,
    /// The BLAKE3 chaining value of the part (a subtree of the file's tree).
    pub chaining_value: [u8; 32],
    /// The BLAKE3 root digest of the part alone, kept for the first part (see
    /// `ferry_proto::PartDigest`).
    pub root: Option<[u8; 32]>,
}

impl PartRecord {
    /// The record's key name (after [`Location::parts_dir`]); `None` when the ETag has
    /// characters a key should not (then the part is simply not resumable).
    pub(crate) fn key_name(&self) -> Option<String> {
        let etag_ok = !self.etag.is_empty()
            && self.etag.len() <= 64
            && self
                .etag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        etag_ok.then(|| {
            format!(
                "{:05}.{}.{}.{}.{}",
                self.number,
                self.size,
                self.etag,
                hex(&self.chaining_value),
                self.root
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), |r| hex(r))
            )
        })
    }

    /// Reads a record back from its key name; `None` if it is not one.
    pub(crate) fn parse(key_name: &str) -> Option<Self> {
        let mut f = key_name.split('.');
        let number = f.next()?.parse().ok()?;
        let size = f.next()?.parse().ok()?;
        let etag = f.next()?.to_owned();
        let chaining_value = unhex32(f.next()?)?;
        let root = match f.next()? {
            "-" => None,
            r => Some(unhex32(r)?),
        };
        if f.next().is_some() || number == 0 {
            return None;
        }
        Some(Self {
            number,
            size,
            etag,
            chaining_value,
            root,
        })
    }
}

/// The upload record of (name, size): which multipart upload holds its parts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UploadRecord {
    /// The client's name.
    pub name: String,
    /// The file's size.
    pub size: u64,
    /// The key the multipart upload completes to.
    pub key: String,
    /// The multipart upload's id.
    pub upload_id: String,
    /// Its part size.
    pub part_len: u64,
}

/// Who holds a lease or a claim, and until when (the holder's clock, milliseconds since the
/// epoch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Holder {
    /// The server instance and connection.
    pub owner: String,
    /// When the hold lapses unless renewed.
    pub until_ms: u64,
}

/// The digest of a multipart object, valid while the object still has `etag`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DigestRecord {
    /// The object's ETag when the digest was recorded.
    pub etag: String,
    /// The object's size.
    pub size: u64,
    /// Its BLAKE3 digest, hex.
    pub blake3: String,
}

/// Writes a record as TOML.
pub(crate) fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    toml::to_string(record)
        .expect("records have only strings and numbers")
        .into_bytes()
}

/// Reads a record written by [`encode`]; `None` if it is not one.
pub(crate) fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Option<T> {
    toml::from_str(std::str::from_utf8(bytes).ok()?).ok()
}

/// Milliseconds since the epoch, now.
pub(crate) fn now_ms() -> u64 {
    ms_of(SystemTime::now())
}

/// Milliseconds since the epoch of `t` (0 before it).
pub(crate) fn ms_of(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The metadata a stored file carries: its mtime, mode and (when known) digest.
pub(crate) fn file_meta(
    mtime: Option<Timestamp>,
    mode: Option<u32>,
    digest: Option<&Digest>,
) -> Vec<(&'static str, String)> {
    let mut meta = Vec::new();
    if let Some(t) = mtime {
        meta.push((META_MTIME, format!("{}.{:09}", t.secs, t.nanos)));
    }
    if let Some(m) = mode {
        meta.push((META_MODE, format!("{:o}", m & 0o777)));
    }
    if let Some(d) = digest {
        meta.push((META_BLAKE3, d.to_hex()));
    }
    meta
}

/// Reads back an mtime written by [`file_meta`].
pub(crate) fn parse_mtime(text: &str) -> Option<Timestamp> {
    let (secs, nanos) = text.split_once('.')?;
    let nanos: u32 = nanos.parse().ok()?;
    (nanos < 1_000_000_000).then_some(Timestamp {
        secs: secs.parse().ok()?,
        nanos,
    })
}

/// Reads back a mode written by [`file_meta`].
pub(crate) fn parse_mode(text: &str) -> Option<u32> {
    u32::from_str_radix(text, 8).ok().map(|m| m & 0o777)
}

/// Reads back a digest written by [`file_meta`] or a [`DigestRecord`].
pub(crate) fn parse_digest(text: &str) -> Option<Digest> {
    unhex32(text).map(Digest)
}

/// Whether something stored at `when` (the store's clock) is older than `ttl` now.
pub(crate) fn older_than(when: Option<SystemTime>, ttl: Duration) -> bool {
    when.and_then(|w| SystemTime::now().duration_since(w).ok())
        .is_some_and(|age| age > ttl)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse() {
        let l = Location::parse("s3://my-bucket/a/b/").unwrap();
        assert_eq!((l.bucket.as_str(), l.prefix.as_str()), ("my-bucket", "a/b"));
        assert_eq!(l.object("x/y.txt").as_deref(), Some("a/b/x/y.txt"));
        assert_eq!(l.state("c/1"), "a/b/.ferry-state/c/1");
        assert_eq!(l.list_prefix(), "a/b/");
        assert_eq!(l.name_of("a/b/x"), Some("x"));
        let whole = Location::parse("s3://bkt").unwrap();
        assert_eq!(whole.prefix, "");
        assert_eq!(whole.object("f").as_deref(), Some("f"));
        assert_eq!(whole.list_prefix(), "");
        let sub = whole.sub(&Name::parse("team").unwrap());
        assert_eq!(sub.object("f").as_deref(), Some("team/f"));
        assert_eq!(sub.state("x"), "team/.ferry-state/x");
        // Claims are about keys, which the folder's store and the whole one share.
        assert_eq!(sub.claim("team/f"), whole.claim("team/f"));
        assert!(sub.claim("team/f").starts_with(".ferry-state/c/"));
        for bad in [
            "http://b/x",
            "s3://",
            "s3://ab",
            "s3://Upper",
            "s3://-b-x",
            "s3://b_x",
            "s3://bucket/../x",
            "s3://bucket/.ferry-state",
        ] {
            assert!(Location::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(whole.object(&"x".repeat(MAX_KEY_LEN + 1)), None);
    }

    #[test]
    fn state_keys_are_short_and_distinct() {
        let l = Location::parse("s3://bkt/p").unwrap();
        let long = "d/".repeat(1000) + "f";
        let dir = l.upload_dir(&long, 5);
        assert!(
            dir.starts_with("p/.ferry-state/u/") && dir.ends_with("-5/"),
            "{dir}"
        );
        assert!(dir.len() < 64);
        assert_ne!(l.upload_dir("a", 5), l.upload_dir("a", 6));
        assert_ne!(l.upload_dir("a", 5), l.upload_dir("b", 5));
        assert_ne!(l.claim("a"), l.claim("b"));
        assert_ne!(l.claim("a"), l.digest("a"));
        let parts = Location::parts_dir(&dir, "upload-1");
        assert!(parts.starts_with(&dir) && parts.ends_with('/'));
        assert_ne!(parts, Location::parts_dir(&dir, "upload-2"));
    }

    #[test]
    fn part_sizes_are_powers_of_two_within_the_part_limit() {
        assert_eq!(part_len(None), Some(PART_LEN));
        assert_eq!(part_len(Some(0)), Some(PART_LEN));
        assert_eq!(part_len(Some(PART_LEN * MAX_PARTS)), Some(PART_LEN));
        assert_eq!(part_len(Some(PART_LEN * MAX_PARTS + 1)), Some(2 * PART_LEN));
        assert_eq!(part_len(Some(MAX_FILE)), Some(MAX_PART_LEN));
        assert_eq!(part_len(Some(MAX_FILE + 1)), None);
        for size in [1u64, 5 << 30, 100 << 30, MAX_FILE] {
            let len = part_len(Some(size)).unwrap();
            assert!(len.is_power_of_two() && len >= 5 << 20);
            assert!(size.div_ceil(len) <= MAX_PARTS);
        }
    }

    #[test]
    fn part_records_round_trip_through_their_keys() {
        let r = PartRecord {
            number: 7,
            size: PART_LEN,
            etag: "0123456789abcdef0123456789abcdef".into(),
            chaining_value: [0xab; 32],
            root: None,
        };
        let key = r.key_name().unwrap();
        assert!(key.starts_with("00007.8388608.0123"));
        assert_eq!(PartRecord::parse(&key), Some(r.clone()));
        let first = PartRecord {
            number: 1,
            root: Some([1; 32]),
            ..r.clone()
        };
        assert_eq!(PartRecord::parse(&first.key_name().unwrap()), Some(first));
        let odd = PartRecord {
            etag: "a/b".into(),
            ..r.clone()
        };
        assert_eq!(odd.key_name(), None);
        for bad in ["", "1.2.e", "0.1.e.00.-", "x.1.e.-.-", &format!("{key}.x")] {
            assert_eq!(PartRecord::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn records_and_metadata_round_trip() {
        let rec = UploadRecord {
            name: "a \"quoted\"\nname".into(),
            size: 1 << 40,
            key: "p/a".into(),
            upload_id: "2~xyz".into(),
            part_len: PART_LEN,
        };
        assert_eq!(decode::<UploadRecord>(&encode(&rec)), Some(rec));
        assert_eq!(decode::<UploadRecord>(b"garbage = 1"), None);
        assert_eq!(decode::<Holder>(&[0xff, 0xfe]), None);
        let t = Timestamp { secs: -3, nanos: 5 };
        let d = Digest::of(b"x");
        let meta = file_meta(Some(t), Some(0o4755), Some(&d));
        let get = |n: &str| meta.iter().find(|(k, _)| *k == n).unwrap().1.clone();
        assert_eq!(parse_mtime(&get(META_MTIME)), Some(t));
        assert_eq!(parse_mode(&get(META_MODE)), Some(0o755));
        assert_eq!(parse_digest(&get(META_BLAKE3)), Some(d));
        assert_eq!(parse_mtime("1.1000000000"), None);
        assert_eq!(parse_digest("zz"), None);
        assert!(file_meta(None, None, None).is_empty());
    }
}
