//! The priority tiers of a work queue `<q>`: `<q>.high`, `<q>` itself and `<q>.low`. Each is an
//! ordinary work queue (quorum, its own `.dlq`, the same delivery limit), so a Celery client
//! reaches a tier by its name and nothing changes for a queue used without tiers.

use super::{WorkQueue, validate_queue_name};
use crate::error::Result;
use crate::priority::Priority;
use std::borrow::Cow;

/// The name of `queue`'s tier `priority`: `queue` itself for [`Priority::Normal`], else
/// `<queue>.high` or `<queue>.low`. Both names are checked.
pub fn tier_name(queue: Cow<'static, str>, priority: Priority) -> Result<Cow<'static, str>> {
    validate_queue_name(&queue)?;
    let name = match priority {
        Priority::Normal => return Ok(queue),
        Priority::High | Priority::Low => format!("{queue}.{}", priority.as_str()),
    };
    validate_queue_name(&name)?;
    Ok(Cow::Owned(name))
}

/// The three tiers of `queue`, highest first, with its delivery limit.
pub fn tier_queues(queue: &WorkQueue) -> Result<[WorkQueue; 3]> {
    let tier = |priority| -> Result<WorkQueue> {
        let name = tier_name(Cow::Owned(queue.name().to_owned()), priority)?;
        Ok(WorkQueue::new(name.into_owned())?.with_delivery_limit(queue.delivery_limit()))
    };
    Ok([tier(Priority::High)?, tier(Priority::Normal)?, tier(Priority::Low)?])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_are_named_after_their_queue_and_checked() {
        let names = |q: &str| tier_queues(&WorkQueue::new(q).expect("valid")).map(|t| t.map(|q| q.name().to_owned()));
        assert_eq!(names("images").expect("valid"), ["images.high", "images", "images.low"]);
        assert_eq!(tier_name("images".into(), Priority::Normal).expect("valid"), "images");
        assert!(tier_name("amq.x".into(), Priority::High).is_err());
        let long = "q".repeat(188);
        assert!(tier_name(long.clone().into(), Priority::Normal).is_ok());
        assert!(tier_name(long.into(), Priority::Low).is_err(), "the tier's own name is too long");
        let limited = WorkQueue::new("a").expect("valid").with_delivery_limit(3);
        assert!(tier_queues(&limited).expect("valid").iter().all(|q| q.delivery_limit() == 3));
    }
}
