//! Liveness by observation, not by wall clock: a reader notes, on its own monotonic
//! clock, when it last saw a counter change. Two machines' wall clocks may disagree by
//! any amount; how long a reader has watched a counter stand still does not depend on
//! them.

use std::time::Duration;

use tokio::time::Instant;

/// When the watched value last changed, as this process saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeClock<V> {
    value: V,
    /// The instant the current value was first seen (first sight, or the last change).
    changed_at: Instant,
    /// False until the value has been seen to change once: a value seen only once may
    /// belong to a process that died long before this one started.
    seen_change: bool,
}

impl<V: PartialEq> ChangeClock<V> {
    /// First sight of `value` at `now`.
    pub fn new(value: V, now: Instant) -> Self {
        ChangeClock { value, changed_at: now, seen_change: false }
    }

    /// Records a reading taken at `now` (take `now` after the read returned, so that the
    /// write it reflects happened before it).
    pub fn observe(&mut self, value: V, now: Instant) {
        if value != self.value {
            self.value = value;
            self.changed_at = now;
            self.seen_change = true;
        }
    }

    pub fn value(&self) -> &V {
        &self.value
    }

    /// How long the value has stood still as of `now`.
    pub fn unchanged_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.changed_at)
    }

    /// True once a change has been observed (the writer was alive while we watched).
    pub fn seen_change(&self) -> bool {
        self.seen_change
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_resets_the_clock_and_sameness_does_not() {
        let t0 = Instant::now();
        let mut c = ChangeClock::new(5u64, t0);
        assert!(!c.seen_change());
        c.observe(5, t0 + Duration::from_millis(300));
        assert_eq!(c.unchanged_for(t0 + Duration::from_millis(400)), Duration::from_millis(400));
        c.observe(6, t0 + Duration::from_millis(500));
        assert!(c.seen_change());
        assert_eq!(c.unchanged_for(t0 + Duration::from_millis(600)), Duration::from_millis(100));
        // A reading older than the clock's instant never yields a negative age.
        assert_eq!(c.unchanged_for(t0), Duration::ZERO);
    }

    #[test]
    fn a_counter_going_backwards_is_a_change() {
        // A member restarted with a lost record starts its counter afresh: still alive.
        let t0 = Instant::now();
        let mut c = ChangeClock::new(10u64, t0);
        c.observe(1, t0 + Duration::from_millis(10));
        assert!(c.seen_change());
        assert_eq!(*c.value(), 1);
    }
}
