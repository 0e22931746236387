//! ComfyUI's editor-format workflows (what its "Save" writes and what it embeds in PNGs: `nodes`
//! with `widgets_values`, and `links`), read as swapgraph workflows: node ids, titles and
//! positions kept; widget values matched to params in the order each node type declares them
//! (ComfyUI's order), skipping the `control_after_generate` choice ComfyUI shows after a seed;
//! links through `Reroute` nodes followed to their source; a `PrimitiveNode`'s value written
//! into the params it feeds; bypassed nodes disabled and muted ones left out.

use super::comfyui::{json_object, write_workflow, ImportedNode};
use serde_json::{Map, Value};
use std::collections::HashMap;
use swapgraph_node_api::Registry;

/// What ComfyUI shows after a seed's widget: how the seed changes between runs.
const SEED_CONTROLS: [&str; 4] = ["fixed", "increment", "decrement", "randomize"];

/// Whether `bytes` hold a ComfyUI editor-format workflow: a JSON object with `nodes` and
/// `links` lists.
pub fn is_comfyui_editor(bytes: &[u8]) -> bool {
    json_object(bytes).is_some_and(|file| {
        file.get("nodes").is_some_and(Value::is_array) && file.get("links").is_some_and(Value::is_array)
    })
}

/// One link: the producing node and output slot, and the consuming node and input slot.
struct Link {
    from: i64,
    slot: usize,
}

/// The swapgraph workflow, as YAML, of the ComfyUI editor-format workflow in `bytes`, named
/// `name`, and the problems that left something out, one sentence each naming the ComfyUI node.
///
/// # Errors
/// Text that is not such a workflow.
pub fn from_comfyui_editor(name: &str, bytes: &[u8], registry: &Registry) -> Result<(String, Vec<String>), String> {
    let file: Map<String, Value> = serde_json::from_slice(bytes).map_err(|e| format!("not a ComfyUI workflow: {e}"))?;
    let nodes: Vec<&Map<String, Value>> = file
        .get("nodes")
        .and_then(Value::as_array)
        .map(|nodes| nodes.iter().filter_map(Value::as_object).collect())
        .unwrap_or_default();
    let by_id: HashMap<i64, &Map<String, Value>> = nodes
        .iter()
        .filter_map(|node| Some((node.get("id")?.as_i64()?, *node)))
        .collect();
    let links = read_links(file.get("links"));
    let type_of = |node: &Map<String, Value>| node.get("type").and_then(Value::as_str).unwrap_or_default().to_string();
    let mut problems = Vec::new();
    let mut converted = Vec::new();
    for node in &nodes {
        let (Some(id), type_name) = (node.get("id").and_then(Value::as_i64), type_of(node)) else {
            continue;
        };
        let mode = node.get("mode").and_then(Value::as_i64).unwrap_or(0);
        if matches!(
            type_name.as_str(),
            "Reroute" | "PrimitiveNode" | "Note" | "MarkdownNote"
        ) || mode == 2
        {
            continue;
        }
        let title = node.get("title").and_then(Value::as_str);
        let named = match title {
            Some(title) => format!("node {id} (\"{title}\", {type_name})"),
            None => format!("node {id} ({type_name})"),
        };
        let mut inputs = Map::new();
        let mut params = Map::new();
        let descriptor = registry.get(&type_name).map(|node_type| node_type.descriptor().clone());
        // Widget values, in the order the node type declares its params.
        let mut values = node
            .get("widgets_values")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .peekable();
        if let Some(descriptor) = &descriptor {
            for param in &descriptor.params {
                let Some(value) = values.next() else { break };
                params.insert(param.name.to_string(), value);
                if param.name.ends_with("seed") {
                    values.next_if(|next| next.as_str().is_some_and(|s| SEED_CONTROLS.contains(&s)));
                }
            }
        }
        for input in node.get("inputs").and_then(Value::as_array).into_iter().flatten() {
            let Some(input_name) = input.get("name").and_then(Value::as_str) else {
                continue;
            };
            // A widget turned into an input carries the widget's param name.
            let target = input
                .pointer("/widget/name")
                .and_then(Value::as_str)
                .unwrap_or(input_name);
            let Some(link) = input.get("link").and_then(Value::as_i64) else {
                continue;
            };
            match source_of(link, &links, &by_id) {
                Ok(Source::Value(value)) => {
                    params.insert(target.to_string(), value);
                }
                Ok(Source::Output { node: from, slot }) => {
                    let from_type = by_id.get(&from).map(|n| type_of(n)).unwrap_or_default();
                    match registry
                        .get(&from_type)
                        .and_then(|t| t.descriptor().outputs.get(slot).map(|o| o.name))
                    {
                        Some(output) => {
                            params.remove(target);
                            inputs.insert(target.to_string(), Value::String(format!("{from}.{output}")));
                        }
                        None => problems.push(format!(
                            "{named}, input \"{target}\": links to output {slot} of node {from} ({from_type}), which \
                             swapgraph does not have"
                        )),
                    }
                }
                Err(problem) => problems.push(format!("{named}, input \"{target}\": {problem}")),
            }
        }
        let node = ImportedNode {
            type_name,
            title: title.map(str::to_string),
            inputs,
            params,
            ui: node.get("pos").and_then(position),
            collapsed: node
                .get("flags")
                .and_then(|flags| flags.get("collapsed"))
                .and_then(Value::as_bool)
                == Some(true),
            enabled: mode != 4,
        };
        converted.push((id.to_string(), node));
    }
    let groups = file.get("groups").and_then(Value::as_array).into_iter().flatten();
    Ok((
        write_workflow(name, converted, groups.filter_map(group).collect())?,
        problems,
    ))
}

