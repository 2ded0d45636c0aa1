//! [`Switch`]: the ids of the events a replay handled that may also wait in the service's queue,
//! so the live consumer skips them (see the worker's `replay`).

use std::collections::HashSet;
use std::sync::Mutex;

/// Event ids handled by the replay after the service's queue was bound: each may come again
/// from the queue, once. Taken out as its queue copy is skipped.
#[derive(Debug, Default)]
pub(crate) struct Switch {
    ids: Mutex<HashSet<String>>,
}

impl Switch {
    /// Remembers an event the replay handled after the binding.
    pub(crate) fn insert(&self, id: &str) {
        if let Ok(mut ids) = self.ids.lock() {
            ids.insert(id.to_owned());
        }
    }

    /// Whether event `id` was handled by the replay (and forgets it: its queue copy comes once).
    pub(crate) fn take(&self, id: &str) -> bool {
        self.ids.lock().is_ok_and(|mut ids| ids.remove(id))
    }

    /// How many ids wait for their queue copy.
    pub(crate) fn len(&self) -> usize {
        self.ids.lock().map_or(0, |ids| ids.len())
    }
}
