//! Turning a validated [`Name`] into a path under the storage folder without ever following a
//! symbolic link: each parent component is checked with `symlink_metadata` (and created one by
//! one for uploads), and final files are opened with `O_NOFOLLOW`.

use std::fs::{self, File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ferry_proto::{Code, Name};
use rustix::fs::OFlags;

/// Prefix of every file the server keeps for itself; client names may not start with it.
pub(crate) const RESERVED_PREFIX: &str = ".ferry-";

/// Why a name cannot be used: the code and words for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub code: Code,
    pub reason: String,
}

impl Refusal {
    pub(crate) fn new(code: Code, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }

    /// A local I/O failure, with `ENOSPC`/`EDQUOT` reported as [`Code::NoSpace`].
    pub(crate) fn io(what: &str, e: &io::Error) -> Self {
        let code = if is_no_space(e) {
            Code::NoSpace
        } else {
            Code::Io
        };
        Self::new(code, format!("{what}: {e}"))
    }
}

/// Whether `e` means the disk or the quota is full.
pub(crate) fn is_no_space(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// Folders already checked to be real folders (not links) on this connection, so that a
/// burst of files in one folder checks it once. Bounded: it forgets everything when full.
#[derive(Debug, Default)]
pub(crate) struct CheckedFolders(std::collections::HashSet<PathBuf>);

/// Most folders a [`CheckedFolders`] remembers.
const MAX_CHECKED_FOLDERS: usize = 4096;

impl CheckedFolders {
    fn contains(&self, folder: &Path) -> bool {
        self.0.contains(folder)
    }

    fn insert(&mut self, folder: &Path) {
        if self.0.len() >= MAX_CHECKED_FOLDERS {
            self.0.clear();
        }
        self.0.insert(folder.to_path_buf());
    }
}

/// Where a name lands under the storage folder.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The folder that holds the file (exists, is a real folder).
    pub folder: PathBuf,
    /// The last component.
    pub file_name: String,
    /// `folder/file_name`.
    pub path: PathBuf,
}

impl Target {
    /// Resolves `name` under `root`. Parents must be real folders; with `create`, missing ones
    /// are made one component at a time. Names in the server's reserved namespace are refused.
    /// Folders in `checked` are trusted as they were found; new ones are added.
    pub(crate) fn resolve(
        root: &Path,
        name: &Name,
        create: bool,
        checked: &mut CheckedFolders,
    ) -> Result<Self, Refusal> {
        if name.file_name().starts_with(RESERVED_PREFIX) {
            return Err(Refusal::new(
                Code::BadName,
                format!(
                    "{name}: names starting with {RESERVED_PREFIX} are reserved for the server"
                ),
            ));
        }
        let parts: Vec<&str> = name.components().collect();
        let (file_name, parents) = parts.split_last().expect("a name has a component");
        let mut folder = root.to_path_buf();
        for (i, part) in parents.iter().enumerate() {
            folder.push(part);
            if checked.contains(&folder) {
                continue;
            }
            let shown = || parts[..=i].join("/");
            match fs::symlink_metadata(&folder) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(symlink_refusal(&ferry_proto::name::escape(&shown())))
                }
                Ok(_) => {
                    return Err(Refusal::new(
                        Code::Exists,
                        format!(
                            "{} exists and is not a folder",
                            ferry_proto::name::escape(&shown())
                        ),
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    match fs::create_dir(&folder) {
                        Ok(()) => {}
                        // Made by a concurrent upload: check it again.
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                            let m = fs::symlink_metadata(&folder)
                                .map_err(|e| Refusal::io("cannot check a folder", &e))?;
                            if !m.is_dir() {
                                return Err(Refusal::new(
                                    Code::Exists,
                                    format!(
                                        "{} exists and is not a folder",
                                        ferry_proto::name::escape(&shown())
                                    ),
                                ));
                            }
                        }
                        Err(e) => return Err(Refusal::io("cannot create a folder", &e)),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(Refusal::new(
                        Code::NotFound,
                        format!("{name}: no such file"),
                    ))
                }
                Err(e) => return Err(Refusal::io("cannot check a folder", &e)),
            }
            checked.insert(&folder);
        }
        let path = folder.join(file_name);
        Ok(Self {
            folder,
            file_name: (*file_name).to_owned(),
            path,
        })
    }

