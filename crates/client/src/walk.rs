//! Turning command-line paths into the files to send: folders are walked recursively and keep
//! their relative paths under the folder's own name (`photos/` is sent as `photos/...`).

use std::collections::BTreeMap;
use std::fs::{self, Metadata};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use ferry_proto::{FileInfo, Name, Timestamp};

use crate::error::ClientError;

/// Where the bytes of a file to send come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A local file.
    File(PathBuf),
    /// Standard input, to its end.
    Stdin,
}

/// One file to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Where its bytes come from.
    pub origin: Origin,
    /// The name it is offered under.
    pub name: Name,
    /// Its size; `None` for standard input.
    pub size: Option<u64>,
    /// Its modification time.
    pub mtime: Option<Timestamp>,
    /// Its Unix permission bits.
    pub mode: Option<u32>,
}

impl Source {
    /// What is offered to the server.
    #[must_use]
    pub fn info(&self) -> FileInfo {
        FileInfo {
            name: self.name.clone(),
            size: self.size,
            mtime: self.mtime,
            mode: self.mode,
        }
    }

    /// The local path, for messages (`-` for standard input).
    #[must_use]
    pub fn path(&self) -> Option<&Path> {
        match &self.origin {
            Origin::File(p) => Some(p),
            Origin::Stdin => None,
        }
    }
}

/// Collects the files named by `paths` (`-` is standard input, offered as `stdin_name`).
/// Everything is checked here, before connecting: missing files, unreadable folders, names
/// that are not portable, two files that would land under one name.
pub fn collect(paths: &[PathBuf], stdin_name: Option<&str>) -> Result<Vec<Source>, ClientError> {
    let stdin_count = paths.iter().filter(|p| p.as_os_str() == "-").count();
    match (stdin_count, stdin_name) {
        (0, Some(_)) => {
            return Err(ClientError::Usage(
                "--name only applies to `-` (standard input)".into(),
            ))
        }
        (1, None) => {
            return Err(ClientError::Usage(
                "sending standard input (`-`) needs --name NAME".into(),
            ))
        }
        (n, _) if n > 1 => {
            return Err(ClientError::Usage(
                "standard input (`-`) can be sent only once".into(),
            ))
        }
        _ => {}
    }
    let mut out = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let raw = stdin_name.unwrap_or_default();
            let name = Name::parse(raw).map_err(|source| ClientError::BadName {
                name: ferry_proto::name::escape(raw),
                source,
            })?;
            out.push(Source {
                origin: Origin::Stdin,
                name,
                size: None,
                mtime: None,
                mode: None,
            });
            continue;
        }
        let meta = fs::metadata(path).map_err(|source| ClientError::LocalRead {
            path: path.clone(),
            source,
        })?;
        let base = base_name(path)?;
        if meta.is_dir() {
            walk_dir(path, &base, &mut out)?;
        } else {
            out.push(file_source(path, &base, &meta)?);
        }
    }
    check_unique(&out)?;
    Ok(out)
}

/// The last component of `path`, resolving `.`, `..` and `/` to the real folder name.
fn base_name(path: &Path) -> Result<String, ClientError> {
    let named = match path.file_name() {
        Some(n) => PathBuf::from(n),
        None => {
            let real = fs::canonicalize(path).map_err(|source| ClientError::LocalRead {
                path: path.to_owned(),
                source,
            })?;
            match real.file_name() {
                Some(n) => PathBuf::from(n),
                None => {
                    return Err(ClientError::Usage(format!(
                        "cannot send {} as a whole: name the files or folders inside it",
                        path.display()
                    )))
                }
            }
        }
    };
    named
        .to_str()
        .map(str::to_owned)
        .ok_or_else(|| ClientError::NotUtf8 {
            path: path.to_owned(),
        })
}

fn walk_dir(dir: &Path, name: &str, out: &mut Vec<Source>) -> Result<(), ClientError> {
    let read_err = |source| ClientError::LocalRead {
        path: dir.to_owned(),
        source,
    };
    let mut entries = fs::read_dir(dir)
        .map_err(read_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_err)?;
    entries.sort_by_key(fs::DirEntry::file_name);
    for entry in entries {
        let path = entry.path();
        let child = format!("{name}/{}", base_name(&path)?);
        let link = entry.file_type().map_err(read_err)?.is_symlink();
        // Symbolic links to files are followed; links to folders are not (no loops).
        let meta = fs::metadata(&path).map_err(|source| ClientError::LocalRead {
            path: path.clone(),
            source,
        })?;
        if meta.is_dir() && link {
            log::warn!("skipping {}: a link to a folder", path.display());
        } else if meta.is_dir() {
            walk_dir(&path, &child, out)?;
        } else if meta.is_file() {
            out.push(file_source(&path, &child, &meta)?);
        } else {
            log::warn!("skipping {}: not a regular file", path.display());
        }
    }
    Ok(())
}

