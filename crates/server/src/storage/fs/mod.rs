//! The file-system backend: the storage folder of `--dir`, and its policies: how an offer is
//! checked (whether the file held is unchanged, size, free space, the overwrite policy, a kept
//! partial to resume), where its body is written (an unnamed file in its destination folder,
//! see [`unnamed`], or a locked file in the server's private state folder, see [`state`]), how
//! it is published under the overwrite policy, how a folder offer
//! is stored, and which files and folders may be served for download and listed.
//!
//! Every name is resolved relative to the root's descriptor, following no link (see
//! [`root`]), and every file is opened through a descriptor and checked on it. A file offer
//! creates nothing in the client tree: folders are made when a file is published there, and
//! removed again if it then cannot be; a folder offer makes its folder.

use std::fs::{self, File, Metadata, Permissions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferry_proto::{Code, Digest, EntryKind, FileInfo, Hasher, Name, Offer, Timestamp};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Stat, Timespec, Timestamps};
use rustix::io::Errno;

use self::digests::{FileKey, RECORD_MIN};
use self::flush::{Durability, Flusher, WriteBehind};
use self::janitor::Janitor;
use self::listing::Lister;
use self::lookout::FolderLookout;
use self::root::{Folders, Root, FOLDER_MODE};
use self::state::{Fate, Held, State};
use crate::access::Principal;
use crate::commit::{Flush, Touched};
use crate::config::{Config, Overwrite};
use crate::paths::{check_reserved, split, unresolved, Refusal};
use crate::storage::{
    hash_at, FileMeta, Incoming, Listing, Lookout, Offered, Outgoing, Prepared, Reservation,
    Storage, Upload, BUF_LEN,
};
use crate::units::Bytes;

mod digests;
mod flush;
mod janitor;
mod listing;
mod lookout;
mod probe;
mod root;
mod state;
mod unnamed;

/// Smallest upload kept as a partial for resume; below it, sending again costs less than the
/// extra file-system calls a resumable upload makes on every file.
const RESUME_MIN: u64 = 1 << 20;
/// Smallest upload whose size is checked against the free space when it is offered (smaller
/// ones that do not fit still fail with `NoSpace` when written).
const FREE_SPACE_CHECK_MIN: u64 = 1 << 20;
/// Most `name (n).ext` candidates tried by [`Overwrite::Rename`].
const MAX_RENAME: u32 = 10_000;
/// Times [`Overwrite::Rename`] looks for a free number again when a concurrent upload takes
/// the one it found.
const MAX_RENAME_RACES: usize = 8;
/// Permission bits restored from an offer (no set-id or sticky bits from the network).
const MODE_MASK: u32 = 0o777;
/// Permission bits of a stored file when the offer gives none (the seed framing).
const DEFAULT_MODE: u32 = 0o644;
/// Owner read and write: what a kept partial needs to be resumed.
const OWNER_RW: u32 = 0o600;
/// Permission bits every stored folder keeps: the server's own user must go on storing into
/// it (a folder sent with mode 555 is stored as 755: a re-run adds its new files).
const OWNER_RWX: u32 = 0o700;
/// Bytes of the buffer a small file (below [`RECORD_MIN`]) is hashed through for a download's
/// OFFER, on the stack.
const SMALL_BUF_LEN: usize = 16 << 10;

/// The storage folder, a [`Storage`] backend; see the module docs.
#[derive(Debug)]
pub(crate) struct Store {
    space: Arc<Space>,
    /// Sweeps partials and watches the state folder while the store lives (stopped when
    /// dropped).
    _janitor: Janitor,
}

/// The storage folder's descriptors and policies, shared with the uploads in flight (which
/// publish into it).
#[derive(Debug)]
struct Space {
    root: Root,
    state: State,
    /// The storage folder, canonical (for messages).
    path: PathBuf,
    overwrite: Overwrite,
    max_file_size: Option<u64>,
    /// How published files are made durable; `None` with `--no-fsync`.
    durability: Option<Arc<dyn Durability>>,
}

/// The kept partial an accepted upload's body goes into, held and locked since the offer
/// (ferry framing, known size).
#[derive(Debug)]
struct Partial {
    space: Arc<Space>,
    held: Held,
    /// The size announced.
    size: Option<u64>,
}

/// A file being received.
#[derive(Debug)]
struct Working {
    space: Arc<Space>,
    held: Held,
    /// The folder the file is published in, opened when the body started (its unnamed file
    /// was made there); `None`: resolved again at publish (a partial, a named temp file, or a
    /// folder still to be made).
    folder: Option<OwnedFd>,
    resumable: bool,
    len: u64,
    /// Flushes the file while it is received; `None`: not a durable server.
    behind: Option<WriteBehind>,
}

/// What [`Space::publish`] needs of a received body besides its file.
#[derive(Debug)]
struct Body {
    /// Whether it is a kept partial.
    resumable: bool,
    /// Its length.
    len: u64,
    /// See [`Working::folder`].
    folder: Option<OwnedFd>,
}

/// A file being served, open since it was accepted.
struct Download {
    file: File,
    info: FileInfo,
}

impl Store {
    /// Creates the storage folder if needed, opens it, and opens (and cleans) the server's
    /// state folder in it.
    pub(crate) fn open(config: &Config) -> io::Result<Self> {
        Self::with_janitor(Space::open(config)?, janitor::TICK, janitor::SWEEP_EVERY)
    }

    /// The store of `space`, whose janitor looks at it every `tick` and sweeps it every
    /// `sweep_every` (see [`janitor`]).
    fn with_janitor(space: Space, tick: Duration, sweep_every: Duration) -> io::Result<Self> {
        let space = Arc::new(space);
        let janitor = Janitor::start(&space, tick, sweep_every)?;
        Ok(Self {
            space,
            _janitor: janitor,
        })
    }

    /// Replaces how published files are made durable (tests count and hold the flushes);
    /// before the store is shared.
    #[cfg(test)]
    pub(crate) fn set_durability(&mut self, d: Arc<dyn Durability>) {
        self.change(|space| space.durability = Some(d));
    }

    /// Makes bodies named temp files in the state folder, as where unnamed files cannot be
    /// made or named; before the store is shared.
    #[cfg(test)]
    pub(crate) fn force_named_temps(&mut self) {
        self.change(|space| space.state.force_named_temps());
    }

    /// Changes the space with its janitor stopped (it holds the space); before the store is
    /// shared.
    #[cfg(test)]
    fn change(&mut self, change: impl FnOnce(&mut Space)) {
        self._janitor.stop();
        change(Arc::get_mut(&mut self.space).expect("not shared yet"));
        self._janitor = Janitor::start(&self.space, janitor::TICK, janitor::SWEEP_EVERY).unwrap();
    }
}

impl Storage for Store {
    fn describe(&self) -> String {
        self.space.path.display().to_string()
    }

    fn local_folder(&self) -> Option<&Path> {
        Some(&self.space.path)
    }

    fn locate(&self, stored: &str) -> PathBuf {
        self.space.path.join(stored)
    }

    fn sub_storage(&self, folder: &Name, config: &Config) -> io::Result<Arc<dyn Storage>> {
        let space = self.space.sub_space(folder, config)?;
        let store = Store::with_janitor(space, janitor::TICK, janitor::SWEEP_EVERY)?;
        Ok(Arc::new(store))
    }

    fn durable(&self) -> bool {
        self.space.durable()
    }

    fn flush(&self, what: &Flush) -> io::Result<()> {
        self.space
            .durability
            .as_ref()
            .map_or(Ok(()), |d| d.flush(what))
    }

