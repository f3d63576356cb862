//! The entry point of the `reassemble` fuzz target (`fuzz/`) and its property
//! test: bytes become a client stream cut into segments sent in any order,
//! overlapping, repeated or changed, through the probes' TCP reassembly. (The
//! whole decision stage is fuzzed by `decide::fuzz`.)

use crate::vocab::WorkloadId;

/// Runs `data` through the TCP reassembly of the application probe and of
/// DNS over TCP. `data[0]` is the number of segments, then 4 bytes per
/// segment (offset: 2 bytes, length, a byte to XOR into its first byte), then
/// the stream. Panics only if held memory is not given back.
pub fn reassemble(data: &[u8]) {
    use super::app::{Account, AppProbe, Budget, DnsFlow};
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 32);
    let Some((desc, stream)) = rest.split_at_checked(4 * n) else {
        return;
    };
    if stream.is_empty() {
        return;
    }
    // A budget small enough to be spent now and then.
    let budget = Budget::new(24 * 1024);
    let account = Account {
        budget: &budget,
        workload: WorkloadId::new(1, 0),
    };
    let isn = u32::from_be_bytes([stream[0], 0xff, 0xff, stream[stream.len() - 1]]);
    let mut probe = AppProbe::new(6, 443);
    probe.syn(isn);
    let mut dns = DnsFlow::default();
    dns.syn(false, isn);
    let mut seg = Vec::new();
    for d in desc.chunks_exact(4) {
        let off = usize::from(u16::from_be_bytes([d[0], d[1]])) % stream.len();
        let end = (off + usize::from(d[2]).max(1)).min(stream.len());
        seg.clear();
        seg.extend_from_slice(&stream[off..end]);
        seg[0] ^= d[3];
        let seq = isn.wrapping_add(1 + off as u32);
        if !probe.done() {
            let _ = probe.feed(true, Some(seq), &seg, account);
        }
        let _ = dns.segment(false, seq, &seg, account);
    }
    drop((probe, dns));
    assert_eq!(
        budget.used(WorkloadId::new(1, 0)),
        (0, 0),
        "held bytes not given back"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_segments_are_reassembled_within_the_budget(
            data in proptest::collection::vec(any::<u8>(), 0..3000)
        ) {
            reassemble(&data);
        }
    }
}
