//! `classify`: the application of every flow in a pcap file, offline.

use guardwire::control::classify::{classify_pcap, json_line};
use guardwire::control::stats::render_flows;
use std::path::Path;

/// `guardwire classify`: one line per flow of `pcap`, as a table or JSON,
/// named from the built-in catalogue extended by `apps`.
pub fn classify(pcap: &Path, apps: Option<&Path>, json: bool) -> Result<(), String> {
    classify_pcap(pcap, apps).map(|recs| {
        for r in &recs {
            if json {
                println!("{}", json_line(r));
            }
        }
        if !json {
            print!("{}", render_flows(&recs));
        }
    })
}
