//! The server's private folder, `<root>/.ferry-state/` (mode 0700, owned by the server's
//! effective uid): `tmp/` holds uploads being received that cannot be resumed when they cannot
//! be unnamed files in their own folder (see [`super::unnamed`]; emptied at start), and a
//! received file for an instant while it replaces an existing one; `partials/` holds those
//! that can be resumed (named by a hash of the full relative name and the size, so one flat
//! folder serves the whole tree; expired after `partial_ttl` at start and by the periodic
//! [`State::sweep`], and at most [`MAX_PARTIALS`] of them, the oldest dropped first), and
//! `digests` is the digest cache (see [`super::digests`]). At start, a folder made and removed
//! in `tmp/` tells the umask and the precision of modification times (see [`super::probe`]).
//!
//! Clients cannot name it (every component starting with
//! [`RESERVED_PREFIX`](crate::paths::RESERVED_PREFIX) is refused), nor reach it under another
//! name a local user renames it to (see [`StateIds`]), and other local users cannot enter it.
//! It sits on the root's file system, so a file is published by one `renameat`.
//! Every file in it is held through a descriptor locked with `flock` for as long as an upload
//! uses it, so a second server on the same folder (a rolling restart) never writes the same
//! partial, and start-up cleanup skips what another server holds.
//!
//! Start-up no longer walks the client tree: `.ferry-tmp.*` and `.ferry-partial.*` files that
//! earlier versions left beside uploads are left alone (clients cannot reach them; an operator
//! may delete them).

use std::ffi::{CStr, CString};
use std::fmt::Display;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, TryLockError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferry_proto::Digest;
use rustix::fs::{self as rfs, AtFlags, FileType, FlockOperation, Mode, OFlags, RenameFlags, Stat};
use rustix::io::Errno;

use super::digests::DigestCache;
use super::probe::Probed;
use super::root::Root;
use super::unnamed::{self, Linker};

/// The server's private folder under the root.
pub(crate) const STATE_DIR: &str = ".ferry-state";
/// Prefix of the files in `tmp/`.
pub(crate) const TEMP_PREFIX: &str = ".ferry-tmp.";
/// Prefix of the files in `partials/`.
pub(crate) const PARTIAL_PREFIX: &str = ".ferry-partial.";
/// Permission bits of the state folders: the server's user only.
const PRIVATE_MODE: u32 = 0o700;
/// Times a partial is looked up again when it changes under the server (published or
/// discarded by another holder, or replaced by something that is not a partial).
const PARTIAL_TRIES: usize = 4;
/// Times a fresh temp name is drawn when one is taken.
const TEMP_TRIES: usize = 8;
/// Most partials kept for resume in one state folder: when a kept partial makes more, the
/// oldest (by modification time) are removed first, down to [`TRIM_TO`], so that clients who
/// cut uploads on purpose cannot fill the disk or its inodes between two sweeps.
pub(crate) const MAX_PARTIALS: usize = 1_024;
/// Partials a trim leaves (see [`MAX_PARTIALS`]): room for a run of cut uploads before the
/// next scan of `partials/`.
const TRIM_TO: usize = MAX_PARTIALS - MAX_PARTIALS / 8;

/// The open state folders.
#[derive(Debug)]
pub(crate) struct State {
    /// The state folder itself, to tell whether it is still at its name in the root.
    dir: OwnedFd,
    tmp: Arc<OwnedFd>,
    partials: Arc<OwnedFd>,
    /// What identifies the state folders and the digest cache, whatever their names.
    ids: StateIds,
    /// Partials untouched for longer than this are removed; `None`: kept until resumed.
    partial_ttl: Option<Duration>,
    /// Partials in `partials/`, as counted by the last sweep plus those kept since.
    partials_kept: AtomicUsize,
    /// Held by the sweep running (see [`State::sweep`]): a second one meanwhile is skipped.
    sweeping: Mutex<()>,
    /// Whether another local user can rename entries of the root (see [`renamable_by`]), or
    /// the state folder was renamed: every upload's folder is then checked not to be a state
    /// folder (see [`State::guards_folders`]).
    guard: AtomicBool,
    /// Whether the state folder was found renamed or replaced (logged once).
    moved: AtomicBool,
    /// Digests of files held, by content version.
    pub digests: DigestCache,
    /// The umask and the mtime precision of the storage.
    pub probed: Probed,
    /// How unnamed body files are named; `None`: bodies are named temp files in `tmp/`.
    linker: Option<Linker>,
}

/// The (device, inode) of the state folder, `tmp/`, `partials/` and the digest cache: what
/// the server refuses to serve, list or store into whatever it is called, as a local user may
/// rename the state folder (see SECURITY.md).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StateIds([Option<(u64, u64)>; 4]);

impl StateIds {
    /// Whether `st` describes one of the server's state folders or its digest cache.
    pub(crate) fn holds(&self, st: &Stat) -> bool {
        self.0.contains(&Some((st.st_dev, st.st_ino)))
    }
}

/// What happens to a [`Held`] file's name when it is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    /// Removed: a temp file, or a body that failed.
    Delete,
    /// Kept for resume if it holds bytes, removed if empty.
    KeepUnlessEmpty,
    /// Already moved away (published): nothing to do.
    Gone,
}

/// A file an upload's body goes into, open (and, when it has a name in the state folder,
/// locked with `flock`) by one upload until dropped; the only way the server reads or writes
/// it, so the bytes hashed are the bytes published.
#[derive(Debug)]
pub(crate) struct Held {
    file: File,
    place: Place,
    fate: Fate,
}

