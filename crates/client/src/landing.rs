//! Where downloads land on disk: the path a name maps to under the destination folder, the
//! partial file beside it that holds the bytes while they arrive (and between runs, for
//! resume), and the atomic publish once the digest verified.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub(crate) use crate::platform::room;
use crate::platform::{self, open_own};
use crate::{body, walk};
use ferry_proto::{Code, Hasher, Name, Offer, Timestamp};

/// Where `name` lands under `dir`: its components joined one by one. A [`Name`] has no root,
/// no `..` and no separator but `/`, so the result is always inside `dir`.
#[must_use]
pub fn local_path(dir: &Path, name: &Name) -> PathBuf {
    name.components().fold(dir.to_owned(), |p, c| p.join(c))
}

/// Longest file name a partial's may be, in bytes: what Linux (`NAME_MAX`) and macOS allow in
/// UTF-8, and Windows in UTF-16 units (never more of them than UTF-8 bytes).
const MAX_FILE_NAME: usize = 255;

/// How every partial's name ends.
const PARTIAL_SUFFIX: &str = ".ferry-partial";

/// Hex digits of the name's BLAKE3 in the short form of a partial's name (64 bits).
const HASH_DIGITS: usize = 16;

/// The partial file kept beside `path` while it downloads: `.NAME.ferry-partial`. When that
/// would be longer than a file name may be (255 bytes, so for a name over 240 bytes), it is
/// `.PREFIX~HASH.ferry-partial` instead: the name cut at a character boundary to the 223 bytes
/// that fit, and 16 hex digits of the BLAKE3 of the whole name. Either way the same name
/// always gets the same partial (a cut download resumes from it), and names that begin alike
/// do not share one.
#[must_use]
pub fn partial_path(path: &Path) -> PathBuf {
    let raw = path.file_name().unwrap_or_default();
    let name = raw.to_string_lossy();
    let long = format!(".{name}{PARTIAL_SUFFIX}");
    if long.len() <= MAX_FILE_NAME {
        return path.with_file_name(long);
    }
    let room = MAX_FILE_NAME - ".~".len() - HASH_DIGITS - PARTIAL_SUFFIX.len();
    let cut = (0..=room)
        .rev()
        .find(|&at| name.is_char_boundary(at))
        .unwrap_or(0);
    let hash = blake3::hash(raw.as_encoded_bytes()).to_hex();
    let short = format!(".{}~{}{PARTIAL_SUFFIX}", &name[..cut], &hash[..HASH_DIGITS]);
    path.with_file_name(short)
}

pub(crate) fn exists(p: &Path) -> bool {
    p.symlink_metadata().is_ok()
}

/// Opens (or creates) the partial file and hashes what it holds, if that can be a prefix of a
/// file of `size` bytes; otherwise empties it. Its folder is there already
/// ([`crate::folders::Folders`] made it).
///
/// The name is opened without following links and without blocking (a FIFO planted there
/// cannot hang the client), and what it names must be a regular file with one link (on
/// Windows: a regular file, not a reparse point; see [`crate::platform`]). Anything else (a
/// symbolic or hard link to a file elsewhere, a FIFO, a device) is never read or written: the
/// name is unlinked and a fresh file created in its place (`O_EXCL`, `CREATE_NEW`).
pub(crate) fn open_partial(
    partial: &Path,
    size: u64,
    buf: &mut [u8],
) -> io::Result<(File, Hasher)> {
    let mut file = match open_own(partial, false)? {
        Some(file) => file,
        None => {
            log::warn!(
                "{} is not a plain file of its own (a link or a special file): replacing it",
                partial.display()
            );
            fs::remove_file(partial)?;
            open_own(partial, true)?.ok_or_else(|| {
                io::Error::other(format!("{} keeps being replaced", partial.display()))
            })?
        }
    };
    let held = file.metadata()?.len();
    let prefix = if held > 0 && held <= size {
        body::hash_all(&mut file, buf)?
    } else {
        empty(&file)?;
        Hasher::new()
    };
    Ok((file, prefix))
}

/// Empties `file`, if it holds anything. A file already empty (a new partial) is left alone:
/// truncating it would make ext4 (`auto_da_alloc`) write all of its new bytes out when it is
/// closed, on top of the flush that publishing it makes anyway.
pub(crate) fn empty(file: &File) -> io::Result<()> {
    if file.metadata()?.len() > 0 {
        file.set_len(0)?;
    }
    Ok(())
}

/// Drops the partial file of `path` (its bytes failed verification or could not be written).
pub(crate) fn discard(path: &Path) {
    let partial = partial_path(path);
    if let Err(e) = fs::remove_file(&partial) {
        log::warn!("cannot remove {}: {e}", partial.display());
    }
}

