//! Unnamed body files. The body of an upload that is not kept for resume is written to a file
//! made with `O_TMPFILE` in the folder it will be published in (the nearest folder of its path
//! that exists), and it gets a name only when it is published, by `linkat`, which never
//! replaces a name.
//!
//! Why in its own folder: ext4 allocates a new file's inode in its folder's block group, and
//! without a journal it skips, one at a time, every inode of that group freed within the last
//! 30 s. When every body was made in the one state folder, all inodes came from its group, so
//! after a tree was deleted each new file paid for the whole tree (`perf`: a third of the
//! server's CPU). Made where it lands, each inode is allocated where `cp` or `rsync` would
//! allocate it, and the server pays what they pay. And a file without a name leaves nothing
//! behind when the server is killed (the kernel frees it with the last descriptor), and no
//! client or other local user can name it.
//!
//! Linking a file by its descriptor alone (`AT_EMPTY_PATH`) needs `CAP_DAC_READ_SEARCH`;
//! without it the descriptor's `/proc/self/fd/N` link is followed (`AT_SYMLINK_FOLLOW`). Which
//! one works is probed once at start ([`Linker::probe`]); when neither does, or the file
//! system refuses `O_TMPFILE` ([`create`] answers `None`), bodies are named temp files in the
//! state folder instead (see [`super::state`]).

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, CWD};
use rustix::io::Errno;

/// How an unnamed file is given a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Linker {
    /// `linkat(fd, "", …, AT_EMPTY_PATH)`: needs `CAP_DAC_READ_SEARCH`.
    Descriptor,
    /// `linkat(AT_FDCWD, "/proc/self/fd/N", …, AT_SYMLINK_FOLLOW)`: needs `/proc`.
    Proc,
}

impl Linker {
    /// Finds how this process can name an unnamed file, in the folder `dir` (the server's own
    /// temp folder): makes one, links it as `name` and removes that name again. `None` when
    /// the file system refuses unnamed files or neither way links one.
    pub(crate) fn probe(dir: BorrowedFd<'_>, name: &str) -> Option<Self> {
        let file = match create(dir, 0o600) {
            Ok(Some(file)) => file,
            Ok(None) => {
                log::debug!("the storage's file system makes no unnamed files (O_TMPFILE)");
                return None;
            }
            Err(e) => {
                log::warn!("cannot make an unnamed file in the state folder: {e}");
                return None;
            }
        };
        for linker in [Self::Descriptor, Self::Proc] {
            if linker.link(&file, dir, name).is_ok() {
                if let Err(e) = rfs::unlinkat(dir, name, AtFlags::empty()) {
                    log::warn!("cannot remove the probe file {name}: {e}");
                }
                log::debug!("unnamed body files, linked by {linker:?}");
                return Some(linker);
            }
        }
        log::info!(
            "cannot name an unnamed file (no CAP_DAC_READ_SEARCH and no /proc); bodies are \
             received in named temp files"
        );
        None
    }

    /// Gives the unnamed `file` the name `name` in `dir`; fails with `EEXIST` when that name is
    /// taken (nothing is replaced).
    pub(crate) fn link(
        self,
        file: &File,
        dir: BorrowedFd<'_>,
        name: &str,
    ) -> rustix::io::Result<()> {
        match self {
            Self::Descriptor => rfs::linkat(file.as_fd(), "", dir, name, AtFlags::EMPTY_PATH),
            Self::Proc => {
                let path = format!("/proc/self/fd/{}", file.as_raw_fd());
                rfs::linkat(CWD, path.as_str(), dir, name, AtFlags::SYMLINK_FOLLOW)
            }
        }
    }
}

/// Flags that make an unnamed file, open for reading and writing, in a folder.
const FLAGS: OFlags = OFlags::TMPFILE.union(OFlags::RDWR).union(OFlags::CLOEXEC);

/// A new unnamed file with `mode` (less the umask) in the folder `dir` (already resolved
/// beneath the root: `"."` walks nothing); `None` when the file system (or the kernel) makes
/// no unnamed files there, or the server may not write there (a named temp file then reports
/// that when it is published).
pub(crate) fn create(dir: BorrowedFd<'_>, mode: u32) -> io::Result<Option<File>> {
    match rfs::openat(dir, ".", FLAGS, Mode::from_raw_mode(mode)) {
        Ok(fd) => Ok(Some(File::from(fd))),
        // EISDIR: a kernel that does not know O_TMPFILE (it includes O_DIRECTORY).
        Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL | Errno::ACCESS | Errno::PERM) => {
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn an_unnamed_file_is_invisible_until_linked_and_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let fd = rfs::open(
            dir.path(),
            OFlags::DIRECTORY | OFlags::RDONLY,
            Mode::empty(),
        )
        .unwrap();
        let Some(linker) = Linker::probe(fd.as_fd(), "probe") else {
            eprintln!(
                "SKIPPED: unnamed files (O_TMPFILE with a way to link them) are not available here"
            );
            return;
        };
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            0,
            "the probe left nothing"
        );
        let mut file = create(fd.as_fd(), 0o640).unwrap().expect("made");
        file.write_all(b"body").unwrap();
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            0,
            "no name while written"
        );
        fs::write(dir.path().join("taken"), b"old").unwrap();
        assert_eq!(linker.link(&file, fd.as_fd(), "taken"), Err(Errno::EXIST));
        assert_eq!(fs::read(dir.path().join("taken")).unwrap(), b"old");
        linker.link(&file, fd.as_fd(), "new").unwrap();
        assert_eq!(fs::read(dir.path().join("new")).unwrap(), b"body");
        assert_eq!(fs::metadata(dir.path().join("new")).unwrap().nlink(), 1);
        // The /proc way works wherever /proc is mounted, with or without the capability.
        if std::path::Path::new("/proc/self/fd").exists() {
            let f = create(fd.as_fd(), 0o600).unwrap().expect("made");
            Linker::Proc.link(&f, fd.as_fd(), "by-proc").unwrap();
            assert!(dir.path().join("by-proc").is_file());
        }
    }
}
