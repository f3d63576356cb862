//! Auto-bandwidth: a rate limit that grows while it is the bottleneck and
//! shrinks while it goes unused, one closed window at a time.
//!
//! Pure state machine: the caller feeds it measured rates and applies changes.

pub use crate::pipeline::firewall::AutoBandwidth;

impl AutoBandwidth {
    fn clamp(&self, v: u64) -> u64 {
        // Not `u64::clamp`, which panics when min > max.
        v.min(self.max).max(self.min)
    }
}

/// The current limit and the streaks that lead to the next change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AutoBwState {
    /// Limit in force, bytes per second.
    pub limit: u64,
    high: u32,
    low: u32,
}

/// A limit change decided by [`AutoBwState::step`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change {
    /// Limit before, bytes per second.
    pub from: u64,
    /// Limit after, bytes per second.
    pub to: u64,
    /// "saturated" (raised) or "idle" (lowered).
    pub reason: &'static str,
}

impl AutoBwState {
    /// Starts at `start`, clamped into `[p.min, p.max]`.
    pub fn new(start: u64, p: &AutoBandwidth) -> Self {
        AutoBwState {
            limit: p.clamp(start),
            high: 0,
            low: 0,
        }
    }

    /// Takes one closed window's measured rate (bytes/s, the busier direction).
    ///
    /// At least 90% of the limit counts as saturated, below 20% as idle.
    /// `raise_after` saturated windows in a row multiply the limit by `factor`
    /// (capped at `max`); `lower_after` idle windows in a row divide it
    /// (floored at `min`). Streaks restart after a change and on a window that
    /// is neither. Every change moves the limit by at least 1, so a factor of 1
    /// or less still makes progress. The limit is also brought back into
    /// `[min, max]` if the policy changed under it.
    pub fn step(&mut self, p: &AutoBandwidth, rate: u64) -> Option<Change> {
        let from = self.limit;
        let (rate, lim) = (u128::from(rate), u128::from(from));
        let (to, reason) = if rate * 10 >= lim * 9 {
            self.low = 0;
            self.high = self.high.saturating_add(1);
            if self.high < p.raise_after.max(1) {
                return self.reclamp(p);
            }
            let up = (from as f64 * p.factor) as u64;
            (up.max(from.saturating_add(1)), "saturated")
        } else if rate * 5 < lim {
            self.high = 0;
            self.low = self.low.saturating_add(1);
            if self.low < p.lower_after.max(1) {
                return self.reclamp(p);
            }
            let down = (from as f64 / p.factor) as u64;
            (down.min(from.saturating_sub(1)), "idle")
        } else {
            self.high = 0;
            self.low = 0;
            return self.reclamp(p);
        };
        let to = p.clamp(to);
        if to == from {
            // Already at the bound; keep the streak so a raised bound applies at once.
            return None;
        }
        self.limit = to;
        self.high = 0;
        self.low = 0;
        Some(Change { from, to, reason })
    }

    /// Applies a changed `min`/`max` to the current limit without waiting for a streak.
    fn reclamp(&mut self, p: &AutoBandwidth) -> Option<Change> {
        let from = self.limit;
        let to = p.clamp(from);
        if to == from {
            return None;
        }
        self.limit = to;
        self.high = 0;
        self.low = 0;
        Some(Change {
            from,
            to,
            reason: if to > from { "saturated" } else { "idle" },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> AutoBandwidth {
        AutoBandwidth {
            min: 1_000,
            max: 10_000,
            raise_after: 3,
            lower_after: 2,
            factor: 2.0,
        }
    }

    #[test]
    fn start_is_clamped() {
        let p = policy();
        assert_eq!(AutoBwState::new(5, &p).limit, 1_000);
        assert_eq!(AutoBwState::new(50_000, &p).limit, 10_000);
        assert_eq!(AutoBwState::new(4_000, &p).limit, 4_000);
        let crossed = AutoBandwidth {
            min: 10,
            max: 5,
            ..policy()
        };
        assert_eq!(AutoBwState::new(7, &crossed).limit, 10);
    }

    #[test]
    fn raises_after_saturated_streak_and_caps() {
        let p = policy();
        let mut s = AutoBwState::new(3_000, &p);
        assert_eq!(s.step(&p, 2_700), None);
        assert_eq!(s.step(&p, 3_000), None);
        let c = s.step(&p, 9_999).unwrap();
        assert_eq!((c.from, c.to, c.reason), (3_000, 6_000, "saturated"));
        // The streak restarts after a change.
        assert_eq!(s.step(&p, 6_000), None);
        assert_eq!(s.step(&p, 6_000), None);
        assert_eq!(
            s.step(&p, 6_000),
            Some(Change {
                from: 6_000,
                to: 10_000,
                reason: "saturated"
            })
        );
        for _ in 0..10 {
            assert_eq!(s.step(&p, 10_000), None);
        }
        assert_eq!(s.limit, 10_000);
    }

    #[test]
    fn lowers_after_idle_streak_and_floors() {
        let p = policy();
        let mut s = AutoBwState::new(3_000, &p);
        assert_eq!(s.step(&p, 599), None);
        assert_eq!(
            s.step(&p, 0),
            Some(Change {
                from: 3_000,
                to: 1_500,
                reason: "idle"
            })
        );
        assert_eq!(s.step(&p, 0), None);
        assert_eq!(
            s.step(&p, 0),
            Some(Change {
                from: 1_500,
                to: 1_000,
                reason: "idle"
            })
        );
        for _ in 0..5 {
            assert_eq!(s.step(&p, 0), None);
        }
        assert_eq!(s.limit, 1_000);
    }

    #[test]
    fn thresholds_and_streak_reset() {
        let p = policy();
        let mut s = AutoBwState::new(4_000, &p);
        // 90% is saturated, 20% is not idle.
        s.step(&p, 3_600);
        s.step(&p, 3_600);
        assert_eq!(s.step(&p, 800), None);
        s.step(&p, 3_600);
        s.step(&p, 3_600);
        assert_eq!(s.limit, 4_000);
        // An idle window breaks a saturated streak, and the reverse.
        s.step(&p, 0);
        s.step(&p, 3_600);
        s.step(&p, 0);
        assert_eq!(s.limit, 4_000);
        assert_eq!(s.step(&p, 0).map(|c| c.to), Some(2_000));
    }

    #[test]
    fn weak_factor_still_moves() {
        let p = AutoBandwidth {
            min: 0,
            max: 100,
            raise_after: 0,
            lower_after: 0,
            factor: 1.0,
        };
        let mut s = AutoBwState::new(0, &p);
        assert_eq!(s.step(&p, 0).map(|c| c.to), Some(1));
        assert_eq!(s.step(&p, 1).map(|c| c.to), Some(2));
        assert_eq!(s.step(&p, 0).map(|c| c.to), Some(1));
    }

    #[test]
    fn follows_a_changed_policy() {
        let mut p = policy();
        let mut s = AutoBwState::new(8_000, &p);
        p.max = 5_000;
        assert_eq!(
            s.step(&p, 4_000),
            Some(Change {
                from: 8_000,
                to: 5_000,
                reason: "idle"
            })
        );
    }
}
