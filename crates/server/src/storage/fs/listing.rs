//! LIST (PROTOCOL.md §4.10-§4.11): what the server holds under a name, one entry at a time,
//! read through folder descriptors that follow no link.
//!
//! A [`Lister`] yields entries in pre-order (a folder, then what it holds) as the caller asks
//! for them, so a listing is never held whole. Bounds, whatever the tree: one open folder
//! (a descriptor and `rustix`'s read buffer, at most about 24 KiB) per level being read, and at
//! most [`MAX_DEPTH`](ferry_proto::name::MAX_DEPTH) levels, because a folder is entered only
//! when its own name is valid, and a valid name has at most 64 components; names of at most
//! 4096 bytes; nothing else.
//!
//! Regular files and folders are listed. Symbolic links, devices, FIFOs, sockets, folders that
//! cannot be opened and names outside PROTOCOL.md §5.1 (not UTF-8, control characters, too long
//! or too deep) are left out and counted as skipped; a folder is never entered through a link.
//! The server's own names (starting with `.ferry-`) are left out and not counted, and so is its
//! state folder under any other name (a local user may rename it, see SECURITY.md).

use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd};

use ferry_proto::{Entry, EntryKind, Name, Timestamp};
use rustix::fs::{self as rfs, AtFlags, Dir, FileType, Stat};
use rustix::io::Errno;

use super::root;
use super::state::StateIds;
use crate::paths::RESERVED_PREFIX;
use crate::storage::Listing;

/// Permission bits listed (no set-id or sticky bits).
const MODE_MASK: u32 = 0o777;

/// A folder being read: its entries, and its name (`None`: the root).
struct Level {
    dir: Dir,
    name: Option<Name>,
}

/// A listing in progress; see the module docs.
pub(crate) struct Lister {
    /// The listed path's own entry, sent first.
    first: Option<Entry>,
    /// Open folders, from the listed one down to the one being read.
    stack: Vec<Level>,
    recursive: bool,
    skipped: u64,
    /// The server's state, left out whatever its name.
    state: StateIds,
}

impl std::fmt::Debug for Lister {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lister")
            .field("depth", &self.stack.len())
            .field("skipped", &self.skipped)
            .finish_non_exhaustive()
    }
}

impl Lister {
    /// Lists the folder `dir`, named `name` (`None`: the root), whose own entry (for a
    /// named path) is `first`, leaving out the folders and files `state` identifies.
    pub(crate) fn folder(
        dir: Dir,
        name: Option<Name>,
        first: Option<Entry>,
        recursive: bool,
        state: StateIds,
    ) -> Self {
        Self {
            first,
            stack: vec![Level { dir, name }],
            recursive,
            skipped: 0,
            state,
        }
    }

    /// Lists a single file: its own entry.
    pub(crate) fn file(entry: Entry) -> Self {
        Self {
            first: Some(entry),
            stack: Vec::new(),
            recursive: false,
            skipped: 0,
            state: StateIds::default(),
        }
    }

    /// Folders open right now.
    #[cfg(test)]
    fn depth(&self) -> usize {
        self.stack.len()
    }
}

impl Listing for Lister {
    /// Entries left out so far (see the module docs).
    fn skipped(&self) -> u64 {
        self.skipped
    }

    fn next_entry(&mut self) -> Option<Entry> {
        if let Some(e) = self.first.take() {
            return Some(e);
        }
        loop {
            let level = self.stack.last_mut()?;
            let dirent = match level.dir.read() {
                None => {
                    self.stack.pop();
                    continue;
                }
                Some(Err(e)) => {
                    log::debug!("a folder could not be read to its end: {e}");
                    self.skipped += 1;
                    self.stack.pop();
                    continue;
                }
                Some(Ok(d)) => d,
            };
            let found = match level.dir.fd() {
                Ok(fd) => admit(
                    fd,
                    dirent.file_name(),
                    level.name.as_ref(),
                    self.recursive,
                    &self.state,
                ),
                Err(_) => Found::Skip,
            };
            match found {
                Found::Entry(e) => return Some(e),
                Found::Folder(e, dir) => {
                    let name = Some(e.name.clone());
                    self.stack.push(Level { dir, name });
                    return Some(e);
                }
                Found::Skip => self.skipped += 1,
                Found::Nothing => {}
            }
        }
    }
}