/// Where a [`Held`] file is named.
#[derive(Debug)]
enum Place {
    /// `name` in the state folder `dir`.
    Named { dir: Arc<OwnedFd>, name: String },
    /// Nowhere: an unnamed file (see [`super::unnamed`]), named by `linker` when published;
    /// `tmp` is where it is named for an instant to replace an existing file.
    Unnamed { linker: Linker, tmp: Arc<OwnedFd> },
}

impl State {
    /// Opens (creating if needed) and checks the state folders under `root` (shown as
    /// `shown` in messages), empties `tmp/` and removes partials untouched for longer than
    /// `partial_ttl` (and the oldest past [`MAX_PARTIALS`]). Refuses a state folder that is a
    /// link, not a folder, owned by another user or writable by others, saying how to fix
    /// it; warns when other local users can rename entries of the root.
    pub(crate) fn open(
        root: &Root,
        shown: &Path,
        partial_ttl: Option<Duration>,
    ) -> io::Result<Self> {
        let root_stat = rfs::fstat(root.fd())?;
        let exposed = renamable_by(&root_stat);
        if let Some(who) = &exposed {
            log::warn!(
                "{}: {who} can rename the server's state folder {STATE_DIR} in it and put \
                 their own in its place (which stops the next start); every upload's folder is \
                 checked not to be the moved state folder, one more system call per file. \
                 Make it safe: `chmod +t {0}` (or `chmod go-w {0}`)",
                shown.display()
            );
        }
        let state = private_folder(root.fd(), STATE_DIR, &shown.join(STATE_DIR).display())?;
        let tmp = private_folder(state.as_fd(), "tmp", &format_args!("{STATE_DIR}/tmp"))?;
        let partials = private_folder(
            state.as_fd(),
            "partials",
            &format_args!("{STATE_DIR}/partials"),
        )?;
        let temps = remove_unheld(&tmp, scan(&tmp));
        if temps > 0 {
            log::info!("removed {temps} temp file(s) left over from an earlier run");
        }
        let digests = DigestCache::open(state.as_fd());
        let id = |fd: BorrowedFd<'_>| rfs::fstat(fd).ok().map(|st| (st.st_dev, st.st_ino));
        let ids = StateIds([
            id(state.as_fd()),
            id(tmp.as_fd()),
            id(partials.as_fd()),
            digests.file_id(),
        ]);
        let probed = Probed::run(tmp.as_fd(), &temp_name());
        let linker = Linker::probe(tmp.as_fd(), &temp_name());
        let this = Self {
            dir: state,
            tmp: Arc::new(tmp),
            partials: Arc::new(partials),
            ids,
            partial_ttl,
            partials_kept: AtomicUsize::new(0),
            sweeping: Mutex::new(()),
            guard: AtomicBool::new(exposed.is_some()),
            moved: AtomicBool::new(false),
            digests,
            probed,
            linker,
        };
        this.sweep();
        Ok(this)
    }

