//! `swapgraph nodes`: the node types of this build, from their descriptors.

use super::args::NodesArgs;
use super::Exit;
use crate::validate::suggest;
use swapgraph_node_api::{NodeDescriptor, ParamKind, ParamSpec, Registry};

/// Prints one or all descriptors, as text grouped by category or as JSON.
pub fn list(args: NodesArgs, registry: &Registry) -> Exit {
    let descriptors: Vec<&NodeDescriptor> = match &args.node_type {
        None => registry.descriptors().collect(),
        Some(name) => match registry.get(name) {
            Some(node) => vec![node.descriptor()],
            None => {
                let hint = suggest::did_you_mean(&suggest::closest(name, registry.type_names()));
                eprintln!("error: unknown node type \"{name}\"{hint}");
                return Exit::Usage;
            }
        },
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&descriptors).unwrap_or_default());
        return Exit::Success;
    }
    let mut sorted = descriptors;
    sorted.sort_by_key(|d| (d.category, d.type_name));
    for descriptor in sorted {
        print!("{}", describe(descriptor));
    }
    Exit::Success
}

/// A descriptor as indented text.
fn describe(d: &NodeDescriptor) -> String {
    let mut text = format!(
        "{} [{}] v{}{}\n  {}\n",
        d.type_name,
        d.category,
        d.version,
        if d.is_output { " (output node)" } else { "" },
        d.description
    );
    for input in &d.inputs {
        let need = if input.optional { "optional" } else { "required" };
        text += &format!(
            "  input  {}: {} ({need}) - {}\n",
            input.name, input.socket, input.description
        );
    }
    for param in &d.params {
        text += &format!(
            "  param  {}: {} - {}\n",
            param.name,
            describe_param(param),
            param.description
        );
    }
    for output in &d.outputs {
        text += &format!("  output {}: {} - {}\n", output.name, output.socket, output.description);
    }
    text
}

fn describe_param(param: &ParamSpec) -> String {
    let unset = if param.optional {
        "optional, left out: off"
    } else {
        "required"
    };
    let default = |value: Option<String>| value.map_or_else(|| unset.to_string(), |v| format!("default {v}"));
    match &param.kind {
        ParamKind::Int { default: d, min, max } => format!("INT {min}..={max}, {}", default(d.map(|v| v.to_string()))),
        ParamKind::Float { default: d, min, max } => {
            format!("FLOAT {min}..={max}, {}", default(d.map(|v| v.to_string())))
        }
        ParamKind::String { default: d, .. } => {
            format!("STRING, {}", default(d.map(|v| format!("{v:?}"))))
        }
        ParamKind::Boolean { default: d } => {
            format!("BOOLEAN, {}", default(d.map(|v| v.to_string())))
        }
        ParamKind::Choice { default: d, choices } => {
            format!("one of {}, {}", choices.join("|"), default(d.map(|v| v.to_string())))
        }
    }
}
