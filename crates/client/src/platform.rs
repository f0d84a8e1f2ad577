//! What differs between Unix and Windows on the local disk, in one place: opening without
//! following links, free space, permission bits and special files. Everything else in the
//! client is the same code on every system.
//!
//! On Windows: a reparse point (symbolic link, junction) at a partial's name is opened as
//! itself (`FILE_FLAG_OPEN_REPARSE_POINT`), seen for what it is and replaced, never followed;
//! the link count is not checked (std has no stable way to read it); free space is not checked
//! before a download (a full disk fails the write instead); Unix permission bits are neither
//! sent (the offer carries none) nor restored. There are no FIFOs, sockets or devices among
//! the files of a folder there, so nothing can block an open.

use std::ffi::{OsStr, OsString};
use std::fs::{File, FileType, Metadata};
use std::io;
use std::path::Path;

/// Opens or creates `path` for reading and writing (only creating it if `exclusive`), without
/// following a link or blocking; `None` if it is a link or not a regular file of its own (on
/// Unix: with a single link). On Unix the file is private (0600) until it is published (see
/// [`publish_mode`]): a new one is made so, and one that others may read or write (kept by an
/// older ferry, which made partials with all bits less the umask) is narrowed to it.
#[cfg(unix)]
pub(crate) fn open_own(path: &Path, exclusive: bool) -> io::Result<Option<File>> {
    use rustix::fs::{Mode, OFlags};
    use std::os::unix::fs::MetadataExt;
    let mut flags =
        OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    if exclusive {
        flags |= OFlags::EXCL;
    }
    let private = Mode::RUSR | Mode::WUSR;
    match rustix::fs::open(path, flags, private) {
        Ok(fd) => {
            let file = File::from(fd);
            let meta = file.metadata()?;
            let own = meta.file_type().is_file() && meta.nlink() == 1;
            if own && meta.mode() & 0o077 != 0 {
                // Best effort: a file system without permission bits (FAT) refuses any change,
                // and has nothing to keep private.
                if let Err(e) = rustix::fs::fchmod(&file, private) {
                    log::debug!("cannot make {} private: {e}", path.display());
                }
            }
            Ok(own.then_some(file))
        }
        // The last component is a symbolic link.
        Err(rustix::io::Errno::LOOP) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Opens or creates `path` for reading and writing (only creating it if `exclusive`); a
/// reparse point there is opened as itself, not followed; `None` unless it is a regular file.
#[cfg(windows)]
pub(crate) fn open_own(path: &Path, exclusive: bool) -> io::Result<Option<File>> {
    use std::os::windows::fs::OpenOptionsExt;
    /// `FILE_FLAG_OPEN_REPARSE_POINT` (winbase.h).
    const OPEN_REPARSE_POINT: u32 = 0x0020_0000;
    let mut options = std::fs::OpenOptions::new();
    options
        .read(true)
        .write(true)
        .custom_flags(OPEN_REPARSE_POINT);
    if exclusive {
        options.create_new(true);
    } else {
        options.create(true);
    }
    let file = options.open(path)?;
    // Metadata of the handle: a reparse point opened as itself reports as a link.
    let t = file.metadata()?.file_type();
    Ok((t.is_file() && !t.is_symlink()).then_some(file))
}

/// Asks the system to read the first `len` bytes of `file` into its cache now, without
/// waiting, so that the read that follows finds them there instead of waiting for the disk;
/// nothing where the system has no `posix_fadvise` (macOS, Windows).
#[cfg(all(unix, not(target_vendor = "apple")))]
pub(crate) fn read_soon(file: &File, len: u64) {
    if let Some(len) = std::num::NonZeroU64::new(len) {
        // Only a hint: whatever it says, the read does the work.
        let _ = rustix::fs::fadvise(file, 0, Some(len), rustix::fs::Advice::WillNeed);
    }
}

/// Asks the system to read `file` ahead: nothing here (see the Unix version).
#[cfg(not(all(unix, not(target_vendor = "apple"))))]
pub(crate) fn read_soon(_file: &File, _len: u64) {}

/// Opens `path` for reading without blocking on a FIFO (Unix); the caller checks what it is.
#[cfg(unix)]
pub(crate) fn open_read(path: &Path) -> io::Result<File> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC;
    Ok(File::from(rustix::fs::open(path, flags, Mode::empty())?))
}

/// Opens `path` for reading; the caller checks what it is.
#[cfg(windows)]
pub(crate) fn open_read(path: &Path) -> io::Result<File> {
    File::open(path)
}

/// What a folder's listing says one of its entries is, links not followed; `Other` for special
/// files and when the listing does not say (the walk then asks the entry's path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listed {
    /// A regular file.
    File,
    /// A folder.
    Folder,
    /// A symbolic link.
    Link,
    /// Anything else, or unknown.
    Other,
}

