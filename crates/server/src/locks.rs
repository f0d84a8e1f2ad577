//! In-process locks on destination names (relative to the root), so that two connections
//! never write one name at once.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

/// The set of destination names being written right now.
#[derive(Debug, Default)]
pub(crate) struct NameLocks {
    held: Mutex<HashSet<String>>,
}

/// Holds one name until dropped.
#[derive(Debug)]
pub(crate) struct NameLock {
    locks: Arc<NameLocks>,
    name: String,
}

impl NameLocks {
    /// Takes the lock on `name`, or `None` if another upload holds it.
    pub(crate) fn try_lock(self: &Arc<Self>, name: &str) -> Option<NameLock> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.insert(name.to_owned()).then(|| NameLock {
            locks: Arc::clone(self),
            name: name.to_owned(),
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
        held.remove(&self.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time() {
        let locks = Arc::new(NameLocks::default());
        let a = locks.try_lock("x/a").expect("free");
        assert!(locks.try_lock("x/a").is_none());
        assert!(locks.try_lock("x/b").is_some());
        drop(a);
        assert!(locks.try_lock("x/a").is_some());
    }
}
