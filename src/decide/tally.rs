//! What one burst counts: drops by reason and malformed frames by kind, kept on
//! the worker's stack and added to the shared counters once per burst.

use crate::pipeline::Malformed;
use crate::vocab::DropReason;

/// What one burst counted, kept on the worker's stack and added at the end.
#[derive(Clone, Debug, Default)]
pub struct BurstTally {
    pub drops: [u64; DropReason::ALL.len()],
    pub malformed: [u64; Malformed::ALL.len()],
}

impl BurstTally {
    /// Counts a drop.
    pub fn drop(&mut self, r: DropReason, n: u64) {
        self.drops[r as usize] += n;
    }
    /// Counts a malformed frame.
    pub fn malformed(&mut self, m: Malformed) {
        self.malformed[m as usize] += 1;
    }
    /// Anything counted?
    pub fn is_empty(&self) -> bool {
        self.drops.iter().chain(&self.malformed).all(|&v| v == 0)
    }
}