    /// Removes the partials untouched for longer than the time to keep them, then, if more
    /// than [`MAX_PARTIALS`] are left, the oldest down to [`TRIM_TO`]; partials held by an
    /// upload (of this server or another one on the folder) stay. Logs and returns how many
    /// went. Run at start, periodically while serving (see [`super::janitor`]) and when a
    /// kept partial passes the cap; skipped (0) while another sweep runs.
    pub(crate) fn sweep(&self) -> usize {
        let _sweeping = match self.sweeping.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return 0,
        };
        let now = SystemTime::now();
        let (expired, mut left): (Vec<_>, Vec<_>) =
            scan(&self.partials).into_iter().partition(|(_, mtime)| {
                let age = now.duration_since(*mtime).ok();
                matches!((age, self.partial_ttl), (Some(age), Some(ttl)) if age > ttl)
            });
        let expired = remove_unheld(&self.partials, expired);
        let mut over = 0;
        if left.len() > MAX_PARTIALS {
            left.sort_by_key(|(_, mtime)| *mtime);
            let oldest: Vec<_> = left.drain(..left.len() - TRIM_TO).collect();
            over = remove_unheld(&self.partials, oldest);
        }
        self.partials_kept.store(left.len(), Ordering::Relaxed);
        if expired + over > 0 {
            log::info!(
                "removed {expired} expired partial upload(s) and {over} past the cap of \
                 {MAX_PARTIALS} (the oldest)"
            );
        }
        expired + over
    }

    /// Counts a partial just kept for resume (an upload cut off); past [`MAX_PARTIALS`],
    /// sweeps (see [`State::sweep`]).
    pub(crate) fn partial_kept(&self) {
        if self.partials_kept.fetch_add(1, Ordering::Relaxed) >= MAX_PARTIALS {
            self.sweep();
        }
    }

    /// What identifies the state folders and the digest cache (see [`StateIds`]).
    pub(crate) fn ids(&self) -> StateIds {
        self.ids
    }

    /// Whether every upload's folder must be checked not to be a state folder: other local
    /// users can rename entries of the root, or did rename the state folder. Otherwise no
    /// name a client can give leads into it (its own name is reserved) and the check would
    /// only cost a system call per file.
    pub(crate) fn guards_folders(&self) -> bool {
        self.guard.load(Ordering::Relaxed)
    }

    /// Checks that the state folder is still `.ferry-state` in `root` (shown as `shown`) and
    /// whether other users can rename entries there (see [`State::guards_folders`]). A state
    /// folder renamed within the root (the only place another user can move it: moving a
    /// folder to another parent takes write permission on it) is renamed back, exchanged with
    /// whatever was put at its name, and logged as a warning; one that cannot be is logged as
    /// an error once, with what to do: the server goes on using it through its descriptors,
    /// and serves, lists and changes it under no name.
    pub(crate) fn check_place(&self, root: BorrowedFd<'_>, shown: &Path) {
        let dir = shown.display();
        let mut moved = !self.at_its_name(root);
        let moved_to = if moved {
            rfs::fstat(&self.dir)
                .ok()
                .and_then(|st| name_in(root, st.st_ino))
        } else {
            None
        };
        if let Some(name) = moved_to.as_deref().filter(|n| self.move_back(root, n)) {
            moved = false;
            let name = name.to_string_lossy();
            log::warn!(
                "the server's state folder {dir}/{STATE_DIR} was renamed to {dir}/{name} by \
                 another local user; it is back at its name (what was put there, if anything, \
                 is now {dir}/{name}). Make {dir} safe: `chmod +t {dir}` (or `chmod go-w {dir}`)"
            );
        }
        let exposed = rfs::fstat(root).is_ok_and(|st| renamable_by(&st).is_some());
        self.guard.store(moved || exposed, Ordering::Relaxed);
        if moved == self.moved.swap(moved, Ordering::Relaxed) {
            return;
        }
        if !moved {
            log::info!("{dir}/{STATE_DIR} is the server's state folder again");
            return;
        }
        log::error!("{}", self.gone(root, moved_to).explain(shown));
    }

    /// Where the state folder went, not being at its name in `root`: `moved_to`, the name it
    /// has in the root if any, unless it or the root was deleted.
    fn gone(&self, root: BorrowedFd<'_>, moved_to: Option<CString>) -> Gone {
        let deleted = |fd: BorrowedFd<'_>| rfs::fstat(fd).is_ok_and(|st| st.st_nlink == 0);
        if deleted(root) {
            Gone::Root
        } else if deleted(self.dir.as_fd()) {
            Gone::State
        } else {
            Gone::Renamed(moved_to)
        }
    }

    /// Whether `.ferry-state` in `root` is this state folder.
    fn at_its_name(&self, root: BorrowedFd<'_>) -> bool {
        rfs::statat(root, STATE_DIR, AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|st| Some((st.st_dev, st.st_ino)) == self.ids.0[0])
    }

    /// Renames `name` in `root`, where the state folder was found, back to `.ferry-state`
    /// (exchanged with what is there, if anything); undone if what was renamed turns out not
    /// to be the state folder (a local user renamed it again meanwhile). Whether it is back.
    fn move_back(&self, root: BorrowedFd<'_>, name: &CStr) -> bool {
        let taken = rfs::statat(root, STATE_DIR, AtFlags::SYMLINK_NOFOLLOW).is_ok();
        let how = if taken {
            RenameFlags::EXCHANGE
        } else {
            RenameFlags::NOREPLACE
        };
        if let Err(e) = rfs::renameat_with(root, name, root, STATE_DIR, how) {
            log::debug!("cannot move the state folder back: {e}");
            return false;
        }
        if self.at_its_name(root) {
            return true;
        }
        if let Err(e) = rfs::renameat_with(root, STATE_DIR, root, name, how) {
            log::warn!(
                "cannot undo moving {} to {STATE_DIR}: {e}",
                name.to_string_lossy()
            );
        }
        false
    }

    /// Makes bodies named temp files, as where unnamed files cannot be made or named.
    #[cfg(test)]
    pub(crate) fn force_named_temps(&mut self) {
        self.linker = None;
    }

    /// A fresh unnamed file (see [`super::unnamed`]) with `mode` (less the umask), made in the
    /// folder `dir`, given its name when published; `None` when unnamed files cannot be made
    /// or named there ([`State::temp_file`] is the fallback).
    pub(crate) fn unnamed(&self, dir: BorrowedFd<'_>, mode: u32) -> io::Result<Option<Held>> {
        let Some(linker) = self.linker else {
            return Ok(None);
        };
        let tmp = Arc::clone(&self.tmp);
        Ok(unnamed::create(dir, mode)?.map(|file| Held {
            file,
            place: Place::Unnamed { linker, tmp },
            fate: Fate::Delete,
        }))
    }

    /// Whether bodies may be unnamed files (see [`State::unnamed`]).
    pub(crate) fn makes_unnamed(&self) -> bool {
        self.linker.is_some()
    }

    /// Free bytes for unprivileged users on the file system of the state folder (the root's).
    pub(crate) fn free_space(&self) -> Option<u64> {
        let s = rfs::fstatvfs(&*self.tmp).ok()?;
        Some(s.f_bavail.saturating_mul(s.f_frsize))
    }

    /// A fresh, locked temp file with `mode` (less the umask), removed when dropped.
    pub(crate) fn temp_file(&self, mode: u32) -> io::Result<Held> {
        let flags =
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let (name, fd) = with_fresh_name(|name| {
            rfs::openat(&*self.tmp, name, flags, Mode::from_raw_mode(mode))
        })?;
        rfs::flock(&fd, FlockOperation::NonBlockingLockExclusive)?;
        Ok(Held::named(File::from(fd), &self.tmp, name, Fate::Delete))
    }

    /// The partial kept for `owned` (an upload's name as its principal's, see
    /// [`Principal::own`](crate::access::Principal::own)) offered with `size` bytes, created
    /// empty (with `mode`, less the umask) if there is none, open and locked; `None` when
    /// another connection (or server) holds it. Anything at its place that is not a regular file of at most `size`
    /// bytes with one link (a FIFO, a hard link to another file, a snapshot's copy) is
    /// discarded unread and a fresh partial made: it is never read, hashed or written.
    pub(crate) fn partial(&self, owned: &str, size: u64, mode: u32) -> io::Result<Option<Held>> {
        let file_name = partial_name(owned, size);
        let dir = &*self.partials;
        let flags = OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::NONBLOCK;
        for _ in 0..PARTIAL_TRIES {
            let fd = match rfs::openat(
                dir,
                file_name.as_str(),
                flags | OFlags::CLOEXEC,
                Mode::from_raw_mode(mode),
            ) {
                Ok(fd) => fd,
                Err(Errno::LOOP | Errno::ISDIR) => {
                    log::warn!("discarding a link or folder at the place of partial {file_name}");
                    discard(dir, &file_name);
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            match rfs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {}
                Err(Errno::WOULDBLOCK) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
            let held = rfs::fstat(&fd)?;
            let named = rfs::statat(dir, file_name.as_str(), AtFlags::SYMLINK_NOFOLLOW).ok();
            if named.is_none_or(|n| (n.st_dev, n.st_ino) != (held.st_dev, held.st_ino)) {
                // Published or discarded by its previous holder meanwhile: look again.
                continue;
            }
            let regular = FileType::from_raw_mode(held.st_mode) == FileType::RegularFile;
            let fits = u64::try_from(held.st_size).is_ok_and(|len| len <= size);
            if !regular || held.st_nlink != 1 || !fits {
                log::warn!(
                    "discarding partial {file_name}: not a regular file of at most {size} bytes \
                     with a single link"
                );
                discard(dir, &file_name);
                continue;
            }
            let file = File::from(fd);
            return Ok(Some(Held::named(
                file,
                &self.partials,
                file_name,
                Fate::KeepUnlessEmpty,
            )));
        }
        Err(io::Error::other(
            "the partial upload keeps changing on the server; try again",
        ))
    }
}

impl Held {
    fn named(file: File, dir: &Arc<OwnedFd>, name: String, fate: Fate) -> Self {
        Self {
            file,
            place: Place::Named {
                dir: Arc::clone(dir),
                name,
            },
            fate,
        }
    }

    /// The open file.
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// The open file, for writing.
    pub(crate) fn file_mut(&mut self) -> &mut File {
        &mut self.file
    }

    /// Sets what becomes of the file's name when it is dropped.
    pub(crate) fn set_fate(&mut self, fate: Fate) {
        self.fate = fate;
    }

    /// Publishes the file as `to` in the folder `dir` (still open, and locked if it was, until
    /// dropped); with `replace` false, fails with `AlreadyExists` instead of replacing a file
    /// there. A named file is renamed; an unnamed one is linked, and when it replaces a file,
    /// linked in the state folder first and renamed from there.
    pub(crate) fn rename_to(
        &mut self,
        dir: BorrowedFd<'_>,
        to: &str,
        replace: bool,
    ) -> io::Result<()> {
        match &self.place {
            Place::Named { dir: from, name } => rename(from, name, dir, to, replace)?,
            Place::Unnamed { linker, tmp } => match linker.link(&self.file, dir, to) {
                Ok(()) => {}
                Err(Errno::EXIST) if replace => {
                    let (linker, tmp) = (*linker, Arc::clone(tmp));
                    self.name_in(linker, tmp)?;
                    return self.rename_to(dir, to, true);
                }
                Err(e) => return Err(e.into()),
            },
        }
        self.fate = Fate::Gone;
        Ok(())
    }

    /// Gives the unnamed file a fresh temp name in `tmp` (the state folder), locked like any
    /// file there so that a second server's start-up cleanup leaves it alone; it is removed
    /// when dropped unless published.
    fn name_in(&mut self, linker: Linker, tmp: Arc<OwnedFd>) -> io::Result<()> {
        rfs::flock(&self.file, FlockOperation::NonBlockingLockExclusive)?;
        let (name, ()) = with_fresh_name(|name| linker.link(&self.file, tmp.as_fd(), name))?;
        self.place = Place::Named { dir: tmp, name };
        self.fate = Fate::Delete;
        Ok(())
    }
}

/// Renames `name` in the folder `from` to `to` in `dir`; with `replace` false, fails with
/// `AlreadyExists` instead of replacing a file there.
fn rename(
    from: &OwnedFd,
    name: &str,
    dir: BorrowedFd<'_>,
    to: &str,
    replace: bool,
) -> io::Result<()> {
    if replace {
        return Ok(rfs::renameat(from, name, dir, to)?);
    }
    match rfs::renameat_with(from, name, dir, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        // A file system without RENAME_NOREPLACE: a link fails on an existing name too.
        Err(Errno::INVAL | Errno::NOSYS) => {
            rfs::linkat(from, name, dir, to, AtFlags::empty())?;
            if let Err(e) = rfs::unlinkat(from, name, AtFlags::empty()) {
                log::warn!("cannot remove {name} after publishing it: {e}");
            }
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // An unnamed file goes with its descriptor.
        let Place::Named { dir, name } = &self.place else {
            return;
        };
        let remove = match self.fate {
            Fate::Delete => true,
            Fate::KeepUnlessEmpty => self.file.metadata().map_or(true, |m| m.len() == 0),
            Fate::Gone => false,
        };
        // The name goes first; the lock goes with the descriptor, after this.
        if remove {
            match rfs::unlinkat(&**dir, name.as_str(), AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => log::warn!("cannot remove {name}: {e}"),
            }
        }
    }
}

/// Opens (making it with mode 0700 if missing) the folder `name` in `parent` and checks it is
/// the server's own: a real folder, owned by the effective uid, writable by nobody else.
fn private_folder(parent: BorrowedFd<'_>, name: &str, shown: &dyn Display) -> io::Result<OwnedFd> {
    match rfs::mkdirat(parent, name, Mode::from_raw_mode(PRIVATE_MODE)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("cannot create {shown}: {e}"),
            ))
        }
    }
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rfs::openat(parent, name, flags, Mode::empty()).map_err(|e| match e {
        Errno::NOTDIR | Errno::LOOP => io::Error::other(format!(
            "{shown} is a symbolic link or not a folder; the server keeps its own files there \
             and follows no link: remove it"
        )),
        e => io::Error::new(e.kind(), format!("cannot open {shown}: {e}")),
    })?;
    let st = rfs::fstat(&fd)?;
    let me = rustix::process::geteuid().as_raw();
    if st.st_uid != me {
        let uid = st.st_uid;
        return Err(io::Error::other(format!(
            "{shown} belongs to uid {uid}, not to this server's uid {me}: if that is not the \
             server's user, another local user made it, perhaps after renaming the server's own \
             away (which a folder writable by others without the sticky bit allows). Move it \
             aside (`mv {shown} {shown}.uid{uid}`; clients cannot name it there), move the \
             server's own back to {shown} if it was renamed, make the folder safe \
             (`chmod +t` it), and start again; or run the server as uid {uid}"
        )));
    }
    if st.st_mode & 0o022 != 0 {
        return Err(io::Error::other(format!(
            "{shown} is writable by other users (mode {:o}); make it private (chmod 700)",
            st.st_mode & 0o7777
        )));
    }
    Ok(fd)
}

