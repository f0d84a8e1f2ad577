//! What a client's name may be and what the client is told when it cannot be used: the
//! server's reserved prefix (refused in every component), and the meaning of a failed
//! resolution under the root (see [`crate::storage::fs`]) in words for the client.

use std::io;

use ferry_proto::{Code, Name};
use rustix::io::Errno;

/// Prefix of every name the server keeps for itself; no component of a client's name may
/// start with it.
pub(crate) const RESERVED_PREFIX: &str = ".ferry-";

/// `(parents, last component)` of a `/`-separated name (parents empty at the top).
pub(crate) fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

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

    /// `name` is a symbolic link on the server, told with `code`.
    pub(crate) fn link(name: &Name, code: Code) -> Self {
        Self::new(
            code,
            format!("{name} is a symbolic link on the server, which it never follows"),
        )
    }

    /// Another upload (on this server or another one on the same folder) holds `name`.
    pub(crate) fn busy(name: &Name) -> Self {
        Self::new(
            Code::Busy,
            format!("{name} is being uploaded by another connection; try again later"),
        )
    }
}

/// Whether `e` means the disk or the quota is full.
pub(crate) fn is_no_space(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// Refuses `name` if any of its components starts with [`RESERVED_PREFIX`].
pub(crate) fn check_reserved(name: &Name) -> Result<(), Refusal> {
    if name.components().any(|c| c.starts_with(RESERVED_PREFIX)) {
        return Err(Refusal::new(
            Code::BadName,
            format!("{name}: names starting with {RESERVED_PREFIX} (in any folder) are reserved for the server"),
        ));
    }
    Ok(())
}

/// What the client is told when `name` could not be resolved under the root: a link on the
/// way is [`Code::BadName`]; a part that is not a folder is [`Code::Exists`] for an upload and
/// [`Code::NotFound`] for a download, as is a missing part.
pub(crate) fn unresolved(name: &Name, e: &io::Error, upload: bool) -> Refusal {
    match e.raw_os_error().map(Errno::from_raw_os_error) {
        Some(Errno::LOOP | Errno::XDEV) => Refusal::new(
            Code::BadName,
            format!("{name}: a folder or file on its path is a symbolic link on the server, which it never follows"),
        ),
        Some(Errno::NOTDIR) if upload => Refusal::new(
            Code::Exists,
            format!("{name}: a part of its path exists on the server and is not a folder"),
        ),
        Some(Errno::NOTDIR | Errno::NOENT) => {
            Refusal::new(Code::NotFound, format!("{name}: no such file"))
        }
        _ => Refusal::io("cannot reach the folder", e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::parse(s).expect("valid")
    }

    #[test]
    fn the_reserved_prefix_is_refused_in_every_component() {
        for bad in [
            ".ferry-partial.x",
            "a/.ferry-partial.x/y",
            ".ferry-state/x",
            "a/b/.ferry-",
        ] {
            assert_eq!(
                check_reserved(&name(bad)).unwrap_err().code,
                Code::BadName,
                "{bad}"
            );
        }
        for good in ["ferry-x", "a/.ferryx/y", "a/x.ferry-"] {
            assert!(check_reserved(&name(good)).is_ok(), "{good}");
        }
    }

    #[test]
    fn failed_resolutions_are_told_in_the_client_s_terms() {
        let n = name("a/b");
        let code = |errno: Errno, upload| unresolved(&n, &errno.into(), upload).code;
        assert_eq!(code(Errno::LOOP, true), Code::BadName);
        assert_eq!(code(Errno::LOOP, false), Code::BadName);
        assert_eq!(code(Errno::NOTDIR, true), Code::Exists);
        assert_eq!(code(Errno::NOTDIR, false), Code::NotFound);
        assert_eq!(code(Errno::NOENT, false), Code::NotFound);
        assert_eq!(code(Errno::ACCESS, false), Code::Io);
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
