//! `--set node.param=value` and `--set-type Type.param=value` overrides, applied to a workflow
//! before validation.

use super::{Located, Position, Workflow};
use crate::validate::{suggest, ValidationError};

/// What an override changes: one node, or every node of a type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The node with this id (`--set`).
    Node(String),
    /// Every node of this type (`--set-type`), e.g. all `BlockSwap` nodes.
    Type(String),
}

/// One `--set` or `--set-type` argument, parsed.
#[derive(Clone, Debug, PartialEq)]
pub struct Override {
    /// The node or node type.
    pub target: Target,
    /// The param name.
    pub param: String,
    /// The value, read as a YAML scalar (`30`, `2.5`, `true`, `euler`, `"a cat"`).
    pub value: serde_json::Value,
    /// The argument as given, for messages.
    pub text: String,
    /// Which override it is on the command line, counting from 1.
    pub index: usize,
}

impl Override {
    /// Parses the `index`-th `--set` argument, `node.param=value`.
    ///
    /// # Errors
    /// [`ValidationError::BadOverride`] when the text is not `node.param=value`.
    pub fn parse(text: &str, index: usize) -> Result<Self, ValidationError> {
        Self::parse_with(text, index, Target::Node)
    }

    /// Parses the `index`-th `--set-type` argument, `Type.param=value`.
    ///
    /// # Errors
    /// [`ValidationError::BadOverride`] when the text is not `Type.param=value`.
    pub fn parse_for_type(text: &str, index: usize) -> Result<Self, ValidationError> {
        Self::parse_with(text, index, Target::Type)
    }

    fn parse_with(text: &str, index: usize, make_target: fn(String) -> Target) -> Result<Self, ValidationError> {
        let bad = |reason: &str| ValidationError::BadOverride {
            text: text.to_string(),
            reason: reason.to_string(),
            at: Position::Override { index },
        };
        let (target, value) = text.split_once('=').ok_or_else(|| bad("expected node.param=value"))?;
        let (node, param) = target
            .split_once('.')
            .filter(|(node, param)| !node.is_empty() && !param.is_empty())
            .ok_or_else(|| bad("expected node.param before the '='"))?;
        let value = read_value(value).ok_or_else(|| bad("a quoted value must be one complete YAML string"))?;
        Ok(Self {
            target: make_target(node.to_string()),
            param: param.to_string(),
            value,
            text: text.to_string(),
            index,
        })
    }
}

/// Reads a `--set` value: numbers and booleans as YAML reads them, a quoted value unquoted, and
/// anything else as the text it is (so `a | b` or `[x]` stay text).
fn read_value(raw: &str) -> Option<serde_json::Value> {
    if raw.starts_with(['"', '\'']) {
        return serde_saphyr::from_str::<serde_json::Value>(raw)
            .ok()
            .filter(serde_json::Value::is_string);
    }
    match serde_saphyr::from_str::<serde_json::Value>(raw) {
        Ok(value @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => Some(value),
        _ => Some(serde_json::Value::String(raw.to_string())),
    }
}

/// Sets each override's param on its node (or every node of its type), replacing a literal or a
/// link of the same name. Returns a problem for every override that matches no node; the others
/// are applied all the same, so validation can report everything at once.
pub fn apply(workflow: &mut Workflow, overrides: &[Override]) -> Vec<ValidationError> {
    let mut errors = Vec::new();
    for item in overrides {
        let at = Position::Override { index: item.index };
        let matches = |id: &str, type_name: &str| match &item.target {
            Target::Node(node) => node == id,
            Target::Type(wanted) => wanted == type_name,
        };
        let mut applied = false;
        for (_, node) in workflow
            .nodes
            .0
            .iter_mut()
            .filter(|(id, n)| matches(&id.value, &n.value.type_name.value))
        {
            let node = &mut node.value;
            node.inputs.0.retain(|(name, _)| name.value != item.param);
            node.params.0.retain(|(name, _)| name.value != item.param);
            node.params.0.push((
                Located::new(item.param.clone(), at),
                Located::new(item.value.clone(), at),
            ));
            applied = true;
        }
        if !applied {
            let (name, candidates): (&String, Vec<&str>) = match &item.target {
                Target::Node(node) => (node, workflow.nodes.iter().map(|(id, _)| id.value.as_str()).collect()),
                Target::Type(wanted) => (
                    wanted,
                    workflow
                        .nodes
                        .iter()
                        .map(|(_, n)| n.value.type_name.value.as_str())
                        .collect(),
                ),
            };
            errors.push(ValidationError::OverrideUnknownNode {
                text: item.text.clone(),
                node: name.clone(),
                suggestion: suggest::closest(name, candidates),
                at,
            });
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_typed_values() {
        assert_eq!(Override::parse("sample.steps=30", 1).unwrap().value, json!(30));
        assert_eq!(Override::parse("sample.cfg=2.5", 1).unwrap().value, json!(2.5));
        assert_eq!(Override::parse("pos.text=a cat", 1).unwrap().value, json!("a cat"));
        assert_eq!(Override::parse("swap.debug=true", 1).unwrap().value, json!(true));
        assert_eq!(Override::parse("p.delimiter= | ", 1).unwrap().value, json!(" | "));
        assert_eq!(Override::parse("p.text=[x]", 1).unwrap().value, json!("[x]"));
        assert_eq!(Override::parse("p.text=\"42\"", 1).unwrap().value, json!("42"));
        assert_eq!(Override::parse("p.text=", 1).unwrap().value, json!(""));
        for bad in ["steps=3", "sample.steps", ".x=1", "a.=1", "p.text=\"open"] {
            assert_eq!(Override::parse(bad, 2).unwrap_err().code(), "bad-override", "{bad}");
        }
    }
}
