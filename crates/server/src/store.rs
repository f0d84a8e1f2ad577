//! Storage: where uploads are written while they arrive (a temp file, or a partial file kept
//! for resume), how they are published atomically under the overwrite policy, and which files
//! may be served for download.
//!
//! Everything the server keeps for itself sits next to the destination and starts with
//! [`RESERVED_PREFIX`](crate::paths::RESERVED_PREFIX): `.ferry-tmp.*` (deleted on drop and at
//! start-up) and `.ferry-partial.<hash of name and size>` (kept after an interrupted ferry
//! upload, offered back when the same name and size are offered again).

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferry_proto::{Code, Digest, FileInfo, Hasher, Name, Timestamp};
use tempfile::TempPath;

use crate::config::{Config, Overwrite};
use crate::paths::{open_nofollow, CheckedFolders, Refusal, Target};
use crate::units::Bytes;

/// Prefix of temp files, removed at start-up.
pub(crate) const TEMP_PREFIX: &str = ".ferry-tmp.";
/// Prefix of partial uploads kept for resume.
pub(crate) const PARTIAL_PREFIX: &str = ".ferry-partial.";
/// Size of the buffers that move file bytes.
pub(crate) const BUF_LEN: usize = 1 << 20;
/// Smallest upload kept as a partial for resume; below it, sending again costs less than the
/// extra file-system calls a resumable upload makes on every file.
const RESUME_MIN: u64 = 1 << 20;
/// Smallest upload whose size is checked against the free space when it is offered (smaller
/// ones that do not fit still fail with `NoSpace` when written).
const FREE_SPACE_CHECK_MIN: u64 = 1 << 20;
/// Most `name (n).ext` candidates tried by [`Overwrite::Rename`].
const MAX_RENAME: u32 = 10_000;
/// Permission bits restored from an offer (no set-id or sticky bits from the network).
const MODE_MASK: u32 = 0o777;
/// Permission bits of a stored file when the offer gives none (the seed framing).
const DEFAULT_MODE: u32 = 0o644;
/// Owner read and write: what a kept partial needs to be resumed.
const OWNER_RW: u32 = 0o600;

/// The storage folder and its policies.
#[derive(Debug)]
pub(crate) struct Store {
    root: PathBuf,
    overwrite: Overwrite,
    max_file_size: Option<u64>,
    fsync: bool,
}

/// An upload that was accepted and waits for its body.
#[derive(Debug)]
pub(crate) struct Upload {
    pub name: Name,
    pub target: Target,
    pub size: Option<u64>,
    pub mtime: Option<Timestamp>,
    pub mode: Option<u32>,
    /// Where the body is written when it can be resumed (ferry framing, known size).
    partial: Option<PathBuf>,
}

/// A file being received.
#[derive(Debug)]
pub(crate) struct Working {
    file: File,
    path: TempPath,
    resumable: bool,
    len: u64,
}

/// A file being served.
#[derive(Debug)]
pub(crate) struct Download {
    pub file: File,
    pub info: FileInfo,
}

impl Store {
    /// Creates the storage folder if needed and removes temp files left by a crash (partials
    /// are kept).
    pub(crate) fn open(config: &Config) -> io::Result<Self> {
        fs::create_dir_all(&config.dir)?;
        let root = config.dir.canonicalize()?;
        if !root.is_dir() {
            return Err(io::Error::new(io::ErrorKind::NotADirectory, "not a folder"));
        }
        let (temps, partials) = clean_leftovers(&root, config.partial_ttl);
        if temps + partials > 0 {
            log::info!(
                "removed {temps} temp file(s) left over from an earlier run and {partials} \
                 expired partial upload(s)"
            );
        }
        Ok(Self {
            root,
            overwrite: config.overwrite,
            max_file_size: config.max_file_size,
            fsync: config.fsync,
        })
    }

