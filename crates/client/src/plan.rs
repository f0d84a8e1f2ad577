//! What `ferry get` fetches, decided before the first GET: on a protocol-2 server each name is
//! listed (recursively), so that a folder expands into its files and folders, each file's size
//! and mtime are known (a local copy that matches is reported unchanged and not fetched), and
//! `-o` can behave as `cp` does. With `-o -` each name is listed one level deep instead, only
//! to tell a folder, which standard output cannot take (a usage error). On a protocol-1 server,
//! and on one that lets the client download but not list, the names are fetched as given (a
//! folder then cannot be).
//!
//! Nothing is made here but the folders a listing holds: the destination and the folders on
//! a file's way are made when its offer comes ([`Folders`]), so that a `get` that fetches
//! nothing leaves nothing behind.
//!
//! The listing is read on the connection the files are then fetched on; it is held as one
//! small record per entry while they are fetched (the answers to GETs come after the listing
//! on one connection, PROTOCOL.md §7.1).

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use ferry_proto::{Code, Entry, EntryKind, Name, NameError, Timestamp};

use crate::error::ClientError;
use crate::folders::{Blocked, Folders};
use crate::landing::{kept, local_path, SAME_SIZE_AND_TIME};
use crate::list;
use crate::net::Options;
use crate::report::{entries, FileReport, Observer, Outcome, Retry, Skipped, Status};
use crate::session::Session;
use crate::target::Target;
use crate::walk;

/// Most bytes of listing `get` holds while it fetches (names plus `ENTRY_COST` each): a
/// folder with more is refused here (`too_large`), so that no server can make the client
/// hold an unbounded listing.
pub const MAX_PLANNED_BYTES: usize = 256 << 20;

/// What one held entry costs besides its name.
const ENTRY_COST: usize = 64;

/// Where downloaded files go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    /// Into this folder (created if missing), under each file's relative name.
    Dir(PathBuf),
    /// As `cp` takes its last argument: an existing folder receives (as [`Dest::Dir`]);
    /// otherwise the path names the file when exactly one file is fetched, and is the folder
    /// created to receive them when more are (or a folder is).
    Path(PathBuf),
    /// To standard output, one after the other, as the bytes arrive.
    Stdout,
}

/// A file to fetch.
#[derive(Debug, Clone)]
pub(crate) struct Want {
    pub(crate) name: Name,
    /// Where it lands (`None`: standard output).
    pub(crate) path: Option<PathBuf>,
    /// A local file holds its place and may be this very file: its offer decides (the same
    /// size and mtime, or the same digest, is unchanged; otherwise it is kept).
    pub(crate) held: bool,
    /// Why the server refused to list it, when it was asked for as a file for that reason.
    pub(crate) unlisted: Option<String>,
}

/// A name asked for, with what its listing says of it.
struct Asked {
    name: Name,
    /// The listing's entries (`None`: not listed, fetched as a file).
    entries: Option<Vec<Entry>>,
    /// Why the server refused to list it, if it did.
    unlisted: Option<String>,
}

impl Asked {
    /// A name not listed, to be asked for as a file (`unlisted`: see [`Asked::unlisted`]).
    fn file(name: &Name, unlisted: Option<String>) -> Self {
        Self {
            name: name.clone(),
            entries: None,
            unlisted,
        }
    }
}

/// What planning decided, and the connection it was decided on.
pub(crate) struct Plan<'a> {
    /// The connection the listing came over, to fetch the files on.
    pub(crate) session: Session<'a>,
    /// The files to fetch.
    pub(crate) wants: Vec<Want>,
    /// Folders listed: created already, given their mode and mtime once the files are in.
    pub(crate) folders: Vec<(PathBuf, Entry)>,
    /// The folders under the destination, found, made or blocked.
    pub(crate) places: Folders,
    /// Reports made while planning (names not found, folders, files already here, retries).
    pub(crate) outcome: Outcome,
    /// Places where a folder belongs and something else is, each with the report of the
    /// first entry it stops and how many more it stops.
    blocked: BTreeMap<PathBuf, (FileReport, u64)>,
}

