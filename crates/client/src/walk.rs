//! Turning command-line paths into the files and folders to send: folders are walked
//! recursively and keep their relative paths under the folder's own name (`photos/` is sent as
//! `photos/...`), each folder after what it holds (post-order, so that the receiver can give it
//! its mtime last). What cannot be sent (special files, dangling links, unreadable entries,
//! names that cannot travel) is skipped with a reason; the rest goes.
//!
//! Each folder is opened once and its entries are listed and opened through it (on Unix
//! relative to its descriptor, so the system does not resolve the whole path for each file),
//! each regular file described by the descriptor the send then reads. A folder of at least
//! 32 entries (`SHARED_FROM_ENTRIES`; not within another shared one) is walked by two threads:
//! each takes the next piece (a sub-folder whole, or a run of other entries) in turn, and the
//! pieces' findings are put back in order, so the result is the one-thread walk's, and only
//! which files past the descriptor budget stay open may differ.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File, Metadata};
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::UNIX_EPOCH;

use ferry_proto::wire::EARLY_MAX;
use ferry_proto::{EntryKind, FileInfo, Name, Timestamp};

use crate::error::ClientError;
use crate::platform::{Listed, WalkedFolder};
use crate::report::Skipped;

/// Fewest entries a folder holds for its walk to be shared with a second thread (smaller
/// folders are not worth a thread).
const SHARED_FROM_ENTRIES: usize = 32;

/// Deepest level of a walk (command-line folders are level 1) whose folders keep their
/// descriptors while what they hold is walked: deeper ones are let go once listed and their
/// entries opened by path, so two threads hold at most twice this many folders open, well
/// within the descriptors left beside held files (`SPARE_DESCRIPTORS` in the platform module).
const DEEPEST_HELD_FOLDER: usize = 24;

/// Descriptors reserved before a second thread starts, beyond those for the files the walk
/// may still hold: those already open, the walk's folders (see
/// [`crate::platform::reserve_descriptors`]).
const RESERVED_SPARE: usize = 64;

/// Most files (and other entries but folders) in one piece of a shared folder's walk; each of
/// its sub-folders is a piece of its own, walked whole by one thread.
const PIECE_FILES: usize = 64;

/// Where the bytes of an entry to send come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A local file.
    File(PathBuf),
    /// A local folder: sent as a folder entry (protocol 2), no body.
    Folder(PathBuf),
    /// Standard input, to its end.
    Stdin,
}

/// One file or folder to send.
#[derive(Debug)]
pub struct Source {
    /// Where its bytes come from.
    pub origin: Origin,
    /// The name it is offered under.
    pub name: Name,
    /// Its size; `None` for standard input and folders.
    pub size: Option<u64>,
    /// Its modification time.
    pub mtime: Option<Timestamp>,
    /// Its Unix permission bits.
    pub mode: Option<u32>,
    /// The file as the walk opened it (a regular file it can read), kept so that the send
    /// reads it without opening it again; `None` for other origins, for files past the walk's
    /// descriptor budget ([`crate::platform::held_files_budget`]), once taken, and in a copy.
    pub(crate) held: Option<File>,
}

impl Clone for Source {
    /// A copy without the walk's descriptor: it opens its file again when it is read.
    fn clone(&self) -> Self {
        Self {
            origin: self.origin.clone(),
            name: self.name.clone(),
            size: self.size,
            mtime: self.mtime,
            mode: self.mode,
            held: None,
        }
    }
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

    /// The local path, for messages (`None` for standard input).
    #[must_use]
    pub fn path(&self) -> Option<&Path> {
        match &self.origin {
            Origin::File(p) | Origin::Folder(p) => Some(p),
            Origin::Stdin => None,
        }
    }

    /// A file or a folder.
    #[must_use]
    pub fn kind(&self) -> EntryKind {
        match self.origin {
            Origin::Folder(_) => EntryKind::Folder,
            _ => EntryKind::File,
        }
    }