    /// The storage folder, canonical.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Refuses an announced size over the per-file limit.
    pub(crate) fn check_size(&self, name: &Name, size: Option<u64>) -> Result<(), Refusal> {
        match (size, self.max_file_size) {
            (Some(size), Some(max)) if size > max => Err(Refusal::new(
                Code::TooLarge,
                format!(
                    "{name} is {} but this server accepts at most {} per file",
                    Bytes(size),
                    Bytes(max)
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Where `name` lands, with parents created; for locking before [`Self::prepare_upload`].
    pub(crate) fn target(
        &self,
        name: &Name,
        checked: &mut CheckedFolders,
    ) -> Result<Target, Refusal> {
        Target::resolve(&self.root, name, true, checked)
    }

    /// Checks an offer against the policies and finds a kept partial. Returns the upload and a
    /// hasher over the bytes already held (its length is the resume offset).
    pub(crate) fn prepare_upload(
        &self,
        name: Name,
        target: Target,
        info: (Option<u64>, Option<Timestamp>, Option<u32>),
        resumable: bool,
    ) -> Result<(Upload, Hasher), Refusal> {
        let (size, mtime, mode) = info;
        self.check_size(&name, size)?;
        match target.existing(&name)? {
            Some(m) if m.is_dir() => {
                return Err(Refusal::new(
                    Code::Exists,
                    format!("{name} is a folder on the server"),
                ))
            }
            Some(_) if self.overwrite == Overwrite::Refuse => {
                return Err(Refusal::new(
                    Code::Exists,
                    "a file of that name exists (server policy: refuse)",
                ))
            }
            _ => {}
        }
        let partial = match (resumable, size) {
            (true, Some(size)) if size >= RESUME_MIN => {
                Some(target.folder.join(partial_name(&target.file_name, size)))
            }
            _ => None,
        };
        let prefix = match (&partial, size) {
            (Some(p), Some(size)) => hash_partial(p, size),
            _ => Hasher::new(),
        };
        if let Some(size) = size.filter(|s| *s >= FREE_SPACE_CHECK_MIN) {
            let needed = size - prefix.len();
            if let Some(free) = free_space(&target.folder) {
                if needed > free {
                    return Err(Refusal::new(
                        Code::NoSpace,
                        format!(
                            "{name} needs {} but the server has {} free",
                            Bytes(needed),
                            Bytes(free)
                        ),
                    ));
                }
            }
        }
        let upload = Upload {
            name,
            target,
            size,
            mtime,
            mode,
            partial,
        };
        Ok((upload, prefix))
    }

    /// Opens the file the body goes into: the partial (truncated when `from` is 0, appended to
    /// otherwise) or a fresh temp file. A new file gets the offered mode less the umask (as
    /// with `cp` or `rsync` without `-p`); a partial also gets owner read and write, so that
    /// it can be resumed, until it is published (see [`Self::publish`]).
    pub(crate) fn start_body(&self, up: &Upload, from: u64) -> io::Result<Working> {
        let Some(partial) = &up.partial else {
            let tmp = tempfile::Builder::new()
                .prefix(TEMP_PREFIX)
                .permissions(Permissions::from_mode(stored_mode(up)))
                .tempfile_in(&up.target.folder)?;
            let (file, path) = tmp.into_parts();
            return Ok(Working {
                file,
                path,
                resumable: false,
                len: 0,
            });
        };
        let fresh = from == 0;
        let mut file = open_nofollow(
            partial,
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(fresh)
                .mode(stored_mode(up) | OWNER_RW),
        )?;
        let path = TempPath::try_from_path(partial)?;
        if !fresh {
            let len = file.metadata()?.len();
            if len != from {
                return Err(io::Error::other(format!(
                    "the kept partial changed size ({len} bytes, expected {from})"
                )));
            }
            file.seek(SeekFrom::Start(from))?;
        }
        Ok(Working {
            file,
            path,
            resumable: true,
            len: from,
        })
    }

    /// Opens `name` for download: a regular file under the root, reached without links.
    pub(crate) fn open_download(&self, name: Name) -> Result<Download, Refusal> {
        let target = Target::resolve(&self.root, &name, false, &mut CheckedFolders::default())?;
        let not_found = || Refusal::new(Code::NotFound, format!("{name}: no such file"));
        match target.existing(&name)? {
            Some(m) if m.is_file() => {}
            _ => return Err(not_found()),
        }
        let file = open_nofollow(&target.path, OpenOptions::new().read(true))
            .map_err(|e| Refusal::io("cannot open the file", &e))?;
        let meta = file
            .metadata()
            .map_err(|e| Refusal::io("cannot read the file", &e))?;
        if !meta.is_file() {
            return Err(not_found());
        }
        let mtime = meta.modified().ok().and_then(to_timestamp);
        let info = FileInfo {
            name,
            size: Some(meta.len()),
            mtime,
            mode: Some(meta.mode() & MODE_MASK),
        };
        Ok(Download { file, info })
    }

    /// Publishes a received file under the overwrite policy; returns the stored name (which
    /// differs from the offered one under [`Overwrite::Rename`]).
    pub(crate) fn publish(&self, w: Working, up: &Upload) -> Result<String, Refusal> {
        let fail = |e: &io::Error| Refusal::io("cannot store the file", e);
        if self.fsync {
            w.file.sync_all().map_err(|e| fail(&e))?;
        }
        if w.resumable && stored_mode(up) & OWNER_RW != OWNER_RW {
            // Drop the owner bits the partial only had for resuming (the umask stays applied).
            let created = w.file.metadata().map_err(|e| fail(&e))?.mode() & MODE_MASK;
            w.file
                .set_permissions(Permissions::from_mode(created & stored_mode(up)))
                .map_err(|e| fail(&e))?;
        }
        if let Some(t) = up.mtime.and_then(from_timestamp) {
            w.file.set_modified(t).map_err(|e| fail(&e))?;
        }
        drop(w.file);
        let folder = &up.target.folder;
        let stored = match self.overwrite {
            Overwrite::Replace => {
                w.path
                    .persist(&up.target.path)
                    .map_err(|e| fail(&e.error))?;
                up.target.file_name.clone()
            }
            Overwrite::Refuse => match w.path.persist_noclobber(&up.target.path) {
                Ok(()) => up.target.file_name.clone(),
                Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(Refusal::new(
                        Code::Exists,
                        format!("{} was stored by someone else meanwhile", up.name),
                    ))
                }
                Err(e) => return Err(fail(&e.error)),
            },
            Overwrite::Rename => {
                let mut path = w.path;
                let mut n = 0;
                loop {
                    let candidate = numbered(&up.target.file_name, n).ok_or_else(|| {
                        Refusal::new(Code::Exists, format!("{} has no free name", up.name))
                    })?;
                    match path.persist_noclobber(folder.join(&candidate)) {
                        Ok(()) => break candidate,
                        Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => {
                            path = e.path;
                            n += 1;
                        }
                        Err(e) => return Err(fail(&e.error)),
                    }
                }
            }
        };
        if self.fsync {
            // Makes the new name durable; failure only weakens crash safety.
            if let Ok(dir) = File::open(folder) {
                let _ = dir.sync_all();
            }
        }
        let mut parts: Vec<&str> = up.name.components().collect();
        parts.pop();
        parts.push(&stored);
        Ok(parts.join("/"))
    }
}

impl Working {
    /// Appends body bytes.
    pub(crate) fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all(data)?;
        self.len += data.len() as u64;
        Ok(())
    }

    /// Bytes in the file, including a resumed prefix.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// The transfer stopped before its end: keep the bytes for resume when possible, delete
    /// them otherwise.
    pub(crate) fn interrupt(self) -> bool {
        if !self.resumable || self.len == 0 {
            return false;
        }
        drop(self.file);
        self.path.keep().is_ok()
    }
}

/// The permission bits a stored file is created with, before the umask.
fn stored_mode(up: &Upload) -> u32 {
    up.mode.unwrap_or(DEFAULT_MODE) & MODE_MASK
}

/// The deterministic name of the partial kept for `file_name` offered with `size` bytes.
fn partial_name(file_name: &str, size: u64) -> String {
    let mut key = file_name.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(&size.to_be_bytes());
    let hex = Digest::of(&key).to_hex();
    format!("{PARTIAL_PREFIX}{}", &hex[..32])
}

/// A hasher over the kept partial, or an empty one if there is none usable (removed then).
fn hash_partial(path: &Path, size: u64) -> Hasher {
    let file = match open_nofollow(path, OpenOptions::new().read(true)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Hasher::new(),
        Err(e) => {
            log::warn!("ignoring partial {}: {e}", path.display());
            return Hasher::new();
        }
    };
    let hashed = match file.metadata() {
        Ok(m) if m.is_file() && m.len() <= size => hash_reader(file, size, &mut vec![0u8; BUF_LEN]),
        Ok(_) => Err(io::Error::other("not a regular file of the right size")),
        Err(e) => Err(e),
    };
    hashed.unwrap_or_else(|e| {
        log::warn!("discarding partial {}: {e}", path.display());
        let _ = fs::remove_file(path);
        Hasher::new()
    })
}

/// Hashes at most `limit` bytes of `r` (fewer if it ends first), reading through `buf`.
pub(crate) fn hash_reader(mut r: impl Read, limit: u64, buf: &mut [u8]) -> io::Result<Hasher> {
    let mut h = Hasher::new();
    while h.len() < limit {
        let want = usize::try_from(limit - h.len())
            .unwrap_or(usize::MAX)
            .min(buf.len());
        match r.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(h)
}

/// `name (n).ext` for n > 0 (the extension starts at the first dot after the first byte);
/// `None` when that no longer fits in a component.
fn numbered(file_name: &str, n: u32) -> Option<String> {
    if n == 0 {
        return Some(file_name.to_owned());
    }
    if n > MAX_RENAME {
        return None;
    }
    let split = file_name
        .char_indices()
        .skip(1)
        .find(|(_, c)| *c == '.')
        .map_or(file_name.len(), |(i, _)| i);
    let (stem, ext) = file_name.split_at(split);
    let out = format!("{stem} ({n}){ext}");
    (out.len() <= ferry_proto::name::MAX_COMPONENT_LEN).then_some(out)
}

/// Free bytes for unprivileged users on the file system holding `folder`.
fn free_space(folder: &Path) -> Option<u64> {
    let s = rustix::fs::statvfs(folder).ok()?;
    Some(s.f_bavail.saturating_mul(s.f_frsize))
}

/// Deletes `.ferry-tmp.*` files under `root`, and partials untouched for longer than
/// `partial_ttl`, not following links; returns how many of each. Best effort: a folder or file
/// that cannot be read or removed is logged and skipped.
fn clean_leftovers(root: &Path, partial_ttl: Option<Duration>) -> (usize, usize) {
    let (mut temps, mut partials) = (0, 0);
    let now = SystemTime::now();
    let expired = |e: &fs::DirEntry| {
        let age = e.metadata().and_then(|m| m.modified()).ok();
        let age = age.and_then(|t| now.duration_since(t).ok());
        matches!((age, partial_ttl), (Some(age), Some(ttl)) if age > ttl)
    };
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) => {
                log::warn!("start-up cleanup skips {}: {e}", dir.display());
                continue;
            }
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(entry.path());
                continue;
            }
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let count = if !kind.is_file() {
                continue;
            } else if name.starts_with(TEMP_PREFIX) {
                &mut temps
            } else if name.starts_with(PARTIAL_PREFIX) && expired(&entry) {
                &mut partials
            } else {
                continue;
            };
            match fs::remove_file(entry.path()) {
                Ok(()) => *count += 1,
                Err(e) => log::warn!("cannot remove {}: {e}", entry.path().display()),
            }
        }
    }
    (temps, partials)
}

