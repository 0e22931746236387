//! Pass 3: links between nodes: the target node and output exist, the types agree, and a link
//! through a bypassed node has something to pass on.

use super::node::NodeDraft;
use super::{suggest, CheckedLink, ValidationError};
use std::collections::HashMap;
use swapgraph_node_api::{Registry, SocketType};

/// Resolves every well-formed link of every node, moving it from `pending` to `links`. Returns
/// each link that reaches an existing node as a `(producer, consumer)` pair, whether or not its
/// output and type are right, so the graph pass finds cycles whatever else is wrong with them.
pub fn resolve(
    nodes: &mut [NodeDraft],
    ids: &HashMap<String, usize>,
    registry: &Registry,
    errors: &mut Vec<ValidationError>,
) -> Vec<(usize, usize)> {
    let mut edges = Vec::new();
    let declared: Vec<Vec<SocketType>> = nodes
        .iter()
        .map(|n| n.pending.iter().map(|p| p.socket).collect())
        .collect();
    for index in 0..nodes.len() {
        for pending in std::mem::take(&mut nodes[index].pending) {
            let node = nodes[index].id.clone();
            let input = pending.arg.to_string();
            let Some(&source) = ids.get(&pending.link.node) else {
                errors.push(ValidationError::LinkToUnknownNode {
                    node,
                    input,
                    target: pending.link.node.clone(),
                    suggestion: suggest::closest(&pending.link.node, ids.keys().map(String::as_str)),
                    at: pending.at,
                });
                continue;
            };
            edges.push((source, index));
            // A producer of unknown type was reported already; its outputs cannot be checked.
            let Some(descriptor) = nodes[source].descriptor() else {
                continue;
            };
            let Some((output, spec)) = descriptor.find_output(&pending.link.output) else {
                let available: Vec<String> = descriptor.outputs.iter().map(|o| o.name.to_string()).collect();
                errors.push(ValidationError::LinkToUnknownOutput {
                    node,
                    input,
                    target: pending.link.node.clone(),
                    target_type: descriptor.type_name.to_string(),
                    output: pending.link.output.clone(),
                    suggestion: suggest::closest(&pending.link.output, available.iter().map(String::as_str)),
                    available,
                    at: pending.at,
                });
                continue;
            };
            if !registry.accepts(pending.socket, spec.socket) {
                errors.push(ValidationError::SocketTypeMismatch {
                    node,
                    input,
                    expected: pending.socket,
                    link: pending.link.to_string(),
                    found: spec.socket,
                    at: pending.at,
                });
                continue;
            }
            if !nodes[source].enabled && !declared[source].contains(&spec.socket) {
                errors.push(ValidationError::BypassWithoutSource {
                    node,
                    input,
                    link: pending.link.to_string(),
                    target: pending.link.node.clone(),
                    socket: spec.socket,
                    at: pending.at,
                });
                continue;
            }
            nodes[index].links.push(CheckedLink {
                arg: pending.arg,
                socket: spec.socket,
                source,
                output,
            });
        }
    }
    edges
}
