//! `GET /object_info`: swapgraph's node types in ComfyUI's descriptor shape, which ComfyUI's
//! clients and frontend read to build requests and widgets.

use serde_json::{json, Map, Value};
use swapgraph_node_api::{NodeDescriptor, ParamKind, ParamSpec};

/// One node type as ComfyUI describes it: linked inputs by socket type, params as widgets
/// (`INT`, `FLOAT`, `STRING`, `BOOLEAN` with their options, choices as a list), outputs by type
/// and name.
pub fn describe(node: &NodeDescriptor) -> Value {
    let (mut required, mut optional) = (Map::new(), Map::new());
    let (mut required_order, mut optional_order) = (Vec::new(), Vec::new());
    for input in &node.inputs {
        let (section, order) = if input.optional {
            (&mut optional, &mut optional_order)
        } else {
            (&mut required, &mut required_order)
        };
        section.insert(
            input.name.into(),
            json!([input.socket.name(), { "tooltip": input.description }]),
        );
        order.push(input.name);
    }
    for param in &node.params {
        let (section, order) = if param.optional {
            (&mut optional, &mut optional_order)
        } else {
            (&mut required, &mut required_order)
        };
        section.insert(param.name.into(), widget(param));
        order.push(param.name);
    }
    json!({
        "input": { "required": required, "optional": optional },
        "input_order": { "required": required_order, "optional": optional_order },
        "output": node.outputs.iter().map(|output| output.socket.name()).collect::<Vec<_>>(),
        "output_is_list": node.outputs.iter().map(|_| false).collect::<Vec<_>>(),
        "output_name": node.outputs.iter().map(|output| output.name).collect::<Vec<_>>(),
        "output_tooltips": node.outputs.iter().map(|output| output.description).collect::<Vec<_>>(),
        "name": node.type_name,
        "display_name": node.type_name,
        "description": node.description,
        "python_module": "nodes",
        "category": node.category,
        "output_node": node.is_output,
        "deprecated": false,
        "experimental": false,
    })
}

/// A param's default, when it has one.
fn default_of(param: &ParamSpec) -> Option<Value> {
    match &param.kind {
        ParamKind::Int { default, .. } => default.map(Value::from),
        ParamKind::Float { default, .. } => default.map(Value::from),
        ParamKind::String { default, .. } => default.map(Value::from),
        ParamKind::Boolean { default } => default.map(Value::from),
        ParamKind::Choice { default, .. } => default.map(Value::from),
    }
}

/// A param as ComfyUI's `[type, options]` pair.
fn widget(param: &ParamSpec) -> Value {
    let mut options = Map::new();
    if let Some(default) = default_of(param) {
        options.insert("default".into(), default);
    }
    options.insert("tooltip".into(), param.description.into());
    let kind = match &param.kind {
        ParamKind::Int { min, max, .. } => {
            options.insert("min".into(), (*min).into());
            options.insert("max".into(), (*max).into());
            Value::from("INT")
        }
        ParamKind::Float { min, max, .. } => {
            options.insert("min".into(), (*min).into());
            options.insert("max".into(), (*max).into());
            options.insert("step".into(), 0.01.into());
            Value::from("FLOAT")
        }
        ParamKind::String { multiline, .. } => {
            options.insert("multiline".into(), (*multiline).into());
            Value::from("STRING")
        }
        ParamKind::Boolean { .. } => Value::from("BOOLEAN"),
        ParamKind::Choice { choices, .. } => json!(choices),
    };
    json!([kind, options])
}
