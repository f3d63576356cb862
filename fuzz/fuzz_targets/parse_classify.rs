//! Arbitrary bytes through guardwire's decision stage, the one the workers run:
//! validation, anti-spoofing, flow table, firewall, application
//! identification, limits, the switch, east-west and the reject answer.
//! Run on stable: `cargo fuzz run -s none parse_classify -- -max_total_time=60`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::atomic::{AtomicU64, Ordering};

static CLOCK: AtomicU64 = AtomicU64::new(0);

fuzz_target!(|data: &[u8]| {
    // Time moves on by a millisecond per input, so flows age and expire too.
    let now = CLOCK.fetch_add(1_000_000, Ordering::Relaxed);
    guardwire::decide::fuzz::exercise(data, now);
});