    /// The local file, at its start, to read: the descriptor the walk kept (the first time),
    /// else its path opened again and checked to be a regular file (see [`open_regular`]).
    pub(crate) fn open(&mut self) -> io::Result<File> {
        match (self.held.take(), &self.origin) {
            (Some(file), _) => Ok(file),
            (None, Origin::File(path)) => open_regular(path),
            (None, _) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a local file",
            )),
        }
    }

    /// Asks the system to read the file into its cache now, without waiting, if it is small
    /// (at most `EARLY_MAX`: sent whole with its offer) and the walk's descriptor is still
    /// held (see [`crate::platform::read_soon`]).
    pub(crate) fn read_soon(&self) {
        if let Some(file) = &self.held {
            crate::platform::read_soon(file, self.read_soon_len());
        }
    }

    /// How many bytes [`Source::read_soon`] asks for, held or not: the size of a small file,
    /// else 0.
    pub(crate) fn read_soon_len(&self) -> u64 {
        match (&self.origin, self.size) {
            (Origin::File(_), Some(size)) if size <= EARLY_MAX => size,
            _ => 0,
        }
    }

    /// Keeps `file`, taken with [`open`](Self::open) and rewound to its start, for the next
    /// reader.
    pub(crate) fn keep(&mut self, file: File) {
        self.held = Some(file);
    }
}

/// What a walk found: the entries to send, in order, and those skipped.
#[derive(Debug, Default)]
pub struct Collected {
    /// Files and folders to send (each folder after its contents).
    pub sources: Vec<Source>,
    /// What cannot be sent, with why.
    pub skipped: Vec<Skipped>,
}

/// Collects the files and folders named by `paths` (`-` is standard input, offered as
/// `stdin_name`), each stored under `to` when given (`--to backups/2026`). Fails, before
/// connecting, only on a bad command line: a path that does not exist, `-` without `--name`,
/// two entries that would land under one name. Anything else that cannot be sent, inside a
/// folder or named on the command line, is skipped (see [`Skipped`]).
pub fn collect(
    paths: &[PathBuf],
    stdin_name: Option<&str>,
    to: Option<&Name>,
) -> Result<Collected, ClientError> {
    collect_holding(paths, stdin_name, to, crate::platform::held_files_budget())
}

/// [`collect`], keeping at most `held_room` files open for the send.
fn collect_holding(
    paths: &[PathBuf],
    stdin_name: Option<&str>,
    to: Option<&Name>,
    held_room: usize,
) -> Result<Collected, ClientError> {
    walk_paths(paths, stdin_name, to, held_room, true)
}

/// [`collect_holding`], sharing large folders with a second thread only if `may_share`.
fn walk_paths(
    paths: &[PathBuf],
    stdin_name: Option<&str>,
    to: Option<&Name>,
    held_room: usize,
    may_share: bool,
) -> Result<Collected, ClientError> {
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
    let held_room = AtomicUsize::new(held_room);
    let mut walk = Walk {
        to,
        out: Collected::default(),
        held_room: &held_room,
        may_share,
        depth: 0,
    };
    for path in paths {
        if path.as_os_str() == "-" {
            let raw = stdin_name.unwrap_or_default();
            let name = walk.name_for(raw).map_err(|source| ClientError::BadName {
                name: ferry_proto::name::escape(raw),
                source,
            })?;
            walk.out.sources.push(Source {
                origin: Origin::Stdin,
                name,
                size: None,
                mtime: None,
                mode: None,
                held: None,
            });
            continue;
        }
        // A path named on the command line must exist (links are followed).
        let meta = fs::metadata(path).map_err(|source| ClientError::LocalRead {
            path: path.clone(),
            source,
        })?;
        let base = base_name(path)?;
        let shown = base.to_string_lossy();
        let rel = base.to_str().ok_or(&*shown);
        walk.entry(path, rel, Ok(meta), false, Opened::Nothing);
    }
    check_unique(&walk.out.sources)?;
    Ok(walk.out)
}

/// Opens `path` for reading only if it is a regular file: without blocking (a FIFO swapped in
/// is never waited on) and checked after opening, so a FIFO's writer never loses data to us.
pub(crate) fn open_regular(path: &Path) -> io::Result<File> {
    open_described(path).map(|(file, _)| file)
}