/// What one folder entry gives.
enum Found {
    /// An entry to send.
    Entry(Entry),
    /// A folder entry to send, and the folder, to read next (recursive listings).
    Folder(Entry, Dir),
    /// Left out, and counted.
    Skip,
    /// Nothing to send (the server's own files and folders, `.` and `..`, a name removed
    /// meanwhile).
    Nothing,
}

/// Looks at the entry `raw` of the folder `fd` named `parent` (`None`: the root); a folder is
/// opened to be read next when `recursive`. What `state` identifies is the server's, whatever
/// its name: compared on the `stat` each entry gets anyway.
fn admit(
    fd: BorrowedFd<'_>,
    raw: &CStr,
    parent: Option<&Name>,
    recursive: bool,
    state: &StateIds,
) -> Found {
    let bytes = raw.to_bytes();
    if bytes == b"." || bytes == b".." || bytes.starts_with(RESERVED_PREFIX.as_bytes()) {
        return Found::Nothing;
    }
    let st = match rfs::statat(fd, raw, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        // Removed meanwhile: it is simply no longer there.
        Err(Errno::NOENT) => return Found::Nothing,
        Err(_) => return Found::Skip,
    };
    if state.holds(&st) {
        return Found::Nothing;
    }
    let kind = match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => EntryKind::File,
        FileType::Directory => EntryKind::Folder,
        _ => return Found::Skip,
    };
    let name = std::str::from_utf8(bytes).ok().and_then(|child| {
        let whole = match parent {
            Some(p) => format!("{}/{child}", p.as_str()),
            None => child.to_owned(),
        };
        Name::parse(&whole).ok()
    });
    let Some(name) = name else {
        return Found::Skip;
    };
    let e = entry(kind, name, &st);
    if kind == EntryKind::File || !recursive {
        return Found::Entry(e);
    }
    match root::read_folder(fd, raw) {
        Ok(dir) => Found::Folder(e, dir),
        // Unreadable, or replaced by a link meanwhile: left out.
        Err(_) => Found::Skip,
    }
}

/// The entry for `name`, described by `st`.
pub(crate) fn entry(kind: EntryKind, name: Name, st: &Stat) -> Entry {
    let size = match kind {
        EntryKind::File => u64::try_from(st.st_size).unwrap_or(0),
        _ => 0,
    };
    Entry {
        kind,
        name,
        size,
        mtime: Timestamp {
            secs: st.st_mtime,
            nanos: u32::try_from(st.st_mtime_nsec)
                .ok()
                .filter(|n| *n < 1_000_000_000)
                .unwrap_or(0),
        },
        mode: st.st_mode & MODE_MASK,
    }
}

/// A folder descriptor as a [`Dir`] reading from its start.
pub(crate) fn read_dir(fd: impl AsFd) -> std::io::Result<Dir> {
    root::read_folder(fd.as_fd(), c".")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn names(mut l: Lister) -> (Vec<String>, u64, usize) {
        let mut out = Vec::new();
        let mut deepest = 0;
        while let Some(e) = l.next_entry() {
            deepest = deepest.max(l.depth());
            out.push(e.name.as_str().to_owned());
        }
        out.sort();
        (out, l.skipped(), deepest)
    }

    #[test]
    fn a_tree_is_listed_without_links_specials_or_the_server_s_files() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        fs::create_dir_all(r.join("a/b")).unwrap();
        fs::create_dir_all(r.join(".ferry-state/tmp")).unwrap();
        fs::write(r.join("a/b/f"), b"x").unwrap();
        fs::write(r.join("top"), b"xy").unwrap();
        std::os::unix::fs::symlink(r.join("a"), r.join("link")).unwrap();
        std::os::unix::fs::symlink("nowhere", r.join("a/dangling")).unwrap();
        fs::write(r.join("a/bad\u{1b}name"), b"").unwrap();
        let dir =
            || read_dir(rfs::open(r, rfs::OFlags::RDONLY, rfs::Mode::empty()).unwrap()).unwrap();
        let ids = StateIds::default();
        let (all, skipped, deepest) = names(Lister::folder(dir(), None, None, true, ids));
        assert_eq!(all, ["a", "a/b", "a/b/f", "top"]);
        assert_eq!(skipped, 3, "two links and a name with a control character");
        assert_eq!(deepest, 3);
        let (one, skipped, _) = names(Lister::folder(dir(), None, None, false, ids));
        assert_eq!(one, ["a", "top"]);
        assert_eq!(skipped, 1);
    }
}