    /// Stores a folder offer (PROTOCOL.md §4.9): makes the folder `name` and its missing
    /// parents, following no link, and gives it `mode` (less the umask; never set-id or
    /// sticky bits; always rwx for the server's user) and `mtime`, also when it was there
    /// already if `restyle` (the client offers a folder after its contents, whose publishing
    /// moved its mtime). [`Code::Stored`] when it was
    /// made now (with what the flush before its RESULT must cover), [`Code::Unchanged`] when
    /// it was there; a file or a link at the name is [`Code::Exists`].
    fn make_folder(
        &self,
        name: &Name,
        mode: Option<u32>,
        mtime: Option<Timestamp>,
        restyle: bool,
    ) -> Result<(Code, Option<Touched>), Refusal> {
        let space = &self.space;
        check_reserved(name)?;
        let (parents, last) = split(name.as_str());
        let mut folders = space
            .root
            .make_folders(parents)
            .map_err(|e| unresolved(name, &e, true))?;
        // Per folder offer, whatever the root: the state folder is never a parent, nor given
        // a mode or time.
        if space.is_state(folders.deepest_found()) {
            folders.remove_created();
            return Err(state_refusal(name));
        }
        let mode = mode.map(|m| (m & MODE_MASK) | OWNER_RWX);
        let fresh = folders
            .descend(last, mode.unwrap_or(FOLDER_MODE))
            .map_err(|e| match e.raw_os_error().map(Errno::from_raw_os_error) {
                Some(Errno::LOOP) => Refusal::link(name, Code::Exists),
                Some(Errno::NOTDIR) => {
                    Refusal::new(Code::Exists, format!("{name} is a file on the server"))
                }
                _ => Refusal::io("cannot make the folder", &e),
            })?;
        if !fresh && space.is_state(&folders.fd) {
            return Err(state_refusal(name));
        }
        let umask = space.state.probed.umask;
        let (mode, mtime) = if fresh || restyle {
            (mode, mtime)
        } else {
            (None, None)
        };
        let apply = || -> rustix::io::Result<()> {
            if let (false, Some(m)) = (fresh, mode) {
                rfs::fchmod(&folders.fd, Mode::from_raw_mode(m & !umask))?;
            }
            if let Some(t) = mtime {
                let times = Timestamps {
                    last_access: Timespec {
                        tv_sec: 0,
                        tv_nsec: rfs::UTIME_OMIT,
                    },
                    last_modification: Timespec {
                        tv_sec: t.secs,
                        tv_nsec: t.nanos.into(),
                    },
                };
                rfs::futimens(&folders.fd, &times)?;
            }
            Ok(())
        };
        if let Err(e) = apply() {
            folders.remove_created();
            return Err(Refusal::io(
                "cannot set the folder's mode and time",
                &e.into(),
            ));
        }
        if !fresh {
            return Ok((Code::Unchanged, None));
        }
        let touched = Touched {
            file: None,
            folders: folders.into_changed(),
        };
        Ok((Code::Stored, Some(touched)))
    }

    fn prepare_upload(
        &self,
        name: Name,
        meta: FileMeta,
        compare: Option<&Offer>,
        resume_for: Option<&Principal>,
        buf: &mut [u8],
    ) -> Result<Prepared, Refusal> {
        self.space
            .prepare_upload(name, meta, compare, resume_for, buf)
    }

    /// Durable, the folder opened beneath the root (see [`FolderLookout`]). Without flushes
    /// there is nothing to wait for, and the lookups would only be more system calls.
    fn lookout(&self, folder: &str) -> Option<Box<dyn Lookout>> {
        if !self.durable() {
            return None;
        }
        let fd = self.space.root.open_folder(folder).ok()?;
        Some(Box::new(FolderLookout(fd)))
    }

    /// The held partial (see [`Partial`]) or a fresh file (see [`Space::body_file`]). A new
    /// file gets the offered mode less the umask (as with `cp` or `rsync` without `-p`); a
    /// partial also gets owner read and write, so that it can be resumed, until it is
    /// published.
    fn start_body(&self, up: &mut Upload, from: u64) -> io::Result<Box<dyn Incoming>> {
        if let Some(reserved) = up.take_reservation() {
            return reserved.start(from);
        }
        let (held, folder) = self.space.body_file(&up.name, file_mode(up.mode))?;
        Ok(Box::new(Working {
            space: Arc::clone(&self.space),
            held,
            folder,
            resumable: false,
            len: 0,
            behind: self.durable().then(|| WriteBehind::new(0)),
        }))
    }

    fn offer_download(&self, name: Name) -> Result<Offered, Refusal> {
        self.space.offer_download(name)
    }

    fn open_download(&self, offered: Offered) -> Result<Box<dyn Outgoing>, String> {
        Ok(Box::new(self.space.open_download(offered)?))
    }

    fn list(&self, path: Option<Name>, recursive: bool) -> Result<Box<dyn Listing>, Refusal> {
        Ok(Box::new(self.space.list(path, recursive)?))
    }
}

impl Space {
    /// See [`Store::open`].
    fn open(config: &Config) -> io::Result<Self> {
        fs::create_dir_all(&config.dir)?;
        let path = config.dir.canonicalize()?;
        let root = Root::open(&path)?;
        let state = State::open(&root, &path, config.partial_ttl)?;
        let durability: Option<Arc<dyn Durability>> = if config.fsync {
            Some(Arc::new(Flusher::new(root.fd().try_clone_to_owned()?)))
        } else {
            None
        };
        Ok(Self {
            root,
            state,
            path,
            overwrite: config.overwrite,
            max_file_size: config.max_file_size,
            durability,
        })
    }

    /// The same space confined to the folder `folder` within it (made if missing, resolved
    /// under the root's descriptor), with a state folder of its own: a credential's folder.
    fn sub_space(&self, folder: &Name, config: &Config) -> io::Result<Self> {
        let root = self.root.sub_root(folder.as_str())?;
        let path = self.path.join(folder.as_str());
        let state = State::open(&root, &path, config.partial_ttl)?;
        Ok(Self {
            root,
            state,
            path,
            overwrite: self.overwrite,
            max_file_size: self.max_file_size,
            durability: self.durability.clone(),
        })
    }

    /// Whether stored files are flushed to disk before they are acknowledged.
    fn durable(&self) -> bool {
        self.durability.is_some()
    }

    /// Whether the open folder `fd` is one of the server's state folders (a local user may
    /// have renamed it to a name clients can give); one `fstat`.
    fn is_state(&self, fd: &OwnedFd) -> bool {
        rfs::fstat(fd).is_ok_and(|st| self.state.ids().holds(&st))
    }

    /// [`Self::is_state`] where another local user can rename the state folder (see
    /// [`State::guards_folders`]); elsewhere no client name leads into it, and an upload's
    /// folder costs no `fstat`.
    fn guarded_is_state(&self, fd: &OwnedFd) -> bool {
        self.state.guards_folders() && self.is_state(fd)
    }