/// A folder open for a walk: listed, and its entries opened, through it. On Unix that is its
/// descriptor (`openat`), so the system does not resolve the whole path again for each entry,
/// unless the walk let it go when listing it (then by path); on Windows its path.
#[derive(Debug)]
pub(crate) struct WalkedFolder {
    /// The folder's descriptor; `None` once let go (see [`WalkedFolder::list`]).
    #[cfg(unix)]
    fd: Option<std::os::fd::OwnedFd>,
    /// The folder's path.
    #[cfg(windows)]
    path: std::path::PathBuf,
}

#[cfg(unix)]
impl WalkedFolder {
    /// Opens the folder at `path`, links followed (a path named on the command line).
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        use rustix::fs::{Mode, OFlags};
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = rustix::fs::open(path, flags, Mode::empty())?;
        Ok(Self { fd: Some(fd) })
    }

    /// Opens the entry `name` (at `path`) of this folder with `flags`: through the folder's
    /// descriptor, or by path once it was let go.
    fn open_entry(&self, name: &OsStr, path: &Path, flags: rustix::fs::OFlags) -> io::Result<File> {
        let mode = rustix::fs::Mode::empty();
        let fd = match &self.fd {
            Some(fd) => rustix::fs::openat(fd, name, flags, mode)?,
            None => rustix::fs::open(path, flags, mode)?,
        };
        Ok(File::from(fd))
    }

    /// Opens the folder `name` (at `path`) inside this one without following a link, with
    /// what its descriptor says of it.
    pub(crate) fn open_folder(&self, name: &OsStr, path: &Path) -> io::Result<(Self, Metadata)> {
        use rustix::fs::OFlags;
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let file = self.open_entry(name, path, flags)?;
        let meta = file.metadata()?;
        Ok((
            Self {
                fd: Some(file.into()),
            },
            meta,
        ))
    }

    /// Opens `name` (at `path`) inside this folder as [`open_read`] does.
    pub(crate) fn open_read(&self, name: &OsStr, path: &Path) -> io::Result<File> {
        use rustix::fs::OFlags;
        self.open_entry(
            name,
            path,
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
        )
    }

    /// The folder's entries in name order (bytes), each with what the listing says it is;
    /// then its descriptor is let go unless `keep` (its entries are opened by path), so that a
    /// deep walk does not hold one descriptor per level. Listed once.
    pub(crate) fn list(&mut self, keep: bool) -> io::Result<Vec<(OsString, Listed)>> {
        use rustix::fs::FileType;
        use std::os::unix::ffi::OsStrExt;
        let Some(fd) = &self.fd else {
            let why = "the folder was listed already";
            return Err(io::Error::new(io::ErrorKind::InvalidInput, why));
        };
        let mut dir = rustix::fs::Dir::read_from(fd)?;
        let mut entries = Vec::new();
        while let Some(entry) = dir.read() {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let listed = match entry.file_type() {
                FileType::RegularFile => Listed::File,
                FileType::Directory => Listed::Folder,
                FileType::Symlink => Listed::Link,
                _ => Listed::Other,
            };
            entries.push((OsStr::from_bytes(name).to_owned(), listed));
        }
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        if !keep {
            self.fd = None;
        }
        Ok(entries)
    }
}

