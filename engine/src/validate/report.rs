//! The full list of problems found in one workflow.

use super::ValidationError;
use crate::workflow::Position;
use serde::Serialize;
use std::fmt;

/// Every problem found in a workflow, in reading order. Nothing runs while a report is non-empty.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ValidationReport {
    /// The name shown before each position, usually the file path.
    pub source: String,
    /// The problems, sorted by position (file first, then `--set`, then whole-file problems).
    pub errors: Vec<ValidationError>,
}

impl ValidationReport {
    /// A report for `source`, sorting `errors` into reading order.
    pub fn new(source: impl Into<String>, mut errors: Vec<ValidationError>) -> Self {
        errors.sort_by_key(|error| reading_order(error.location().at));
        Self {
            source: source.into(),
            errors,
        }
    }

    /// The stable codes of all problems, in order; handy in tests.
    pub fn codes(&self) -> Vec<&'static str> {
        self.errors.iter().map(ValidationError::code).collect()
    }
}

fn reading_order(at: Position) -> (u8, u64, u64) {
    match at {
        Position::Yaml { line, column } => (0, line, column),
        Position::Override { index } => (1, index as u64, 0),
        Position::Unknown => (2, 0, 0),
    }
}

impl fmt::Display for ValidationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for error in &self.errors {
            match error.location().at {
                Position::Unknown => write!(f, "{}", self.source)?,
                at @ Position::Override { .. } => write!(f, "{at}")?,
                at @ Position::Yaml { .. } => write!(f, "{}:{at}", self.source)?,
            }
            writeln!(f, ": error[{}]: {error}", error.code())?;
        }
        let count = self.errors.len();
        write!(f, "{count} problem{} found", if count == 1 { "" } else { "s" })
    }
}

impl std::error::Error for ValidationReport {}