/// [`open_regular`], with what the descriptor says of the file (one status call for both).
fn open_described(path: &Path) -> io::Result<(File, Metadata)> {
    described(crate::platform::open_read(path)?)
}

/// `file` with what its descriptor says of it, if it is a regular file.
fn described(file: File) -> io::Result<(File, Metadata)> {
    let meta = file.metadata()?;
    if meta.is_file() {
        Ok((file, meta))
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "it is no longer a regular file",
        ))
    }
}

/// The last component of `path`, resolving `.`, `..` and `/` to the real folder name.
fn base_name(path: &Path) -> Result<PathBuf, ClientError> {
    if let Some(n) = path.file_name() {
        return Ok(PathBuf::from(n));
    }
    let real = fs::canonicalize(path).map_err(|source| ClientError::LocalRead {
        path: path.to_owned(),
        source,
    })?;
    match real.file_name() {
        Some(n) => Ok(PathBuf::from(n)),
        None => Err(ClientError::Usage(format!(
            "cannot send {} as a whole: name the files or folders inside it",
            path.display()
        ))),
    }
}

/// What the walk opened of an entry before looking at it.
enum Opened {
    /// Nothing: the entry is looked at by its path.
    Nothing,
    /// The regular file it is.
    File(File),
    /// The folder it is.
    Folder(WalkedFolder),
}

/// A walk in progress (or one thread's share of it).
struct Walk<'a> {
    /// Where the entries go (`--to`).
    to: Option<&'a Name>,
    /// What was found so far.
    out: Collected,
    /// How many more files may be kept open for the send ([`Source::held`]), shared by the
    /// walk's threads.
    held_room: &'a AtomicUsize,
    /// Whether a large folder may be shared with a second thread (not within a share).
    may_share: bool,
    /// How many folders deep the walk is (0 outside every folder).
    depth: usize,
}

impl<'a> Walk<'a> {
    /// The name `rel` travels under: below `--to` when given.
    fn name_for(&self, rel: &str) -> Result<Name, ferry_proto::NameError> {
        match self.to {
            Some(to) => Name::parse(&format!("{to}/{rel}", to = to.as_str())),
            None => Name::parse(rel),
        }
    }

    /// Skips the entry at `path`, whose relative name is `rel` (lossy if it is not UTF-8): it
    /// is recorded under the name it would have travelled under.
    fn skip(&mut self, path: &Path, rel: &str, kind: EntryKind, reason: String) {
        let name = match self.to {
            Some(to) => format!("{}/{rel}", to.as_str()),
            None => rel.to_owned(),
        };
        self.out.skipped.push(Skipped {
            path: path.to_owned(),
            name,
            kind,
            reason,
        });
    }

    /// One entry: `rel` is its relative name (`Err` holding it lossy when it is not UTF-8),
    /// `meta` what it leads to (links followed), `link` whether it is a symbolic link itself,
    /// `opened` the file or folder `meta` describes if it is open already.
    fn entry(
        &mut self,
        path: &Path,
        rel: Result<&str, &str>,
        meta: io::Result<Metadata>,
        link: bool,
        opened: Opened,
    ) {
        let shown = rel.unwrap_or_else(|lossy| lossy);
        let meta = match meta {
            Ok(m) => m,
            Err(e) if link && e.kind() == io::ErrorKind::NotFound => {
                let why = "a symbolic link to nothing (dangling)".to_owned();
                return self.skip(path, shown, EntryKind::File, why);
            }
            Err(e) => {
                return self.skip(path, shown, EntryKind::File, format!("cannot read it: {e}"))
            }
        };
        let kind = if meta.is_dir() {
            EntryKind::Folder
        } else {
            EntryKind::File
        };
        if meta.is_dir() && link {
            let why = "a link to a folder (not followed, so no loops)".to_owned();
            return self.skip(path, shown, kind, why);
        }
        if let Some(what) = special(&meta) {
            return self.skip(path, shown, kind, format!("{what}, not a regular file"));
        }
        let Ok(rel) = rel else {
            let why = "its name is not valid UTF-8, which the protocol cannot carry".to_owned();
            return self.skip(path, shown, kind, why);
        };
        let name = match self.name_for(rel) {
            Ok(n) => n,
            Err(e) => return self.skip(path, rel, kind, format!("its name cannot be sent: {e}")),
        };
        if meta.is_dir() {
            let folder = match opened {
                Opened::Folder(f) => Ok(f),
                _ => WalkedFolder::open(path),
            };
            self.folder(path, rel, name, &meta, folder);
            return;
        }
        let opened = match opened {
            Opened::File(f) => Ok(f),
            _ => open_regular(path),
        };
        let file = match opened {
            Ok(f) => f,
            Err(e) => return self.skip(path, rel, kind, format!("cannot read it: {e}")),
        };
        let room = self
            .held_room
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        let held = room.is_ok().then_some(file);
        self.out.sources.push(Source {
            origin: Origin::File(path.to_owned()),
            name,
            size: Some(meta.len()),
            mtime: mtime(&meta),
            mode: crate::platform::mode(&meta),
            held,
        });
    }

