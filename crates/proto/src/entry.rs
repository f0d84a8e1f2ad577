//! Entries of a LIST answer, and the rules a listing keeps (PROTOCOL.md §4.10-§4.11).

use crate::name::Name;
use crate::wire::Timestamp;

/// What an OFFER or a listing entry describes (PROTOCOL.md §4.2, §4.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum EntryKind {
    /// A regular file, with a body.
    #[default]
    File,
    /// A folder (version 2): no body; the receiver creates it (PROTOCOL.md §4.9).
    Folder,
}

impl EntryKind {
    /// The wire value in a listing entry.
    pub(crate) fn to_u8(self) -> u8 {
        match self {
            EntryKind::File => 0,
            EntryKind::Folder => 1,
        }
    }

    /// Decodes a listing entry's kind; `None` for a value this version does not define.
    pub(crate) fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(EntryKind::File),
            1 => Some(EntryKind::Folder),
            _ => None,
        }
    }
}

/// One entry of a listing: what the server holds under a name (PROTOCOL.md §4.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// File or folder.
    pub kind: EntryKind,
    /// The whole name, relative to the server's root, exactly as a GET takes it.
    pub name: Name,
    /// Size in bytes; 0 for a folder.
    pub size: u64,
    /// Modification time.
    pub mtime: Timestamp,
    /// Unix permission bits.
    pub mode: u32,
}

/// Bytes of an encoded entry besides its name: kind, size, mtime (12), mode, name length.
pub(crate) const ENTRY_FIXED_LEN: usize = 1 + 8 + 12 + 4 + 2;

impl Entry {
    /// Bytes this entry takes in an ENTRIES frame.
    pub(crate) fn encoded_len(&self) -> usize {
        ENTRY_FIXED_LEN + self.name.as_str().len()
    }
}

/// The rules one listing keeps (PROTOCOL.md §4.11), checked entry by entry on both sides: by
/// the server machine on what its caller lists, by the client machine on what arrives.
#[derive(Debug, Clone)]
pub(crate) struct Listing {
    /// The listed path; `None` for the root.
    path: Option<Name>,
    recursive: bool,
    /// Entries admitted so far.
    count: u64,
    /// The path names a file: it is the only entry.
    single_file: bool,
}

impl Listing {
    pub(crate) fn new(path: Option<Name>, recursive: bool) -> Self {
        Self {
            path,
            recursive,
            count: 0,
            single_file: false,
        }
    }

    /// Admits the next entry, or says which rule it breaks.
    pub(crate) fn admit(&mut self, e: &Entry) -> Result<(), &'static str> {
        if e.kind == EntryKind::Folder && e.size != 0 {
            return Err("a folder entry has a size");
        }
        let depth = match &self.path {
            Some(p) if self.count == 0 => {
                if e.name != *p {
                    return Err("the first entry is not the listed path itself");
                }
                self.single_file = e.kind == EntryKind::File;
                None
            }
            Some(p) => {
                if self.single_file {
                    return Err("a listed file is the only entry");
                }
                if !e.name.is_under(p) {
                    return Err("an entry outside the listed folder");
                }
                Some(p.depth() + 1)
            }
            None => Some(1),
        };
        if !self.recursive && depth.is_some_and(|d| e.name.depth() != d) {
            return Err("an entry below the first level of a one-level listing");
        }
        self.count = self.count.checked_add(1).ok_or("too many entries")?;
        Ok(())
    }

    /// Entries admitted so far.
    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    /// Checks the end of the listing against the count its LISTED frame states.
    pub(crate) fn end(&self, count: u64) -> Result<(), &'static str> {
        if count != self.count {
            return Err("the count differs from the entries sent");
        }
        if self.path.is_some() && count == 0 {
            return Err("a listing of a path starts with the path itself");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: EntryKind, name: &str) -> Entry {
        Entry {
            kind,
            name: Name::parse(name).unwrap(),
            size: 0,
            mtime: Timestamp { secs: 0, nanos: 0 },
            mode: 0o755,
        }
    }

    /// PROTOCOL.md §4.11: the path first, then only what lies under it, one level or all.
    #[test]
    fn a_listing_keeps_to_its_path_and_depth() {
        use EntryKind::{File, Folder};
        let photos = Some(Name::parse("photos").unwrap());
        let mut one = Listing::new(photos.clone(), false);
        assert!(
            one.admit(&entry(File, "photos/a.jpg")).is_err(),
            "path first"
        );
        one.admit(&entry(Folder, "photos")).unwrap();
        one.admit(&entry(File, "photos/a.jpg")).unwrap();
        one.admit(&entry(Folder, "photos/2024")).unwrap();
        assert!(one.admit(&entry(File, "photos/2024/b.jpg")).is_err());
        assert!(one.admit(&entry(File, "photosx")).is_err());
        assert!(one.admit(&entry(File, "other/a")).is_err());
        assert_eq!(one.end(3), Ok(()));
        assert!(one.end(4).is_err());

        let mut all = Listing::new(photos, true);
        all.admit(&entry(Folder, "photos")).unwrap();
        all.admit(&entry(File, "photos/2024/b.jpg")).unwrap();
        let mut sized = entry(Folder, "photos/x");
        sized.size = 1;
        assert!(all.admit(&sized).is_err());

        let mut file = Listing::new(Some(Name::parse("a.txt").unwrap()), true);
        file.admit(&entry(File, "a.txt")).unwrap();
        assert!(file.admit(&entry(File, "a.txt/x")).is_err());
        assert!(Listing::new(Some(Name::parse("a").unwrap()), true)
            .end(0)
            .is_err());

        let mut root = Listing::new(None, false);
        root.admit(&entry(File, "a")).unwrap();
        assert!(root.admit(&entry(File, "a/b")).is_err());
        assert_eq!(root.end(1), Ok(()));
        assert_eq!(Listing::new(None, true).end(0), Ok(()));
    }
}
