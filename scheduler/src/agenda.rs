//! [`Agenda`]: the ticks one schedule owes, oldest first. After a gap (no replica led, or a firing
//! was held back because its queue did not exist) the missed ticks its misfire policy keeps come
//! first, then the next regular tick. It is given the time and never reads a clock, so its rules
//! are tested on their own.

use crate::schedule::{MAX_CATCH_UP, Misfire, Schedule};
use chrono::{DateTime, TimeDelta, Utc};
use std::collections::VecDeque;

/// A tick this close to now is due, not missed.
pub(crate) const TOLERANCE: TimeDelta = TimeDelta::milliseconds(500);

/// The ticks a schedule owes.
#[derive(Debug)]
pub(crate) struct Agenda {
    owed: VecDeque<DateTime<Utc>>,
}

/// What became of the ticks missed in a gap: how many there were, and how many the policy keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CatchUp {
    /// Ticks missed, counted up to one more than [`MAX_CATCH_UP`].
    pub(crate) missed: usize,
    /// The schedule's policy.
    pub(crate) policy: Misfire,
    /// Missed ticks that will fire.
    pub(crate) kept: usize,
}

impl CatchUp {
    /// Whether more ticks were missed than [`Misfire::All`] catches up on.
    pub(crate) fn truncated(&self) -> bool {
        self.policy == Misfire::All && self.missed > MAX_CATCH_UP
    }
}

impl Agenda {
    /// The agenda of `schedule` at `now`, when its last fired tick was `last` (`None`: never).
    pub(crate) fn new(schedule: &Schedule, last: Option<DateTime<Utc>>, now: DateTime<Utc>) -> (Self, Option<CatchUp>) {
        let (owed, catch_up) = owed(schedule, last, now);
        (Self { owed }, catch_up)
    }

    /// The tick to fire next, if the schedule has any left.
    pub(crate) fn next(&self) -> Option<DateTime<Utc>> {
        self.owed.front().copied()
    }

    /// The next tick has fired, at `now`. When nothing else is owed, the schedule owes the ticks
    /// after it: those missed since (the firing was held back) by its policy, then the next one.
    pub(crate) fn fired(&mut self, schedule: &Schedule, now: DateTime<Utc>) -> Option<CatchUp> {
        let tick = self.owed.pop_front()?;
        if !self.owed.is_empty() {
            return None;
        }
        let catch_up;
        (self.owed, catch_up) = owed(schedule, Some(tick), now);
        catch_up
    }
}

fn owed(
    schedule: &Schedule,
    last: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> (VecDeque<DateTime<Utc>>, Option<CatchUp>) {
    let due_from = now - TOLERANCE;
    let mut owed = VecDeque::new();
    let mut catch_up = None;
    if let Some(last) = last {
        let missed = schedule.ticks(last, due_from, MAX_CATCH_UP + 1);
        if let Some(latest) = missed.last().and_then(|_| schedule.last_until(due_from)) {
            let policy = schedule.misfire_policy();
            match policy {
                Misfire::Skip => {}
                Misfire::Once => owed.push_back(latest),
                Misfire::All => owed.extend(missed.iter().take(MAX_CATCH_UP)),
            }
            catch_up = Some(CatchUp { missed: missed.len(), policy, kept: owed.len() });
        }
    }
    let from = last.map_or(due_from, |last| last.max(due_from));
    owed.extend(schedule.next_after(from));
    (owed, catch_up)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).single().expect("valid") + TimeDelta::seconds(s.into())
    }

    fn every_two(misfire: Misfire) -> Schedule {
        Schedule::new("pulse", "*/2 * * * * *", "demo.noop").expect("valid").misfire(misfire)
    }

    #[test]
    fn a_schedule_that_never_fired_owes_its_next_tick_or_one_just_due() {
        let (agenda, catch_up) = Agenda::new(&every_two(Misfire::All), None, at(3));
        assert_eq!((agenda.next(), catch_up), (Some(at(4)), None));
        let (agenda, _) = Agenda::new(&every_two(Misfire::All), None, at(4) + TimeDelta::milliseconds(300));
        assert_eq!(agenda.next(), Some(at(4)), "a tick 0.3 s old is due, not missed");
    }

    #[test]
    fn missed_ticks_follow_the_misfire_policy() {
        // Last fired at 0; now 11: ticks 2, 4, 6, 8, 10 were missed.
        for (misfire, first, kept) in [(Misfire::Skip, at(12), 0), (Misfire::Once, at(10), 1), (Misfire::All, at(2), 5)]
        {
            let (mut agenda, catch_up) = Agenda::new(&every_two(misfire), Some(at(0)), at(11));
            assert_eq!(catch_up, Some(CatchUp { missed: 5, policy: misfire, kept }));
            assert_eq!(agenda.next(), Some(first), "{misfire:?}");
            let mut fired = Vec::new();
            while let Some(tick) = agenda.next().filter(|t| *t <= at(12)) {
                fired.push(tick);
                agenda.fired(&every_two(misfire), at(12));
            }
            assert_eq!(fired.len(), kept + 1, "the kept missed ticks, then the regular one: {fired:?}");
        }
    }

    #[test]
    fn on_time_firings_owe_the_next_tick_and_nothing_missed() {
        let schedule = every_two(Misfire::All);
        let (mut agenda, _) = Agenda::new(&schedule, Some(at(0)), at(1));
        assert_eq!(agenda.fired(&schedule, at(2)), None);
        assert_eq!(agenda.next(), Some(at(4)));
    }

    #[test]
    fn a_tick_held_back_fires_late_then_the_ticks_missed_meanwhile_follow_the_policy() {
        // Tick 2 could not fire until 9 (its queue was missing): 4, 6 and 8 passed meanwhile.
        for (misfire, next) in [(Misfire::Skip, at(10)), (Misfire::Once, at(8)), (Misfire::All, at(4))] {
            let schedule = every_two(misfire);
            let (mut agenda, _) = Agenda::new(&schedule, Some(at(0)), at(1));
            assert_eq!(agenda.next(), Some(at(2)));
            let catch_up = agenda.fired(&schedule, at(9));
            assert_eq!(catch_up.map(|c| c.missed), Some(3), "{misfire:?}");
            assert_eq!(agenda.next(), Some(next), "{misfire:?}");
        }
    }

    #[test]
    fn catching_up_on_all_stops_at_the_limit() {
        let schedule = every_two(Misfire::All);
        let (agenda, catch_up) = Agenda::new(&schedule, Some(at(0)), at(0) + TimeDelta::hours(1));
        let catch_up = catch_up.expect("missed ticks");
        assert!(catch_up.truncated() && catch_up.kept == MAX_CATCH_UP);
        assert_eq!(agenda.owed.len(), MAX_CATCH_UP + 1);
    }
}
