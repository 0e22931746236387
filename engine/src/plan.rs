//! Planning: from a [`ValidGraph`] to the ordered list of steps that produce the outputs.
//!
//! Links through bypassed nodes are rewritten to the value the bypassed node passes on (its first
//! input of the same type, as ComfyUI's bypass does); only nodes that feed an enabled output node
//! are kept; the rest are ordered topologically with petgraph.

use crate::validate::{CheckedLink, CheckedNode, ValidGraph};
use crate::workflow::{NodeId, Workflow};
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::Direction::{Incoming, Outgoing};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use swapgraph_node_api::{FileFolder, NodeType, Value};

/// The steps of a run in an order where every step comes after the steps it reads from.
pub struct Plan {
    /// The steps, topologically ordered.
    pub steps: Vec<Step>,
    /// Nodes that are bypassed (`enabled: false`).
    pub bypassed: Vec<NodeId>,
    /// Enabled nodes that feed no output node and so do not run.
    pub unused: Vec<NodeId>,
    /// The workflow as planned (overrides applied).
    document: Workflow,
    /// `document` as YAML, made when first asked for.
    yaml: OnceLock<Arc<str>>,
}

/// One node to run.
pub struct Step {
    /// The node's id.
    pub id: NodeId,
    /// The node type.
    pub node_type: Arc<dyn NodeType>,
    /// Literal and default param values.
    pub literals: Vec<(&'static str, Value)>,
    /// Values read from earlier steps.
    pub inputs: Vec<StepInput>,
}

/// An argument read from an earlier step's output.
#[derive(Clone, Copy, Debug)]
pub struct StepInput {
    /// The input or param name.
    pub arg: &'static str,
    /// Index of the producing step in [`Plan::steps`].
    pub step: usize,
    /// Index of the output in the producer's descriptor.
    pub output: usize,
}

impl Plan {
    /// The file names the steps' literal params give in `folder`, as (param, name) without
    /// repeats, in plan order: the models a job loads (built-in names among them), which the
    /// job queues place jobs by, or the inputs it reads, which travel with a job to workers.
    /// Names that reach a param through a link are known only while running.
    pub fn files_named(&self, folder: FileFolder) -> Vec<(&'static str, String)> {
        let mut named = Vec::new();
        for step in &self.steps {
            let params = step.node_type.descriptor().params.iter();
            for param in params.filter(|param| param.reads == Some(folder)) {
                let literal = step.literals.iter().find(|(name, _)| *name == param.name);
                if let Some((_, Value::String(name))) = literal {
                    let entry = (param.name, name.to_string());
                    if !name.is_empty() && !named.contains(&entry) {
                        named.push(entry);
                    }
                }
            }
        }
        named
    }