fn to_timestamp(t: SystemTime) -> Option<Timestamp> {
    let (secs, nanos) = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (i64::try_from(d.as_secs()).ok()?, d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            let secs = -i64::try_from(d.as_secs()).ok()?;
            match d.subsec_nanos() {
                0 => (secs, 0),
                n => (secs - 1, 1_000_000_000 - n),
            }
        }
    };
    Some(Timestamp { secs, nanos })
}

fn from_timestamp(t: Timestamp) -> Option<SystemTime> {
    if t.nanos >= 1_000_000_000 {
        return None;
    }
    let whole = Duration::from_secs(t.secs.unsigned_abs());
    let base = if t.secs >= 0 {
        UNIX_EPOCH.checked_add(whole)?
    } else {
        UNIX_EPOCH.checked_sub(whole)?
    };
    base.checked_add(Duration::from_nanos(u64::from(t.nanos)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_names() {
        assert_eq!(numbered("a.txt", 0).as_deref(), Some("a.txt"));
        assert_eq!(numbered("a.txt", 1).as_deref(), Some("a (1).txt"));
        assert_eq!(numbered("a.tar.gz", 2).as_deref(), Some("a (2).tar.gz"));
        assert_eq!(numbered(".bashrc", 1).as_deref(), Some(".bashrc (1)"));
        assert_eq!(numbered("README", 3).as_deref(), Some("README (3)"));
        assert_eq!(numbered(&"x".repeat(255), 1), None);
    }

    #[test]
    fn timestamps_round_trip() {
        for t in [
            Timestamp { secs: 0, nanos: 0 },
            Timestamp {
                secs: 1_700_000_000,
                nanos: 123_456_789,
            },
            Timestamp {
                secs: -5,
                nanos: 250_000_000,
            },
        ] {
            assert_eq!(from_timestamp(t).and_then(to_timestamp), Some(t));
        }
        assert_eq!(
            from_timestamp(Timestamp {
                secs: 0,
                nanos: 2_000_000_000
            }),
            None
        );
    }

    #[test]
    fn partial_names_are_deterministic_and_short() {
        let a = partial_name(&"n".repeat(255), 10);
        assert_eq!(a, partial_name(&"n".repeat(255), 10));
        assert_ne!(a, partial_name(&"n".repeat(255), 11));
        assert!(a.len() < 64 && a.starts_with(PARTIAL_PREFIX));
    }

    #[test]
    fn start_up_removes_temp_files_and_expired_partials() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("sub")).unwrap();
        let tmp = root.path().join("sub").join(format!("{TEMP_PREFIX}abc"));
        let partial = root.path().join(format!("{PARTIAL_PREFIX}abc"));
        let old = root.path().join("sub").join(format!("{PARTIAL_PREFIX}old"));
        fs::write(&tmp, b"x").unwrap();
        fs::write(&partial, b"x").unwrap();
        let two_days_ago = SystemTime::now() - Duration::from_secs(2 * 86_400);
        File::create(&old)
            .unwrap()
            .set_modified(two_days_ago)
            .unwrap();
        fs::write(root.path().join("keep.txt"), b"x").unwrap();
        let config = Config {
            dir: root.path().to_owned(),
            partial_ttl: Some(Duration::from_secs(86_400)),
            ..Config::default()
        };
        Store::open(&config).unwrap();
        assert!(!tmp.exists());
        assert!(!old.exists(), "expired partial");
        assert!(partial.exists(), "recent partial");
        assert!(root.path().join("keep.txt").exists());
    }
}
