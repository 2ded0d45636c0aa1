//! [`Priority`]: which tier of its queue a job is sent to. Quorum queues have no message
//! priorities, so a queue `<q>` has three tiers, each an ordinary work queue: `<q>.high`, `<q>`
//! itself (normal) and `<q>.low` (named in `topology/tiers.rs`). A worker set to consume tiers
//! takes them in strict order or by weights; without that setting it consumes `<q>` alone.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The tier of its queue a job goes to. [`Priority::Normal`] (the default) is the queue itself,
/// as when no priority is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// `<queue>.high`: taken first by a worker consuming tiers.
    High,
    /// `<queue>`: the queue itself.
    #[default]
    Normal,
    /// `<queue>.low`: taken last.
    Low,
}

impl Priority {
    /// The three tiers, highest first.
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

    /// `high`, `normal` or `low`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
