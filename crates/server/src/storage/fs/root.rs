//! The directory-descriptor layer: the storage folder is opened once, and every name under it
//! is resolved relative to that descriptor, never by path string, so that a local user who
//! swaps a folder for a symbolic link (at any moment) cannot send the server outside it.
//!
//! Resolution uses `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`
//! where the kernel has it (Linux 5.6+), else a walk that opens one component at a time with
//! `O_NOFOLLOW | O_DIRECTORY`. Either way a symbolic link anywhere on the path fails with
//! `ELOOP` and a component that is not a folder with `ENOTDIR`. Names reaching this layer are
//! validated [`ferry_proto::Name`]s: no `.`, `..` or empty components.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{self as rfs, AtFlags, Dir, FileType, Mode, OFlags, ResolveFlags, Stat};
use rustix::io::Errno;

use crate::paths::split;

/// Flags every folder on a path is opened with.
const FOLDER_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);
/// Permission bits of a folder made for an upload, before the umask (as `mkdir`).
pub(crate) const FOLDER_MODE: u32 = 0o777;
/// Times an `openat2` is retried when the kernel saw a rename race (`EAGAIN`).
const OPENAT2_RETRIES: usize = 4;

/// The storage folder, held open.
#[derive(Debug)]
pub(crate) struct Root {
    fd: OwnedFd,
    /// Whether `openat2` may be tried; cleared when the kernel lacks it.
    openat2: AtomicBool,
}

/// A folder made ready for a file: its descriptor, and the folders made to reach it (so that
/// they can be removed again if the file is not published after all).
#[derive(Debug)]
pub(crate) struct Folders {
    /// The folder that receives the file.
    pub fd: OwnedFd,
    /// Each folder this call created, as (descriptor of its parent, name), outermost first.
    created: Vec<(OwnedFd, String)>,
}

