//! In-process locks on destination paths, so that two connections never write one name at once.
//! Each lock knows its holder's [`Activity`], so that a connection resuming a file can see
//! whether the holder is stale (cut off by the network, say) and ask it to close.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use crate::slots::Activity;

/// The destination paths being written right now, and by whom.
#[derive(Debug, Default)]
pub(crate) struct NameLocks {
    held: Mutex<HashMap<PathBuf, Arc<Activity>>>,
}

/// Holds one path until dropped.
#[derive(Debug)]
pub(crate) struct NameLock {
    locks: Arc<NameLocks>,
    path: PathBuf,
}

impl NameLocks {
    /// Takes the lock on `path` for `who`, or returns the holder's activity if another
    /// upload holds it.
    pub(crate) fn try_lock(
        self: &Arc<Self>,
        path: &Path,
        who: &Arc<Activity>,
    ) -> Result<NameLock, Arc<Activity>> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(holder) = held.get(path) {
            return Err(Arc::clone(holder));
        }
        held.insert(path.to_owned(), Arc::clone(who));
        Ok(NameLock {
            locks: Arc::clone(self),
            path: path.to_owned(),
        })
    }
}

impl Drop for NameLock {
    fn drop(&mut self) {
        let mut held = self
            .locks
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        held.remove(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time() {
        let locks = Arc::new(NameLocks::default());
        let (me, other) = (Activity::new(), Activity::new());
        let a = locks.try_lock(Path::new("/x/a"), &me).expect("free");
        let holder = locks.try_lock(Path::new("/x/a"), &other).unwrap_err();
        assert!(Arc::ptr_eq(&holder, &me));
        assert!(locks.try_lock(Path::new("/x/b"), &other).is_ok());
        drop(a);
        assert!(locks.try_lock(Path::new("/x/a"), &other).is_ok());
    }
}
