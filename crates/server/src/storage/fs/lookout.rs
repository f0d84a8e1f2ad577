//! Looking names up ahead in a folder, so that a publish's `linkat` does not wait for the
//! folder's block.
//!
//! The `linkat` that publishes a body looks its name up in the folder first. On ext4 without
//! a journal, reading the folder's block for that lookup waits while a flush (the `syncfs` of
//! an earlier batch) writes the block: one wait per flush and folder on the thread that
//! stores. A lookup made ahead, while no flush holds the block, leaves its answer in the
//! kernel's cache (a name that is not there included), and the publish finds it there.

use std::os::fd::OwnedFd;

use rustix::fs::{self as rfs, AtFlags};

use crate::storage::Lookout;

/// A folder, opened beneath the root once, whose names are looked up one component each.
/// Only looking goes through it: what the folder holds, or where it has gone meanwhile, is
/// never changed through this descriptor (bodies are created and published through a folder
/// resolved afresh for each, see [`super::Space`]).
pub(super) struct FolderLookout(pub(super) OwnedFd);

impl Lookout for FolderLookout {
    fn look(&self, leaf: &str) {
        // Whatever is there, or not: only the lookup matters.
        let _ = rfs::statat(&self.0, leaf, AtFlags::SYMLINK_NOFOLLOW);
    }
}