impl Root {
    /// Opens the folder at `path` (the operator's `--dir`, links in it followed).
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        let fd = rfs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Self {
            fd,
            openat2: AtomicBool::new(true),
        })
    }

    /// The folder `path` under this root (made if missing, following no link) as a root of
    /// its own: a credential's folder.
    pub(crate) fn sub_root(&self, path: &str) -> io::Result<Self> {
        Ok(Self {
            fd: self.make_folders(path)?.fd,
            openat2: AtomicBool::new(self.openat2.load(Ordering::Relaxed)),
        })
    }

    /// The descriptor of the storage folder.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Whether `path` (as [`Root::open`] follows it) is still this folder, and not another
    /// one since (the folder moved away, or deleted and made again), or nothing. `None` when
    /// this folder itself was deleted.
    pub(crate) fn is_at(&self, path: &Path) -> Option<bool> {
        let mine = rfs::fstat(&self.fd).ok()?;
        if mine.st_nlink == 0 {
            return None;
        }
        let there = rfs::stat(path).ok();
        Some(there.is_some_and(|st| (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)))
    }

    /// Makes every later resolution use the component walk, as on a kernel without `openat2`.
    #[cfg(test)]
    pub(crate) fn force_walk(&self) {
        self.openat2.store(false, Ordering::Relaxed);
    }

    /// Opens `path` (a validated name, `/`-separated) under the root with `flags`, following
    /// no symbolic link on the way or at the end.
    pub(crate) fn open_beneath(
        &self,
        path: &str,
        flags: OFlags,
        mode: Mode,
    ) -> io::Result<OwnedFd> {
        let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        if self.openat2.load(Ordering::Relaxed) {
            let how =
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
            let mut tries = 0;
            loop {
                match rfs::openat2(&self.fd, path, flags, mode, how) {
                    Err(Errno::NOSYS) => {
                        self.openat2.store(false, Ordering::Relaxed);
                        break;
                    }
                    Err(Errno::AGAIN) if tries < OPENAT2_RETRIES => tries += 1,
                    // A link opened as a folder shows as this too: the walk tells which.
                    Err(Errno::NOTDIR) => break,
                    other => return Ok(other?),
                }
            }
        }
        let (parents, last) = split(path);
        let folder = self.walk(parents)?;
        at_nofollow(&folder, last, flags, mode)
    }

    /// Opens the folder `path` under the root (`""`: the root itself) without creating it,
    /// following no link.
    pub(crate) fn open_folder(&self, path: &str) -> io::Result<OwnedFd> {
        if path.is_empty() {
            return Ok(rfs::openat(&self.fd, ".", FOLDER_FLAGS, Mode::empty())?);
        }
        self.open_beneath(path, FOLDER_FLAGS, Mode::empty())
    }

    /// Opens the folder `path` under the root, creating the missing folders one component at
    /// a time (each opened with `O_NOFOLLOW | O_DIRECTORY` after it is made).
    pub(crate) fn make_folders(&self, path: &str) -> io::Result<Folders> {
        match self.open_folder(path) {
            Ok(fd) => return Ok(Folders::existing(fd)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut made = Folders {
            fd: self.fd.try_clone()?,
            created: Vec::new(),
        };
        for part in path.split('/') {
            made.descend(part, FOLDER_MODE)?;
        }
        Ok(made)
    }

    /// Opens `path` under the root with `O_PATH` (no read, no side effect, whatever it is:
    /// a link at its end is opened as the link itself), following no link on the way.
    pub(crate) fn open_path(&self, path: &str) -> io::Result<OwnedFd> {
        self.open_beneath(path, OFlags::PATH, Mode::empty())
    }

    /// Opens the folders of `path` one by one from the root.
    fn walk(&self, path: &str) -> io::Result<OwnedFd> {
        let mut folder = self.fd.try_clone()?;
        if !path.is_empty() {
            for part in path.split('/') {
                folder = at_nofollow(&folder, part, FOLDER_FLAGS, Mode::empty())?;
            }
        }
        Ok(folder)
    }
}

impl Folders {
    /// The folder `fd`, opened already (none made).
    pub(crate) fn existing(fd: OwnedFd) -> Self {
        Self {
            fd,
            created: Vec::new(),
        }
    }

    /// Enters the folder `name` in the current one, making it with `mode` (less the umask)
    /// if it is missing, without following a link; whether it was made. On failure, the
    /// folders made so far are removed.
    pub(crate) fn descend(&mut self, name: &str, mode: u32) -> io::Result<bool> {
        let (next, fresh) = match at_nofollow(&self.fd, name, FOLDER_FLAGS, Mode::empty()) {
            Ok(fd) => (fd, false),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let fresh = match rfs::mkdirat(&self.fd, name, Mode::from_raw_mode(mode)) {
                    Ok(()) => true,
                    // Made by a concurrent upload meanwhile.
                    Err(Errno::EXIST) => false,
                    Err(e) => return Err(self.undo(e.into())),
                };
                match at_nofollow(&self.fd, name, FOLDER_FLAGS, Mode::empty()) {
                    Ok(fd) => (fd, fresh),
                    Err(e) => {
                        if fresh {
                            let _ = rfs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR);
                        }
                        return Err(self.undo(e));
                    }
                }
            }
            Err(e) => return Err(self.undo(e)),
        };
        let parent = std::mem::replace(&mut self.fd, next);
        if fresh {
            self.created.push((parent, name.to_owned()));
        }
        Ok(fresh)
    }

    /// The deepest folder on the path that was there already: the parent of the outermost
    /// folder this call made, or the folder itself.
    pub(crate) fn deepest_found(&self) -> &OwnedFd {
        self.created.first().map_or(&self.fd, |(parent, _)| parent)
    }

    /// The folders whose entries changed once a file or folder lands here: this one and
    /// the parents of those this call made (outermost first).
    pub(crate) fn into_changed(self) -> Vec<OwnedFd> {
        let mut changed: Vec<OwnedFd> = self.created.into_iter().map(|(p, _)| p).collect();
        changed.push(self.fd);
        changed
    }

    /// Removes the folders made so far and passes `e` on.
    fn undo(&mut self, e: io::Error) -> io::Error {
        self.remove_created();
        e
    }

    /// Removes the folders this call created, innermost first; best effort (a folder that
    /// something else has filled meanwhile stays).
    pub(crate) fn remove_created(&mut self) {
        while let Some((parent, name)) = self.created.pop() {
            if let Err(e) = rfs::unlinkat(&parent, name.as_str(), AtFlags::REMOVEDIR) {
                log::debug!("cannot remove the new folder {name}: {e}");
            }
        }
    }
}

/// Opens the folder `name` in `dir` (`"."`: `dir` itself) to read its entries, following no
/// link: a link there fails with `ELOOP` or `ENOTDIR`.
pub(crate) fn read_folder<P: rustix::path::Arg>(dir: BorrowedFd<'_>, name: P) -> io::Result<Dir> {
    let fd = rfs::openat(dir, name, FOLDER_FLAGS, Mode::empty())?;
    Ok(Dir::new(fd)?)
}

/// Opens the single component `name` in `dir` without following a link. A link opened as a
/// folder shows as `ENOTDIR`; it is reported as `ELOOP`, as `openat2` does.
fn at_nofollow(dir: &OwnedFd, name: &str, flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
    match rfs::openat(dir, name, flags | OFlags::NOFOLLOW | OFlags::CLOEXEC, mode) {
        Err(Errno::NOTDIR) if is_link(dir, name) => Err(Errno::LOOP.into()),
        other => Ok(other?),
    }
}

