//! The folders downloads land in: made under the destination as they are needed (never before:
//! a `get` that fetches nothing makes nothing), and never through a link. The destination
//! itself is the user's to name (`-o` may be a link to a folder); under it, only a real folder
//! takes a folder's place: a symbolic link (even one to a folder), a file or anything else
//! there stops everything that would land under it, so that nothing is written outside the
//! destination.

use std::collections::{HashMap, HashSet};
use std::fs::{self, Metadata};
use std::io;
use std::path::{Path, PathBuf};

use ferry_proto::Code;

/// Where a folder belongs and cannot be: the place, and why, for the report of what would
/// have landed there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Blocked {
    /// The place that is not a folder (the destination, or under it).
    pub(crate) at: PathBuf,
    /// [`Code::Exists`] when something else holds the place, [`Code::Io`] when the system
    /// failed.
    pub(crate) code: Code,
    /// What is there, and what the user can do, in words.
    pub(crate) why: String,
}

/// The folders found or made under one destination, and the places found blocked, so that
/// each is looked at once.
#[derive(Debug)]
pub(crate) struct Folders {
    /// The destination: made with its parents when first needed; followed if it is a link.
    root: PathBuf,
    /// Folders known to be folders (found or made).
    found: HashSet<PathBuf>,
    /// Places found blocked.
    blocked: HashMap<PathBuf, Blocked>,
}

impl Folders {
    /// The folders under `root` (nothing is looked at yet).
    pub(crate) fn new(root: PathBuf) -> Self {
        Self {
            root,
            found: HashSet::new(),
            blocked: HashMap::new(),
        }
    }

    /// Makes the folder `dir` (the destination or a path under it) and those between, as
    /// needed; `Ok(true)` when `dir` itself was made, `Ok(false)` when it was there.
    pub(crate) fn make(&mut self, dir: &Path) -> Result<bool, Blocked> {
        self.walk(dir, true)
    }

    /// Checks, making nothing, that the folder `dir` is there or can be made: `Err` when a
    /// place on the way holds something other than a folder.
    pub(crate) fn check(&mut self, dir: &Path) -> Result<(), Blocked> {
        self.walk(dir, false).map(drop)
    }

    fn walk(&mut self, dir: &Path, make: bool) -> Result<bool, Blocked> {
        let mut made = false;
        if !self.found.contains(&self.root) {
            if self.root.is_dir() {
                // Links followed: the user named it.
            } else if make {
                fs::create_dir_all(&self.root).map_err(|e| failed(&self.root, &e))?;
                made = true;
            } else {
                // Nothing is under a destination still to be made.
                return Ok(false);
            }
            self.found.insert(self.root.clone());
        }
        let Ok(rest) = dir.strip_prefix(&self.root) else {
            // Every path of a download is built under its destination.
            return Err(failed(dir, &io::Error::other("outside the destination")));
        };
        let mut at = self.root.clone();
        for part in rest.components() {
            at.push(part);
            made = false;
            if self.found.contains(&at) {
                continue;
            }
            if let Some(b) = self.blocked.get(&at) {
                return Err(b.clone());
            }
            match fs::symlink_metadata(&at) {
                Ok(meta) if meta.is_dir() => {}
                Ok(meta) => {
                    let b = not_a_folder(&at, &meta);
                    self.blocked.insert(at, b.clone());
                    return Err(b);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && !make => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::NotFound => match fs::create_dir(&at) {
                    Ok(()) => made = true,
                    // Made meanwhile by someone else: looked at again, links not followed.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        match fs::symlink_metadata(&at) {
                            Ok(meta) if meta.is_dir() => {}
                            Ok(meta) => return Err(not_a_folder(&at, &meta)),
                            Err(e) => return Err(failed(&at, &e)),
                        }
                    }
                    Err(e) => return Err(failed(&at, &e)),
                },
                Err(e) => return Err(failed(&at, &e)),
            }
            self.found.insert(at.clone());
        }
        Ok(made)
    }
}

/// What holds a folder's place, and what to do about it.
fn not_a_folder(at: &Path, meta: &Metadata) -> Blocked {
    let what = if meta.file_type().is_symlink() {
        "a symbolic link, not a folder; nothing is written through a link"
    } else if meta.is_file() {
        "a file, not a folder"
    } else {
        "not a folder"
    };
    Blocked {
        at: at.to_owned(),
        code: Code::Exists,
        why: format!(
            "{} is {what} here: move it away, or fetch into another folder with -o",
            at.display()
        ),
    }
}

/// A folder that could not be looked at or made.
fn failed(at: &Path, e: &io::Error) -> Blocked {
    Blocked {
        at: at.to_owned(),
        code: Code::Io,
        why: format!("cannot make the folder {}: {e}", at.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_are_made_only_when_asked_and_once() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("out");
        let mut f = Folders::new(root.clone());
        f.check(&root.join("a/b")).unwrap();
        assert!(!root.exists(), "checking makes nothing");
        assert_eq!(f.make(&root.join("a/b")), Ok(true));
        assert!(root.join("a/b").is_dir());
        assert_eq!(f.make(&root.join("a/b")), Ok(false));
        assert_eq!(f.make(&root.join("a")), Ok(false));
    }

    /// A link to a folder, or a file, where a folder belongs: nothing is made or written
    /// through it, checking or making, and what lies under it is blocked by it.
    #[test]
    #[cfg(unix)]
    fn a_link_or_a_file_is_not_a_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("out");
        let elsewhere = tmp.path().join("elsewhere");
        fs::create_dir_all(&root).unwrap();
        fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, root.join("link")).unwrap();
        fs::write(root.join("file"), b"x").unwrap();
        let mut f = Folders::new(root.clone());
        for (place, what) in [("link", "a symbolic link"), ("file", "a file")] {
            let b = f.check(&root.join(place).join("sub")).unwrap_err();
            assert_eq!(b.at, root.join(place));
            assert_eq!(b.code, Code::Exists);
            assert!(b.why.contains(what), "{}", b.why);
            assert_eq!(f.make(&root.join(place).join("sub/deeper")), Err(b));
        }
        assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
    }
}
