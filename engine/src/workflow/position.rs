//! Where something in a workflow came from, for error messages.

use serde::Serialize;
use std::fmt;

/// The origin of a value: a line and column of the workflow file, or a `--set` override.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Position {
    /// Unknown, e.g. a problem with the file as a whole.
    #[default]
    Unknown,
    /// 1-based line and column (in characters) in the workflow file.
    Yaml {
        /// Line number, from 1.
        line: u64,
        /// Column number, from 1.
        column: u64,
    },
    /// The `--set` or `--set-type` argument with this 1-based index on the command line
    /// (`--set` arguments first).
    Override {
        /// Which `--set`, counting from 1.
        index: usize,
    },
}

impl Position {
    /// The position of a value read by serde-saphyr.
    pub fn from_location(location: &serde_saphyr::Location) -> Self {
        match (location.line(), location.column()) {
            (0, _) => Self::Unknown,
            (line, column) => Self::Yaml { line, column },
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown => Ok(()),
            Self::Yaml { line, column } => write!(f, "{line}:{column}"),
            Self::Override { index } => write!(f, "override #{index}"),
        }
    }
}

/// A value together with the place it was written.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Located<T> {
    /// The value.
    pub value: T,
    /// Where it came from.
    #[serde(skip)]
    pub at: Position,
}

impl<T> Located<T> {
    /// A value at a position.
    pub fn new(value: T, at: Position) -> Self {
        Self { value, at }
    }
}

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Located<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = serde_saphyr::Spanned::<T>::deserialize(deserializer)?;
        Ok(Self {
            at: Position::from_location(&spanned.referenced),
            value: spanned.value,
        })
    }
}
