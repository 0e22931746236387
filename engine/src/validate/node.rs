//! Pass 2: each node against its type's descriptor: type name, params, input names, links' form.

use super::{custom_packs, suggest, CheckedLink, CheckedNode, ValidationError};
use crate::workflow::{Link, NodeId, NodeSpec, Position, Workflow};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use swapgraph_node_api::{NodeDescriptor, NodeType, ParamProblem, Registry, SocketType, Value};

/// A node part-way through validation.
pub struct NodeDraft {
    /// The id as written.
    pub id: String,
    /// Where the id is written.
    pub at: Position,
    /// `false` when bypassed.
    pub enabled: bool,
    /// The type, or `None` when the type name is unknown.
    pub node_type: Option<Arc<dyn NodeType>>,
    /// Checked literal and default param values.
    pub literals: Vec<(&'static str, Value)>,
    /// Well-formed links still to resolve against other nodes.
    pub pending: Vec<PendingLink>,
    /// Links resolved by the link pass.
    pub links: Vec<CheckedLink>,
}

/// A well-formed link whose target is not yet checked.
pub struct PendingLink {
    /// The input or param it feeds.
    pub arg: &'static str,
    /// The socket type the input or param takes.
    pub socket: SocketType,
    /// The parsed link.
    pub link: Link,
    /// Where the link is written.
    pub at: Position,
}

impl NodeDraft {
    /// The descriptor, when the type is known.
    pub fn descriptor(&self) -> Option<&NodeDescriptor> {
        self.node_type.as_deref().map(NodeType::descriptor)
    }

    /// The finished node; `None` if the draft still has a problem (never after a clean pass).
    pub fn into_checked(self) -> Option<CheckedNode> {
        Some(CheckedNode {
            id: NodeId::parse(&self.id).ok()?,
            node_type: self.node_type?,
            enabled: self.enabled,
            literals: self.literals,
            links: self.links,
            at: self.at,
        })
    }
}

/// Checks every node; returns one draft per node, in file order.
pub fn check_all(workflow: &Workflow, registry: &Registry, errors: &mut Vec<ValidationError>) -> Vec<NodeDraft> {
    workflow
        .nodes
        .iter()
        .map(|(id, spec)| {
            let spec = &spec.value;
            let mut draft = NodeDraft {
                id: id.value.clone(),
                at: id.at,
                enabled: spec.enabled,
                node_type: registry.get(&spec.type_name.value).cloned(),
                literals: Vec::new(),
                pending: Vec::new(),
                links: Vec::new(),
            };
            match draft.node_type.clone() {
                Some(node_type) => check_fields(&mut draft, spec, node_type.descriptor(), errors),
                None => errors.push(ValidationError::UnknownNodeType {
                    node: id.value.clone(),
                    type_name: spec.type_name.value.clone(),
                    pack: custom_packs::pack_of(&spec.type_name.value),
                    suggestion: suggest::closest(&spec.type_name.value, registry.type_names()),
                    at: spec.type_name.at,
                }),
            }
            draft
        })
        .collect()
}

fn check_fields(
    draft: &mut NodeDraft,
    spec: &NodeSpec,
    descriptor: &NodeDescriptor,
    errors: &mut Vec<ValidationError>,
) {
    let node = &draft.id;
    let type_name = descriptor.type_name.to_string();
    let mut seen: HashMap<&str, Position> = HashMap::new();
    let mut given_literals = HashSet::new();
    for (name, literal) in spec.params.iter() {
        if let Some(first) = seen.insert(&name.value, name.at) {
            errors.push(duplicate(node, &name.value, first, name.at));
            continue;
        }
        let Some(param) = descriptor.find_param(&name.value) else {
            errors.push(ValidationError::UnknownParam {
                node: node.clone(),
                type_name: type_name.clone(),
                param: name.value.clone(),
                suggestion: suggest::closest(&name.value, descriptor.params.iter().map(|p| p.name)),
                at: name.at,
            });
            continue;
        };
        given_literals.insert(param.name);
        if param.optional && literal.value.is_null() {
            // `null` says "off" outright, as leaving the param out does.
            continue;
        }
        match param.accept_literal(&literal.value) {
            Ok(value) => draft.literals.push((param.name, value)),
            Err(problem) => errors.push(ValidationError::InvalidParam {
                node: node.clone(),
                param: param.name.to_string(),
                suggestion: choice_suggestion(&problem),
                problem,
                at: literal.at,
            }),
        }
    }
    let mut seen: HashMap<&str, Position> = HashMap::new();
    let mut linked = HashSet::new();
    for (name, text) in spec.inputs.iter() {
        if let Some(first) = seen.insert(&name.value, name.at) {
            errors.push(duplicate(node, &name.value, first, name.at));
            continue;
        }
        let target = match (descriptor.find_input(&name.value), descriptor.find_param(&name.value)) {
            (Some(input), _) => (input.name, input.socket),
            (None, Some(param)) if given_literals.contains(param.name) => {
                errors.push(ValidationError::LiteralAndLink {
                    node: node.clone(),
                    param: param.name.to_string(),
                    at: name.at,
                });
                continue;
            }
            (None, Some(param)) => (param.name, param.socket_type()),
            (None, None) => {
                let names = descriptor
                    .inputs
                    .iter()
                    .map(|i| i.name)
                    .chain(descriptor.params.iter().map(|p| p.name));
                errors.push(ValidationError::UnknownInput {
                    node: node.clone(),
                    type_name: type_name.clone(),
                    input: name.value.clone(),
                    suggestion: suggest::closest(&name.value, names),
                    at: name.at,
                });
                continue;
            }
        };
        linked.insert(target.0);
        match Link::parse(&text.value) {
            Ok(link) => draft.pending.push(PendingLink {
                arg: target.0,
                socket: target.1,
                link,
                at: text.at,
            }),
            Err(reason) => errors.push(ValidationError::MalformedLink {
                node: node.clone(),
                input: name.value.clone(),
                reason,
                at: text.at,
            }),
        }
    }
    for input in descriptor
        .inputs
        .iter()
        .filter(|i| !i.optional && !linked.contains(i.name))
    {
        errors.push(ValidationError::MissingInput {
            node: node.clone(),
            type_name: type_name.clone(),
            input: input.name.to_string(),
            socket: input.socket,
            at: draft.at,
        });
    }
    for param in descriptor
        .params
        .iter()
        .filter(|p| !given_literals.contains(p.name) && !linked.contains(p.name))
    {
        match param.default_value() {
            Some(value) => draft.literals.push((param.name, value)),
            None if param.optional => {}
            None => errors.push(ValidationError::MissingParam {
                node: node.clone(),
                type_name: type_name.clone(),
                param: param.name.to_string(),
                at: draft.at,
            }),
        }
    }
}

fn duplicate(node: &str, field: &str, first: Position, at: Position) -> ValidationError {
    ValidationError::DuplicateField {
        node: node.to_string(),
        field: field.to_string(),
        first,
        at,
    }
}

fn choice_suggestion(problem: &ParamProblem) -> Option<String> {
    match problem {
        ParamProblem::UnknownChoice { value, choices } => suggest::closest(value, choices.iter().copied()),
        _ => None,
    }
}