    /// What sits at the final path now (not following a link); a link is refused.
    pub(crate) fn existing(&self, name: &Name) -> Result<Option<Metadata>, Refusal> {
        match fs::symlink_metadata(&self.path) {
            Ok(m) if m.file_type().is_symlink() => Err(symlink_refusal(&name.to_string())),
            Ok(m) => Ok(Some(m)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Refusal::io("cannot check the destination", &e)),
        }
    }
}

fn symlink_refusal(shown: &str) -> Refusal {
    Refusal::new(
        Code::BadName,
        format!("{shown} is a symbolic link on the server, which it never follows"),
    )
}

/// Opens `path` without following a link at its last component.
pub(crate) fn open_nofollow(path: &Path, options: &mut OpenOptions) -> io::Result<File> {
    options
        .custom_flags(OFlags::NOFOLLOW.bits() as i32)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::parse(s).expect("valid")
    }

    #[test]
    fn checked_folders_are_remembered_and_new_ones_still_checked() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let mut checked = CheckedFolders::default();
        Target::resolve(root.path(), &name("a/b/x"), true, &mut checked).unwrap();
        assert!(checked.contains(&root.path().join("a/b")));
        std::os::unix::fs::symlink(outside.path(), root.path().join("a/link")).unwrap();
        let e = Target::resolve(root.path(), &name("a/link/y"), true, &mut checked).unwrap_err();
        assert_eq!(e.code, Code::BadName);
        for i in 0..=MAX_CHECKED_FOLDERS {
            checked.insert(&root.path().join(i.to_string()));
        }
        assert!(checked.0.len() <= MAX_CHECKED_FOLDERS, "bounded");
    }

    #[test]
    fn creates_parents_and_refuses_links_and_reserved_names() {
        let root = tempfile::tempdir().unwrap();
        let t = Target::resolve(
            root.path(),
            &name("a/b/c.txt"),
            true,
            &mut CheckedFolders::default(),
        )
        .unwrap();
        assert!(root.path().join("a/b").is_dir());
        assert_eq!(t.path, root.path().join("a/b/c.txt"));

        std::os::unix::fs::symlink("/tmp", root.path().join("link")).unwrap();
        let e = Target::resolve(
            root.path(),
            &name("link/x"),
            true,
            &mut CheckedFolders::default(),
        )
        .unwrap_err();
        assert_eq!(e.code, Code::BadName);
        let t = Target::resolve(
            root.path(),
            &name("link"),
            true,
            &mut CheckedFolders::default(),
        )
        .unwrap();
        assert_eq!(t.existing(&name("link")).unwrap_err().code, Code::BadName);

        let e = Target::resolve(
            root.path(),
            &name(".ferry-partial.x"),
            true,
            &mut CheckedFolders::default(),
        )
        .unwrap_err();
        assert_eq!(e.code, Code::BadName);

        fs::write(root.path().join("file"), b"x").unwrap();
        let e = Target::resolve(
            root.path(),
            &name("file/x"),
            true,
            &mut CheckedFolders::default(),
        )
        .unwrap_err();
        assert_eq!(e.code, Code::Exists);
        let e = Target::resolve(
            root.path(),
            &name("missing/x"),
            false,
            &mut CheckedFolders::default(),
        )
        .unwrap_err();
        assert_eq!(e.code, Code::NotFound);
    }

    #[test]
    fn a_full_disk_is_told_apart_from_other_io_errors() {
        const ENOSPC: i32 = 28;
        const EDQUOT: i32 = 122;
        const EIO: i32 = 5;
        let code = |n| Refusal::io("write", &io::Error::from_raw_os_error(n)).code;
        assert_eq!(code(ENOSPC), Code::NoSpace);
        assert_eq!(code(EDQUOT), Code::NoSpace);
        assert_eq!(code(EIO), Code::Io);
    }
}