/// The regular files in `dir` with their modification times; empty folders and anything else
/// that is not a regular file are removed on the way. Best effort: failures are logged and
/// skipped.
fn scan(dir: &OwnedFd) -> Vec<(CString, SystemTime)> {
    let entries = match rfs::Dir::read_from(dir) {
        Ok(d) => d,
        Err(e) => {
            log::warn!("cannot read a state folder to clean it: {e}");
            return Vec::new();
        }
    };
    let mut files = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        if matches!(name.to_bytes(), b"." | b"..") {
            continue;
        }
        let Ok(st) = rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) else {
            continue;
        };
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => {
                // A probe folder (see super::probe) left by a crash; only an empty one goes.
                let _ = rfs::unlinkat(dir, name, AtFlags::REMOVEDIR);
            }
            FileType::RegularFile => {
                let mtime = UNIX_EPOCH
                    .checked_add(Duration::from_secs(u64::try_from(st.st_mtime).unwrap_or(0)))
                    .unwrap_or(UNIX_EPOCH);
                files.push((name.to_owned(), mtime));
            }
            _ => {
                let shown = name.to_string_lossy();
                log::warn!("removing {shown} from the state folder: not a regular file");
                let _ = rfs::unlinkat(dir, name, AtFlags::empty());
            }
        }
    }
    files
}

