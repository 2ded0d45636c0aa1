//! [`States`]: the application state a worker hands its handlers, one value per type (see
//! `crate::Worker::state`, `crate::State` and `crate::JobContext::state`).

use std::any::{Any, TypeId};
use std::collections::HashMap;

/// The application state of a worker, by type.
#[derive(Debug, Default)]
pub(crate) struct States(HashMap<TypeId, Box<dyn Any + Send + Sync>>);

impl States {
    /// Adds (or replaces) the state of type `T`.
    pub(crate) fn insert<T: Send + Sync + 'static>(&mut self, value: T) {
        self.0.insert(TypeId::of::<T>(), Box::new(value));
    }

    /// The state of type `T`, if registered.
    pub(crate) fn get<T: 'static>(&self) -> Option<&T> {
        self.0.get(&TypeId::of::<T>()).and_then(|value| value.downcast_ref())
    }

    /// Whether a state of this type id is registered.
    pub(crate) fn contains(&self, id: TypeId) -> bool {
        self.0.contains_key(&id)
    }
}
