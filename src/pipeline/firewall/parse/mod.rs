//! From TOML text to resolved rules, refusing anything doubtful with the file,
//! line and key named.
//!
//! - `schema`: the file as serde reads it, spans kept;
//! - `values`: each value checked on its own;
//! - `resolve`: the values put together into rules and workload policies.

mod resolve;
mod schema;
mod values;

pub(super) use values::prefix;

use super::{Action, Labels, Rule, RulesError, WorkloadPolicy};
use crate::pipeline::app::Apps;
use schema::RawFile;
use std::ops::Range;

/// What [`parse`] hands to `RuleSet::build`.
pub(crate) struct Parsed {
    pub rules: Vec<Rule>,
    pub default: Action,
    pub names: Vec<String>,
    pub policies: Vec<Option<WorkloadPolicy>>,
    pub nodes: Vec<String>,
}

/// The file being parsed, for turning spans into lines.
struct Ctx<'a> {
    text: &'a str,
    origin: &'a str,
    /// The application catalogue names are checked against, when given.
    apps: Option<&'a Apps>,
}

impl Ctx<'_> {
    fn line(&self, span: Range<usize>) -> usize {
        let at = span.start.min(self.text.len());
        self.text.as_bytes()[..at]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    fn invalid(
        &self,
        span: Range<usize>,
        key: impl Into<String>,
        msg: impl Into<String>,
    ) -> RulesError {
        RulesError::Invalid {
            origin: self.origin.to_string(),
            line: self.line(span),
            key: key.into(),
            msg: msg.into(),
        }
    }

    fn conflict(
        &self,
        span: Range<usize>,
        key: impl Into<String>,
        msg: impl Into<String>,
    ) -> RulesError {
        RulesError::Conflict {
            origin: self.origin.to_string(),
            line: self.line(span),
            key: key.into(),
            msg: msg.into(),
        }
    }
}

/// Turns a toml error into one naming file, line and column.
fn syntax(cx: &Ctx, e: toml::de::Error) -> RulesError {
    let (line, column) = match e.span() {
        Some(span) => {
            let mut at = span.start.min(cx.text.len());
            while !cx.text.is_char_boundary(at) {
                at -= 1;
            }
            let line_start = cx.text[..at].rfind('\n').map_or(0, |i| i + 1);
            (cx.line(span), cx.text[line_start..at].chars().count() + 1)
        }
        None => (0, 0),
    };
    RulesError::Syntax {
        origin: cx.origin.to_string(),
        line,
        column,
        msg: e.message().trim_end().to_string(),
    }
}

/// Parses a whole rule file.
///
/// `attached` gives labels of workloads beyond those the file's
/// `[workload.NAME]` tables give (the labels they were attached with), so
/// `label = "..."` rules select them too.
pub(crate) fn parse(
    text: &str,
    origin: &str,
    apps: Option<&Apps>,
    attached: &Labels,
) -> Result<Parsed, RulesError> {
    let cx = Ctx { text, origin, apps };
    let raw: RawFile = toml::from_str(text).map_err(|e| syntax(&cx, e))?;
    resolve::file(&cx, &raw, attached)
}
