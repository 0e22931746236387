//! Pass 1: the document as a whole: format version, node ids.

use super::ValidationError;
use crate::workflow::{Position, Workflow, FORMAT_VERSION};
use std::collections::HashMap;

/// Checks the version and the node ids; returns the index of the first node with each id.
pub fn check(workflow: &Workflow, errors: &mut Vec<ValidationError>) -> HashMap<String, usize> {
    match &workflow.version {
        None => errors.push(ValidationError::MissingVersion),
        Some(version) if version.value.as_i64() == Some(FORMAT_VERSION) => {}
        Some(version) => errors.push(ValidationError::UnsupportedVersion {
            found: version.value.to_string(),
            at: version.at,
        }),
    }
    let mut first_seen: HashMap<String, usize> = HashMap::new();
    let mut first_at: HashMap<&str, Position> = HashMap::new();
    for (index, (id, _)) in workflow.nodes.iter().enumerate() {
        if let Err(reason) = crate::workflow::NodeId::parse(&id.value) {
            errors.push(ValidationError::InvalidNodeId {
                node: id.value.clone(),
                reason,
                at: id.at,
            });
        }
        match first_at.get(id.value.as_str()) {
            Some(first) => errors.push(ValidationError::DuplicateNodeId {
                node: id.value.clone(),
                first: *first,
                at: id.at,
            }),
            None => {
                first_at.insert(&id.value, id.at);
                first_seen.insert(id.value.clone(), index);
            }
        }
    }
    first_seen
}
