//! Parameter declarations: each literal a node takes, its type, default, bounds and choices.

use crate::{SocketType, Value};
use serde::Serialize;
use std::fmt;
use std::sync::Arc;

/// One parameter of a node type, declared once and used for validation, the CLI's listing and
/// the editor's widgets. A parameter is given as a literal under `params:`, or fed by a link under
/// `inputs:` from an output of the same socket type (e.g. a seed from a `PrimitiveInt`).
#[derive(Clone, Debug, Serialize)]
pub struct ParamSpec {
    /// The parameter's name, as written under `params:`.
    pub name: &'static str,
    /// Its type, default and bounds.
    #[serde(flatten)]
    pub kind: ParamKind,
    /// One sentence for users: what it changes.
    pub description: &'static str,
    /// The folder the value names a file or folder in, when it does: the engine then keys the
    /// node's cached result on that file's identity too, so a file changed on disk is read again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reads: Option<FileFolder>,
    /// A check of a text value beyond its type (a file name prefix that must stay inside the
    /// output folder, say), run on literals by validation and on linked values before the node runs.
    #[serde(skip)]
    pub rule: Option<TextRule>,
    /// Whether the param may be left out (or given as `null`): it is then off, which no value
    /// of its kind could say.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
}

/// A check of a text param's value: `Err` says what is wrong with it, for a message that names
/// the param.
pub type TextRule = fn(&str) -> Result<(), String>;

/// The folders of [`crate::FileRoots`] a param's value can name a file in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileFolder {
    /// The models folder (`--models-dir`).
    Models,
    /// The input folder (`--input-dir`).
    Inputs,
}

/// The type of a parameter, with its default (`None`: the parameter is required) and bounds.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ParamKind {
    /// A whole number in `min..=max`.
    Int {
        /// Used when the workflow does not give the parameter.
        default: Option<i64>,
        /// Smallest accepted value.
        min: i64,
        /// Largest accepted value.
        max: i64,
    },
    /// A real number in `min..=max`.
    Float {
        /// Used when the workflow does not give the parameter.
        default: Option<f64>,
        /// Smallest accepted value.
        min: f64,
        /// Largest accepted value.
        max: f64,
    },
    /// Text.
    String {
        /// Used when the workflow does not give the parameter.
        default: Option<&'static str>,
        /// Whether the editor should show a text area rather than a line.
        multiline: bool,
    },
    /// True or false.
    Boolean {
        /// Used when the workflow does not give the parameter.
        default: Option<bool>,
    },
    /// One of a fixed list of names.
    Choice {
        /// Used when the workflow does not give the parameter.
        default: Option<&'static str>,
        /// The accepted names.
        choices: Vec<&'static str>,
    },
}

/// Why a value is not acceptable for a parameter; the validator adds where it was found.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ParamProblem {
    /// The value has another type.
    #[error("expected {expected}, found {found}")]
    WrongType {
        /// What the parameter takes, e.g. "an integer".
        expected: &'static str,
        /// What was given, e.g. "the string \"ten\"".
        found: String,
    },
    /// A number outside the parameter's range.
    #[error("{value} is outside the range {min} to {max}{}", if *.optional { "; leave the param out (or give null) to turn it off" } else { "" })]
    OutOfRange {
        /// The value given.
        value: String,
        /// The smallest accepted value.
        min: String,
        /// The largest accepted value.
        max: String,
        /// Whether the param is optional, so that leaving it out is what turns it off.
        optional: bool,
    },
    /// A name that is not among the choices.
    #[error("\"{value}\" is not one of {}", quoted_list(choices))]
    UnknownChoice {
        /// The name given.
        value: String,
        /// The accepted names.
        choices: Vec<&'static str>,
    },
    /// A value its param's [`TextRule`] refuses.
    #[error("{reason}")]
    Refused {
        /// What is wrong with the value.
        reason: String,
    },
}