/// Whether `name` in `dir` is a symbolic link.
fn is_link(dir: &OwnedFd, name: &str) -> bool {
    rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink)
}

/// The descriptor as a [`File`], with what `fstat` says of it, if it is a regular file, else
/// what it is (it is closed then).
pub(crate) fn regular(fd: OwnedFd) -> io::Result<Result<(File, Stat), FileType>> {
    let st = rfs::fstat(&fd)?;
    let kind = FileType::from_raw_mode(st.st_mode);
    Ok(if kind == FileType::RegularFile {
        Ok((File::from(fd), st))
    } else {
        Err(kind)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fs::CWD;
    use std::fs;

    #[test]
    fn a_root_moved_replaced_or_deleted_is_told_apart() {
        let parent = tempfile::tempdir().unwrap();
        let path = parent.path().join("store");
        fs::create_dir(&path).unwrap();
        let root = Root::open(&path).unwrap();
        assert_eq!(root.is_at(&path), Some(true));
        fs::rename(&path, parent.path().join("old")).unwrap();
        assert_eq!(root.is_at(&path), Some(false), "moved away");
        fs::create_dir(&path).unwrap();
        assert_eq!(root.is_at(&path), Some(false), "another folder at its path");
        fs::remove_dir(&path).unwrap();
        fs::rename(parent.path().join("old"), &path).unwrap();
        assert_eq!(root.is_at(&path), Some(true), "back");
        fs::remove_dir(&path).unwrap();
        assert_eq!(root.is_at(&path), None, "deleted");
    }

    /// A root with `a/b/file`, `a/link -> outside`, `a/plain` and a FIFO `a/pipe`.
    fn tree() -> (tempfile::TempDir, tempfile::TempDir, Root) {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("a/b")).unwrap();
        fs::write(root.path().join("a/b/file"), b"in").unwrap();
        fs::write(outside.path().join("file"), b"out").unwrap();
        fs::create_dir(outside.path().join("b")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("a/link")).unwrap();
        std::os::unix::fs::symlink("b/file", root.path().join("a/flink")).unwrap();
        fs::write(root.path().join("a/plain"), b"x").unwrap();
        rfs::mknodat(
            CWD,
            root.path().join("a/pipe"),
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let r = Root::open(root.path()).unwrap();
        (root, outside, r)
    }

    fn errno(r: io::Result<OwnedFd>) -> Option<i32> {
        r.err().and_then(|e| e.raw_os_error())
    }

    fn resolution_cases(r: &Root) {
        let read = OFlags::RDONLY;
        let fd = r.open_beneath("a/b/file", read, Mode::empty()).unwrap();
        let mut text = String::new();
        io::Read::read_to_string(&mut File::from(fd), &mut text).unwrap();
        assert_eq!(text, "in");
        let eloop = Some(Errno::LOOP.raw_os_error());
        assert_eq!(
            errno(r.open_beneath("a/link/file", read, Mode::empty())),
            eloop
        );
        assert_eq!(
            errno(r.open_beneath("a/link/b/x", read, Mode::empty())),
            eloop
        );
        assert_eq!(errno(r.open_beneath("a/flink", read, Mode::empty())), eloop);
        assert_eq!(errno(r.open_folder("a/link")), eloop);
        assert_eq!(
            errno(r.open_beneath("a/plain/x", read, Mode::empty())),
            Some(Errno::NOTDIR.raw_os_error())
        );
        assert_eq!(
            errno(r.open_beneath("a/missing/x", read, Mode::empty())),
            Some(Errno::NOENT.raw_os_error())
        );
        // Creating folders never goes through the link either.
        assert_eq!(errno(r.make_folders("a/link/new").map(|f| f.fd)), eloop);
        let made = r.make_folders("a/n1/n2").unwrap();
        assert_eq!(made.created.len(), 2);
        let mut made = made;
        made.remove_created();
        let folder = r.open_folder("a").unwrap();
        assert!(rfs::statat(&folder, "n1", AtFlags::SYMLINK_NOFOLLOW).is_err());
        // A FIFO opens without blocking and is told apart.
        let fifo = r
            .open_beneath("a/pipe", OFlags::RDONLY | OFlags::NONBLOCK, Mode::empty())
            .unwrap();
        assert_eq!(regular(fifo).unwrap().unwrap_err(), FileType::Fifo);
    }

    #[test]
    fn openat2_refuses_links_and_non_folders() {
        let (_root, _outside, r) = tree();
        resolution_cases(&r);
    }

    #[test]
    fn the_component_walk_refuses_the_same() {
        let (_root, _outside, r) = tree();
        r.force_walk();
        resolution_cases(&r);
        assert!(!r.openat2.load(Ordering::Relaxed));
    }
}