    /// A folder, `opened` to be walked: what it holds, in name order, then the folder itself.
    fn folder(
        &mut self,
        dir: &Path,
        rel: &str,
        name: Name,
        meta: &Metadata,
        opened: io::Result<WalkedFolder>,
    ) {
        let keep = self.depth < DEEPEST_HELD_FOLDER;
        let listed = opened.and_then(|mut folder| Ok((folder.list(keep)?, folder)));
        let (entries, folder) = match listed {
            Ok(l) => l,
            Err(e) => {
                let why = format!("cannot read the folder: {e}");
                return self.skip(dir, rel, EntryKind::Folder, why);
            }
        };
        let here = Here {
            folder: &folder,
            dir,
            rel,
            entries: &entries,
        };
        let pieces = if self.may_share && entries.len() >= SHARED_FROM_ENTRIES {
            pieces(&entries)
        } else {
            Vec::new()
        };
        self.depth += 1;
        if pieces.len() > 1 {
            self.shared(&here, &pieces);
        } else {
            self.walk_range(&here, 0..entries.len());
        }
        self.depth -= 1;
        self.out.sources.push(Source {
            origin: Origin::Folder(dir.to_owned()),
            name,
            size: None,
            mtime: mtime(meta),
            mode: crate::platform::mode(meta),
            held: None,
        });
    }

    /// The entries `range` of the folder `here`, in order.
    fn walk_range(&mut self, here: &Here<'_>, range: Range<usize>) {
        for (file_name, listed) in &here.entries[range] {
            self.child(here, file_name, *listed);
        }
    }

    /// One entry of the folder `here`, named `file_name`, which its listing says is `listed`.
    fn child(&mut self, here: &Here<'_>, file_name: &OsString, listed: Listed) {
        let path = here.dir.join(file_name);
        let child = match file_name.to_str() {
            Some(n) => Ok([here.rel, "/", n].concat()),
            None => Err([here.rel, "/", &file_name.to_string_lossy()].concat()),
        };
        let child = child.as_deref().map_err(String::as_str);
        // A regular file or a folder by its folder entry is opened through the folder first
        // and described by its descriptor (a file's is kept for the send): one open and one
        // status call each. Should that fail, the usual way below says why.
        match listed {
            Listed::File => {
                let opened = here.folder.open_read(file_name, &path).and_then(described);
                if let Ok((file, meta)) = opened {
                    return self.entry(&path, child, Ok(meta), false, Opened::File(file));
                }
            }
            Listed::Folder => {
                if let Ok((folder, meta)) = here.folder.open_folder(file_name, &path) {
                    return self.entry(&path, child, Ok(meta), false, Opened::Folder(folder));
                }
            }
            Listed::Link | Listed::Other => {}
        }
        let link = listed == Listed::Link;
        // Links to files are followed; links to folders are not (no loops).
        self.entry(&path, child, fs::metadata(&path), link, Opened::Nothing);
    }

