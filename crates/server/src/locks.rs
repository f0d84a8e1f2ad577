//! In-process locks on destination paths, so that two connections never write one name at once.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

/// The set of destination paths being written right now.
#[derive(Debug, Default)]
pub(crate) struct NameLocks {
    held: Mutex<HashSet<PathBuf>>,
}

/// Holds one path until dropped.
#[derive(Debug)]
pub(crate) struct NameLock {
    locks: Arc<NameLocks>,
    path: PathBuf,
}

impl NameLocks {
    /// Takes the lock on `path`, or `None` if another upload holds it.
    pub(crate) fn try_lock(self: &Arc<Self>, path: &Path) -> Option<NameLock> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.insert(path.to_owned()).then(|| NameLock {
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
        let a = locks.try_lock(Path::new("/x/a")).expect("free");
        assert!(locks.try_lock(Path::new("/x/a")).is_none());
        assert!(locks.try_lock(Path::new("/x/b")).is_some());
        drop(a);
        assert!(locks.try_lock(Path::new("/x/a")).is_some());
    }
}