/// Plans the download of `names` into `dest`, retrying the connection as [`Options::retries`]
/// allows; the `Err` outcome ends the run.
pub(crate) fn plan<'a>(
    target: &'a Target,
    names: &[Name],
    dest: &Dest,
    opts: &'a Options,
    obs: &mut dyn Observer,
) -> Result<Plan<'a>, Box<Outcome>> {
    let mut proven = false;
    let mut retries = 0;
    loop {
        let mut welcomed = false;
        match try_plan(target, names, dest, opts, obs, &mut welcomed) {
            Ok(mut p) => {
                p.outcome.retries = retries;
                return Ok(p);
            }
            Err(e) => {
                proven |= welcomed;
                if retries >= opts.retries || !e.is_retriable(proven) {
                    return Err(Box::new(Outcome {
                        retries,
                        ..Outcome::failed(e)
                    }));
                }
                retries += 1;
                let delay = opts.backoff.delay(retries);
                obs.retrying(&Retry {
                    retry: retries,
                    of: opts.retries,
                    delay,
                    reason: e.to_string(),
                    files_left: names.len(),
                });
                (opts.backoff.sleep)(delay);
            }
        }
    }
}

fn try_plan<'a>(
    target: &'a Target,
    names: &[Name],
    dest: &Dest,
    opts: &'a Options,
    obs: &mut dyn Observer,
    welcomed: &mut bool,
) -> Result<Plan<'a>, ClientError> {
    // Where files land (`None`: standard output), and whether that may name the one file.
    let (out, single) = match dest {
        Dest::Stdout => (None, false),
        Dest::Dir(d) => (Some(d), false),
        Dest::Path(p) => (Some(p), true),
    };
    let mut session = Session::open(target, opts, obs)?;
    let version = session.welcome()?;
    *welcomed = true;
    let mut plan = Plan {
        session,
        wants: Vec::new(),
        folders: Vec::new(),
        places: Folders::new(PathBuf::new()),
        outcome: Outcome::default(),
        blocked: BTreeMap::new(),
    };
    let mut listed: Vec<Asked> = Vec::new();
    // Bytes of listing held, against MAX_PLANNED_BYTES.
    let mut held = 0usize;
    // Names whose listing came whole: a name under one of them comes with it.
    let mut whole: HashSet<&str> = HashSet::new();
    // Why the server refuses to list, once it has: the other names are asked for as files.
    let mut unlistable: Option<String> = None;
    for name in outer_first(names) {
        if ancestors(name).any(|a| whole.contains(a)) {
            continue;
        }
        if version < 2 || unlistable.is_some() {
            listed.push(Asked::file(name, unlistable.clone()));
            continue;
        }
        let mut entries = Vec::new();
        let mut over = false;
        // To standard output, only the name itself matters (the first entry, §4.11): one
        // level is listed and the rest let go.
        let recursive = out.is_some();
        let answer = list::run(&mut plan.session, Some(name.clone()), recursive, &mut |e| {
            if !recursive && !entries.is_empty() {
                return;
            }
            let cost = e.name.as_str().len() + ENTRY_COST;
            if !over && held + cost <= MAX_PLANNED_BYTES {
                held += cost;
                entries.push(e);
            } else {
                over = true;
            }
        })?;
        let (code, reason, refused) = match answer {
            Ok(l) if !over => {
                if !recursive && entries.first().is_some_and(|e| e.kind == EntryKind::Folder) {
                    // The user's to mend, not the server's: nothing is fetched.
                    return Err(ClientError::Usage(format!(
                        "{name} is a folder; -o - writes only files to standard output: use \
                         -o DIR to fetch a folder"
                    )));
                }
                if l.skipped > 0 {
                    obs.left_out(name, l.skipped);
                    plan.outcome.left_out += l.skipped;
                }
                whole.insert(name.as_str());
                listed.push(Asked {
                    name: name.clone(),
                    entries: Some(entries),
                    unlisted: None,
                });
                continue;
            }
            Ok(_) => (
                Code::TooLarge,
                format!(
                    "its listing is over {} MiB, more than is held at once: fetch its \
                     folders one by one",
                    MAX_PLANNED_BYTES >> 20
                ),
                false,
            ),
            // May download but not list: a file needs no listing (as on protocol 1).
            Err((Code::Denied, reason)) => {
                unlistable = Some(reason);
                listed.push(Asked::file(name, unlistable.clone()));
                continue;
            }
            Err((code, reason)) => (code, reason, true),
        };
        held -= entries
            .iter()
            .map(|e| e.name.as_str().len() + ENTRY_COST)
            .sum::<usize>();
        let mut r = FileReport::new(name.clone(), None, None, Status::Code(code));
        r.refused = refused;
        r.detail = reason;
        plan.report(r, obs);
    }
    let Some(out) = out else {
        plan.wants = listed
            .into_iter()
            .map(|a| Want {
                name: a.name,
                path: None,
                held: false,
                unlisted: a.unlisted,
            })
            .collect();
        return Ok(plan);
    };
    let one_file = names.len() == 1
        && listed.len() == 1
        && listed[0]
            .entries
            .as_ref()
            .is_none_or(|e| e.len() == 1 && e[0].kind == EntryKind::File);
    let file_at = single && one_file && !out.is_dir();
    let root = if file_at {
        out.parent().unwrap_or(Path::new("")).to_owned()
    } else if out.exists() && !out.is_dir() {
        return Err(ClientError::Destination {
            path: out.clone(),
            source: io::Error::new(io::ErrorKind::NotADirectory, "not a folder"),
        });
    } else {
        out.clone()
    };
    plan.places = Folders::new(root);
    let how = Landing {
        force: opts.force,
        compare: version >= 2,
    };
    for asked in listed {
        let place = |n: &Name| {
            if file_at {
                out.clone()
            } else {
                local_path(out, n)
            }
        };
        let Some(entries) = asked.entries else {
            // Not listed: the name asked for is where it lands.
            let path = place(&asked.name);
            if file_at || plan.storable_here(&asked.name, EntryKind::File, &path, obs) {
                plan.want(asked.name, path, None, asked.unlisted, how, obs);
            }
            continue;
        };
        for e in entries {
            let path = place(&e.name);
            if !plan.storable_here(&e.name, e.kind, &path, obs) {
                // Skipped, with the reason.
            } else if e.kind == EntryKind::Folder {
                plan.folder(path, e, obs);
            } else {
                plan.want(e.name.clone(), path, Some(&e), None, how, obs);
            }
        }
    }
    plan.report_blocked(obs);
    Ok(plan)
}

