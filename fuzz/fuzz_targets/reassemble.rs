//! A client stream cut into segments sent in any order, overlapping, repeated
//! or changed, through the probes' TCP reassembly (TLS/HTTP and DNS over TCP).
//! Run on stable: `cargo fuzz run -s none reassemble -- -max_total_time=60`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    guardwire::pipeline::fuzz::reassemble(data);
});
