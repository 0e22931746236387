//! Reading workflow text into a [`Workflow`], with bounds for hostile input.
//!
//! The file size is checked before anything is read. Files in the plain form take the fast
//! reader in [`super::plain`]; every other file takes serde-saphyr, whose budgets bound nesting
//! depth, node count and alias expansion, so no input can make parsing take unbounded time or
//! memory.

use super::{Position, Workflow};
use crate::validate::{suggest, ValidationError};
use serde_saphyr::{Budget, DuplicateKeyPolicy, Options};
use std::io::Read;
use std::path::Path;

/// The largest workflow file accepted, in bytes.
pub const MAX_WORKFLOW_BYTES: u64 = 16 << 20;

/// Why a workflow file could not be read at all.
#[derive(Debug, thiserror::Error)]
#[error("cannot read workflow {path}: {source}")]
pub struct ReadError {
    /// The file.
    pub path: String,
    /// The operating system's error.
    pub source: std::io::Error,
}

/// Reads a workflow file's bytes, reading at most one byte past [`MAX_WORKFLOW_BYTES`].
///
/// # Errors
/// [`ReadError`] when the file cannot be opened or read.
pub fn read_bytes(path: &Path) -> Result<Vec<u8>, ReadError> {
    let error = |source| ReadError {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(error)?;
    let mut bytes = Vec::new();
    file.take(MAX_WORKFLOW_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(error)?;
    Ok(bytes)
}

/// Parses workflow text.
///
/// # Errors
/// One [`ValidationError`] (too large, not UTF-8, or YAML syntax and shape) with its position.
pub fn parse(bytes: &[u8]) -> Result<Workflow, ValidationError> {
    if bytes.len() as u64 > MAX_WORKFLOW_BYTES {
        return Err(ValidationError::TooLarge {
            size: bytes.len() as u64,
            limit: MAX_WORKFLOW_BYTES,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| ValidationError::NotUtf8 {
        at: position_of_byte(bytes, e.valid_up_to()),
    })?;
    match super::plain::read(text) {
        Some(workflow) => Ok(workflow),
        None => parse_general(text),
    }
}

/// Parses any YAML text with serde-saphyr.
pub(super) fn parse_general(text: &str) -> Result<Workflow, ValidationError> {
    serde_saphyr::from_str_with_options::<Workflow>(text, options()).map_err(|error| {
        let at = error
            .location()
            .map(|l| Position::from_location(&l))
            .unwrap_or_default();
        ValidationError::Syntax {
            message: syntax_message(&error.to_string()),
            at,
        }
    })
}

fn options() -> Options {
    let mut options = Options::default();
    let mut budget = Budget::default();
    budget.max_depth = 32;
    options.budget = Some(budget);
    options.duplicate_keys = DuplicateKeyPolicy::PassThrough;
    options.strict_booleans = true;
    options.with_snippet = false;
    options
}

/// The parser's message without the excerpt and position it may append (reports show positions
/// their own way), with a suggestion for a misspelt key.
fn syntax_message(message: &str) -> String {
    let line = message.lines().next().unwrap_or(message).trim();
    let line = match line.rfind(" at line ") {
        Some(cut) if line[cut..].contains(", column ") => &line[..cut],
        _ => line,
    };
    format!("{line}{}", suggest::did_you_mean(&misspelt_key(line)))
}

/// For serde's "unknown field `x`, expected one of `a`, `b`", the expected key closest to `x`.
fn misspelt_key(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let (key, rest) = rest.split_once('`')?;
    let expected = rest.split_once("expected one of ")?.1;
    suggest::closest(key, expected.split(", ").map(|name| name.trim_matches('`')))
}

/// The line and column (in characters) of byte `offset`; used for invalid UTF-8.
fn position_of_byte(bytes: &[u8], offset: usize) -> Position {
    let before = &bytes[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
    let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let column = String::from_utf8_lossy(&before[line_start..]).chars().count() as u64 + 1;
    Position::Yaml { line, column }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nodes_in_order_with_positions() {
        let workflow = parse(b"version: 1\nnodes:\n  b:\n    type: X\n  a:\n    type: Y\n").unwrap();
        let ids: Vec<_> = workflow.nodes.iter().map(|(id, _)| id.value.as_str()).collect();
        assert_eq!(ids, ["b", "a"]);
        assert_eq!(workflow.nodes.0[1].0.at, Position::Yaml { line: 5, column: 3 });
        assert_eq!(
            workflow.nodes.0[1].1.value.type_name.at,
            Position::Yaml { line: 6, column: 11 }
        );
    }

    #[test]
    fn invalid_utf8_is_located() {
        let error = parse(b"version: 1\nname: a\xffb\n").unwrap_err();
        assert_eq!(
            error,
            ValidationError::NotUtf8 {
                at: Position::Yaml { line: 2, column: 8 }
            }
        );
    }

    #[test]
    fn oversized_input_is_refused_before_parsing() {
        let big = vec![b'#'; MAX_WORKFLOW_BYTES as usize + 1];
        assert_eq!(parse(&big).unwrap_err().code(), "too-large");
    }
}
