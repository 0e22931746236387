//! Node ids and links between nodes.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// The longest node id accepted.
const MAX_ID_CHARS: usize = 128;

/// A node's id: letters, digits, `_` and `-`, at most 128 characters. No dots, since a link is
/// `node_id.output_name`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct NodeId(Arc<str>);

impl TryFrom<String> for NodeId {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        Self::parse(&text)
    }
}

impl NodeId {
    /// Checks and wraps an id.
    ///
    /// # Errors
    /// A sentence saying what is wrong with the id.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("a node id cannot be empty".to_string());
        }
        if text.chars().count() > MAX_ID_CHARS {
            return Err(format!("a node id has at most {MAX_ID_CHARS} characters"));
        }
        if let Some(bad) = text
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
        {
            return Err(format!("a node id may hold letters, digits, '_' and '-', not {bad:?}"));
        }
        Ok(Self(Arc::from(text)))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A link as written under `inputs:`: the id of the node that produces the value and the name of
/// its output.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Link {
    /// The producing node's id, as written.
    pub node: String,
    /// The output's name.
    pub output: String,
}

impl Link {
    /// Parses `node_id.output_name`.
    ///
    /// # Errors
    /// A sentence saying how the text differs from that form.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.split_once('.') {
            Some((node, output)) if !node.is_empty() && !output.is_empty() && !output.contains('.') => Ok(Self {
                node: node.to_string(),
                output: output.to_string(),
            }),
            _ => Err(format!(
                "\"{text}\" is not a link: write node_id.output_name, e.g. ckpt.model"
            )),
        }
    }
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.node, self.output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_plain_names() {
        assert!(NodeId::parse("ckpt_2-a").is_ok());
        for bad in ["", "a.b", "a b", "ünï", &"x".repeat(129)] {
            assert!(NodeId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn links_have_exactly_one_dot() {
        assert_eq!(Link::parse("ckpt.model").unwrap().to_string(), "ckpt.model");
        for bad in ["ckpt", ".model", "ckpt.", "a.b.c", ""] {
            assert!(Link::parse(bad).is_err(), "{bad}");
        }
    }
}