#[cfg(windows)]
impl WalkedFolder {
    /// Opens the folder at `path` (nothing is opened on Windows: its path is kept).
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        Ok(Self {
            path: path.to_owned(),
        })
    }

    /// The folder at `path` (`_name` inside this one), with what its path says of it.
    pub(crate) fn open_folder(&self, _name: &OsStr, path: &Path) -> io::Result<(Self, Metadata)> {
        let meta = std::fs::symlink_metadata(path)?;
        if !meta.is_dir() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a folder"));
        }
        Ok((Self::open(path)?, meta))
    }

    /// Opens the file at `path` (`_name` inside this folder) as [`open_read`] does.
    pub(crate) fn open_read(&self, _name: &OsStr, path: &Path) -> io::Result<File> {
        open_read(path)
    }

    /// The folder's entries in name order, each with what the listing says it is (`_keep`:
    /// there is no descriptor to let go).
    pub(crate) fn list(&mut self, _keep: bool) -> io::Result<Vec<(OsString, Listed)>> {
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(&self.path)? {
            let entry = entry?;
            let listed = match entry.file_type() {
                Ok(t) if t.is_symlink() => Listed::Link,
                Ok(t) if t.is_file() => Listed::File,
                Ok(t) if t.is_dir() => Listed::Folder,
                _ => Listed::Other,
            };
            entries.push((entry.file_name(), listed));
        }
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok(entries)
    }
}

/// Most files a walk keeps open until they are sent (each is then opened once); a larger
/// tree's other files are opened twice, once to check them and once to send them.
const MAX_HELD: u64 = 16_384;

/// Descriptors left for everything but held files: the connection, the terminal, the logs.
#[cfg(unix)]
const SPARE_DESCRIPTORS: u64 = 128;

/// How many files a walk may keep open until they are sent: [`MAX_HELD`], within the limit
/// on open descriptors less [`SPARE_DESCRIPTORS`]. A soft limit below what that needs is
/// raised as far as the hard limit allows (as Go and Java do), for this process only.
#[cfg(unix)]
pub(crate) fn held_files_budget() -> usize {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let want = MAX_HELD + SPARE_DESCRIPTORS;
    let limit = getrlimit(Resource::Nofile);
    // `None` is no limit.
    let mut soft = limit.current.unwrap_or(u64::MAX);
    if soft < want {
        let raised = limit.maximum.map_or(want, |hard| hard.min(want));
        let ok = raised > soft
            && setrlimit(
                Resource::Nofile,
                Rlimit {
                    current: Some(raised),
                    maximum: limit.maximum,
                },
            )
            .is_ok();
        if ok {
            soft = raised;
        }
    }
    usize::try_from(soft.min(want).saturating_sub(SPARE_DESCRIPTORS)).unwrap_or(0)
}

/// How many files a walk may keep open until they are sent: [`MAX_HELD`] (Windows limits
/// handles far above that).
#[cfg(windows)]
pub(crate) fn held_files_budget() -> usize {
    MAX_HELD as usize
}

/// Grows this process's table of descriptors to hold `count` of them (by copying `folder`'s
/// descriptor to the highest and closing the copy), while it has one
/// thread: growing it later, with two threads sharing it, makes the kernel wait for a grace
/// period (milliseconds) each time the table doubles. Best effort: past the limit on open
/// descriptors it grows as far as that limit.
#[cfg(unix)]
pub(crate) fn reserve_descriptors(folder: &WalkedFolder, count: usize) {
    use rustix::process::{getrlimit, Resource};
    let limit = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    let highest = u64::try_from(count)
        .unwrap_or(u64::MAX)
        .min(limit)
        .saturating_sub(1);
    let Ok(highest) = i32::try_from(highest) else {
        return;
    };
    // The lowest free descriptor at `highest` or above: the table grows to hold it.
    if let Some(Ok(fd)) = folder
        .fd
        .as_ref()
        .map(|fd| rustix::io::fcntl_dupfd_cloexec(fd, highest))
    {
        drop(fd);
    }
}

