//! `flows` and `log`: the running daemon's live flows and its verdict log (or
//! the log's files read directly), filtered the same way and printed as a
//! table or JSON lines.

use super::Target;
use guardwire::control::http::types::LogQuery;
use guardwire::control::record::{self, FlowRecord};
use guardwire::control::stats;
use std::path::Path;

/// Which flows or records to show.
#[derive(clap::Args)]
pub struct LogFilter {
    /// Only this workload.
    #[arg(long)]
    workload: Option<String>,
    /// Only this action, detail or verdict: allow, deny, reject, shape, rate-limit,
    /// "would deny"...
    #[arg(long)]
    action: Option<String>,
    /// Only this application or category.
    #[arg(long)]
    app: Option<String>,
    /// Only records updated since: "10m", "2h" ago, or an RFC 3339 time.
    #[arg(long)]
    since: Option<String>,
    /// Only this event: new, rejudged, update, end.
    #[arg(long)]
    event: Option<String>,
    /// At most this many (the newest).
    #[arg(long, default_value_t = 200)]
    limit: usize,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
}

impl LogFilter {
    fn query(&self) -> Result<LogQuery, String> {
        // Resolved here, so "10m" means ten minutes before this command.
        let since = match &self.since {
            Some(s) => Some(record::parse_time(s, record::log::now_ms())?.to_string()),
            None => None,
        };
        Ok(LogQuery {
            workload: self.workload.clone(),
            action: self.action.clone(),
            app: self.app.clone(),
            since,
            event: self.event.clone(),
            q: None,
            limit: Some(
                self.limit
                    .clamp(1, guardwire::control::http::types::MAX_PAGE),
            ),
            before: None,
        })
    }

    /// Prints records given newest first, oldest at the top.
    fn print(&self, mut recs: Vec<FlowRecord>) -> Result<(), String> {
        recs.reverse();
        if self.json {
            for r in &recs {
                println!("{}", serde_json::to_string(r).map_err(|e| e.to_string())?);
            }
        } else {
            print!("{}", stats::render_flows(&recs));
        }
        Ok(())
    }
}

/// `guardwire flows`: the daemon's flow table.
pub fn flows(filter: &LogFilter, target: &Target) -> Result<(), String> {
    target.client().and_then(|c| {
        let page = c.flows(&filter.query()?).map_err(|e| e.to_string())?;
        filter.print(page.records.into_iter().map(|e| e.record).collect())
    })
}

/// `guardwire log`: the daemon's verdict log, or with `dir` the log's files
/// there.
pub fn log(filter: &LogFilter, dir: Option<&Path>, target: &Target) -> Result<(), String> {
    match dir {
        Some(d) => filter.query().and_then(|q| {
            let f = record::Filter {
                workload: q.workload,
                action: q.action,
                app: q.app,
                since: q.since.and_then(|s| s.parse().ok()),
                until: None,
                event: q.event,
                q: None,
            };
            let mut recs = record::read_dir(d, &f, filter.limit)
                .map_err(|e| format!("{}: {e}", d.display()))?;
            recs.reverse();
            filter.print(recs)
        }),
        None => target.client().and_then(|c| {
            let page = c.log(&filter.query()?).map_err(|e| e.to_string())?;
            filter.print(page.records.into_iter().map(|e| e.record).collect())
        }),
    }
}