/// Makes the verified partial file visible under its final name, atomically, with the offered
/// permission bits less the umask (as `cp` or `scp` without `-p`; 0666 less the umask when none
/// was offered). Without `force`, an existing file is never replaced (a hard link fails if the
/// name is taken).
fn publish(file: File, path: &Path, meta: &Offered, force: bool) -> io::Result<()> {
    crate::platform::publish_mode(&file, meta.mode.unwrap_or(0o666))?;
    if let Some(t) = meta.mtime.and_then(to_system_time) {
        // Best effort: the data is what matters.
        let _ = file.set_modified(t);
    }
    file.sync_all()?;
    drop(file);
    let partial = partial_path(path);
    if force {
        return fs::rename(&partial, path);
    }
    match fs::hard_link(&partial, path) {
        Ok(()) => fs::remove_file(&partial),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(e),
        // No hard links on this file system: check, then rename.
        Err(_) if exists(path) => Err(io::ErrorKind::AlreadyExists.into()),
        Err(_) => fs::rename(&partial, path),
    }
}

/// A wire time as a system time; `None` before the epoch or out of range.
pub(crate) fn to_system_time(t: Timestamp) -> Option<SystemTime> {
    let secs = u64::try_from(t.secs).ok()?;
    UNIX_EPOCH.checked_add(Duration::new(secs, t.nanos))
}

/// What the server said of a file besides its bytes.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Offered {
    /// Modification time to restore.
    pub(crate) mtime: Option<Timestamp>,
    /// Permission bits (set-id and sticky bits are never restored).
    pub(crate) mode: Option<u32>,
}

/// Why a local file in a download's place is taken for the file (rsync's quick check).
pub(crate) const SAME_SIZE_AND_TIME: &str = "already here with the same size and modification time";

/// Why a local file in a download's place is kept.
pub(crate) fn kept(path: &Path) -> String {
    format!("{} exists here; use --force to replace it", path.display())
}

/// The answer to the offer of a file whose place a local file holds (PROTOCOL.md §4.8):
/// [`Code::Unchanged`] when it is that file: the same size and mtime (rsync's quick check),
/// or the same size and, by the offer's digest, the same contents (`cp` without `-p`, an
/// unzip), in which case it gets the offered mtime, as rsync gives it; otherwise
/// [`Code::Exists`], and it is kept. The code, and the words for the report.
pub(crate) fn compare(path: &Path, offer: &Offer, buf: &mut [u8]) -> (Code, String) {
    let compared = platform::open_read(path).and_then(|mut file| {
        let meta = file.metadata()?;
        let Some(mtime) = walk::mtime(&meta).filter(|_| meta.is_file()) else {
            return Ok(None);
        };
        if offer.size == Some(meta.len()) && offer.mtime == Some(mtime) {
            return Ok(Some(SAME_SIZE_AND_TIME));
        }
        let hashed = || body::hash_all(&mut file, buf).map(|h| h.finalize());
        if !offer.unchanged(meta.len(), mtime, hashed)? {
            return Ok(None);
        }
        if let Some(t) = offer.mtime.and_then(to_system_time) {
            if let Err(e) = file.set_modified(t) {
                log::warn!(
                    "cannot set the modification time of {}: {e}",
                    path.display()
                );
            }
        }
        Ok(Some(
            "already here with the same contents (BLAKE3); given the server's modification time",
        ))
    });
    match compared {
        Ok(Some(why)) => (Code::Unchanged, why.to_owned()),
        Ok(None) => (Code::Exists, kept(path)),
        Err(e) => (Code::Io, format!("cannot read {}: {e}", path.display())),
    }
}

