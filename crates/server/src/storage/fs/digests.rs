//! The digest cache, `.ferry-state/digests`: the BLAKE3 of files the server holds (of at least
//! [`RECORD_MIN`] bytes), so that a second `--checksum` check of an unchanged file reads
//! nothing (PROTOCOL.md §4.8).
//!
//! A record is keyed by what changes whenever the file's content may have: device, inode,
//! size, mtime and ctime (both to the nanosecond). Nobody can set a ctime: any write, truncate,
//! chmod or rename moves it, so a record never vouches for content it did not hash.
//!
//! The file is a fixed table of [`SLOTS`] records of [`RECORD_LEN`] bytes (1.5 MiB, sparse
//! until filled): a key's slot is given by a hash of the key, and a new record simply replaces
//! the one in its slot, so the cache never grows. Each record carries a check over its key and
//! digest: a torn write (two servers on one folder) or a damaged file reads as a miss, never
//! as a wrong digest. Any failure to open or use the file only disables the cache.

use std::fs::File;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::FileExt;
use std::sync::{Mutex, PoisonError};

use ferry_proto::{Digest, DIGEST_LEN};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Stat};

/// Smallest file whose digest is recorded (and looked up). Below it the record costs about
/// what it saves: an `fstat` and a `pwrite` on every upload, paid whether or not the file is
/// ever checked again, against a `pread` less and a re-hash of at most 64 KiB (one read,
/// tens of microseconds) on a `--checksum` re-run. And the table's [`SLOTS`] are kept for the
/// files whose hashing is long: a tree of small files no longer evicts their records.
pub(crate) const RECORD_MIN: u64 = 64 << 10;
/// Name of the cache file in the state folder.
pub(crate) const DIGESTS_FILE: &str = "digests";
/// Records in the table.
pub(crate) const SLOTS: u64 = 16_384;
/// Bytes of a key: device, inode, size, mtime (secs, nanos), ctime (secs, nanos).
const KEY_LEN: usize = 5 * 8 + 2 * 4;
/// Bytes of the check that ends a record.
const CHECK_LEN: usize = 16;
/// Bytes of one record: key, digest, check.
const RECORD_LEN: usize = KEY_LEN + DIGEST_LEN + CHECK_LEN;

/// What identifies one version of a file's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileKey([u8; KEY_LEN]);

impl FileKey {
    /// The key of the file described by `st` (from `fstat` on the descriptor read).
    pub(crate) fn of(st: &Stat) -> Self {
        let mut k = [0u8; KEY_LEN];
        let parts: [u64; 5] = [
            st.st_dev,
            st.st_ino,
            st.st_size as u64,
            st.st_mtime as u64,
            st.st_ctime as u64,
        ];
        for (i, p) in parts.iter().enumerate() {
            k[i * 8..i * 8 + 8].copy_from_slice(&p.to_le_bytes());
        }
        k[40..44].copy_from_slice(&(st.st_mtime_nsec as u32).to_le_bytes());
        k[44..48].copy_from_slice(&(st.st_ctime_nsec as u32).to_le_bytes());
        Self(k)
    }

    /// The slot of this key in the table.
    fn slot(&self) -> u64 {
        let h = Digest::of(&self.0).0;
        u64::from_le_bytes(h[..8].try_into().expect("8 bytes")) % SLOTS
    }
}

/// The cache file, or nothing when it cannot be used.
#[derive(Debug)]
pub(crate) struct DigestCache {
    file: Option<Mutex<File>>,
}

impl DigestCache {
    /// Opens (creating it if needed) the cache in the state folder `state`. Anything at its
    /// place that is not a regular file with one link is removed unread and a fresh file made.
    pub(crate) fn open(state: BorrowedFd<'_>) -> Self {
        let file = match open_table(state) {
            Ok(f) => Some(Mutex::new(f)),
            Err(e) => {
                log::warn!("the digest cache is off: {e}");
                None
            }
        };
        Self { file }
    }

    /// The (device, inode) of the cache file; `None` when the cache is off.
    pub(crate) fn file_id(&self) -> Option<(u64, u64)> {
        let file = self
            .file
            .as_ref()?
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let st = rfs::fstat(&*file).ok()?;
        Some((st.st_dev, st.st_ino))
    }

    /// The digest recorded for `key`, if any.
    pub(crate) fn get(&self, key: &FileKey) -> Option<Digest> {
        let file = self.file.as_ref()?;
        let mut rec = [0u8; RECORD_LEN];
        file.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .read_exact_at(&mut rec, key.slot() * RECORD_LEN as u64)
            .ok()?;
        let (stored_key, rest) = rec.split_at(KEY_LEN);
        let (digest, check) = rest.split_at(DIGEST_LEN);
        let digest = Digest(digest.try_into().expect("digest length"));
        (stored_key == key.0 && check == record_check(key, &digest)).then_some(digest)
    }

