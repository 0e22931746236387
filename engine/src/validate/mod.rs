//! Validation: from a parsed [`Workflow`] to a [`ValidGraph`] whose every node type, param and
//! link is checked, or to the complete list of problems.
//!
//! Runs in passes, as Vector's config compiler does: the document (version, ids), each node
//! against its descriptor, the links between nodes, then the graph as a whole (cycles, output
//! nodes). Every pass reports all it finds; a problem that only exists because of an earlier one
//! (a link into a node of unknown type, say) is not reported.

mod custom_packs;
mod document;
mod error;
mod graph;
mod links;
mod node;
mod report;
pub mod suggest;

pub use error::{Location, ValidationError};
pub use report::ValidationReport;

use crate::workflow::{NodeId, Position, Workflow};
use std::sync::Arc;
use swapgraph_node_api::{NodeType, Registry, SocketType, Value};

/// A workflow whose every part has been checked: ready for planning.
pub struct ValidGraph {
    /// The nodes, in file order.
    pub nodes: Vec<CheckedNode>,
}

/// One node with its type resolved, its literals converted and checked, and its links resolved.
pub struct CheckedNode {
    /// The node's id.
    pub id: NodeId,
    /// The node type from the registry.
    pub node_type: Arc<dyn NodeType>,
    /// `false` when the node is bypassed.
    pub enabled: bool,
    /// Param values: given literals and defaults of params that are not linked.
    pub literals: Vec<(&'static str, Value)>,
    /// Inputs and linked params.
    pub links: Vec<CheckedLink>,
    /// Where the node's id is written.
    pub at: Position,
}

/// A link into a node, resolved to the producing node and output.
#[derive(Clone, Debug)]
pub struct CheckedLink {
    /// The input or param the link feeds.
    pub arg: &'static str,
    /// The socket type carried.
    pub socket: SocketType,
    /// Index of the producing node in [`ValidGraph::nodes`].
    pub source: usize,
    /// Index of the output in the producer's descriptor.
    pub output: usize,
}

/// Checks `workflow` against the node types in `registry`.
///
/// # Errors
/// Every problem found, in file order; see [`ValidationError`] for the kinds.
pub fn validate(workflow: &Workflow, registry: &Registry) -> Result<ValidGraph, Vec<ValidationError>> {
    let mut errors = Vec::new();
    let ids = document::check(workflow, &mut errors);
    let mut nodes = node::check_all(workflow, registry, &mut errors);
    let edges = links::resolve(&mut nodes, &ids, registry, &mut errors);
    graph::check(&nodes, &edges, registry, &mut errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    let nodes = nodes.into_iter().map(|n| n.into_checked()).collect::<Option<Vec<_>>>();
    nodes.map(|nodes| ValidGraph { nodes }).ok_or_else(Vec::new)
}