/// Publishes a verified download; the code and words for its report.
pub(crate) fn save(file: File, path: &Path, meta: &Offered, force: bool) -> (Code, String) {
    match publish(file, path, meta, force) {
        Ok(()) => (Code::Stored, String::new()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => (
            Code::Exists,
            format!(
                "{} appeared meanwhile; use --force to replace it",
                path.display()
            ),
        ),
        Err(e) => (Code::Io, format!("cannot save {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_folder() {
        let dir = Path::new("/out");
        let name = Name::parse("a/b/c.txt").unwrap();
        assert_eq!(local_path(dir, &name), Path::new("/out/a/b/c.txt"));
        assert_eq!(
            partial_path(&local_path(dir, &name)),
            Path::new("/out/a/b/.c.txt.ferry-partial")
        );
    }

    /// Every name a server may hold (components up to 255 bytes, PROTOCOL.md §5.1) has a
    /// partial whose name fits in 255 bytes, ASCII or not: the long form up to 240 bytes of
    /// name, the short form past that, the same each time, and not the same for two names
    /// that differ only past the cut.
    #[test]
    fn partial_names_always_fit() {
        let file_name = |n: &str| {
            let p = partial_path(&Path::new("/out").join(n));
            assert_eq!(p.parent(), Some(Path::new("/out")), "{n}");
            p.file_name().unwrap().to_str().unwrap().to_owned()
        };
        for unit in ["n", "é", "日", "🦀"] {
            for len in 1..=ferry_proto::name::MAX_COMPONENT_LEN {
                let name = unit.repeat(len / unit.len());
                if name.is_empty() {
                    continue;
                }
                let partial = file_name(&name);
                assert!(partial.len() <= MAX_FILE_NAME, "{len}: {partial}");
                assert!(partial.starts_with('.') && partial.ends_with(PARTIAL_SUFFIX));
                if name.len() <= 240 {
                    assert_eq!(partial, format!(".{name}.ferry-partial"));
                } else {
                    let kept = &partial[1..partial.rfind('~').unwrap()];
                    assert!(name.starts_with(kept) && kept.len() > 219, "{partial}");
                    assert_eq!(partial, file_name(&name), "deterministic");
                }
            }
        }
        let (a, b) = (
            format!("{}a", "n".repeat(250)),
            format!("{}b", "n".repeat(250)),
        );
        assert_ne!(file_name(&a), file_name(&b));
        assert_eq!(
            file_name(&"n".repeat(241)),
            format!(
                ".{}~{}.ferry-partial",
                "n".repeat(223),
                &blake3::hash("n".repeat(241).as_bytes()).to_hex()[..16]
            )
        );
    }

    #[test]
    fn partial_is_a_prefix_only_when_it_fits() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join(".x.ferry-partial");
        let mut buf = vec![0; 4];
        let (_, h) = open_partial(&p, 10, &mut buf).unwrap();
        assert!(h.is_empty());
        fs::write(&p, b"hello").unwrap();
        let (_, h) = open_partial(&p, 10, &mut buf).unwrap();
        assert_eq!(h.finalize(), ferry_proto::Digest::of(b"hello"));
        let (_, h) = open_partial(&p, 3, &mut buf).unwrap();
        assert!(h.is_empty());
        assert_eq!(fs::metadata(&p).unwrap().len(), 0);
    }

    /// A partial is made 0600, and one with wider bits (an older ferry's) narrowed to that
    /// with its bytes kept as the prefix; publishing gives the offered bits less the umask.
    #[test]
    #[cfg(unix)]
    fn partials_are_private_until_published() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        let p = partial_path(&path);
        drop(open_partial(&p, 10, &mut [0; 4]).unwrap());
        assert_eq!(mode(&p), 0o600);
        fs::write(&p, b"hello").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o775)).unwrap();
        let (file, prefix) = open_partial(&p, 10, &mut [0; 4]).unwrap();
        assert_eq!(prefix.finalize(), ferry_proto::Digest::of(b"hello"));
        assert_eq!(mode(&p), 0o600);
        let meta = Offered {
            mode: Some(0o4751),
            mtime: None,
        };
        publish(file, &path, &meta, false).unwrap();
        // What the umask lets a new file have.
        let open = tmp.path().join("open");
        std::os::unix::fs::OpenOptionsExt::mode(
            fs::File::options().write(true).create(true),
            0o777,
        )
        .open(&open)
        .unwrap();
        assert_eq!(mode(&path), 0o751 & mode(&open));
    }

    /// A link or a FIFO planted at the partial's name: the file it leads to is neither read
    /// (its bytes would be offered as our prefix) nor written, and the partial is a fresh
    /// file of its own.
    #[test]
    #[cfg(unix)]
    fn a_planted_link_or_fifo_is_replaced_not_followed() {
        use rustix::fs::Mode;
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let elsewhere = tmp.path().join("elsewhere");
        let p = tmp.path().join(".x.ferry-partial");
        /// Plants something at the second path (leading to the first).
        type Plant = fn(&Path, &Path);
        let plants: [(&str, Plant); 3] = [
            ("symlink", |to, at| {
                std::os::unix::fs::symlink(to, at).unwrap()
            }),
            ("hard link", |to, at| fs::hard_link(to, at).unwrap()),
            ("fifo", |_, at| {
                rustix::fs::mkfifoat(rustix::fs::CWD, at, Mode::from_raw_mode(0o600)).unwrap()
            }),
        ];
        for (what, plant) in plants {
            fs::write(&elsewhere, b"precious").unwrap();
            let _ = fs::remove_file(&p);
            plant(&elsewhere, &p);
            let (mut file, prefix) = open_partial(&p, 100, &mut [0; 4]).unwrap();
            assert!(prefix.is_empty(), "{what}: the planted file was read");
            std::io::Write::write_all(&mut file, b"new bytes").unwrap();
            assert_eq!(fs::read(&elsewhere).unwrap(), b"precious", "{what}");
            let meta = fs::symlink_metadata(&p).unwrap();
            assert!(meta.file_type().is_file() && meta.nlink() == 1, "{what}");
            assert_eq!(fs::read(&p).unwrap(), b"new bytes", "{what}");
        }
    }

    #[test]
    fn publish_never_replaces_without_force() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        for (content, force, want) in [
            ("one", false, "one"),
            ("two", false, "one"),
            ("three", true, "three"),
        ] {
            fs::write(partial_path(&path), content).unwrap();
            let file = File::open(partial_path(&path)).unwrap();
            let r = publish(file, &path, &Offered::default(), force);
            assert_eq!(r.is_ok(), content != "two", "{content}");
            assert_eq!(fs::read_to_string(&path).unwrap(), want);
        }
    }
}