    /// Records `digest` for `key`, replacing whatever held its slot; best effort.
    pub(crate) fn put(&self, key: &FileKey, digest: &Digest) {
        let Some(file) = &self.file else {
            return;
        };
        let mut rec = [0u8; RECORD_LEN];
        rec[..KEY_LEN].copy_from_slice(&key.0);
        rec[KEY_LEN..KEY_LEN + DIGEST_LEN].copy_from_slice(&digest.0);
        rec[KEY_LEN + DIGEST_LEN..].copy_from_slice(&record_check(key, digest));
        let written = file
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .write_all_at(&rec, key.slot() * RECORD_LEN as u64);
        if let Err(e) = written {
            log::debug!("cannot record a digest: {e}");
        }
    }
}

/// The check of a record: the start of a BLAKE3 over its key and digest.
fn record_check(key: &FileKey, digest: &Digest) -> [u8; CHECK_LEN] {
    let mut h = ferry_proto::Hasher::new();
    h.update(b"ferry digest cache record\0");
    h.update(&key.0);
    h.update(&digest.0);
    h.finalize().0[..CHECK_LEN]
        .try_into()
        .expect("check length")
}

/// Opens the table, private to the server, sized to [`SLOTS`] records.
fn open_table(state: BorrowedFd<'_>) -> std::io::Result<File> {
    let flags =
        OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    for _ in 0..2 {
        let fd = match rfs::openat(state, DIGESTS_FILE, flags, Mode::from_raw_mode(0o600)) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::LOOP | rustix::io::Errno::ISDIR) => {
                remove(state);
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let st = rfs::fstat(&fd)?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile || st.st_nlink != 1 {
            remove(state);
            continue;
        }
        let file = File::from(fd);
        let len = SLOTS * RECORD_LEN as u64;
        if file.metadata()?.len() != len {
            file.set_len(len)?;
        }
        return Ok(file);
    }
    Err(std::io::Error::other(format!(
        "{DIGESTS_FILE} in the state folder is not a regular file and cannot be replaced"
    )))
}

/// Removes what is at the cache's place (a link, a folder, a FIFO, a hard link).
fn remove(state: BorrowedFd<'_>) {
    log::warn!("replacing {DIGESTS_FILE} in the state folder: not a private regular file");
    if rfs::unlinkat(state, DIGESTS_FILE, AtFlags::empty()) == Err(rustix::io::Errno::ISDIR) {
        let _ = rfs::unlinkat(state, DIGESTS_FILE, AtFlags::REMOVEDIR);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;

    fn folder(path: &std::path::Path) -> std::os::fd::OwnedFd {
        rfs::open(path, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap()
    }

    #[test]
    fn a_record_is_found_by_its_key_only_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let fd = folder(dir.path());
        let cache = DigestCache::open(fd.as_fd());
        let path = dir.path().join("f");
        std::fs::write(&path, b"one").unwrap();
        let key = FileKey::of(&rfs::stat(&path).unwrap());
        assert_eq!(cache.get(&key), None);
        cache.put(&key, &Digest::of(b"one"));
        assert_eq!(cache.get(&key), Some(Digest::of(b"one")));
        // Any write moves the ctime: the old record no longer answers.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .write_all(b"two")
            .unwrap();
        let changed = FileKey::of(&rfs::stat(&path).unwrap());
        assert_ne!(changed, key);
        assert_eq!(cache.get(&changed), None);
        drop(cache);
        let again = DigestCache::open(fd.as_fd());
        assert_eq!(again.get(&key), Some(Digest::of(b"one")));
        let len = std::fs::metadata(dir.path().join(DIGESTS_FILE))
            .unwrap()
            .len();
        assert_eq!(len, SLOTS * RECORD_LEN as u64, "bounded");
    }

    #[test]
    fn a_damaged_record_is_a_miss_and_a_link_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("secret");
        std::fs::write(&secret, b"secret").unwrap();
        std::os::unix::fs::symlink(&secret, dir.path().join(DIGESTS_FILE)).unwrap();
        let fd = folder(dir.path());
        let cache = DigestCache::open(fd.as_fd());
        assert_eq!(std::fs::read(&secret).unwrap(), b"secret");
        let key = FileKey::of(&rfs::stat(&secret).unwrap());
        cache.put(&key, &Digest::of(b"x"));
        let table = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join(DIGESTS_FILE))
            .unwrap();
        let at = key.slot() * RECORD_LEN as u64 + KEY_LEN as u64;
        table.write_all_at(&[0xff; 4], at).unwrap();
        assert_eq!(cache.get(&key), None);
    }
}