/// Removes the `files` of `dir` (see [`scan`]) that no one holds locked; returns how many
/// went. Best effort: failures are logged and skipped.
fn remove_unheld(dir: &OwnedFd, files: Vec<(CString, SystemTime)>) -> usize {
    let mut removed = 0;
    for (name, _) in files {
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let Ok(fd) = rfs::openat(dir, name.as_c_str(), flags, Mode::empty()) else {
            continue;
        };
        if rfs::flock(&fd, FlockOperation::NonBlockingLockExclusive).is_err() {
            // Held by an upload, of this server or another one on this folder.
            continue;
        }
        match rfs::unlinkat(dir, name.as_c_str(), AtFlags::empty()) {
            Ok(()) => removed += 1,
            // Removed meanwhile (a concurrent sweep, a publish).
            Err(Errno::NOENT) => {}
            Err(e) => log::warn!(
                "cannot remove {} from the state folder: {e}",
                name.to_string_lossy()
            ),
        }
    }
    removed
}

/// Which other local user can rename entries of the folder described by `st` (the root),
/// and so the state folder in it; `None` when only the server's user and root can: the folder
/// is the server's (or root's) and not writable by others, or has the sticky bit.
fn renamable_by(st: &Stat) -> Option<String> {
    let me = rustix::process::geteuid().as_raw();
    let mode = st.st_mode & 0o7777;
    if st.st_uid != me && st.st_uid != 0 {
        return Some(format!("its owner, uid {}", st.st_uid));
    }
    (mode & 0o022 != 0 && mode & 0o1000 == 0).then(|| {
        format!(
            "any user who can write it (mode {mode:o}, writable by others without the sticky bit)"
        )
    })
}