    /// The folder `here`, walked by this thread and a second one, each taking the next of its
    /// `pieces` in turn; what each piece found is put back in the pieces' order, so the result
    /// is the one thread's walk. Without a second thread, this one walks every piece.
    fn shared(&mut self, here: &Here<'_>, pieces: &[Range<usize>]) {
        let next = AtomicUsize::new(0);
        let work = |mut walk: Walk<'a>| {
            let mut done = Vec::new();
            while let Some(range) = pieces.get(next.fetch_add(1, Ordering::Relaxed)) {
                walk.walk_range(here, range.clone());
                done.push((range.start, std::mem::take(&mut walk.out)));
            }
            done
        };
        // Room for every file the walk may hold, and more for its folders.
        let room = self.held_room.load(Ordering::Relaxed);
        crate::platform::reserve_descriptors(here.folder, room.saturating_add(RESERVED_SPARE));
        let (mine, helper) = (self.share(), self.share());
        let busy = crate::platform::processor();
        let mut done = std::thread::scope(|scope| {
            let theirs = std::thread::Builder::new()
                .name("ferry-walk".into())
                .spawn_scoped(scope, || {
                    crate::platform::leave_processor(busy);
                    work(helper)
                });
            if theirs.is_ok() {
                // Let it run now, here, to move to a free processor (see `leave_processor`).
                std::thread::yield_now();
            }
            let mut done = work(mine);
            if let Ok(theirs) = theirs {
                match theirs.join() {
                    Ok(more) => done.extend(more),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            done
        });
        done.sort_unstable_by_key(|piece| piece.0);
        for (_, found) in done {
            self.out.sources.extend(found.sources);
            self.out.skipped.extend(found.skipped);
        }
    }

    /// A walk for one thread's share of a folder: same names, same budget, nothing found yet.
    fn share(&self) -> Walk<'a> {
        Walk {
            to: self.to,
            out: Collected::default(),
            held_room: self.held_room,
            may_share: false,
            depth: self.depth,
        }
    }
}

/// A folder being walked: its handle, its path, its relative name and its listed entries.
struct Here<'h> {
    /// The folder, open.
    folder: &'h WalkedFolder,
    /// Its path.
    dir: &'h Path,
    /// Its relative name.
    rel: &'h str,
    /// Its entries, in name order.
    entries: &'h [(OsString, Listed)],
}

/// `entries` cut into the pieces of a shared walk: each folder alone, other entries by up to
/// [`PIECE_FILES`] in a row.
fn pieces(entries: &[(OsString, Listed)]) -> Vec<Range<usize>> {
    let mut pieces = Vec::new();
    let mut start = 0;
    for (i, (_, listed)) in entries.iter().enumerate() {
        if *listed == Listed::Folder {
            if start < i {
                pieces.push(start..i);
            }
            pieces.push(i..i + 1);
            start = i + 1;
        } else if i + 1 - start == PIECE_FILES {
            pieces.push(start..i + 1);
            start = i + 1;
        }
    }
    if start < entries.len() {
        pieces.push(start..entries.len());
    }
    pieces
}

/// What a special file is, in words; `None` for a regular file or a folder.
fn special(meta: &Metadata) -> Option<&'static str> {
    let t = meta.file_type();
    if t.is_file() || t.is_dir() {
        None
    } else {
        Some(crate::platform::special_kind(t).unwrap_or("a special file"))
    }
}

/// A file's modification time, when the system has one after the epoch.
pub(crate) fn mtime(meta: &Metadata) -> Option<Timestamp> {
    let d = meta.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
    Some(Timestamp {
        secs: i64::try_from(d.as_secs()).ok()?,
        nanos: d.subsec_nanos(),
    })
}

