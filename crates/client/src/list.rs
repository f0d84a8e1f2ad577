//! Listings (protocol 2): `ferry ls`, and the folders `ferry get` fetches. A LIST is answered
//! in pages (ENTRIES) that are handed on entry by entry as they arrive, then LISTED; nothing
//! here holds a whole listing.

use ferry_proto::{Code, Entry, EntryKind, Event, Name, Step};

use crate::error::ClientError;
use crate::net::Options;
use crate::report::Observer;
use crate::session::Session;
use crate::target::Target;

/// How a listing ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Listed {
    /// Entries the server sent.
    pub count: u64,
    /// Entries the server left out (special files, unreadable folders, unsafe names).
    pub skipped: u64,
}

/// Lists what the server at `target` holds under `path` (`None`: its root), one level or,
/// with `recursive`, everything below, calling `on_entry` for each entry as its page arrives.
/// A folder named by `path` is not itself passed on (as `ls` shows what a folder holds); a
/// file named by `path` is.
///
/// Fails with [`ClientError::NoListing`] on a protocol-1 server, and with
/// [`ClientError::ListRefused`] when the server refuses the listing (no such name, say).
pub fn list(
    target: &Target,
    path: Option<Name>,
    recursive: bool,
    opts: &Options,
    obs: &mut dyn Observer,
    mut on_entry: impl FnMut(&Entry),
) -> Result<Listed, ClientError> {
    let mut session = Session::open(target, opts, obs)?;
    if session.welcome()? < 2 {
        return Err(ClientError::NoListing(target.clone()));
    }
    let shown = path
        .as_ref()
        .map_or_else(|| "/".to_owned(), ToString::to_string);
    let listed = run(&mut session, path.clone(), recursive, &mut |e| {
        if path.as_ref() != Some(&e.name) || e.kind != EntryKind::Folder {
            on_entry(&e);
        }
    })?;
    let listed = listed.map_err(|(code, reason)| ClientError::ListRefused {
        target: target.clone(),
        path: shown,
        code,
        reason: ferry_proto::name::escape(&reason),
    })?;
    session.close()?;
    Ok(listed)
}

/// Runs one LIST on a version-2 session, passing each entry on as its page arrives; the inner
/// `Err` is the server's refusal (code and reason).
pub(crate) fn run(
    session: &mut Session<'_>,
    path: Option<Name>,
    recursive: bool,
    on_entry: &mut dyn FnMut(Entry),
) -> Result<Result<Listed, (Code, String)>, ClientError> {
    let id = session.driver.conn_mut().list(path, recursive)?;
    loop {
        match session.next()? {
            Step::Event(Event::Entries { id: got, entries }) if got == id => {
                entries.into_iter().for_each(&mut *on_entry);
            }
            Step::Event(Event::Listed {
                id: got,
                count,
                skipped,
            }) if got == id => return Ok(Ok(Listed { count, skipped })),
            Step::Event(Event::Refused {
                id: got,
                code,
                reason,
            }) if got == id => return Ok(Err((code, reason))),
            other => return Err(session.unexpected(&other)),
        }
    }
}