/// A ComfyUI group (`title`, `bounding` as x, y, width, height, `color`) as the workflow's
/// `ui.groups` entry; `None` without a box.
fn group(group: &Value) -> Option<Value> {
    let bounding: Vec<f64> = group
        .get("bounding")?
        .as_array()?
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    let [x, y, width, height] = bounding.as_slice() else {
        return None;
    };
    let mut entry = serde_json::json!({
        "title": group.get("title").and_then(Value::as_str).unwrap_or("Group"),
        "x": x, "y": y, "width": width, "height": height,
    });
    if let Some(color) = group.get("color").and_then(Value::as_str) {
        entry["color"] = color.into();
    }
    Some(entry)
}

/// Where a link's value comes from, past any `Reroute` nodes.
enum Source {
    /// A node's output slot.
    Output { node: i64, slot: usize },
    /// A `PrimitiveNode`'s value.
    Value(Value),
}

fn source_of(
    link: i64,
    links: &HashMap<i64, Link>,
    nodes: &HashMap<i64, &Map<String, Value>>,
) -> Result<Source, String> {
    let mut link = link;
    // A chain of reroutes is followed; a loop of them ends the search.
    for _ in 0..=nodes.len() {
        let Link { from, slot } = links
            .get(&link)
            .ok_or_else(|| format!("link {link} is not in the workflow's links"))?;
        let node = nodes
            .get(from)
            .ok_or_else(|| format!("links to node {from}, which is not in the workflow"))?;
        match node.get("type").and_then(Value::as_str) {
            Some("Reroute") => {
                link = node
                    .get("inputs")
                    .and_then(|inputs| inputs.pointer("/0/link"))
                    .and_then(Value::as_i64)
                    .ok_or_else(|| format!("passes through reroute {from}, which has nothing linked into it"))?;
            }
            Some("PrimitiveNode") => {
                let value = node.get("widgets_values").and_then(|values| values.get(0)).cloned();
                return value
                    .map(Source::Value)
                    .ok_or_else(|| format!("primitive {from} holds no value"));
            }
            _ => {
                return Ok(Source::Output {
                    node: *from,
                    slot: *slot,
                })
            }
        }
    }
    Err("follows a loop of reroutes".to_string())
}

/// The links by id, from either form ComfyUI writes: `[id, from, slot, to, to_slot, type]` or
/// objects with `id`, `origin_id` and `origin_slot`.
fn read_links(links: Option<&Value>) -> HashMap<i64, Link> {
    links
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|link| {
            let (id, from, slot) = match link {
                Value::Array(fields) => (fields.first()?, fields.get(1)?, fields.get(2)?),
                Value::Object(fields) => (fields.get("id")?, fields.get("origin_id")?, fields.get("origin_slot")?),
                _ => return None,
            };
            Some((
                id.as_i64()?,
                Link {
                    from: from.as_i64()?,
                    slot: usize::try_from(slot.as_u64()?).ok()?,
                },
            ))
        })
        .collect()
}

/// A node's `pos`, as `[x, y]` or `{"0": x, "1": y}`.
fn position(pos: &Value) -> Option<[f64; 2]> {
    match pos {
        Value::Array(xy) => Some([xy.first()?.as_f64()?, xy.get(1)?.as_f64()?]),
        Value::Object(xy) => Some([xy.get("0")?.as_f64()?, xy.get("1")?.as_f64()?]),
        _ => None,
    }
}