/// Nothing to reserve on Windows.
#[cfg(windows)]
pub(crate) fn reserve_descriptors(_folder: &WalkedFolder, _count: usize) {}

/// The processor the calling thread runs on (`None` where the system does not say).
#[cfg(target_os = "linux")]
pub(crate) fn processor() -> Option<usize> {
    Some(rustix::thread::sched_getcpu())
}

/// The processor the calling thread runs on (`None` where the system does not say).
#[cfg(not(target_os = "linux"))]
pub(crate) fn processor() -> Option<usize> {
    None
}

/// Moves the calling thread off the processor `busy` (where the thread that started it
/// runs) if it may run on another, then lets it run wherever it could again. Linux starts a
/// new thread beside its parent and may leave an idle processor idle for the whole walk
/// (seen on 2 processors: both threads of a 20 ms walk took turns on one while the other
/// idled). Best effort.
#[cfg(target_os = "linux")]
pub(crate) fn leave_processor(busy: Option<usize>) {
    use rustix::thread::{sched_getaffinity, sched_setaffinity};
    let Some(busy) = busy else {
        return;
    };
    let Ok(allowed) = sched_getaffinity(None) else {
        return;
    };
    let mut elsewhere = allowed;
    elsewhere.unset(busy);
    if elsewhere.count() > 0 && sched_setaffinity(None, &elsewhere).is_ok() {
        // Moved: the scheduler leaves it there while that processor is free.
        let _ = sched_setaffinity(None, &allowed);
    }
}

/// Nothing to move where the system does not say which processor a thread runs on.
#[cfg(not(target_os = "linux"))]
pub(crate) fn leave_processor(_busy: Option<usize>) {}

/// Bytes the file system holding `file` still has room for (for an unprivileged user).
#[cfg(unix)]
pub(crate) fn room(file: &File) -> io::Result<u64> {
    let st = rustix::fs::fstatvfs(file)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Not checked on Windows: as much as asked for (a full disk fails the write instead).
#[cfg(windows)]
pub(crate) fn room(_file: &File) -> io::Result<u64> {
    Ok(u64::MAX)
}

/// A special file's kind in words (FIFO, socket, device); `None` when the system has no word.
#[cfg(unix)]
pub(crate) fn special_kind(t: FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    if t.is_fifo() {
        Some("a FIFO (named pipe; never opened, so its writer loses nothing)")
    } else if t.is_socket() {
        Some("a socket")
    } else if t.is_block_device() || t.is_char_device() {
        Some("a device")
    } else {
        None
    }
}

/// Windows file systems hold no FIFOs, sockets or devices: no word.
#[cfg(windows)]
pub(crate) fn special_kind(_t: FileType) -> Option<&'static str> {
    None
}

/// The permission bits to offer (`None` on Windows, which has none).
#[cfg(unix)]
pub(crate) fn mode(meta: &Metadata) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    Some(meta.permissions().mode() & 0o777)
}

/// The permission bits to offer (`None` on Windows, which has none).
#[cfg(windows)]
pub(crate) fn mode(_meta: &Metadata) -> Option<u32> {
    None
}

