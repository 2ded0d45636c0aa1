//! [`Selector`]: the deliveries of a queue's three priority tiers that the worker holds, and
//! which one starts next when a concurrency slot frees: the highest tier holding one
//! ([`Priorities::Strict`]), or by smooth weighted round-robin over the tiers holding one
//! ([`Priorities::Weighted`]). Whatever the order, a delivery held for [`HOLD_LIMIT`] starts
//! next, oldest first, so no held delivery nears the broker's consumer timeout (30 minutes by
//! default), even under a flood of higher-tier jobs.

use crate::priorities::Priorities;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How long a delivery may wait in the worker before it starts whatever its tier.
pub(crate) const HOLD_LIMIT: Duration = Duration::from_secs(60);

/// Held deliveries (of any type `T`) of tiers 0 (high), 1 (normal) and 2 (low).
pub(crate) struct Selector<T> {
    order: Priorities,
    hold_limit: Duration,
    held: [VecDeque<(Instant, T)>; 3],
    /// Smooth weighted round-robin: each tier's current weight.
    current: [i64; 3],
}

impl<T> Selector<T> {
    pub(crate) fn new(order: Priorities, hold_limit: Duration) -> Self {
        Self { order, hold_limit, held: Default::default(), current: [0; 3] }
    }

    /// Holds `item` of `tier` (0 high, 1 normal, 2 low), received at `now`.
    pub(crate) fn push(&mut self, tier: usize, item: T, now: Instant) {
        self.held[tier].push_back((now, item));
    }

    /// Whether nothing is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.held.iter().all(VecDeque::is_empty)
    }

    /// The delivery to start now, and its tier; `None` if nothing is held.
    pub(crate) fn next(&mut self, now: Instant) -> Option<(usize, T)> {
        let oldest = (0..3)
            .filter_map(|tier| self.held[tier].front().map(|(since, _)| (*since, tier)))
            .min()
            .filter(|(since, _)| now.saturating_duration_since(*since) >= self.hold_limit);
        let tier = match (oldest, self.order) {
            (Some((_, tier)), _) => tier,
            (None, Priorities::Strict) => (0..3).find(|tier| !self.held[*tier].is_empty())?,
            (None, Priorities::Weighted(weights)) => self.weighted(weights)?,
        };
        self.held[tier].pop_front().map(|(_, item)| (tier, item))
    }

    /// Every held delivery, to hand back.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.held.iter_mut().flat_map(|held| held.drain(..).map(|(_, item)| item))
    }

    /// Smooth weighted round-robin (as nginx balances upstreams) over the tiers holding work:
    /// each gains its weight, the richest is chosen and pays the total.
    fn weighted(&mut self, weights: [u32; 3]) -> Option<usize> {
        let ready: Vec<usize> = (0..3).filter(|tier| !self.held[*tier].is_empty()).collect();
        let total: i64 = ready.iter().map(|tier| i64::from(weights[*tier])).sum();
        for tier in &ready {
            self.current[*tier] += i64::from(weights[*tier]);
        }
        let chosen = ready.iter().copied().max_by_key(|tier| (self.current[*tier], std::cmp::Reverse(*tier)))?;
        self.current[chosen] -= total;
        Some(chosen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(order: Priorities, each: usize) -> (Selector<usize>, Instant) {
        let now = Instant::now();
        let mut selector = Selector::new(order, HOLD_LIMIT);
        for tier in 0..3 {
            for _ in 0..each {
                selector.push(tier, tier, now);
            }
        }
        (selector, now)
    }

    #[test]
    fn strict_takes_the_highest_tier_holding_work() {
        let (mut selector, now) = full(Priorities::Strict, 2);
        let order: Vec<usize> = std::iter::from_fn(|| selector.next(now).map(|(tier, _)| tier)).collect();
        assert_eq!(order, [0, 0, 1, 1, 2, 2]);
        assert!(selector.is_empty());
        selector.push(2, 2, now);
        selector.push(0, 0, now);
        assert_eq!(selector.next(now), Some((0, 0)), "a high delivery that arrived later still goes first");
    }

    #[test]
    fn weighted_interleaves_by_the_weights_and_skips_empty_tiers() {
        let (mut selector, now) = full(Priorities::Weighted([6, 3, 1]), 100);
        let first: Vec<usize> = (0..10).filter_map(|_| selector.next(now).map(|(tier, _)| tier)).collect();
        assert_eq!(first.iter().filter(|t| **t == 0).count(), 6, "{first:?}");
        assert_eq!(first.iter().filter(|t| **t == 1).count(), 3, "{first:?}");
        assert_eq!(first.iter().filter(|t| **t == 2).count(), 1, "{first:?}");
        assert_ne!(first[..3], [0, 0, 0], "smooth: no run of six highs first: {first:?}");
        let mut selector = Selector::new(Priorities::Weighted([6, 3, 1]), HOLD_LIMIT);
        for _ in 0..4 {
            selector.push(2, 2, now);
        }
        let order: Vec<usize> = std::iter::from_fn(|| selector.next(now).map(|(tier, _)| tier)).collect();
        assert_eq!(order, [2, 2, 2, 2], "the only tier with work gets every slot");
    }

    #[test]
    fn a_delivery_held_past_the_limit_starts_next_whatever_its_tier() {
        let start = Instant::now();
        let mut selector = Selector::new(Priorities::Strict, Duration::from_secs(10));
        selector.push(2, "old low", start);
        selector.push(0, "high", start + Duration::from_secs(5));
        assert_eq!(selector.next(start + Duration::from_secs(6)), Some((0, "high")));
        selector.push(0, "another high", start + Duration::from_secs(9));
        assert_eq!(selector.next(start + Duration::from_secs(11)), Some((2, "old low")));
        assert_eq!(selector.drain().collect::<Vec<_>>(), ["another high"]);
        assert!(selector.is_empty());
    }
}