    /// Refuses an announced size over the per-file limit.
    fn check_size(&self, name: &Name, size: Option<u64>) -> Result<(), Refusal> {
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

    /// Decides an offer with one lookup of its name (see [`Self::look`]): unchanged against
    /// `compare` (see [`Self::unchanged`]), or checked against the policies and, with
    /// `resume_for`, with the partial that principal kept taken (opened and locked). An upload
    /// comes with a hasher over the bytes already held (its length is the resume offset),
    /// hashed through the descriptor the body will extend.
    fn prepare_upload(
        self: &Arc<Self>,
        name: Name,
        meta: FileMeta,
        compare: Option<&Offer>,
        resume_for: Option<&Principal>,
        buf: &mut [u8],
    ) -> Result<Prepared, Refusal> {
        let (size, mode) = (meta.size, meta.mode);
        check_reserved(&name)?;
        let held = self.look(&name);
        if let (Some(offer), Ok(Some(st))) = (compare, &held) {
            if let Some(held_as) = self.unchanged_as(&name, offer, st, buf)? {
                return Ok(Prepared::Unchanged(held_as));
            }
        }
        self.check_size(&name, size)?;
        self.check_destination(&name, held?)?;
        let partial = match (resume_for, size) {
            (Some(owner), Some(size)) if size >= RESUME_MIN => {
                let mode = file_mode(mode) | OWNER_RW;
                match self.state.partial(&owner.own(name.as_str()), size, mode) {
                    Ok(Some(held)) => Some(held),
                    Ok(None) => return Err(Refusal::busy(&name)),
                    Err(e) => return Err(Refusal::io("cannot open the kept partial upload", &e)),
                }
            }
            _ => None,
        };
        let prefix = match (&partial, size) {
            (Some(held), Some(size)) => hash_held(held, size),
            _ => Hasher::new(),
        };
        if let Some(size) = size.filter(|s| *s >= FREE_SPACE_CHECK_MIN) {
            let needed = size - prefix.len();
            if let Some(free) = self.state.free_space() {
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
        let reserved = partial.map(|held| {
            let space = Arc::clone(self);
            Box::new(Partial { space, held, size }) as Box<dyn Reservation>
        });
        Ok(Prepared::Upload(Upload::new(name, meta, reserved), prefix))
    }

    /// A fresh file, with `mode` less the umask, for the body of an upload of `name` that is
    /// not kept for resume: an unnamed file (see [`unnamed`]) in the nearest folder of its
    /// path that exists, resolved from the root's descriptor as every name is, else a named
    /// temp file in the state folder (also when resolving meets a link or a file: publishing
    /// reports it). With it, the folder it is published in when that is where it was made:
    /// one resolution of the folder serves the body's creation and its `linkat`.
    fn body_file(&self, name: &Name, mode: u32) -> io::Result<(Held, Option<OwnedFd>)> {
        if self.state.makes_unnamed() {
            let parents = split(name.as_str()).0;
            let mut folder = parents;
            loop {
                match self.root.open_folder(folder) {
                    // Refused when published (see Self::publish).
                    Ok(dir) if self.guarded_is_state(&dir) => break,
                    Ok(dir) => match self.state.unnamed(dir.as_fd(), mode) {
                        Ok(Some(held)) => return Ok((held, (folder == parents).then_some(dir))),
                        Ok(None) | Err(_) => break,
                    },
                    Err(e) if e.kind() == io::ErrorKind::NotFound && !folder.is_empty() => {
                        folder = split(folder).0;
                    }
                    Err(_) => break,
                }
            }
        }
        Ok((self.state.temp_file(mode)?, None))
    }

    /// Looks `name` up once, whatever is there (a link at its end is opened as the link
    /// itself, with `O_PATH`: no side effect), following no link on the way: what is there,
    /// or `None` when the file, or a folder on its way, does not exist (one failed system
    /// call per new file).
    fn look(&self, name: &Name) -> Result<Option<Stat>, Refusal> {
        let fd = match self.root.open_path(name.as_str()) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(unresolved(name, &e, true)),
        };
        let st =
            rfs::fstat(&fd).map_err(|e| Refusal::io("cannot check the destination", &e.into()))?;
        if self.state.ids().holds(&st) {
            return Err(state_refusal(name));
        }
        Ok(Some(st))
    }

    /// Refuses an upload whose destination `held` (see [`Self::look`]) is a link, a folder,
    /// or (under [`Overwrite::Refuse`]) an existing file; a missing folder is fine and is not
    /// made.
    fn check_destination(&self, name: &Name, held: Option<Stat>) -> Result<(), Refusal> {
        let Some(st) = held else {
            return Ok(());
        };
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Symlink => Err(Refusal::link(name, Code::BadName)),
            FileType::Directory => Err(Refusal::new(
                Code::Exists,
                format!("{name} is a folder on the server"),
            )),
            _ if self.overwrite == Overwrite::Refuse => Err(Refusal::new(
                Code::Exists,
                "a file of that name exists (server policy: refuse)",
            )),
            _ => Ok(()),
        }
    }

    /// Describes `name` for a download's OFFER: a regular file under the root, reached
    /// without links and without a reserved component. The file is closed again; see
    /// [`Self::open_download`].
    fn offer_download(&self, name: Name) -> Result<Offered, Refusal> {
        let file = self.open_served(&name)?;
        let meta = file
            .metadata()
            .map_err(|e| Refusal::io("cannot read the file", &e))?;
        let mtime = meta.modified().ok().and_then(to_timestamp);
        let digest = self.served_digest(&file);
        let info = FileInfo {
            name,
            size: Some(meta.len()),
            mtime,
            mode: Some(meta.mode() & MODE_MASK),
        };
        Ok(Offered::new(info, digest, version(&meta)))
    }

    /// Opens the file of an accepted download again, the same safe way; the reason for the
    /// client if it is gone or no longer the file that was offered.
    fn open_download(&self, offered: Offered) -> Result<Download, String> {
        let name = &offered.info.name;
        let file = self.open_served(name).map_err(|r| r.reason)?;
        let meta = file
            .metadata()
            .map_err(|e| format!("the server cannot read {name}: {e}"))?;
        if version(&meta) != offered.version() {
            return Err(format!(
                "{name} changed on the server since it was offered; ask for it again"
            ));
        }
        Ok(Download {
            file,
            info: offered.info,
        })
    }

    /// Opens `name` for reading if it is a regular file under the root: no link on its path,
    /// no reserved component; a FIFO or device is never waited on.
    fn open_served(&self, name: &Name) -> Result<File, Refusal> {
        check_reserved(name)?;
        let not_found = || Refusal::new(Code::NotFound, format!("{name}: no such file"));
        let flags = OFlags::RDONLY | OFlags::NONBLOCK;
        let fd = self
            .root
            .open_beneath(name.as_str(), flags, Mode::empty())
            .map_err(|e| unresolved(name, &e, false))?;
        match root::regular(fd) {
            Ok(Ok((_, st))) if self.state.ids().holds(&st) => Err(state_refusal(name)),
            Ok(Ok((file, _))) => Ok(file),
            Ok(Err(FileType::Directory)) => Err(Refusal::new(
                Code::NotFound,
                format!(
                    "{name} is a folder, and a GET fetches one file: list the folder for its files"
                ),
            )),
            Ok(Err(_)) => Err(not_found()),
            Err(e) => Err(Refusal::io("cannot read the file", &e)),
        }
    }

    /// Publishes the received file `held` (described by `body`) under the overwrite policy;
    /// returns the stored name (which differs from the offered one under
    /// [`Overwrite::Rename`]). Folders on its path are made now (unless the body holds its
    /// folder open already), and removed again if the file cannot be published. The `digest`
    /// of its bytes goes into the digest cache (for a file of at least [`RECORD_MIN`] bytes),
    /// so that a later `--checksum` check reads nothing. Nothing is flushed here: the
    /// connection's batch is, by [`Storage::flush`], before its RESULT; with the name, returns
    /// what that flush must cover (`None`: untracked, or not durable; with `track` false,
    /// untracked: the file's descriptor is not duplicated for a flush that covers everything
    /// anyway).
    fn publish(
        &self,
        held: &mut Held,
        body: Body,
        up: &Upload,
        digest: Digest,
        track: bool,
    ) -> Result<(String, Option<Touched>), Refusal> {
        let fail = |e: &io::Error| Refusal::io("cannot store the file", e);
        let file = held.file();
        if body.resumable && file_mode(up.mode) & OWNER_RW != OWNER_RW {
            // Drop the owner bits the partial only had for resuming (the umask stays applied).
            let created = file.metadata().map_err(|e| fail(&e))?.mode() & MODE_MASK;
            file.set_permissions(Permissions::from_mode(created & file_mode(up.mode)))
                .map_err(|e| fail(&e))?;
        }
        if let Some(t) = up.mtime.and_then(from_timestamp) {
            file.set_modified(t).map_err(|e| fail(&e))?;
        }
        let (parents, file_name) = split(up.name.as_str());
        let mut folders = match body.folder {
            // Checked when the body started (see Self::body_file).
            Some(fd) => Folders::existing(fd),
            None => {
                let folders = self
                    .root
                    .make_folders(parents)
                    .map_err(|e| unresolved(&up.name, &e, true))?;
                if self.guarded_is_state(folders.deepest_found()) {
                    let mut folders = folders;
                    folders.remove_created();
                    return Err(state_refusal(&up.name));
                }
                folders
            }
        };
        let stored = match self.place(held, &folders.fd, file_name, &up.name) {
            Ok(stored) => stored,
            Err(r) => {
                folders.remove_created();
                return Err(r);
            }
        };
        // After the rename, which moves the ctime the cache is keyed by.
        if body.len >= RECORD_MIN {
            if let Ok(st) = rfs::fstat(held.file()) {
                self.state.digests.put(&FileKey::of(&st), &digest);
            }
        }
        let touched = (self.durable() && track).then(|| {
            held.file().try_clone().ok().map(|file| Touched {
                file: Some(file),
                folders: folders.into_changed(),
            })
        });
        let name = if parents.is_empty() {
            stored
        } else {
            format!("{parents}/{stored}")
        };
        Ok((name, touched.flatten()))
    }

    /// The unchanged-file check of PROTOCOL.md §4.8 for the file offer `offer` under `name`,
    /// where [`Self::look`] found `st`: whether it is a regular file with the offered size and
    /// mtime (compared at the precision the file system keeps, see [`probe`]) or, when the
    /// offer carries a digest, that digest (see [`Self::held_digest`]). Anything else at the
    /// name (a link, a folder, a special file) is not unchanged: the policies answer it.
    fn unchanged(
        &self,
        name: &Name,
        offer: &Offer,
        st: &Stat,
        buf: &mut [u8],
    ) -> Result<bool, Refusal> {
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Ok(false);
        }
        let held = listing::entry(EntryKind::File, name.clone(), st);
        let mtime = match offer.mtime {
            Some(m) if self.state.probed.same_mtime(held.mtime, m) => m,
            _ => held.mtime,
        };
        offer.unchanged(held.size, mtime, || self.held_digest(name, st, buf))
    }

