//! The verdict log and the traffic statistics built from flow decisions.
//!
//! - [`log`]: one record per flow decision and update, kept in a memory ring
//!   and appended to rotated JSON-lines files by a background writer; each
//!   workload held to a budget of records per second and to its share of the ring.
//! - [`windows`]: per-key byte, packet and flow counts in rings of time windows.
//! - [`autobw`]: the auto-bandwidth policy that moves a rate limit with the
//!   measured load.

pub mod autobw;
pub mod log;
pub mod windows;

pub use autobw::{AutoBandwidth, AutoBwState, Change};
pub use log::{Filter, FlowRecord, LogConfig, VerdictLog, parse_time, read_dir};
pub use windows::{Counts, Windows};