/// Where the state folder went when it is not at its name and could not be put back.
#[derive(Debug, PartialEq, Eq)]
enum Gone {
    /// The root itself was deleted (the state folder with it).
    Root,
    /// The state folder was deleted.
    State,
    /// Renamed: to this name in the root, or out of it.
    Renamed(Option<CString>),
}

impl Gone {
    /// The error to log, with what to do, for the root shown as `shown`.
    fn explain(&self, shown: &Path) -> String {
        let dir = shown.display();
        match self {
            Gone::Root => format!(
                "{dir}, the folder the server stores into, was deleted while it ran: nothing \
                 can be stored there, and nothing is listed or fetched, until it is made again \
                 and the server restarted"
            ),
            Gone::State => format!(
                "the server's state folder {dir}/{STATE_DIR} was deleted while it ran: cut \
                 uploads cannot be kept for resume until the server is restarted (which makes \
                 it again)"
            ),
            Gone::Renamed(to) => {
                let now_at = to.as_deref().map_or_else(
                    || "somewhere else".to_owned(),
                    |n| format!("at {dir}/{}", n.to_string_lossy()),
                );
                format!(
                    "the server's state folder {dir}/{STATE_DIR} was renamed and is now \
                     {now_at}, and could not be moved back; the server goes on keeping its \
                     partial uploads and digest cache there, and never serves, lists or stores \
                     into it under any name. Make {dir} safe (`chmod +t {dir}`, or `chmod go-w \
                     {dir}`), then stop the server, move whatever is at {dir}/{STATE_DIR} now \
                     aside (`mv {dir}/{STATE_DIR} {dir}/.ferry-squatted`), move the state folder \
                     back ({dir}/{STATE_DIR}) and start it again"
                )
            }
        }
    }
}

/// The name of the entry of `dir` with inode `ino`, if any (read from the folder's entries,
/// no `stat` per entry).
fn name_in(dir: BorrowedFd<'_>, ino: u64) -> Option<CString> {
    let entries = rfs::Dir::read_from(dir).ok()?;
    entries
        .flatten()
        .find(|e| e.ino() == ino && !matches!(e.file_name().to_bytes(), b"." | b".."))
        .map(|e| e.file_name().to_owned())
}

/// Removes `name` from `dir` whatever it is (a file, a link, an empty folder); best effort.
fn discard(dir: &OwnedFd, name: &str) {
    if rfs::unlinkat(dir, name, AtFlags::empty()) == Err(Errno::ISDIR) {
        let _ = rfs::unlinkat(dir, name, AtFlags::REMOVEDIR);
    }
}

/// The deterministic name of the partial kept for `owned` (see [`State::partial`]) offered
/// with `size` bytes.
pub(crate) fn partial_name(owned: &str, size: u64) -> String {
    let mut key = owned.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(&size.to_be_bytes());
    let hex = Digest::of(&key).to_hex();
    format!("{PARTIAL_PREFIX}{}", &hex[..32])
}