/// Gives a downloaded file, private while it arrived (see [`open_own`]), the `offered`
/// permission bits less the umask, as `cp` or `scp` without `-p` would have made it. Set-id
/// and sticky bits are never restored.
#[cfg(unix)]
pub(crate) fn publish_mode(file: &File, offered: u32) -> io::Result<()> {
    use rustix::fs::{Mode, RawMode};
    let all = Mode::RWXU | Mode::RWXG | Mode::RWXO;
    let wanted = Mode::from_bits_truncate((offered & 0o777) as RawMode) & all & !umask();
    let held = Mode::from_raw_mode(rustix::fs::fstat(file)?.st_mode) & all;
    // Unchanged, nothing is asked: a file system without permission bits refuses any change.
    if held != wanted {
        rustix::fs::fchmod(file, wanted)?;
    }
    Ok(())
}

/// Nothing to do on Windows: files keep the folder's inherited access rules.
#[cfg(windows)]
pub(crate) fn publish_mode(_file: &File, _offered: u32) -> io::Result<()> {
    Ok(())
}

/// The bits the files this process makes lose (its umask), read once. Linux tells it in
/// `/proc/self/status` (since 4.7); elsewhere it can only be read by setting it, so for that
/// moment it is 0o077 (a file another thread makes meanwhile comes out private, never more
/// open than it should) before it is set back.
#[cfg(unix)]
fn umask() -> rustix::fs::Mode {
    use rustix::fs::{Mode, RawMode};
    static UMASK: std::sync::OnceLock<Mode> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        let told = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                let value = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
                RawMode::from_str_radix(value.trim(), 8).ok()
            });
        told.map_or_else(
            || {
                let mask = rustix::process::umask(Mode::RWXG | Mode::RWXO);
                rustix::process::umask(mask);
                mask
            },
            Mode::from_raw_mode,
        )
    })
}

/// Narrows the permission bits of the folder `file` (made with all bits less the umask, or
/// there already: never widened) to `offered`, as `cp` or `scp` without `-p`, but never
/// below `rwx` for its owner: a folder fetched read-only (mode 555) would stop the next run's
/// new files (the server keeps the same rule). Set-id and sticky bits are never restored.
#[cfg(unix)]
pub(crate) fn narrow_mode(file: &File, offered: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let made = file.metadata()?.permissions().mode() & 0o777;
    let wanted = made & (offered | 0o700) & 0o777;
    if wanted != made {
        file.set_permissions(std::fs::Permissions::from_mode(wanted))?;
    }
    Ok(())
}

/// Nothing to do on Windows: folders keep their parent's inherited access rules.
#[cfg(windows)]
pub(crate) fn narrow_mode(_file: &File, _offered: u32) -> io::Result<()> {
    Ok(())
}

/// Opens the folder `path` to set its times and permission bits.
#[cfg(unix)]
pub(crate) fn open_folder(path: &Path) -> io::Result<File> {
    File::open(path)
}

/// Opens the folder `path` to set its times (`FILE_FLAG_BACKUP_SEMANTICS` opens a folder,
/// `FILE_WRITE_ATTRIBUTES` allows setting its times).
#[cfg(windows)]
pub(crate) fn open_folder(path: &Path) -> io::Result<File> {
    use std::os::windows::fs::OpenOptionsExt;
    const BACKUP_SEMANTICS: u32 = 0x0200_0000;
    const WRITE_ATTRIBUTES: u32 = 0x0100;
    std::fs::OpenOptions::new()
        .access_mode(WRITE_ATTRIBUTES)
        .custom_flags(BACKUP_SEMANTICS)
        .open(path)
}

#[cfg(test)]
mod tests {
    /// The budget of held files stays within its cap and, on Unix, within the limit on open
    /// descriptors less the spare ones (the soft limit raised if it was lower).
    #[test]
    fn held_files_fit_the_descriptor_limit() {
        let budget = super::held_files_budget() as u64;
        assert!(budget <= super::MAX_HELD, "{budget}");
        #[cfg(unix)]
        {
            let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
            let soft = limit.current.unwrap_or(u64::MAX);
            assert!(
                budget + super::SPARE_DESCRIPTORS <= soft,
                "{budget} of {soft}"
            );
        }
    }
}
