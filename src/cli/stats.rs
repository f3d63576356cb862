//! `stats`, `macs` and `usage`: the running daemon's counters, MAC table and
//! traffic per time window.

use super::Target;

/// `guardwire stats`: per-port counters and drops by reason, as a table or JSON.
pub fn stats(target: &Target, json: bool) -> Result<(), String> {
    target.client().and_then(|c| {
        let snap = c.stats().map_err(|e| e.to_string())?;
        if json {
            println!(
                "{}",
                serde_json::to_string(&snap).map_err(|e| e.to_string())?
            );
        } else {
            print!("{}", guardwire::control::stats::render(&snap));
        }
        Ok(())
    })
}

/// `guardwire macs`: one line per learned MAC.
pub fn macs(target: &Target) -> Result<(), String> {
    target.client().and_then(|c| {
        for e in c.macs().map_err(|e| e.to_string())? {
            println!("{}  port {}  age {}s", e.mac, e.port, e.age_secs);
        }
        Ok(())
    })
}

/// `guardwire usage`: traffic per workload and category in windows of `window`
/// seconds, with the bandwidth limits, as a table or JSON.
pub fn usage(
    window: u64,
    workload: Option<&str>,
    json: bool,
    target: &Target,
) -> Result<(), String> {
    target.client().and_then(|c| {
        let u = c.usage(window, workload).map_err(|e| e.to_string())?;
        if json {
            println!("{}", serde_json::to_string(&u).map_err(|e| e.to_string())?);
        } else {
            print!("{}", guardwire::control::stats::render_usage(&u));
        }
        Ok(())
    })
}