    /// Where the file offered as `name` is held unchanged (PROTOCOL.md §4.8), where
    /// [`Self::look`] found `st`: `name` itself (see [`Self::unchanged`]) or, under
    /// [`Overwrite::Rename`] when `name` holds another regular file, the copy of it the policy
    /// made that holds it (see [`unchanged_copy`]). A copy that cannot be looked at or read
    /// is not unchanged.
    fn unchanged_as(
        &self,
        name: &Name,
        offer: &Offer,
        st: &Stat,
        buf: &mut [u8],
    ) -> Result<Option<String>, Refusal> {
        if self.unchanged(name, offer, st, buf)? {
            return Ok(Some(name.to_string()));
        }
        let regular = FileType::from_raw_mode(st.st_mode) == FileType::RegularFile;
        if self.overwrite != Overwrite::Rename || !regular {
            return Ok(None);
        }
        let copy = unchanged_copy(
            name,
            |copy| self.look(copy).ok().flatten(),
            |copy, st| self.unchanged(copy, offer, st, buf) == Ok(true),
        );
        Ok(copy.map(|copy| copy.to_string()))
    }

    /// The digest of the file held under `name`, described by `st`: from the digest cache
    /// (see [`Self::cached_digest`]), or hashed through `buf` (see [`Self::hash_file_held`]).
    fn held_digest(&self, name: &Name, st: &Stat, buf: &mut [u8]) -> Result<Digest, Refusal> {
        if let Some(d) = self.cached_digest(st) {
            return Ok(d);
        }
        let file = self.open_served(name)?;
        let (digest, _) = self
            .hash_file_held(&file, buf)
            .map_err(|e| Refusal::io("cannot read the file held under that name", &e))?;
        Ok(digest)
    }

    /// The digest of a file for a download's OFFER: from the digest cache, or hashed when the
    /// file is small (see [`RECORD_MIN`]) and did not change while it was read; `None`
    /// otherwise (a large file is not read twice for its OFFER).
    fn served_digest(&self, file: &File) -> Option<Digest> {
        let st = rfs::fstat(file).ok()?;
        if let Some(d) = self.cached_digest(&st) {
            return Some(d);
        }
        if u64::try_from(st.st_size).ok()? >= RECORD_MIN {
            return None;
        }
        let mut buf = [0u8; SMALL_BUF_LEN];
        match self.hash_file_held(file, &mut buf) {
            Ok((digest, true)) => Some(digest),
            _ => None,
        }
    }

    /// The digest the cache records for the file described by `st`; none is looked for a
    /// file below [`RECORD_MIN`] bytes (none is recorded).
    fn cached_digest(&self, st: &Stat) -> Option<Digest> {
        let large = u64::try_from(st.st_size).is_ok_and(|size| size >= RECORD_MIN);
        large.then(|| self.state.digests.get(&FileKey::of(st)))?
    }

    /// Hashes the open `file` through `buf`: its digest, and whether it did not change while
    /// it was read (then, for a file of at least [`RECORD_MIN`] bytes, the digest is
    /// recorded).
    fn hash_file_held(&self, file: &File, buf: &mut [u8]) -> io::Result<(Digest, bool)> {
        let before = rfs::fstat(file)?;
        let size = u64::try_from(before.st_size).unwrap_or(0);
        let hashed = hash_file(file, size, buf)?;
        let after = rfs::fstat(file)?;
        let digest = hashed.finalize();
        let key = FileKey::of(&after);
        let stable = key == FileKey::of(&before) && hashed.len() == size;
        if stable && size >= RECORD_MIN {
            self.state.digests.put(&key, &digest);
        }
        Ok((digest, stable))
    }

