//! In-process locks on destination names (relative to the root), so that two connections never
//! write one name at once. Each lock knows its holder's [`Activity`], so that a connection
//! resuming a file can see whether the holder is stale (cut off by the network, say) and ask it
//! to close.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::slots::Activity;

/// The destination names being written right now, and by whom.
#[derive(Debug, Default)]
pub(crate) struct NameLocks {
    held: Mutex<HashMap<String, Arc<Activity>>>,
}

/// Holds one name until dropped.
#[derive(Debug)]
pub(crate) struct NameLock {
    locks: Arc<NameLocks>,
    name: String,
}

impl NameLocks {
    /// Takes the lock on `name` for `who`, or returns the holder's activity if another
    /// upload holds it.
    pub(crate) fn try_lock(
        self: &Arc<Self>,
        name: &str,
        who: &Arc<Activity>,
    ) -> Result<NameLock, Arc<Activity>> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(holder) = held.get(name) {
            return Err(Arc::clone(holder));
        }
        held.insert(name.to_owned(), Arc::clone(who));
        Ok(NameLock {
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
        let (me, other) = (Activity::new(), Activity::new());
        let a = locks.try_lock("x/a", &me).expect("free");
        let holder = locks.try_lock("x/a", &other).unwrap_err();
        assert!(Arc::ptr_eq(&holder, &me));
        assert!(locks.try_lock("x/b", &other).is_ok());
        drop(a);
        assert!(locks.try_lock("x/a", &other).is_ok());
    }
}