/// Runs `make` (which creates something under the name it is given, failing with `EEXIST`
/// when the name is taken) with fresh temp names until one is free, at most [`TEMP_TRIES`]
/// times; the name used and what `make` returned.
fn with_fresh_name<T>(
    mut make: impl FnMut(&str) -> rustix::io::Result<T>,
) -> io::Result<(String, T)> {
    for _ in 0..TEMP_TRIES {
        let name = temp_name();
        match make(&name) {
            Ok(made) => return Ok((name, made)),
            Err(Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Err(io::Error::other("no free temp file name"))
}

/// A temp file name unlikely to be taken (the process, a counter and the clock).
fn temp_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    // Asked once: `getpid` is a system call per file otherwise (glibc does not cache it).
    static PID: OnceLock<u32> = OnceLock::new();
    let pid = PID.get_or_init(std::process::id);
    format!("{TEMP_PREFIX}{pid:x}.{n:x}.{nanos:x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Write;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::Path;

    fn open(root: &Path) -> io::Result<State> {
        State::open(&Root::open(root)?, root, Some(Duration::from_secs(86_400)))
    }

    /// Makes `n` partials in `st`'s folder, the k-th modified k seconds after `since`.
    fn plant_partials(st: &Path, n: usize, since: SystemTime) -> Vec<std::path::PathBuf> {
        let tag = since.duration_since(UNIX_EPOCH).unwrap().as_secs();
        (0..n)
            .map(|k| {
                let p = st.join(format!("partials/{PARTIAL_PREFIX}{tag}.{k:05}"));
                let f = File::create(&p).unwrap();
                f.set_modified(since + Duration::from_secs(k as u64))
                    .unwrap();
                p
            })
            .collect()
    }

    #[test]
    fn a_sweep_expires_partials_while_running_and_drops_the_oldest_past_the_cap() {
        let root = tempfile::tempdir().unwrap();
        let state = open(root.path()).unwrap();
        let st = root.path().join(STATE_DIR);
        // Expired since start: gone at the next sweep, no restart needed.
        let expired = plant_partials(&st, 3, SystemTime::now() - Duration::from_secs(3 * 86_400));
        assert_eq!(state.sweep(), 3);
        assert!(expired.iter().all(|p| !p.exists()));
        // Past the cap: the oldest go first, down to TRIM_TO; a held one stays.
        let recent = SystemTime::now() - Duration::from_secs(3600);
        let planted = plant_partials(&st, MAX_PARTIALS + 10, recent);
        let held = File::open(&planted[0]).unwrap();
        rfs::flock(&held, FlockOperation::NonBlockingLockExclusive).unwrap();
        assert_eq!(state.sweep(), MAX_PARTIALS + 10 - TRIM_TO - 1);
        assert!(planted[0].exists(), "held by an upload");
        assert!(!planted[1].exists(), "the oldest unheld one");
        assert!(planted[MAX_PARTIALS + 10 - TRIM_TO..]
            .iter()
            .all(|p| p.exists()));
        assert_eq!(state.sweep(), 0, "under the cap: nothing more");
        // Kept partials are counted: past the cap, a sweep runs.
        plant_partials(&st, MAX_PARTIALS, SystemTime::now());
        for _ in 0..TRIM_TO + 1 {
            state.partial_kept();
        }
        let left = fs::read_dir(st.join("partials")).unwrap().count();
        assert!(left <= MAX_PARTIALS, "{left} partials");
    }

    #[test]
    fn the_state_is_known_by_its_inodes_under_any_name_and_a_rename_is_noticed() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        fs::set_permissions(r, fs::Permissions::from_mode(0o755)).unwrap();
        let state = open(r).unwrap();
        let rootfd = Root::open(r).unwrap();
        assert!(
            !state.guards_folders(),
            "only the server's user can rename in the root"
        );
        fs::rename(r.join(STATE_DIR), r.join("stolen")).unwrap();
        fs::create_dir(r.join(STATE_DIR)).unwrap();
        for p in ["stolen", "stolen/tmp", "stolen/partials", "stolen/digests"] {
            let st = rfs::stat(r.join(p)).unwrap();
            assert!(state.ids().holds(&st), "{p}");
        }
        assert!(!state.ids().holds(&rfs::stat(r.join(STATE_DIR)).unwrap()));
        // Renamed within the root: moved back, exchanged with the planted folder.
        state.check_place(rootfd.fd(), r);
        assert!(!state.guards_folders(), "moved back");
        assert!(state.ids().holds(&rfs::stat(r.join(STATE_DIR)).unwrap()));
        assert!(
            !state.ids().holds(&rfs::stat(r.join("stolen")).unwrap()),
            "the planted one"
        );
        // Moved out of the root (as its owner can): noticed, guarded, not moved.
        fs::create_dir(r.join("sub")).unwrap();
        fs::rename(r.join(STATE_DIR), r.join("sub/stolen")).unwrap();
        state.check_place(rootfd.fd(), r);
        assert!(state.guards_folders(), "moved away");
        assert!(r.join("sub/stolen/partials").exists());
        fs::rename(r.join("sub/stolen"), r.join(STATE_DIR)).unwrap();
        state.check_place(rootfd.fd(), r);
        assert!(!state.guards_folders(), "back in place");
        // Writable by others without the sticky bit: guarded; with it: not.
        fs::set_permissions(r, fs::Permissions::from_mode(0o777)).unwrap();
        state.check_place(rootfd.fd(), r);
        assert!(state.guards_folders(), "mode 777");
        fs::set_permissions(r, fs::Permissions::from_mode(0o1777)).unwrap();
        state.check_place(rootfd.fd(), r);
        assert!(!state.guards_folders(), "mode 1777");
    }

    #[test]
    fn a_state_folder_or_root_deleted_is_told_from_one_renamed() {
        let parent = tempfile::tempdir().unwrap();
        let r = parent.path().join("store");
        fs::create_dir(&r).unwrap();
        let state = open(&r).unwrap();
        let rootfd = Root::open(&r).unwrap();
        fs::rename(r.join(STATE_DIR), parent.path().join("away")).unwrap();
        assert_eq!(state.gone(rootfd.fd(), None), Gone::Renamed(None));
        fs::remove_dir_all(parent.path().join("away")).unwrap();
        assert_eq!(state.gone(rootfd.fd(), None), Gone::State);
        assert!(Gone::State.explain(&r).contains("was deleted while it ran"));
        fs::remove_dir_all(&r).unwrap();
        assert_eq!(state.gone(rootfd.fd(), None), Gone::Root);
        assert!(Gone::Root
            .explain(&r)
            .contains("the folder the server stores into, was deleted"));
    }

    #[test]
    fn who_can_rename_in_the_root() {
        let me = rustix::process::geteuid().as_raw();
        let at = |uid: u32, mode: u32| {
            let mut st = rfs::stat(".").unwrap();
            st.st_uid = uid;
            st.st_mode = (st.st_mode & !0o7777) | mode;
            renamable_by(&st)
        };
        assert_eq!(at(me, 0o755), None);
        assert_eq!(at(me, 0o1777), None);
        assert!(at(me, 0o777).is_some_and(|w| w.contains("sticky")));
        assert!(at(me, 0o775).is_some());
        assert_eq!(at(0, 0o755), None, "root's folder");
        if me != 65534 {
            assert!(at(65534, 0o1755).is_some_and(|w| w.contains("uid 65534")));
        }
    }

    fn fifo(path: &Path) {
        rfs::mknodat(
            rfs::CWD,
            path,
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
    }

    #[test]
    fn start_up_empties_tmp_expires_old_partials_and_leaves_the_client_tree_alone() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        open(r).unwrap();
        let st = r.join(STATE_DIR);
        assert_eq!(fs::metadata(&st).unwrap().mode() & 0o777, PRIVATE_MODE);
        // Old-layout files in the client tree: left alone.
        fs::create_dir(r.join("sub")).unwrap();
        let old_layout = [r.join("sub/.ferry-tmp.abc"), r.join(".ferry-partial.abc")];
        let two_days_ago = SystemTime::now() - Duration::from_secs(2 * 86_400);
        for p in &old_layout {
            File::create(p).unwrap().set_modified(two_days_ago).unwrap();
        }
        let tmp = st.join("tmp/.ferry-tmp.crashed");
        let busy_tmp = st.join("tmp/.ferry-tmp.busy");
        let recent = st.join("partials/.ferry-partial.recent");
        let old = st.join("partials/.ferry-partial.old");
        let busy_old = st.join("partials/.ferry-partial.busy");
        for p in [&tmp, &busy_tmp, &recent, &old, &busy_old] {
            fs::write(p, b"x").unwrap();
        }
        for p in [&old, &busy_old] {
            File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(two_days_ago)
                .unwrap();
        }
        fifo(&st.join("tmp/.ferry-tmp.fifo"));
        // Held by another server on this folder.
        let holders: Vec<File> = [&busy_tmp, &busy_old]
            .iter()
            .map(|p| {
                let f = File::open(p).unwrap();
                rfs::flock(&f, FlockOperation::NonBlockingLockExclusive).unwrap();
                f
            })
            .collect();
        open(r).unwrap();
        assert!(!tmp.exists(), "temp file");
        assert!(!st.join("tmp/.ferry-tmp.fifo").exists(), "a FIFO, unopened");
        assert!(!old.exists(), "expired partial");
        assert!(recent.exists(), "recent partial");
        assert!(busy_tmp.exists() && busy_old.exists(), "held files stay");
        for p in &old_layout {
            assert!(p.exists(), "{p:?} is outside the state folder");
        }
        drop(holders);
    }

    #[test]
    fn a_state_folder_that_is_a_link_or_writable_by_others_or_foreign_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let st = root.path().join(STATE_DIR);
        std::os::unix::fs::symlink(elsewhere.path(), &st).unwrap();
        let e = open(root.path()).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        assert_eq!(fs::read_dir(elsewhere.path()).unwrap().count(), 0);
        fs::remove_file(&st).unwrap();

        fs::create_dir(&st).unwrap();
        fs::set_permissions(&st, fs::Permissions::from_mode(0o777)).unwrap();
        let e = open(root.path()).unwrap_err().to_string();
        assert!(e.contains("writable by other users"), "{e}");
        assert_eq!(
            fs::metadata(&st).unwrap().mode() & 0o777,
            0o777,
            "not changed"
        );

        if rustix::process::geteuid().is_root() {
            fs::set_permissions(&st, fs::Permissions::from_mode(0o700)).unwrap();
            std::os::unix::fs::chown(&st, Some(65534), Some(65534)).unwrap();
            let e = open(root.path()).unwrap_err().to_string();
            assert!(e.contains("belongs to uid 65534"), "{e}");
            assert!(
                e.contains("`mv ") && e.contains("chmod +t"),
                "says what to run: {e}"
            );
        }
    }

    #[test]
    fn a_partial_is_locked_and_never_a_link_a_fifo_or_a_shared_inode() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let state = open(root.path()).unwrap();
        let n = "dir/big.bin";
        let at = root
            .path()
            .join(STATE_DIR)
            .join("partials")
            .join(partial_name(n, 100));

        let mut held = state.partial(n, 100, 0o600).unwrap().expect("free");
        assert!(state.partial(n, 100, 0o600).unwrap().is_none(), "locked");
        held.file_mut().write_all(b"kept").unwrap();
        drop(held);
        assert_eq!(fs::read(&at).unwrap(), b"kept", "kept for resume");
        drop(state.partial(n, 100, 0o600).unwrap());
        assert!(at.exists(), "an untouched partial stays");

        // A hard link to an outside file at its place: dropped unread, the file untouched.
        let secret = outside.path().join("secret");
        fs::write(&secret, b"secret").unwrap();
        fs::remove_file(&at).unwrap();
        fs::hard_link(&secret, &at).unwrap();
        let mut held = state.partial(n, 100, 0o600).unwrap().expect("fresh");
        assert_eq!(held.file().metadata().unwrap().len(), 0);
        held.file_mut().write_all(b"new").unwrap();
        drop(held);
        assert_eq!(fs::read(&secret).unwrap(), b"secret");
        assert_eq!(fs::metadata(&secret).unwrap().nlink(), 1);

        // A FIFO or a symbolic link at its place: replaced by a fresh file, never waited on.
        for plant in [
            |at: &Path, _: &Path| fifo(at),
            |at: &Path, secret: &Path| std::os::unix::fs::symlink(secret, at).unwrap(),
        ] {
            let _ = fs::remove_file(&at);
            plant(&at, &secret);
            let held = state.partial(n, 100, 0o600).unwrap().expect("fresh");
            assert!(held.file().metadata().unwrap().is_file());
        }
        assert_eq!(fs::read(&secret).unwrap(), b"secret");
    }

    #[test]
    fn partial_names_are_deterministic_and_depend_on_the_full_name_and_size() {
        let long = "n".repeat(255);
        let a = partial_name(&long, 10);
        assert_eq!(a, partial_name(&long, 10));
        assert_ne!(a, partial_name(&long, 11));
        assert_ne!(partial_name("a/x", 10), partial_name("b/x", 10));
        assert!(a.len() < 64 && a.starts_with(PARTIAL_PREFIX));
    }
}