    /// Plans a validated graph of `document`.
    pub fn new(graph: ValidGraph, document: Workflow) -> Self {
        let nodes = graph.nodes;
        let resolved: Vec<Vec<(&'static str, usize, usize)>> = nodes
            .iter()
            .map(|node| {
                let through = |l: &CheckedLink| pass_through(&nodes, l.source, l.output);
                node.links.iter().map(|l| (l.arg, through(l).0, through(l).1)).collect()
            })
            .collect();
        let needed = needed_nodes(&nodes, &resolved);

        let mut dag = DiGraph::<usize, ()>::new();
        let mut dag_index = BTreeMap::new();
        for index in (0..nodes.len()).filter(|i| needed[*i]) {
            dag_index.insert(index, dag.add_node(index));
        }
        for (&target, &target_ix) in &dag_index {
            for &(_, source, _) in &resolved[target] {
                dag.add_edge(dag_index[&source], target_ix, ());
            }
        }
        let order = file_ordered_toposort(&dag);
        let step_of: BTreeMap<usize, usize> = order.iter().enumerate().map(|(step, &node)| (node, step)).collect();

        let mut bypassed = Vec::new();
        let mut unused = Vec::new();
        let mut slots: Vec<Option<CheckedNode>> = nodes.into_iter().map(Some).collect();
        let steps = order
            .iter()
            .map(|&index| {
                let node = slots[index].take().expect("each node is planned once");
                let inputs = resolved[index]
                    .iter()
                    .map(|&(arg, source, output)| StepInput {
                        arg,
                        step: step_of[&source],
                        output,
                    })
                    .collect();
                Step {
                    id: node.id,
                    node_type: node.node_type,
                    literals: node.literals,
                    inputs,
                }
            })
            .collect();
        for node in slots.into_iter().flatten() {
            if node.enabled {
                unused.push(node.id)
            } else {
                bypassed.push(node.id)
            }
        }
        Self {
            steps,
            bypassed,
            unused,
            document,
            yaml: OnceLock::new(),
        }
    }

    /// The workflow's `name`, if it has one.
    pub fn name(&self) -> Option<&str> {
        self.document.name.as_deref()
    }

    /// The planned workflow as YAML, overrides applied: what saved outputs embed so that they
    /// can be run again.
    pub fn workflow_yaml(&self) -> Arc<str> {
        let yaml = self.yaml.get_or_init(|| {
            let text = serde_saphyr::to_string(&self.document);
            text.unwrap_or_else(|e| format!("# the workflow could not be written as YAML: {e}\n"))
                .into()
        });
        Arc::clone(yaml)
    }

    /// A plain description of the plan, for `swapgraph validate` and snapshots.
    pub fn summary(&self) -> PlanSummary {
        let steps = self
            .steps
            .iter()
            .map(|step| StepSummary {
                id: step.id.to_string(),
                node_type: step.node_type.descriptor().type_name,
                inputs: step
                    .inputs
                    .iter()
                    .map(|input| {
                        let producer = &self.steps[input.step];
                        let output = producer.node_type.descriptor().outputs[input.output].name;
                        (input.arg, format!("{}.{output}", producer.id))
                    })
                    .collect(),
            })
            .collect();
        PlanSummary {
            steps,
            bypassed: self.bypassed.clone(),
            unused: self.unused.clone(),
        }
    }
}

/// Kahn's algorithm taking the ready node earliest in the file first, so the run order reads
/// like the workflow file wherever the links allow.
fn file_ordered_toposort(dag: &DiGraph<usize, ()>) -> Vec<usize> {
    let mut waiting: Vec<usize> = dag
        .node_indices()
        .map(|ix| dag.neighbors_directed(ix, Incoming).count())
        .collect();
    let mut ready: BTreeMap<usize, NodeIndex> = dag
        .node_indices()
        .filter(|ix| waiting[ix.index()] == 0)
        .map(|ix| (dag[ix], ix))
        .collect();
    let mut order = Vec::with_capacity(dag.node_count());
    while let Some((node, ix)) = ready.pop_first() {
        order.push(node);
        for next in dag.neighbors_directed(ix, Outgoing) {
            waiting[next.index()] -= 1;
            if waiting[next.index()] == 0 {
                ready.insert(dag[next], next);
            }
        }
    }
    debug_assert_eq!(
        order.len(),
        dag.node_count(),
        "validation rejects cycles before planning"
    );
    order
}

/// Follows a link through bypassed nodes to the enabled node and output that really produce it.
fn pass_through(nodes: &[CheckedNode], mut source: usize, mut output: usize) -> (usize, usize) {
    while !nodes[source].enabled {
        let socket = nodes[source].node_type.descriptor().outputs[output].socket;
        let link = nodes[source]
            .links
            .iter()
            .find(|link| link.socket == socket)
            .expect("validation checked that a bypassed node has an input to pass on");
        (source, output) = (link.source, link.output);
    }
    (source, output)
}

/// Marks the enabled output nodes and everything they read from.
fn needed_nodes(nodes: &[CheckedNode], resolved: &[Vec<(&'static str, usize, usize)>]) -> Vec<bool> {
    let mut needed = vec![false; nodes.len()];
    let mut stack: Vec<usize> = (0..nodes.len())
        .filter(|&i| nodes[i].enabled && nodes[i].node_type.descriptor().is_output)
        .collect();
    while let Some(index) = stack.pop() {
        if !std::mem::replace(&mut needed[index], true) {
            stack.extend(resolved[index].iter().map(|&(_, source, _)| source));
        }
    }
    needed
}

/// The plan as plain data.
#[derive(Debug, Serialize)]
pub struct PlanSummary {
    /// The steps in run order.
    pub steps: Vec<StepSummary>,
    /// Bypassed nodes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bypassed: Vec<NodeId>,
    /// Nodes that feed no output and do not run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unused: Vec<NodeId>,
}

/// One step as plain data.
#[derive(Debug, Serialize)]
pub struct StepSummary {
    /// Node id.
    pub id: String,
    /// Node type.
    #[serde(rename = "type")]
    pub node_type: &'static str,
    /// Argument name to `producer.output`, after bypass resolution.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<&'static str, String>,
}