    /// Starts a listing of `path` (`None`: the root), which must be a folder or a regular
    /// file under the root, reached without links and without a reserved component.
    fn list(&self, path: Option<Name>, recursive: bool) -> Result<Lister, Refusal> {
        let Some(name) = path else {
            let dir = listing::read_dir(self.root.fd())
                .map_err(|e| Refusal::io("cannot read the storage folder", &e))?;
            return Ok(Lister::folder(dir, None, None, recursive, self.state.ids()));
        };
        check_reserved(&name)?;
        let fd = self
            .root
            .open_path(name.as_str())
            .map_err(|e| unresolved(&name, &e, false))?;
        let st = rfs::fstat(&fd).map_err(|e| Refusal::io("cannot look at it", &e.into()))?;
        if self.state.ids().holds(&st) {
            return Err(state_refusal(&name));
        }
        match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => Ok(Lister::file(listing::entry(EntryKind::File, name, &st))),
            FileType::Directory => {
                let dir = listing::read_dir(&fd)
                    .map_err(|e| Refusal::io("cannot read the folder", &e))?;
                let first = listing::entry(EntryKind::Folder, name.clone(), &st);
                let state = self.state.ids();
                Ok(Lister::folder(
                    dir,
                    Some(name),
                    Some(first),
                    recursive,
                    state,
                ))
            }
            FileType::Symlink => Err(Refusal::link(&name, Code::BadName)),
            _ => Err(Refusal::new(
                Code::NotFound,
                format!("{name} is neither a file nor a folder"),
            )),
        }
    }

    /// Moves the held file into `folder` under the overwrite policy; returns its name there.
    fn place(
        &self,
        held: &mut Held,
        folder: &OwnedFd,
        file_name: &str,
        name: &Name,
    ) -> Result<String, Refusal> {
        let fail = |e: &io::Error| Refusal::io("cannot store the file", e);
        let taken_meanwhile = || {
            Refusal::new(
                Code::Exists,
                format!("{name} was stored by someone else meanwhile"),
            )
        };
        match self.overwrite {
            Overwrite::Replace => held
                .rename_to(folder.as_fd(), file_name, true)
                .map(|()| file_name.to_owned())
                .map_err(|e| fail(&e)),
            Overwrite::Refuse => match held.rename_to(folder.as_fd(), file_name, false) {
                Ok(()) => Ok(file_name.to_owned()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(taken_meanwhile()),
                Err(e) => Err(fail(&e)),
            },
            Overwrite::Rename => {
                let no_free = || Refusal::new(Code::Exists, format!("{name} has no free name"));
                let taken = |n: u32| {
                    numbered(file_name, n).is_none_or(|c| {
                        !matches!(
                            rfs::statat(folder, c.as_str(), AtFlags::SYMLINK_NOFOLLOW),
                            Err(Errno::NOENT)
                        )
                    })
                };
                let mut n = 0;
                for _ in 0..=MAX_RENAME_RACES {
                    let candidate = numbered(file_name, n).ok_or_else(no_free)?;
                    match held.rename_to(folder.as_fd(), &candidate, false) {
                        Ok(()) => return Ok(candidate),
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                            n = first_free(n, taken).ok_or_else(no_free)?;
                        }
                        Err(e) => return Err(fail(&e)),
                    }
                }
                Err(taken_meanwhile())
            }
        }
    }
}

impl Reservation for Partial {
    /// Truncates the partial when `from` is 0, appends to it otherwise; durable, reserves the
    /// blocks of the rest (see [`preallocate`]).
    fn start(self: Box<Self>, from: u64) -> io::Result<Box<dyn Incoming>> {
        let Partial {
            space,
            mut held,
            size,
        } = *self;
        if from == 0 {
            empty(held.file())?;
        } else {
            let len = held.file().metadata()?.len();
            if len != from {
                return Err(io::Error::other(format!(
                    "the kept partial changed size ({len} bytes, expected {from})"
                )));
            }
        }
        if let (true, Some(size)) = (space.durable(), size) {
            preallocate(held.file(), from, size)?;
        }
        held.file_mut().seek(SeekFrom::Start(from))?;
        // From here a failed body is not kept (see Working::interrupt).
        held.set_fate(Fate::Delete);
        let behind = space.durable().then(|| WriteBehind::new(from));
        Ok(Box::new(Working {
            space,
            held,
            folder: None,
            resumable: true,
            len: from,
            behind,
        }))
    }
}

impl Incoming for Working {
    /// Appends body bytes; on a durable server, flushes them while more arrive (see
    /// [`WriteBehind`]).
    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.held.file_mut().write_all(data)?;
        self.len += data.len() as u64;
        if let Some(behind) = &mut self.behind {
            behind.wrote(self.held.file(), self.len);
        }
        Ok(())
    }

    /// Bytes in the file, including a resumed prefix.
    fn len(&self) -> u64 {
        self.len
    }

    /// The transfer stopped before its end: keep the bytes for resume when possible, delete
    /// them otherwise.
    fn interrupt(self: Box<Self>) -> bool {
        if !self.resumable || self.len == 0 {
            return false;
        }
        let Working {
            space, mut held, ..
        } = *self;
        held.set_fate(Fate::KeepUnlessEmpty);
        // Kept (and unlocked) first: a sweep past the cap may then count it.
        drop(held);
        space.state.partial_kept();
        true
    }

    fn publish(
        self: Box<Self>,
        up: &Upload,
        digest: Digest,
        track: bool,
    ) -> Result<(String, Option<Touched>), Refusal> {
        let Working {
            space,
            mut held,
            folder,
            resumable,
            len,
            ..
        } = *self;
        let body = Body {
            resumable,
            len,
            folder,
        };
        space.publish(&mut held, body, up, digest, track)
    }
}

impl Outgoing for Download {
    fn info(&self) -> &FileInfo {
        &self.info
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read_at(buf, offset)
    }
}

/// What tells one version of a file from another: device, inode, size and mtime.
fn version(meta: &Metadata) -> String {
    let (dev, ino, size) = (meta.dev(), meta.ino(), meta.len());
    let (secs, nanos) = (meta.mtime(), meta.mtime_nsec());
    format!("{dev}:{ino}:{size}:{secs}.{nanos:09}")
}

/// The refusal of a name that leads to the server's state folder or its digest cache (which
/// a local user renamed: its own name is reserved).
fn state_refusal(name: &Name) -> Refusal {
    Refusal::new(
        Code::BadName,
        format!("{name}: the server's private state is there; it is never served, listed or changed, whatever its name"),
    )
}

/// The permission bits a stored file is created with, before the umask.
fn file_mode(offered: Option<u32>) -> u32 {
    offered.unwrap_or(DEFAULT_MODE) & MODE_MASK
}

/// A hasher over the held partial (at most `size` bytes), or an empty one if it cannot be
/// read (it is emptied then).
fn hash_held(held: &Held, size: u64) -> Hasher {
    let hashed = hash_file(held.file(), size, &mut vec![0u8; BUF_LEN]);
    hashed.unwrap_or_else(|e| {
        log::warn!("discarding an unreadable partial upload: {e}");
        let _ = empty(held.file());
        Hasher::new()
    })
}

/// Reserves the blocks of `file` from `from` to `size` at once (`fallocate`, its length left
/// as it is: what a partial holds stays what it holds), so that the write-behind's flushes of
/// a durable upload find them allocated: a 1 GiB upload to the durable server took
/// 0.47-0.53 s instead of 0.55-0.58 s here (6 rounds alternating; socat + `fsync` 0.51-0.54
/// s). A file system without `fallocate` goes without; a full disk fails the upload now
/// rather than part-way.
fn preallocate(file: &File, from: u64, size: u64) -> io::Result<()> {
    if size <= from {
        return Ok(());
    }
    match rfs::fallocate(file, rfs::FallocateFlags::KEEP_SIZE, from, size - from) {
        Err(e) if e == Errno::NOSPC || e == Errno::DQUOT => Err(e.into()),
        _ => Ok(()),
    }
}

/// Empties `file`, if it holds anything. A file already empty (a new partial) is left alone:
/// truncating it would make ext4 (`auto_da_alloc`) start writing all of its new bytes out
/// when it is closed, and wait for that: under `--no-fsync`, 0.23 s of a 1 GiB upload's
/// 0.65 s here.
fn empty(file: &File) -> io::Result<()> {
    if file.metadata()?.len() > 0 {
        file.set_len(0)?;
    }
    Ok(())
}

