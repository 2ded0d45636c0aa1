//! The ids everything else refers to: [`JobId`] (Celery's `id` header), [`BatchId`] (Celery's
//! `group` header) and [`EventId`] (an event's `message_id`). They depend on nothing else in the
//! crate, so every module may use them.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// A fresh random id (a UUID v4).
            #[must_use]
            pub fn random() -> Self {
                Self(uuid::Uuid::new_v4().to_string())
            }

            /// The id as a string.
            #[must_use]
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> Self {
                Self(id)
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> Self {
                Self(id.to_owned())
            }
        }
    };
}

string_id! {
    /// A job's id: Celery's `id` header and the result's `correlation_id`. A UUID v4 unless the
    /// sender chose another.
    JobId
}

string_id! {
    /// A batch id: the `group` header of its jobs and the name of its progress queue.
    BatchId
}

string_id! {
    /// An event's id: its `message_id` and `x-lepus-event-id` header. A UUID v4 unless the
    /// publisher chose another; handlers deduplicate redeliveries by it.
    EventId
}
