//! The beat of a worker's traffic, to be awake when the next frame comes.
//!
//! Waking a sleeping worker costs tens of microseconds on a virtual machine,
//! which is most of the RTT guardwire adds. Spinning after each frame catches
//! the answer to a request, but not the next request. Traffic that comes at a
//! steady beat (a ping, a health check, a metrics scrape, a game tick) is
//! caught by waking a little before its next frame is due and spinning across
//! the moment: a window of 2 x [`LEAD`] per beat, never more, and nothing once
//! the beat stops, so an idle node costs no CPU.

use std::time::{Duration, Instant};

/// How long before (and after) the expected arrival the worker is awake.
pub const LEAD: Duration = Duration::from_micros(150);
/// Beats shorter than this are left to plain spinning.
const MIN_BEAT: Duration = Duration::from_micros(500);
/// Beats longer than this cost too little to be worth a timer.
const MAX_BEAT: Duration = Duration::from_millis(50);
/// Arrivals in step before a beat is believed.
const STEADY: u32 = 2;
/// Most credit a beat earns: one arrival out of step halves it, so a beat
/// long kept survives a late frame or two.
const MAX_STEADY: u32 = 8;

/// The arrivals of a worker's traffic after quiet spells.
#[derive(Debug, Default)]
pub struct Rhythm {
    last: Option<Instant>,
    beat: Duration,
    steady: u32,
}

impl Rhythm {
    /// A frame came after a quiet spell (not as the answer within the spin).
    pub fn arrival(&mut self, now: Instant) {
        if let Some(last) = self.last {
            let gap = now.saturating_duration_since(last);
            let in_step = gap.abs_diff(self.beat) <= self.beat / 8;
            if in_step && (MIN_BEAT..=MAX_BEAT).contains(&gap) {
                self.steady = (self.steady + 1).min(MAX_STEADY);
            } else {
                self.steady /= 2;
            }
            if self.steady == 0 {
                self.beat = gap;
            }
        }
        self.last = Some(now);
    }

    /// The window to be awake in for the next arrival, if the traffic keeps a
    /// beat and that arrival is still ahead of `now`.
    pub fn window(&self, now: Instant) -> Option<(Instant, Instant)> {
        if self.steady < STEADY {
            return None;
        }
        let next = self.last? + self.beat;
        (next > now + LEAD).then(|| (next - LEAD, next + LEAD))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steady_beat_is_met_and_a_stopped_one_forgotten() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_micros(n * 2000 + (n % 3) * 40);
        let mut r = Rhythm::default();
        for n in 0..3 {
            r.arrival(ms(n));
        }
        assert!(r.window(ms(2)).is_none(), "two gaps make no beat yet");
        r.arrival(ms(3));
        let (from, to) = r.window(ms(3)).expect("a beat of 2 ms");
        let next = ms(3) + Duration::from_micros(2040);
        assert!(from < next && next < to, "{from:?} {next:?} {to:?}");
        assert!(to - from <= 2 * LEAD);
        // Once the expected arrival has passed unmet, no further window.
        assert!(r.window(next + LEAD).is_none());
    }

    #[test]
    fn a_late_frame_does_not_lose_a_long_kept_beat() {
        let t0 = Instant::now();
        let mut r = Rhythm::default();
        let mut t = t0;
        for _ in 0..10 {
            t += Duration::from_millis(2);
            r.arrival(t);
        }
        t += Duration::from_micros(2900);
        r.arrival(t);
        let (from, to) = r.window(t).expect("the beat is kept");
        let next = t + Duration::from_millis(2);
        assert!(from < next && next < to);
    }

    #[test]
    fn an_irregular_or_too_fast_traffic_has_no_beat() {
        let t0 = Instant::now();
        let mut r = Rhythm::default();
        for us in [0u64, 2000, 3000, 7000, 7500, 12_000] {
            r.arrival(t0 + Duration::from_micros(us));
        }
        assert!(r.window(t0 + Duration::from_micros(12_000)).is_none());
        let mut fast = Rhythm::default();
        for n in 0..10u64 {
            fast.arrival(t0 + Duration::from_micros(n * 100));
        }
        assert!(fast.window(t0 + Duration::from_micros(900)).is_none());
    }
}