fn quoted_list(items: &[&str]) -> String {
    items
        .iter()
        .map(|item| format!("\"{item}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

impl ParamSpec {
    /// A parameter declaration.
    pub fn new(name: &'static str, kind: ParamKind, description: &'static str) -> Self {
        Self {
            name,
            kind,
            description,
            reads: None,
            rule: None,
            optional: false,
        }
    }

    /// Declares that the param may be left out, meaning off.
    pub fn optional(mut self) -> Self {
        self.optional = true;
        self
    }

    /// Declares that the value names a file or folder in `folder`, whose identity then belongs to
    /// the node's cache key (ComfyUI's `IS_CHANGED`).
    pub fn reads_file(mut self, folder: FileFolder) -> Self {
        self.reads = Some(folder);
        self
    }

    /// Adds a check that text values must pass.
    pub fn rule(mut self, rule: TextRule) -> Self {
        self.rule = Some(rule);
        self
    }

    /// The socket type a link feeding this parameter must carry.
    pub fn socket_type(&self) -> SocketType {
        match self.kind {
            ParamKind::Int { .. } => SocketType::INT,
            ParamKind::Float { .. } => SocketType::FLOAT,
            ParamKind::String { .. } | ParamKind::Choice { .. } => SocketType::STRING,
            ParamKind::Boolean { .. } => SocketType::BOOLEAN,
        }
    }

    /// The default value, or `None` when the parameter must be given.
    pub fn default_value(&self) -> Option<Value> {
        match &self.kind {
            ParamKind::Int { default, .. } => default.map(Value::Int),
            ParamKind::Float { default, .. } => default.map(Value::Float),
            ParamKind::String { default, .. } => default.map(Value::string),
            ParamKind::Boolean { default } => default.map(Value::Boolean),
            ParamKind::Choice { default, .. } => default.map(Value::string),
        }
    }

    /// Converts a literal from a workflow file into a checked value.
    ///
    /// # Errors
    /// A [`ParamProblem`] when the literal has another type, is out of range or is not a choice.
    pub fn accept_literal(&self, literal: &serde_json::Value) -> Result<Value, ParamProblem> {
        let value = match (&self.kind, literal) {
            (ParamKind::Int { .. }, serde_json::Value::Number(n)) if n.is_i64() => {
                Value::Int(n.as_i64().unwrap_or_default())
            }
            (ParamKind::Float { .. }, serde_json::Value::Number(n)) => match n.as_f64() {
                Some(v) if v.is_finite() => Value::Float(v),
                _ => return Err(self.wrong_type(literal)),
            },
            (ParamKind::String { .. } | ParamKind::Choice { .. }, serde_json::Value::String(text)) => {
                Value::String(Arc::from(text.as_str()))
            }
            // `text: 5` or `--set pos.text=5` means the text "5", as YAML users expect.
            (
                ParamKind::String { .. } | ParamKind::Choice { .. },
                serde_json::Value::Number(_) | serde_json::Value::Bool(_),
            ) => Value::String(Arc::from(literal.to_string().as_str())),
            (ParamKind::Boolean { .. }, serde_json::Value::Bool(b)) => Value::Boolean(*b),
            _ => return Err(self.wrong_type(literal)),
        };
        self.accept(value)
    }

    /// Checks a value (a literal already converted, or a value arriving over a link) against the
    /// parameter's type, range and choices.
    ///
    /// # Errors
    /// A [`ParamProblem`] describing the first thing wrong with the value.
    pub fn accept(&self, value: Value) -> Result<Value, ParamProblem> {
        match (&self.kind, &value) {
            (ParamKind::Int { min, max, .. }, Value::Int(v)) if v < min || v > max => {
                Err(self.out_of_range(v, min, max))
            }
            (ParamKind::Float { min, max, .. }, Value::Int(v)) => self
                .accept(Value::Float(*v as f64))
                .map_err(|_| self.out_of_range(v, min, max)),
            (ParamKind::Float { min, max, .. }, Value::Float(v)) if v < min || v > max => {
                Err(self.out_of_range(v, min, max))
            }
            (ParamKind::Choice { choices, .. }, Value::String(s)) if !choices.contains(&&**s) => {
                Err(ParamProblem::UnknownChoice {
                    value: s.to_string(),
                    choices: choices.clone(),
                })
            }
            (ParamKind::String { .. } | ParamKind::Choice { .. }, Value::String(text)) => {
                match self.rule.map(|rule| rule(text)) {
                    Some(Err(reason)) => Err(ParamProblem::Refused { reason }),
                    _ => Ok(value),
                }
            }
            (ParamKind::Int { .. }, Value::Int(_))
            | (ParamKind::Float { .. }, Value::Float(_))
            | (ParamKind::Boolean { .. }, Value::Boolean(_)) => Ok(value),
            _ => Err(ParamProblem::WrongType {
                expected: self.expected(),
                found: format!("a value of type {}", value.socket_type()),
            }),
        }
    }

    fn out_of_range(&self, value: impl fmt::Display, min: impl fmt::Display, max: impl fmt::Display) -> ParamProblem {
        ParamProblem::OutOfRange {
            value: value.to_string(),
            min: min.to_string(),
            max: max.to_string(),
            optional: self.optional,
        }
    }

    fn wrong_type(&self, literal: &serde_json::Value) -> ParamProblem {
        ParamProblem::WrongType {
            expected: self.expected(),
            found: describe_literal(literal),
        }
    }

    fn expected(&self) -> &'static str {
        match self.kind {
            ParamKind::Int { .. } => "an integer",
            ParamKind::Float { .. } => "a number",
            ParamKind::String { .. } => "a string",
            ParamKind::Boolean { .. } => "true or false",
            ParamKind::Choice { .. } => "one of the choices, as a string",
        }
    }
}

/// Describes a literal for an error message, e.g. `the string "ten"` or `a list`.
fn describe_literal(literal: &serde_json::Value) -> String {
    match literal {
        serde_json::Value::Null => "nothing (null)".to_string(),
        serde_json::Value::Bool(b) => format!("the boolean {b}"),
        serde_json::Value::Number(n) => format!("the number {n}"),
        serde_json::Value::String(s) if s.chars().count() > 40 => {
            format!("the string \"{}...\"", s.chars().take(40).collect::<String>())
        }
        serde_json::Value::String(s) => format!("the string \"{s}\""),
        serde_json::Value::Array(_) => "a list".to_string(),
        serde_json::Value::Object(_) => "a mapping".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn steps() -> ParamSpec {
        ParamSpec::new(
            "steps",
            ParamKind::Int {
                default: Some(20),
                min: 1,
                max: 10_000,
            },
            "",
        )
    }

    #[test]
    fn integers_are_checked_for_type_and_range() {
        assert!(matches!(steps().accept_literal(&json!(30)), Ok(Value::Int(30))));
        assert_eq!(
            steps().accept_literal(&json!(0)).unwrap_err().to_string(),
            "0 is outside the range 1 to 10000"
        );
        assert_eq!(
            steps().accept_literal(&json!(2.5)).unwrap_err().to_string(),
            "expected an integer, found the number 2.5"
        );
        assert_eq!(
            steps().accept_literal(&json!("ten")).unwrap_err().to_string(),
            "expected an integer, found the string \"ten\""
        );
    }

    #[test]
    fn floats_accept_integers_and_check_range() {
        let cfg = ParamSpec::new(
            "cfg",
            ParamKind::Float {
                default: None,
                min: 0.0,
                max: 100.0,
            },
            "",
        );
        assert!(matches!(cfg.accept_literal(&json!(5)), Ok(Value::Float(v)) if v == 5.0));
        assert!(cfg.accept_literal(&json!(-1)).is_err());
        assert!(cfg.accept_literal(&json!(100.5)).is_err());
        assert!(cfg.default_value().is_none());
    }

    #[test]
    fn choices_must_be_listed_names() {
        let sampler = ParamSpec::new(
            "sampler_name",
            ParamKind::Choice {
                default: Some("euler"),
                choices: vec!["euler", "ddim"],
            },
            "",
        );
        assert!(sampler.accept_literal(&json!("ddim")).is_ok());
        assert_eq!(
            sampler.accept_literal(&json!("eular")).unwrap_err().to_string(),
            "\"eular\" is not one of \"euler\", \"ddim\""
        );
        assert_eq!(sampler.socket_type(), SocketType::STRING);
    }

    #[test]
    fn strings_take_scalars_as_their_text() {
        let text = ParamSpec::new(
            "text",
            ParamKind::String {
                default: None,
                multiline: false,
            },
            "",
        );
        assert!(matches!(text.accept_literal(&json!(5)), Ok(Value::String(s)) if &*s == "5"));
        assert!(matches!(text.accept_literal(&json!(true)), Ok(Value::String(s)) if &*s == "true"));
        assert!(text.accept_literal(&json!(null)).is_err());
        assert!(text.accept_literal(&json!(["a"])).is_err());
    }

    #[test]
    fn linked_values_of_another_type_are_refused() {
        let problem = steps().accept(Value::string("x")).unwrap_err();
        assert_eq!(problem.to_string(), "expected an integer, found a value of type STRING");
    }
}
