//! ComfyUI's API-format workflows, `{id: {class_type, inputs, _meta: {title}}}` (what its
//! "Export (API)" writes and its HTTP API takes), read as swapgraph workflows: node ids and
//! titles kept, each `[node_id, output_index]` link named by the producing node type's declared
//! outputs, every other input a literal param. What the result means is then checked as any
//! workflow is, so a ComfyUI node swapgraph lacks is named with its id and title.

use serde_json::{Map, Value};
use swapgraph_node_api::Registry;

/// Whether `bytes` hold a ComfyUI API-format workflow: a JSON object of nodes, each with a
/// `class_type`.
pub fn is_comfyui_api(bytes: &[u8]) -> bool {
    json_object(bytes).is_some_and(|nodes| {
        !nodes.is_empty()
            && nodes
                .values()
                .all(|node| node.get("class_type").is_some_and(Value::is_string))
    })
}

/// `bytes` as a JSON object, when they are one (what both ComfyUI formats are).
pub(super) fn json_object(bytes: &[u8]) -> Option<Map<String, Value>> {
    let starts_as_object = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    starts_as_object.then(|| serde_json::from_slice(bytes).ok()).flatten()
}

/// One ComfyUI node as a swapgraph node: what both formats' readers fill in.
pub(super) struct ImportedNode {
    /// The node type.
    pub type_name: String,
    /// Its title, when it has one of its own.
    pub title: Option<String>,
    /// Links, `node.output` by input.
    pub inputs: Map<String, Value>,
    /// Literal params.
    pub params: Map<String, Value>,
    /// Its position in the editor.
    pub ui: Option<[f64; 2]>,
    /// Drawn collapsed.
    pub collapsed: bool,
    /// False for a bypassed node.
    pub enabled: bool,
}

impl ImportedNode {
    /// The node as the workflow format writes it, leaving out what is empty or default.
    fn into_spec(self) -> Value {
        let mut spec = Map::new();
        spec.insert("type".into(), Value::String(self.type_name));
        if let Some(title) = self.title {
            spec.insert("title".into(), Value::String(title));
        }
        if !self.inputs.is_empty() {
            spec.insert("inputs".into(), Value::Object(self.inputs));
        }
        if !self.params.is_empty() {
            spec.insert("params".into(), Value::Object(self.params));
        }
        match (self.ui, self.collapsed) {
            (Some([x, y]), true) => spec.insert("ui".into(), serde_json::json!({ "x": x, "y": y, "collapsed": true })),
            (Some([x, y]), false) => spec.insert("ui".into(), serde_json::json!({ "x": x, "y": y })),
            (None, _) => None,
        };
        if !self.enabled {
            spec.insert("enabled".into(), Value::Bool(false));
        }
        Value::Object(spec)
    }
}

/// The workflow of `nodes` (id and node, in order), named after the ComfyUI file `name`, as YAML.
///
/// # Errors
/// The YAML writer's failure, as a sentence.
pub(super) fn write_workflow(
    name: &str,
    nodes: Vec<(String, ImportedNode)>,
    groups: Vec<Value>,
) -> Result<String, String> {
    let nodes: Map<String, Value> = nodes.into_iter().map(|(id, node)| (id, node.into_spec())).collect();
    let mut workflow = serde_json::json!({
        "version": super::FORMAT_VERSION,
        "name": format!("{name} (imported from ComfyUI)"),
        "nodes": nodes,
    });
    if !groups.is_empty() {
        workflow["ui"] = serde_json::json!({ "groups": groups });
    }
    serde_saphyr::to_string(&workflow).map_err(|e| format!("cannot write the workflow: {e}"))
}

/// The swapgraph workflow, as YAML, of the ComfyUI API-format workflow in `bytes`, named
/// `name`, with link targets named by `registry`'s declarations; and the links that could not
/// be read, one sentence each naming the ComfyUI node by id and title (a node that is not there,
/// or an output its type does not have), which the workflow leaves out.
///
/// # Errors
/// Text that is not such a workflow.
pub fn from_comfyui_api(name: &str, bytes: &[u8], registry: &Registry) -> Result<(String, Vec<String>), String> {
    let nodes: Map<String, Value> =
        serde_json::from_slice(bytes).map_err(|e| format!("not a ComfyUI API workflow: {e}"))?;
    let mut problems = Vec::new();
    let mut converted = Vec::new();
    for (id, node) in &nodes {
        let type_name = node.get("class_type").and_then(Value::as_str).unwrap_or_default();
        let title = node.pointer("/_meta/title").and_then(Value::as_str);
        let named = match title {
            Some(title) if title != type_name => format!("node {id} (\"{title}\", {type_name})"),
            _ => format!("node {id} ({type_name})"),
        };
        let mut inputs = Map::new();
        let mut params = Map::new();
        let given = node
            .get("inputs")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for (input, value) in given {
            match as_link(&value) {
                Some((from, index)) => match output_name(&nodes, registry, from, index) {
                    Ok(output) => {
                        inputs.insert(input, Value::String(format!("{from}.{output}")));
                    }
                    Err(problem) => problems.push(format!("{named}, input \"{input}\": {problem}")),
                },
                None => {
                    params.insert(input, value);
                }
            }
        }
        let node = ImportedNode {
            type_name: type_name.to_string(),
            title: title.filter(|title| *title != type_name).map(str::to_string),
            inputs,
            params,
            ui: None,
            collapsed: false,
            enabled: true,
        };
        converted.push((id.clone(), node));
    }
    Ok((write_workflow(name, converted, Vec::new())?, problems))
}

/// A ComfyUI link: `[node_id, output_index]`.
fn as_link(value: &Value) -> Option<(&str, usize)> {
    let [from, index] = value.as_array()?.as_slice() else {
        return None;
    };
    Some((from.as_str()?, usize::try_from(index.as_u64()?).ok()?))
}

/// The name of output `index` of node `from`, by its type's declaration.
fn output_name<'r>(
    nodes: &Map<String, Value>,
    registry: &'r Registry,
    from: &str,
    index: usize,
) -> Result<&'r str, String> {
    let source = nodes
        .get(from)
        .ok_or_else(|| format!("links to node {from}, which is not in the workflow"))?;
    let type_name = source.get("class_type").and_then(Value::as_str).unwrap_or_default();
    let Some(node_type) = registry.get(type_name) else {
        return Err(format!(
            "links to node {from}, whose type \"{type_name}\" swapgraph does not have"
        ));
    };
    let outputs = &node_type.descriptor().outputs;
    outputs.get(index).map(|output| output.name).ok_or_else(|| {
        format!(
            "links to output {index} of node {from} ({type_name}), which has {} output(s)",
            outputs.len()
        )
    })
}
