//! Why a rule file was refused. Every variant names the file and the 1-based line.

/// A rule file that cannot be used. Keys are written like `rule[3].dst_ports`,
/// where `rule[N]` is the N-th `[[rule]]` table counted from 1 (the same N as in
/// the default id `rule-N`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RulesError {
    /// Not valid TOML, an unknown key, a missing key or a value of the wrong
    /// type, as reported by the TOML parser.
    #[error("{origin}:{line}:{column}: {msg}")]
    Syntax {
        /// The file.
        origin: String,
        /// 1-based line (0 when the parser gave no position).
        line: usize,
        /// 1-based column (0 when the parser gave no position).
        column: usize,
        /// What the parser said.
        msg: String,
    },
    /// A value that does not mean anything here, e.g. an empty port range or a
    /// malformed prefix.
    #[error("{origin}:{line}: {key}: {msg}")]
    Invalid {
        /// The file.
        origin: String,
        /// 1-based line of the value.
        line: usize,
        /// The key, e.g. `rule[3].dst_ports`.
        key: String,
        /// What is wrong.
        msg: String,
    },
    /// Keys that do not fit together, e.g. ports without tcp/udp or a rate on an
    /// `allow` rule.
    #[error("{origin}:{line}: {key}: {msg}")]
    Conflict {
        /// The file.
        origin: String,
        /// 1-based line of the key that does not fit.
        line: usize,
        /// The key, e.g. `rule[2].rate`.
        key: String,
        /// What it conflicts with.
        msg: String,
    },
    /// Two rules with the same id; the line is the second one's.
    #[error("{origin}:{line}: {key}: rule id {id:?} is already used by rule[{first}]")]
    DuplicateId {
        /// The file.
        origin: String,
        /// 1-based line of the second rule's id (or its `[[rule]]` header when the
        /// id is the default one).
        line: usize,
        /// The key, e.g. `rule[4].id`.
        key: String,
        /// The id used twice.
        id: String,
        /// 1-based number of the first rule with that id.
        first: usize,
    },
}

impl RulesError {
    /// 1-based line the error points at (0 when unknown).
    pub fn line(&self) -> usize {
        match self {
            RulesError::Syntax { line, .. }
            | RulesError::Invalid { line, .. }
            | RulesError::Conflict { line, .. }
            | RulesError::DuplicateId { line, .. } => *line,
        }
    }

    /// What is wrong, without the file, line and key the error also names.
    pub fn detail(&self) -> String {
        match self {
            RulesError::Syntax { msg, .. }
            | RulesError::Invalid { msg, .. }
            | RulesError::Conflict { msg, .. } => msg.clone(),
            RulesError::DuplicateId { id, first, .. } => {
                format!("rule id {id:?} is already used by rule[{first}]")
            }
        }
    }

    /// The key the error is about (`rule[3].dst_ports`), when it is known.
    pub fn key(&self) -> Option<&str> {
        match self {
            RulesError::Syntax { .. } => None,
            RulesError::Invalid { key, .. }
            | RulesError::Conflict { key, .. }
            | RulesError::DuplicateId { key, .. } => Some(key),
        }
    }
}