/// The names in the order they are listed: a name under another name asked for (`photos`
/// and `photos/2024/cat.jpg`) after the others, so that it is not fetched twice when that
/// one's listing holds it.
fn outer_first(names: &[Name]) -> impl Iterator<Item = &Name> {
    let given: HashSet<&str> = names.iter().map(Name::as_str).collect();
    let (inner, outer): (Vec<&Name>, Vec<&Name>) = names
        .iter()
        .partition(|n| ancestors(n).any(|a| given.contains(a)));
    outer.into_iter().chain(inner)
}

/// The folders a name lies under (`a`, `a/b` for `a/b/c`).
fn ancestors(name: &Name) -> impl Iterator<Item = &str> {
    let s = name.as_str();
    s.match_indices('/').map(move |(at, _)| &s[..at])
}

/// How a file found in its place is treated.
#[derive(Debug, Clone, Copy)]
struct Landing {
    /// `--force`: replaced.
    force: bool,
    /// Protocol 2: the offer may tell that it is the file (PROTOCOL.md §4.8).
    compare: bool,
}

/// Whether a name can be stored here: on Windows (`portable`) the rules of PROTOCOL.md §5.2
/// apply too; elsewhere every valid name can.
pub(crate) fn storable(name: &Name, portable: bool) -> Result<(), NameError> {
    if portable {
        name.portable()
    } else {
        Ok(())
    }
}