/// The first number above `lo` (known to be taken) whose name is free, assuming names are
/// taken from 1 upwards: gallops (`lo+1`, `lo+2`, `lo+4`, ...) to a free one, then
/// binary-searches the boundary, so finding `name (n)` costs O(log n) probes. `None` when
/// every number up to [`MAX_RENAME`] is taken.
pub(crate) fn first_free(lo: u32, mut taken: impl FnMut(u32) -> bool) -> Option<u32> {
    let (mut lo, mut step) = (lo, 1u32);
    let mut hi = loop {
        if lo >= MAX_RENAME {
            return None;
        }
        let probe = lo.saturating_add(step).min(MAX_RENAME);
        if !taken(probe) {
            break probe;
        }
        lo = probe;
        step = step.saturating_mul(2);
    };
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if taken(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some(hi)
}

/// Under [`Overwrite::Rename`], the copy of `name` (`name (k)`, see [`numbered_name`]) that
/// holds the offered file, if one does (see [`find_copy`]): `look(copy)` is what the copy
/// holds (`None`: nothing, or it cannot be looked at), `same(copy, held)` whether that is the
/// offered file (PROTOCOL.md §4.8).
pub(crate) fn unchanged_copy<H>(
    name: &Name,
    mut look: impl FnMut(&Name) -> Option<H>,
    mut same: impl FnMut(&Name, &H) -> bool,
) -> Option<Name> {
    let k = find_copy(
        |k| look(&numbered_name(name, k)?),
        |k, held| numbered_name(name, k).is_some_and(|copy| same(&copy, held)),
    )?;
    numbered_name(name, k)
}

/// The number `k` of the copy that holds the offered file (see [`unchanged_copy`]): the
/// copies the rename policy made are those below the first free number (found as the policy
/// finds it, see [`first_free`]; at most [`MAX_RENAME`]), looked at newest first (a re-run
/// most likely offers the last one stored). `look(k)` is what copy `k` holds, `same(k, held)`
/// whether that is the offered file. Costs O(log n) looks to find the newest of n copies, then
/// one look and one comparison per copy passed over.
fn find_copy<H>(
    mut look: impl FnMut(u32) -> Option<H>,
    mut same: impl FnMut(u32, &H) -> bool,
) -> Option<u32> {
    let free = first_free(0, |k| look(k).is_some()).unwrap_or(MAX_RENAME + 1);
    (1..free)
        .rev()
        .find(|&k| look(k).is_some_and(|held| same(k, &held)))
}

/// Hashes the first `limit` bytes of `file` (fewer if it ends first), reading through `buf`.
fn hash_file(file: &File, limit: u64, buf: &mut [u8]) -> io::Result<Hasher> {
    hash_at(|at, b| file.read_at(b, at), limit, buf)
}

/// `name (n).ext` for n > 0 (the extension starts at the first dot after the first byte);
/// `None` when that no longer fits in a component.
pub(crate) fn numbered(file_name: &str, n: u32) -> Option<String> {
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

/// The name of copy `n` of `name` under [`Overwrite::Rename`], in the same folder (see
/// [`numbered`]); `None` when that is no longer a valid name.
pub(crate) fn numbered_name(name: &Name, n: u32) -> Option<Name> {
    let (parents, file_name) = split(name.as_str());
    let file = numbered(file_name, n)?;
    let full = if parents.is_empty() {
        file
    } else {
        format!("{parents}/{file}")
    };
    Name::parse(&full).ok()
}

/// A `SystemTime` as a protocol timestamp (`None` when out of range).
pub(crate) fn to_timestamp(t: SystemTime) -> Option<Timestamp> {
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

    /// A store in `dir` under `overwrite`; with `named`, bodies are named temp files.
    fn store(dir: &Path, overwrite: Overwrite, named: bool) -> Store {
        let config = Config {
            dir: dir.to_path_buf(),
            overwrite,
            fsync: true,
            ..Config::default()
        };
        let mut store = Store::open(&config).unwrap();
        if named {
            store.force_named_temps();
        }
        store
    }

    /// Names in the state folder's `tmp/`.
    fn temps(dir: &Path) -> Vec<String> {
        fs::read_dir(dir.join(".ferry-state/tmp"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// Uploads `bytes` as `name` (not resumable), checking that nothing shows under any name
    /// in its folder (nor, for an unnamed body, in `tmp/`) before it is published; the name
    /// stored as, with what its flush must cover, or the refusal. `meanwhile` runs before the
    /// publish.
    fn put(
        store: &Store,
        name: &str,
        bytes: &[u8],
        meanwhile: impl FnOnce(),
    ) -> Result<(String, Option<Touched>), Refusal> {
        let meta = FileMeta {
            size: Some(bytes.len() as u64),
            mtime: Some(Timestamp {
                secs: 1_600_000_000,
                nanos: 5,
            }),
            mode: Some(0o640),
        };
        let n = Name::parse(name).unwrap();
        let (mut up, _) = store
            .prepare_upload(n, meta, None, Some(&Principal::Anonymous), &mut [])?
            .upload();
        assert!(!up.holds_reservation(), "small bodies are not kept");
        let root = store.space.path.clone();
        let before = (fs::read_dir(&root).unwrap().count(), temps(&root).len());
        let mut incoming = store.start_body(&mut up, 0).unwrap();
        incoming.write(bytes).unwrap();
        let during = (fs::read_dir(&root).unwrap().count(), temps(&root).len());
        let named = !store.space.state.makes_unnamed();
        assert_eq!(during, (before.0, before.1 + usize::from(named)));
        meanwhile();
        incoming.publish(&up, Digest::of(bytes), true)
    }

    #[test]
    fn looking_names_up_ahead_makes_and_changes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let store = store(root, Overwrite::Refuse, false);
        put(&store, "d/held.txt", b"held", || {}).unwrap();
        // Every path under the root with its change and modification times.
        fn tree(dir: &Path, out: &mut Vec<(PathBuf, [i64; 4])>) {
            for e in fs::read_dir(dir).unwrap() {
                let path = e.unwrap().path();
                let meta = fs::symlink_metadata(&path).unwrap();
                let times = [
                    meta.ctime(),
                    meta.ctime_nsec(),
                    meta.mtime(),
                    meta.mtime_nsec(),
                ];
                out.push((path.clone(), times));
                if meta.is_dir() {
                    tree(&path, out);
                }
            }
        }
        let tree = || {
            let mut out = Vec::new();
            tree(root, &mut out);
            out.sort();
            out
        };
        let before = tree();
        // Without flushes there is no wait to spare, and no lookout.
        let plain = Config {
            dir: root.join("plain"),
            fsync: false,
            ..Config::default()
        };
        assert!(Store::open(&plain).unwrap().lookout("").is_none());
        fs::remove_dir_all(root.join("plain")).unwrap();
        // A missing folder has no lookout; the top and "d" have.
        assert!(store.lookout("e").is_none());
        assert!(store.lookout("d/held.txt").is_none());
        let (top, d) = (store.lookout("").unwrap(), store.lookout("d").unwrap());
        // Missing, held, a folder, a name past a file.
        for leaf in ["new.txt", "held.txt", "d", "held.txt/x"] {
            top.look(leaf);
            d.look(leaf);
        }
        assert_eq!(tree(), before);
        // And the name looked up ahead is stored as any other.
        assert_eq!(
            put(&store, "d/new.txt", b"new", || {}).unwrap().0,
            "d/new.txt"
        );
    }

    #[test]
    fn every_policy_publishes_unnamed_and_named_bodies_and_leaves_no_temp_file() {
        // Unnamed bodies resolved by openat2 and by the component walk, and named ones.
        for (named, walk) in [(false, false), (false, true), (true, false)] {
            for policy in [Overwrite::Replace, Overwrite::Refuse, Overwrite::Rename] {
                let tmp = tempfile::tempdir().unwrap();
                let root = tmp.path();
                let store = store(root, policy, named);
                if walk {
                    store.space.root.force_walk();
                }
                let case = format!("{policy:?}, named temps: {named}, walk: {walk}");
                let (stored, touched) = put(&store, "d/e/a.txt", b"one", || {}).unwrap();
                assert_eq!(stored, "d/e/a.txt", "{case}");
                let touched = touched.expect("durable: the flush covers it");
                assert!(
                    touched.file.is_some() && touched.folders.len() == 3,
                    "{case}"
                );
                let meta = fs::metadata(root.join("d/e/a.txt")).unwrap();
                let umask = store.space.state.probed.umask;
                assert_eq!(meta.mode() & 0o777, 0o640 & !umask, "{case}");
                assert_eq!((meta.mtime(), meta.mtime_nsec()), (1_600_000_000, 5));

                // A file that lands at the name while the body is received (a second server,
                // a local user; a hard link to a file elsewhere, say).
                let outside = root.join("outside");
                fs::write(&outside, b"theirs").unwrap();
                let second = put(&store, "d/e/b.txt", b"two", || {
                    fs::hard_link(&outside, root.join("d/e/b.txt")).unwrap();
                });
                match policy {
                    Overwrite::Replace => {
                        assert_eq!(second.unwrap().0, "d/e/b.txt");
                        assert_eq!(fs::read(root.join("d/e/b.txt")).unwrap(), b"two");
                    }
                    Overwrite::Refuse => {
                        assert_eq!(second.unwrap_err().code, Code::Exists, "{case}");
                        assert_eq!(fs::read(root.join("d/e/b.txt")).unwrap(), b"theirs");
                    }
                    Overwrite::Rename => {
                        assert_eq!(second.unwrap().0, "d/e/b (1).txt", "{case}");
                        assert_eq!(fs::read(root.join("d/e/b (1).txt")).unwrap(), b"two");
                    }
                }
                assert_eq!(fs::read(&outside).unwrap(), b"theirs", "{case}");
                // Offered again once the name is taken: policy decides at the offer.
                let third = put(&store, "d/e/a.txt", b"three", || {});
                match policy {
                    Overwrite::Replace => assert_eq!(third.unwrap().0, "d/e/a.txt"),
                    Overwrite::Refuse => assert_eq!(third.unwrap_err().code, Code::Exists),
                    Overwrite::Rename => assert_eq!(third.unwrap().0, "d/e/a (1).txt"),
                }
                // A body into a folder not made yet, and one at the root.
                put(&store, "new/deep/c", b"four", || {}).unwrap();
                put(&store, "top", b"five", || {}).unwrap();
                assert_eq!(fs::read(root.join("new/deep/c")).unwrap(), b"four");
                assert!(temps(root).is_empty(), "{case}: {:?}", temps(root));
            }
        }
    }

    /// The folder a body was made in is resolved once for that body and trusted by no later
    /// one: renamed away while a body is received, the body is linked in it (where it was
    /// made, see SECURITY.md "Known limits"); the next file of the same folder resolves the
    /// name again and lands in the folder now at `d`, never in the moved one.
    #[test]
    fn a_folder_renamed_away_between_two_files_is_not_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let store = store(root, Overwrite::Refuse, false);
        if !store.space.state.makes_unnamed() {
            eprintln!("SKIPPED: unnamed files are not available here");
            return;
        }
        put(&store, "d/one", b"one", || {}).unwrap();
        let moved = || fs::rename(root.join("d"), root.join("d-was")).unwrap();
        let (stored, _) = put(&store, "d/two", b"two", moved).unwrap();
        assert_eq!(stored, "d/two");
        assert_eq!(fs::read(root.join("d-was/two")).unwrap(), b"two");
        // The next file: `d` is gone, so it is made again and the file lands there.
        put(&store, "d/three", b"three", || {}).unwrap();
        assert_eq!(fs::read(root.join("d/three")).unwrap(), b"three");
        assert!(!root.join("d-was/three").exists());
        // A folder swapped for a link between two files: refused, nothing lands behind it.
        fs::rename(root.join("d"), root.join("d-again")).unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("d")).unwrap();
        let meta = FileMeta::default();
        let n = Name::parse("d/four").unwrap();
        let refused = store.prepare_upload(n, meta, None, None, &mut []);
        assert_eq!(refused.unwrap_err().code, Code::BadName);
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    /// Offers `name` (resumable, 2 MiB), receives one body byte and cuts the upload off:
    /// a partial kept for resume.
    fn cut_upload(store: &Store, name: &str) {
        let meta = FileMeta {
            size: Some(2 << 20),
            ..FileMeta::default()
        };
        let n = Name::parse(name).unwrap();
        let (mut up, _) = store
            .prepare_upload(n, meta, None, Some(&Principal::Anonymous), &mut [])
            .unwrap()
            .upload();
        let mut incoming = store.start_body(&mut up, 0).unwrap();
        incoming.write(b"x").unwrap();
        assert!(incoming.interrupt(), "kept for resume");
    }

    fn partials(dir: &Path) -> usize {
        fs::read_dir(dir.join(".ferry-state/partials"))
            .unwrap()
            .count()
    }

    /// A durable upload's partial has the blocks of its whole body reserved from its start,
    /// its length still what it holds (resume reads the length), also once it is kept.
    #[test]
    fn a_durable_partial_reserves_its_body_and_keeps_its_length() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let probe = File::create(tmp.path().join("probe")).unwrap();
        if rfs::fallocate(&probe, rfs::FallocateFlags::KEEP_SIZE, 0, 4096).is_err() {
            println!("SKIPPED: this file system has no fallocate");
            return;
        }
        let store = store(tmp.path(), Overwrite::Refuse, false);
        cut_upload(&store, "big.bin");
        let dir = tmp.path().join(".ferry-state/partials");
        let partial = fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path();
        let m = fs::metadata(&partial).unwrap();
        assert_eq!(m.len(), 1, "the length is what it holds");
        assert!(m.blocks() * 512 >= 2 << 20, "{} blocks", m.blocks());
    }

    #[test]
    fn partials_kept_past_the_cap_do_not_accumulate() {
        let tmp = tempfile::tempdir().unwrap();
        let store = store(tmp.path(), Overwrite::Refuse, false);
        for i in 0..state::MAX_PARTIALS + 200 {
            cut_upload(&store, &format!("spam/p{i}"));
            assert!(partials(tmp.path()) <= state::MAX_PARTIALS, "after {i}");
        }
        // The latest stays for its resume.
        let n = Name::parse(&format!("spam/p{}", state::MAX_PARTIALS + 199)).unwrap();
        let meta = FileMeta {
            size: Some(2 << 20),
            ..FileMeta::default()
        };
        let (_, prefix) = store
            .prepare_upload(n, meta, None, Some(&Principal::Anonymous), &mut [])
            .unwrap()
            .upload();
        assert_eq!(prefix.len(), 1);
    }

    #[test]
    fn the_janitor_removes_expired_partials_without_a_restart() {
        let tmp = tempfile::tempdir().unwrap();
        let config = Config {
            dir: tmp.path().to_path_buf(),
            partial_ttl: Some(Duration::from_secs(3600)),
            ..Config::default()
        };
        let tick = Duration::from_millis(20);
        let store = Store::with_janitor(Space::open(&config).unwrap(), tick, tick).unwrap();
        cut_upload(&store, "old.bin");
        cut_upload(&store, "new.bin");
        let dir = tmp.path().join(".ferry-state/partials");
        let old = dir.join(state::partial_name(
            &Principal::Anonymous.own("old.bin"),
            2 << 20,
        ));
        File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(SystemTime::now() - Duration::from_secs(7200))
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while old.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(tick);
        }
        assert!(!old.exists(), "expired, swept while running");
        assert_eq!(partials(tmp.path()), 1, "the fresh one stays");
        drop(store);
    }

    /// A local user renamed the state folder to a name clients can give, and made another at
    /// its name: the moved folder is not listed, served, stored into or changed, whatever
    /// the root's mode; uploads into it are refused where the root lets others rename.
    #[test]
    fn a_renamed_state_folder_is_never_listed_served_or_stored_into() {
        for mode in [0o755, 0o777] {
            let tmp = tempfile::tempdir().unwrap();
            let root = tmp.path();
            fs::set_permissions(root, Permissions::from_mode(mode)).unwrap();
            let config = Config {
                dir: root.to_path_buf(),
                overwrite: Overwrite::Replace,
                ..Config::default()
            };
            // A janitor that does not move the state folder back during the test.
            let hour = Duration::from_secs(3600);
            let store = Store::with_janitor(Space::open(&config).unwrap(), hour, hour).unwrap();
            put(&store, "kept.txt", b"kept", || {}).unwrap();
            fs::rename(root.join(".ferry-state"), root.join("stolen")).unwrap();
            fs::create_dir(root.join(".ferry-state")).unwrap();
            let name = |s: &str| Name::parse(s).unwrap();
            let bad = |r: Result<_, Refusal>| r.err().map(|r| r.code);
            let put = |n: &str, bytes: &[u8]| -> Result<(), Refusal> {
                let (mut up, _) = store
                    .prepare_upload(name(n), FileMeta::default(), None, None, &mut [])?
                    .upload();
                let mut incoming = store.start_body(&mut up, 0).unwrap();
                incoming.write(bytes).unwrap();
                incoming.publish(&up, Digest::of(bytes), false).map(|_| ())
            };
            let mut all = store.list(None, true).unwrap();
            let mut listed = Vec::new();
            while let Some(e) = all.next_entry() {
                listed.push(e.name.as_str().to_owned());
            }
            assert_eq!(listed, ["kept.txt"], "mode {mode:o}");
            for path in ["stolen", "stolen/tmp", "stolen/partials", "stolen/digests"] {
                let listing = store.list(Some(name(path)), true).map(|_| ());
                assert_eq!(bad(listing), Some(Code::BadName), "{path}");
            }
            let got = store.offer_download(name("stolen/digests")).map(|_| ());
            assert_eq!(bad(got), Some(Code::BadName));
            let up = put("stolen/digests", b"junk");
            assert_eq!(bad(up), Some(Code::BadName), "replacing the digest cache");
            let folder = store.make_folder(&name("stolen/tmp"), Some(0o777), None, true);
            assert_eq!(bad(folder.map(|_| ())), Some(Code::BadName));
            let inside = store.make_folder(&name("stolen/new"), None, None, true);
            assert_eq!(bad(inside.map(|_| ())), Some(Code::BadName));
            // Where others can rename in the root, every upload's folder is checked.
            if mode == 0o777 {
                for n in ["stolen/new.txt", "stolen/partials/x", "stolen/deep/er/x"] {
                    assert_eq!(bad(put(n, b"new")), Some(Code::BadName), "{n}");
                }
                assert!(!root.join("stolen/deep").exists(), "no folder made inside");
            }
            let st = fs::metadata(root.join("stolen")).unwrap();
            assert_eq!(st.mode() & 0o777, 0o700, "never chmodded");
        }
    }

    #[test]
    fn a_body_dropped_before_its_publish_leaves_nothing() {
        for named in [false, true] {
            let tmp = tempfile::tempdir().unwrap();
            let store = store(tmp.path(), Overwrite::Refuse, named);
            let n = Name::parse("d/x").unwrap();
            let (mut up, _) = store
                .prepare_upload(
                    n,
                    FileMeta::default(),
                    None,
                    Some(&Principal::Anonymous),
                    &mut [],
                )
                .unwrap()
                .upload();
            let mut incoming = store.start_body(&mut up, 0).unwrap();
            incoming.write(b"cut").unwrap();
            assert!(!incoming.interrupt(), "not kept");
            let left: Vec<_> = fs::read_dir(tmp.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(left, [".ferry-state"], "named temps: {named}");
            assert!(temps(tmp.path()).is_empty(), "named temps: {named}");
        }
    }

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
    fn a_free_rename_number_costs_logarithmic_probes() {
        for last_taken in [1u32, 2, 3, 100, 2000, MAX_RENAME - 1] {
            let mut probes = 0;
            let n = first_free(0, |k| {
                probes += 1;
                k <= last_taken
            });
            assert_eq!(n, Some(last_taken + 1));
            let log2 = 32 - last_taken.leading_zeros();
            assert!(probes <= 2 * log2 + 2, "{probes} probes for {last_taken}");
        }
        // A race: the number found was taken meanwhile; the search goes on above it.
        assert_eq!(first_free(7, |k| k <= 9), Some(10));
        assert_eq!(first_free(0, |_| true), None);
    }

    #[test]
    fn numbered_names_keep_their_folder() {
        let name = Name::parse("d/e/b.txt").unwrap();
        assert_eq!(numbered_name(&name, 0), Some(name.clone()));
        let copy = numbered_name(&name, 12).unwrap();
        assert_eq!(copy.as_str(), "d/e/b (12).txt");
        let long = Name::parse(&format!("d/{}", "x".repeat(255))).unwrap();
        assert_eq!(numbered_name(&long, 1), None);
        // The copy holding the offered file is named as the policy names it.
        let held = ["d/e/b.txt", "d/e/b (1).txt", "d/e/b (2).txt"];
        let copy = unchanged_copy(
            &name,
            |copy| held.contains(&copy.as_str()).then_some(copy.to_string()),
            |copy, held| copy.as_str() == held && held.ends_with("(1).txt"),
        );
        assert_eq!(
            copy.map(|c| c.to_string()).as_deref(),
            Some("d/e/b (1).txt")
        );
    }

    #[test]
    fn the_copy_holding_the_offered_file_is_found_newest_first_within_the_policy_s_bound() {
        // Copies 1..=n are held; copy `hit` holds the offered file.
        let find = |n: u32, hit: Option<u32>| {
            let (mut looks, mut compared) = (0u32, Vec::new());
            let found = find_copy(
                |k| {
                    looks += 1;
                    (k <= n).then_some(k)
                },
                |k, held| {
                    assert_eq!(k, *held);
                    compared.push(k);
                    Some(k) == hit
                },
            );
            (found, looks, compared)
        };
        // No copy: one look.
        assert_eq!(find(0, None), (None, 1, vec![]));
        // The newest copy holds it: found first, after the search for the newest.
        let (found, looks, compared) = find(1000, Some(1000));
        assert_eq!((found, compared), (Some(1000), vec![1000]));
        assert!(looks <= 2 * 10 + 3, "{looks} looks");
        // An older one: the copies after it are passed over, one look and one comparison each.
        let (found, _, compared) = find(5, Some(2));
        assert_eq!((found, compared), (Some(2), vec![5, 4, 3, 2]));
        // None holds it: each copy is compared once.
        let (found, _, compared) = find(3, None);
        assert_eq!((found, compared), (None, vec![3, 2, 1]));
        // Every number taken: no more than the policy's bound.
        let (found, _, compared) = find(u32::MAX, None);
        assert_eq!((found, compared.len()), (None, MAX_RENAME as usize));
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
}
