//! Pass 4: the graph as a whole: no cycles, and at least one output node.

use super::node::NodeDraft;
use super::ValidationError;
use petgraph::algo::tarjan_scc;
use petgraph::graph::DiGraph;
use swapgraph_node_api::Registry;

/// Reports every cycle (naming all its nodes) that `edges` (producer, consumer) close, and a
/// workflow without an enabled output node.
pub fn check(nodes: &[NodeDraft], edges: &[(usize, usize)], registry: &Registry, errors: &mut Vec<ValidationError>) {
    let mut graph = DiGraph::<usize, ()>::with_capacity(nodes.len(), edges.len());
    let indices: Vec<_> = (0..nodes.len()).map(|i| graph.add_node(i)).collect();
    for &(source, target) in edges {
        graph.update_edge(indices[source], indices[target], ());
    }
    for component in tarjan_scc(&graph) {
        let looped = component.len() > 1 || graph.contains_edge(component[0], component[0]);
        if looped {
            let mut members: Vec<usize> = component.iter().map(|i| graph[*i]).collect();
            members.sort_unstable();
            errors.push(ValidationError::Cycle {
                nodes: members.iter().map(|i| nodes[*i].id.clone()).collect(),
                at: nodes[members[0]].at,
            });
        }
    }
    let unknown_types = errors
        .iter()
        .any(|e| matches!(e, ValidationError::UnknownNodeType { .. }));
    let has_output = nodes
        .iter()
        .any(|n| n.enabled && n.descriptor().is_some_and(|d| d.is_output));
    if !has_output && !unknown_types {
        let output_types = registry
            .descriptors()
            .filter(|d| d.is_output)
            .map(|d| d.type_name.to_string())
            .collect();
        errors.push(ValidationError::NoOutputNode { output_types });
    }
}