fn file_source(path: &Path, name: &str, meta: &Metadata) -> Result<Source, ClientError> {
    let name = Name::parse(name).map_err(|source| ClientError::LocalName {
        path: path.to_owned(),
        source,
    })?;
    Ok(Source {
        origin: Origin::File(path.to_owned()),
        name,
        size: Some(meta.len()),
        mtime: meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .and_then(|d| {
                Some(Timestamp {
                    secs: i64::try_from(d.as_secs()).ok()?,
                    nanos: d.subsec_nanos(),
                })
            }),
        mode: mode(meta),
    })
}

#[cfg(unix)]
fn mode(meta: &Metadata) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    Some(meta.permissions().mode() & 0o777)
}

#[cfg(not(unix))]
fn mode(_: &Metadata) -> Option<u32> {
    None
}

fn check_unique(sources: &[Source]) -> Result<(), ClientError> {
    let mut seen: BTreeMap<&str, &Source> = BTreeMap::new();
    for s in sources {
        if let Some(first) = seen.insert(s.name.as_str(), s) {
            let show = |s: &Source| s.path().map_or("-".into(), |p| p.display().to_string());
            return Err(ClientError::Usage(format!(
                "{} and {} would both be stored as {}",
                show(first),
                show(s),
                s.name
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[Source]) -> Vec<&str> {
        v.iter().map(|s| s.name.as_str()).collect()
    }

    #[test]
    fn folders_keep_relative_paths_and_files_their_basename() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("photos");
        fs::create_dir_all(root.join("2024/empty")).unwrap();
        fs::write(root.join("a.jpg"), b"a").unwrap();
        fs::write(root.join("2024/b.jpg"), b"bb").unwrap();
        fs::write(tmp.path().join("notes.txt"), b"n").unwrap();
        let got = collect(&[root.clone(), tmp.path().join("notes.txt")], None).unwrap();
        assert_eq!(
            names(&got),
            ["photos/2024/b.jpg", "photos/a.jpg", "notes.txt"]
        );
        assert_eq!(got[0].size, Some(2));
        assert_eq!(got[0].origin, Origin::File(root.join("2024/b.jpg")));
        let dot = collect(&[root.join("2024/.")], None).unwrap();
        assert_eq!(names(&dot), ["2024/b.jpg"]);
    }

    #[test]
    fn stdin_needs_a_name_and_problems_show_before_connecting() {
        let tmp = tempfile::tempdir().unwrap();
        let stdin = collect(&["-".into()], Some("backup.tar")).unwrap();
        assert_eq!(stdin[0].origin, Origin::Stdin);
        assert_eq!(stdin[0].size, None);
        for (paths, name) in [
            (vec![PathBuf::from("-")], None),
            (vec![PathBuf::from("-"), PathBuf::from("-")], Some("x")),
            (vec![tmp.path().join("missing")], None),
            (vec![PathBuf::from("-")], Some("../x")),
        ] {
            let e = collect(&paths, name).unwrap_err();
            assert_eq!(e.exit_code(), crate::error::exit::USAGE, "{e}");
        }
        let e = collect(&[tmp.path().join("missing")], None).unwrap_err();
        assert!(e.to_string().starts_with("cannot read "), "{e}");
    }

    #[test]
    fn two_files_with_one_name_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        for d in ["a", "b"] {
            fs::create_dir(tmp.path().join(d)).unwrap();
            fs::write(tmp.path().join(d).join("x.txt"), d).unwrap();
        }
        let e = collect(
            &[tmp.path().join("a/x.txt"), tmp.path().join("b/x.txt")],
            None,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("would both be stored as x.txt"),
            "{e}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn links_to_folders_are_skipped_not_looped() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("d");
        fs::create_dir(&root).unwrap();
        fs::write(root.join("f"), b"f").unwrap();
        std::os::unix::fs::symlink(&root, root.join("loop")).unwrap();
        std::os::unix::fs::symlink(root.join("f"), root.join("g")).unwrap();
        let got = collect(&[root], None).unwrap();
        assert_eq!(names(&got), ["d/f", "d/g"]);
    }
}