impl Plan<'_> {
    /// Whether `name` can be stored on this system (see [`storable`]); if not, it is skipped
    /// with the reason, and nothing is written for it anywhere.
    fn storable_here(
        &mut self,
        name: &Name,
        kind: EntryKind,
        path: &Path,
        obs: &mut dyn Observer,
    ) -> bool {
        let Err(why) = storable(name, cfg!(windows)) else {
            return true;
        };
        let s = Skipped {
            path: path.to_owned(),
            name: name.as_str().to_owned(),
            kind,
            reason: format!("this system cannot store that name: {why}"),
        };
        obs.skipped(&s);
        self.outcome.skipped.push(s);
        false
    }

    /// Tells `obs` of a report made while planning, and keeps it.
    fn report(&mut self, r: FileReport, obs: &mut dyn Observer) {
        obs.finished(&r);
        self.outcome.files.push(r);
    }

    /// A listed folder: made now (with what it holds, an empty one is kept too).
    fn folder(&mut self, path: PathBuf, e: Entry, obs: &mut dyn Observer) {
        let made = match self.places.make(&path) {
            Ok(made) => made,
            Err(b) => {
                let r = FileReport::folder(e.name.clone(), Some(path), Status::Code(b.code));
                return self.block(b, r);
            }
        };
        let status = Status::Code(if made { Code::Stored } else { Code::Unchanged });
        let r = FileReport::folder(e.name.clone(), Some(path.clone()), status);
        self.report(r, obs);
        self.folders.push((path, e));
    }

    /// A file: fetched unless its folder cannot be made (see [`Folders`]) or something is in
    /// its place: a folder (never replaced), or a file, unchanged when it has the listed size
    /// and mtime (rsync's quick check), or decided by the offer (see [`Want::held`]), or
    /// otherwise kept unless `--force`.
    fn want(
        &mut self,
        name: Name,
        path: PathBuf,
        entry: Option<&Entry>,
        unlisted: Option<String>,
        how: Landing,
        obs: &mut dyn Observer,
    ) {
        let size = entry.map(|e| e.size);
        let report = |code, detail: String| {
            let mut r = FileReport::new(name.clone(), Some(path.clone()), size, Status::Code(code));
            r.detail = detail;
            r
        };
        if let Err(b) = self.places.check(path.parent().unwrap_or(Path::new(""))) {
            let r = report(b.code, String::new());
            return self.block(b, r);
        }
        let mut held = false;
        match fs::symlink_metadata(&path) {
            Err(_) => {}
            Ok(meta) if meta.is_dir() => {
                let why = format!(
                    "{} is a folder here, and a file never replaces a folder (not with \
                     --force either): move it away, or fetch into another folder with -o",
                    path.display()
                );
                return self.report(report(Code::Exists, why), obs);
            }
            Ok(meta)
                if entry.is_some_and(|e| {
                    meta.is_file() && meta.len() == e.size && walk::mtime(&meta) == Some(e.mtime)
                }) =>
            {
                return self.report(report(Code::Unchanged, SAME_SIZE_AND_TIME.into()), obs);
            }
            Ok(_) if how.force => {}
            Ok(meta) if how.compare && meta.is_file() && size.is_none_or(|s| s == meta.len()) => {
                held = true;
            }
            Ok(_) => return self.report(report(Code::Exists, kept(&path)), obs),
        }
        self.wants.push(Want {
            name,
            path: Some(path),
            held,
            unlisted,
        });
    }

    /// An entry that cannot land: a folder's place on its way (or its own, for a folder) is
    /// blocked. The first entry each place stops is reported once planning is done, with how
    /// many more it stops; those are not reported one by one.
    fn block(&mut self, b: Blocked, r: FileReport) {
        self.blocked
            .entry(b.at)
            .and_modify(|(_, more)| *more += 1)
            .or_insert_with(|| {
                let mut r = r;
                r.detail = b.why;
                (r, 0)
            });
    }

    /// Reports the entries stopped by blocked places (see [`Plan::block`]).
    fn report_blocked(&mut self, obs: &mut dyn Observer) {
        for (_, (mut r, more)) in std::mem::take(&mut self.blocked) {
            if more > 0 {
                r.detail += &format!("; {} under it not fetched either", entries(more));
            }
            self.report(r, obs);
        }
    }
}

/// Gives the listed folders their mode (less what the umask took when they were made) and
/// mtime, deepest first, once everything under them is written. Best effort, as for files.
pub(crate) fn finish_folders(mut folders: Vec<(PathBuf, Entry)>) {
    folders.sort_by_key(|(_, e)| std::cmp::Reverse(e.name.depth()));
    for (path, e) in folders {
        if let Err(err) = apply(&path, e.mode, e.mtime) {
            log::warn!("cannot set the mode or time of {}: {err}", path.display());
        }
    }
}

fn apply(path: &Path, mode: u32, mtime: Timestamp) -> io::Result<()> {
    let dir = crate::platform::open_folder(path)?;
    if let Some(t) = crate::landing::to_system_time(mtime) {
        dir.set_modified(t)?;
    }
    crate::platform::narrow_mode(&dir, mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 12 item 6: on Windows a name `Name::portable` rejects is refused; elsewhere
    /// every valid name lands as it is.
    #[test]
    fn windows_refuses_what_it_cannot_store_and_posix_stores_everything() {
        for raw in ["aux.c", "x:y", "what?", "a/trailing.", "nul.tar.gz"] {
            let name = Name::parse(raw).unwrap();
            assert!(storable(&name, false).is_ok(), "{raw}");
            assert!(storable(&name, true).is_err(), "{raw}");
        }
        let plain = Name::parse("photos/Screenshot 2024-01-01.png").unwrap();
        assert!(storable(&plain, true).is_ok());
    }
}