/// Refuses two sources offered under one name (a hash of each name: no comparisons of long
/// shared prefixes).
fn check_unique(sources: &[Source]) -> Result<(), ClientError> {
    let mut seen: HashMap<&str, &Source> = HashMap::with_capacity(sources.len());
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

    fn names(v: &Collected) -> Vec<&str> {
        v.sources.iter().map(|s| s.name.as_str()).collect()
    }

    fn collect(paths: &[PathBuf], stdin: Option<&str>) -> Result<Collected, ClientError> {
        super::collect(paths, stdin, None)
    }

    #[test]
    fn folders_keep_relative_paths_and_come_after_their_contents() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("photos");
        fs::create_dir_all(root.join("2024/empty")).unwrap();
        fs::write(root.join("a.jpg"), b"a").unwrap();
        fs::write(root.join("2024/b.jpg"), b"bb").unwrap();
        fs::write(tmp.path().join("notes.txt"), b"n").unwrap();
        let got = collect(&[root.clone(), tmp.path().join("notes.txt")], None).unwrap();
        assert_eq!(
            names(&got),
            [
                "photos/2024/b.jpg",
                "photos/2024/empty",
                "photos/2024",
                "photos/a.jpg",
                "photos",
                "notes.txt"
            ]
        );
        assert_eq!(got.sources[0].size, Some(2));
        assert_eq!(got.sources[0].origin, Origin::File(root.join("2024/b.jpg")));
        assert_eq!(got.sources[1].kind(), EntryKind::Folder);
        assert_eq!(got.sources[1].size, None);
        let dot = collect(&[root.join("2024/.")], None).unwrap();
        assert_eq!(names(&dot), ["2024/b.jpg", "2024/empty", "2024"]);
        let to = Name::parse("backups/2026").unwrap();
        let under = super::collect(&[root.join("a.jpg")], None, Some(&to)).unwrap();
        assert_eq!(names(&under), ["backups/2026/a.jpg"]);
    }

    #[test]
    fn stdin_needs_a_name_and_problems_show_before_connecting() {
        let tmp = tempfile::tempdir().unwrap();
        let stdin = collect(&["-".into()], Some("backup.tar")).unwrap();
        assert_eq!(stdin.sources[0].origin, Origin::Stdin);
        assert_eq!(stdin.sources[0].size, None);
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

    /// The walk keeps each file it checked open for the send (one open per file): the file
    /// reads through that descriptor even after its name is gone, once; a copy of the
    /// source opens its path again.
    #[test]
    fn walked_files_are_read_through_the_descriptor_the_walk_opened() {
        use std::io::Read;
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("d");
        fs::create_dir(&root).unwrap();
        fs::write(root.join("a"), b"aa").unwrap();
        let mut got = collect(std::slice::from_ref(&root), None).unwrap();
        assert_eq!(names(&got), ["d/a", "d"]);
        let mut copy = got.sources[0].clone();
        assert!(got.sources[0].held.is_some() && copy.held.is_none());
        fs::rename(root.join("a"), root.join("b")).unwrap();
        let mut read = String::new();
        let mut file = got.sources[0].open().unwrap();
        file.read_to_string(&mut read).unwrap();
        assert_eq!(read, "aa");
        assert!(
            got.sources[0].open().is_err(),
            "taken once, then the path is gone"
        );
        assert!(copy.open().is_err(), "a copy opens the path");
        assert!(
            got.sources[1].open().is_err(),
            "a folder is no file to read"
        );
    }

    /// Past the descriptor budget, files are checked as before (opened, then closed) and
    /// opened again when they are read: the same sources, the same bytes.
    #[test]
    fn files_past_the_descriptor_budget_are_opened_again() {
        use std::io::Read;
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("d");
        fs::create_dir(&root).unwrap();
        for n in ["a", "b", "c"] {
            fs::write(root.join(n), n).unwrap();
        }
        let mut got = collect_holding(std::slice::from_ref(&root), None, None, 2).unwrap();
        assert_eq!(names(&got), ["d/a", "d/b", "d/c", "d"]);
        let held: Vec<bool> = got.sources.iter().map(|s| s.held.is_some()).collect();
        assert_eq!(held, [true, true, false, false]);
        for (s, want) in got.sources.iter_mut().zip(["a", "b", "c"]) {
            let mut read = String::new();
            s.open().unwrap().read_to_string(&mut read).unwrap();
            assert_eq!(read, want);
        }
        let none = collect_holding(std::slice::from_ref(&root), None, None, 0).unwrap();
        assert_eq!(names(&none), names(&got));
        assert!(none.sources.iter().all(|s| s.held.is_none()));
    }

    /// A large tree walked by two threads gives the entries and the skipped ones of a walk by
    /// one, in the same order: nested folders, links to files and folders, dangling links,
    /// FIFOs, names that cannot travel, a folder too long for one piece.
    #[test]
    fn two_threads_walk_as_one() {
        use std::os::unix::ffi::OsStrExt;
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("t");
        for d in 0..40 {
            let dir = root.join(format!("d{d:02}"));
            fs::create_dir_all(dir.join("inner/deeper")).unwrap();
            let files = if d == 7 { 150 } else { 3 };
            for f in 0..files {
                fs::write(dir.join(format!("f{f:03}")), [b'x'; 3]).unwrap();
            }
            fs::write(dir.join("inner/deeper/z"), b"z").unwrap();
            std::os::unix::fs::symlink(&dir, dir.join("inner/up")).unwrap();
            std::os::unix::fs::symlink(dir.join("f000"), dir.join("link")).unwrap();
            std::os::unix::fs::symlink(dir.join("nowhere"), dir.join("dangling")).unwrap();
            fs::write(dir.join(std::ffi::OsStr::from_bytes(b"bad\xff")), b"x").unwrap();
            fs::write(dir.join("ctl\u{1b}[2J"), b"x").unwrap();
        }
        for f in 0..70 {
            fs::write(root.join(format!("top{f:02}")), b"t").unwrap();
        }
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            root.join("d03/fifo"),
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        let paths = [root.clone(), root.join("d05/f001")];
        let one = walk_paths(&paths, None, None, 100, false).unwrap();
        let two = walk_paths(&paths, None, None, 100, true).unwrap();
        assert_eq!(names(&two), names(&one));
        assert_eq!(names(&one).len(), 40 * 8 + 147 + 70 + 2);
        let sizes = |c: &Collected| c.sources.iter().map(|s| s.size).collect::<Vec<_>>();
        assert_eq!(sizes(&two), sizes(&one));
        let skipped = |c: &Collected| {
            c.skipped
                .iter()
                .map(|s| (s.path.clone(), s.name.clone(), s.reason.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(skipped(&two), skipped(&one));
        assert_eq!(one.skipped.len(), 40 * 4 + 1);
        // The budget is shared: as many files held, whichever thread held them.
        let held = |c: &Collected| c.sources.iter().filter(|s| s.held.is_some()).count();
        assert_eq!((held(&one), held(&two)), (100, 100));
    }

    /// Past [`DEEPEST_HELD_FOLDER`] levels, folders let their descriptors go once listed and
    /// their entries are opened by path: the same entries, each file held and readable.
    #[test]
    fn deep_folders_are_walked_by_path() {
        use std::io::Read;
        let tmp = tempfile::tempdir().unwrap();
        let mut dir = tmp.path().join("l");
        let mut want = Vec::new();
        let mut rel = String::from("l");
        for level in 0..DEEPEST_HELD_FOLDER + 4 {
            fs::create_dir(&dir).unwrap();
            fs::write(dir.join("f"), level.to_string()).unwrap();
            want.push(format!("{rel}/f"));
            dir.push("l");
            rel.push_str("/l");
        }
        let mut folders: Vec<String> = want.iter().map(|f| f[..f.len() - 2].into()).collect();
        folders.reverse();
        let mut got = collect(&[tmp.path().join("l")], None).unwrap();
        let files: Vec<&str> = names(&got)
            .into_iter()
            .filter(|n| n.ends_with("/f"))
            .collect();
        assert_eq!(files, want, "each file before the folder beside it");
        let folders_got: Vec<&str> = names(&got)
            .into_iter()
            .filter(|n| !n.ends_with("/f"))
            .collect();
        assert_eq!(folders_got, folders);
        for s in got
            .sources
            .iter_mut()
            .filter(|s| s.kind() == EntryKind::File)
        {
            assert!(s.held.is_some(), "{}", s.name);
            let mut read = String::new();
            s.open().unwrap().read_to_string(&mut read).unwrap();
            let level = s.name.as_str().matches('/').count() - 1;
            assert_eq!(read, level.to_string());
        }
    }

    /// A shared folder is cut into pieces: each sub-folder alone, files by up to
    /// [`PIECE_FILES`] in a row.
    #[test]
    fn shared_folders_are_cut_at_folders_and_long_runs_of_files() {
        let entry = |l| (OsString::new(), l);
        let mut entries = vec![entry(Listed::File); 2];
        entries.push(entry(Listed::Folder));
        entries.push(entry(Listed::Folder));
        entries.extend(vec![entry(Listed::Link); PIECE_FILES + 1]);
        let end = entries.len();
        assert_eq!(
            pieces(&entries),
            [0..2, 2..3, 3..4, 4..4 + PIECE_FILES, 4 + PIECE_FILES..end]
        );
        assert!(pieces(&[]).is_empty());
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

    #[test]
    fn links_to_folders_are_skipped_not_looped() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("d");
        fs::create_dir(&root).unwrap();
        fs::write(root.join("f"), b"f").unwrap();
        std::os::unix::fs::symlink(&root, root.join("loop")).unwrap();
        std::os::unix::fs::symlink(root.join("f"), root.join("g")).unwrap();
        let got = collect(&[root], None).unwrap();
        assert_eq!(names(&got), ["d/f", "d/g", "d"]);
        assert_eq!(got.skipped.len(), 1);
        assert_eq!(got.skipped[0].name, "d/loop");
        assert_eq!(got.skipped[0].kind, EntryKind::Folder);
    }

    /// Issue 12 items 2-3: POSIX names travel as they are; special files, dangling links and
    /// names that cannot travel are skipped one by one (a FIFO is never opened), the rest kept.
    #[test]
    fn odd_entries_are_skipped_one_by_one_and_posix_names_kept() {
        use std::os::unix::ffi::OsStrExt;
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("t");
        fs::create_dir(&root).unwrap();
        let posix = [
            "aux.c",
            "nul.tar.gz",
            "x:y",
            "what?",
            "Screenshot 2024-01-01 10:30:00.png",
            "trailing.",
        ];
        for n in posix {
            fs::write(root.join(n), n).unwrap();
        }
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            root.join("fifo"),
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        std::os::unix::fs::symlink(root.join("nowhere"), root.join("dangling")).unwrap();
        let _sock = std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap();
        fs::write(root.join(std::ffi::OsStr::from_bytes(b"bad\xff")), b"x").unwrap();
        fs::write(root.join("ctl\u{1b}[2J"), b"x").unwrap();
        let got = collect(&[root], None).unwrap();
        let mut sent = names(&got);
        sent.sort_unstable();
        let mut want: Vec<String> = posix.iter().map(|n| format!("t/{n}")).collect();
        want.push("t".into());
        want.sort();
        assert_eq!(sent, want);
        let mut skipped: Vec<(&str, &str)> = got
            .skipped
            .iter()
            .map(|s| (s.name.as_str(), s.reason.as_str()))
            .collect();
        skipped.sort_unstable();
        let reasons: Vec<&str> = skipped.iter().map(|s| s.1).collect();
        assert_eq!(skipped.len(), 5, "{skipped:?}");
        assert!(
            reasons.iter().any(|r| r.contains("not valid UTF-8")),
            "{reasons:?}"
        );
        assert!(reasons.iter().any(|r| r.contains("control")), "{reasons:?}");
        assert!(
            reasons.iter().any(|r| r.contains("dangling")),
            "{reasons:?}"
        );
        assert!(reasons.iter().any(|r| r.contains("FIFO")), "{reasons:?}");
        assert!(reasons.iter().any(|r| r.contains("socket")), "{reasons:?}");
        assert!(
            skipped.iter().any(|s| s.0 == "t/bad\u{fffd}"),
            "a name that is not UTF-8 is recorded lossy, in its folder: {skipped:?}"
        );
        assert!(
            skipped.iter().any(|s| s.0 == "t/ctl\u{1b}[2J"),
            "names are recorded as they are: {skipped:?}"
        );
    }
}
