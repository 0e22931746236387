//! Validation errors: what is wrong, with a stable code and where it is.

use super::custom_packs::from_pack;
use super::suggest::did_you_mean;
use crate::workflow::Position;
use serde::Serialize;
use swapgraph_node_api::{ParamProblem, SocketType};

/// One problem found in a workflow. Messages name the node and field the way a user wrote them;
/// [`code`](Self::code) is stable for scripts and tests.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ValidationError {
    /// The file exceeds the size limit.
    #[error("the workflow is {size} bytes, more than the limit of {limit} bytes")]
    TooLarge { size: u64, limit: u64 },
    /// The file is not UTF-8 text.
    #[error("the workflow is not UTF-8 text (invalid byte sequence here)")]
    NotUtf8 { at: Position },
    /// The text is not YAML, not a workflow's shape, or breaks a parsing budget.
    #[error("{message}")]
    Syntax { message: String, at: Position },
    /// No `version:` key.
    #[error("the workflow has no \"version\"; add `version: 1` at the top")]
    MissingVersion,
    /// A ComfyUI API-format workflow that cannot be read as a workflow (a link to a node or an
    /// output that is not there).
    #[error("{message}")]
    ComfyUi { message: String },
    /// A version other than 1.
    #[error("unsupported workflow version {found}; this swapgraph reads version 1")]
    UnsupportedVersion { found: String, at: Position },
    /// A node id with characters links cannot carry.
    #[error("node id \"{node}\" is invalid: {reason}")]
    InvalidNodeId { node: String, reason: String, at: Position },
    /// Two nodes with one id.
    #[error("node id \"{node}\" is used twice (first at {first})")]
    DuplicateNodeId {
        node: String,
        first: Position,
        at: Position,
    },
    /// A node type no pack registered (with the ComfyUI custom node pack it comes from, when
    /// that is a well-known one).
    #[error(
        "Node \"{node}\" has unknown type \"{type_name}\"{}{}",
        from_pack(pack),
        did_you_mean(suggestion)
    )]
    UnknownNodeType {
        node: String,
        type_name: String,
        pack: Option<&'static str>,
        suggestion: Option<String>,
        at: Position,
    },
    /// A key under `params:` the node type does not declare.
    #[error("Node \"{node}\" ({type_name}) has no param \"{param}\"{}", did_you_mean(suggestion))]
    UnknownParam {
        node: String,
        type_name: String,
        param: String,
        suggestion: Option<String>,
        at: Position,
    },
    /// A key under `inputs:` that is neither an input nor a param of the node type.
    #[error("Node \"{node}\" ({type_name}) has no input \"{input}\"{}", did_you_mean(suggestion))]
    UnknownInput {
        node: String,
        type_name: String,
        input: String,
        suggestion: Option<String>,
        at: Position,
    },
    /// A key repeated within one node's `params:` or `inputs:`.
    #[error("\"{field}\" of node \"{node}\" is given twice (first at {first})")]
    DuplicateField {
        node: String,
        field: String,
        first: Position,
        at: Position,
    },
    /// A param given under both `params:` and `inputs:`.
    #[error("Param \"{param}\" of node \"{node}\" is given both as a literal and as a link; keep one")]
    LiteralAndLink { node: String, param: String, at: Position },
    /// A param without default that is neither given nor linked.
    #[error("Node \"{node}\" ({type_name}) is missing required param \"{param}\"")]
    MissingParam {
        node: String,
        type_name: String,
        param: String,
        at: Position,
    },
    /// A required input socket without a link.
    #[error("Node \"{node}\" ({type_name}) is missing required input \"{input}\" ({socket})")]
    MissingInput {
        node: String,
        type_name: String,
        input: String,
        socket: SocketType,
        at: Position,
    },
    /// A literal of the wrong type, out of range, not among the choices, or refused by its param's rule.
    #[error("Param \"{param}\" of node \"{node}\": {problem}{}", did_you_mean(suggestion))]
    InvalidParam {
        node: String,
        param: String,
        problem: ParamProblem,
        suggestion: Option<String>,
        at: Position,
    },
    /// Text under `inputs:` that is not `node.output`.
    #[error("Input \"{input}\" of node \"{node}\": {reason}")]
    MalformedLink {
        node: String,
        input: String,
        reason: String,
        at: Position,
    },
    /// A link naming a node that does not exist.
    #[error(
        "Input \"{input}\" of node \"{node}\" links to unknown node \"{target}\"{}",
        did_you_mean(suggestion)
    )]
    LinkToUnknownNode {
        node: String,
        input: String,
        target: String,
        suggestion: Option<String>,
        at: Position,
    },
    /// A link naming an output the target node does not have.
    #[error(
        "Input \"{input}\" of node \"{node}\" links to \"{target}.{output}\", but {target_type} has no output \"{output}\" (its outputs: {}){}",
        if available.is_empty() { "none".to_string() } else { available.join(", ") },
        did_you_mean(suggestion)
    )]
    LinkToUnknownOutput {
        node: String,
        input: String,
        target: String,
        target_type: String,
        output: String,
        available: Vec<String>,
        suggestion: Option<String>,
        at: Position,
    },
    /// A link whose output type differs from the input's type.
    #[error("Input \"{input}\" of node \"{node}\" takes {expected}, but \"{link}\" is {found}")]
    SocketTypeMismatch {
        node: String,
        input: String,
        expected: SocketType,
        link: String,
        found: SocketType,
        at: Position,
    },
    /// A link to an output of a bypassed node that has no input of that type to pass on.
    #[error(
        "Input \"{input}\" of node \"{node}\" links to \"{link}\", but node \"{target}\" is bypassed (enabled: false) and has no linked {socket} input to pass on"
    )]
    BypassWithoutSource {
        node: String,
        input: String,
        link: String,
        target: String,
        socket: SocketType,
        at: Position,
    },
    /// Nodes that link to each other in a loop.
    #[error("{}", describe_cycle(nodes))]
    Cycle { nodes: Vec<String>, at: Position },
    /// Nothing to run: no enabled output node.
    #[error("the workflow has no enabled output node, so nothing would run; add one of: {}", output_types.join(", "))]
    NoOutputNode { output_types: Vec<String> },
    /// A `--set` argument that is not `node.param=value`.
    #[error("--set \"{text}\": {reason}")]
    BadOverride { text: String, reason: String, at: Position },
    /// A `--set` argument naming a node the workflow does not have.
    #[error(
        "override \"{text}\": the workflow has no node (or node type) \"{node}\"{}",
        did_you_mean(suggestion)
    )]
    OverrideUnknownNode {
        text: String,
        node: String,
        suggestion: Option<String>,
        at: Position,
    },
}

fn describe_cycle(nodes: &[String]) -> String {
    match nodes {
        [single] => format!("Node \"{single}\" links to itself"),
        _ => format!("Nodes {} link to each other in a cycle", quoted(nodes)),
    }
}

fn quoted(nodes: &[String]) -> String {
    let quoted: Vec<String> = nodes.iter().map(|n| format!("\"{n}\"")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => quoted.join(""),
    }
}

/// Where a problem is: which node, which field, which line and column.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Location {
    /// The node id, when the problem belongs to one node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The param or input name, when the problem belongs to one field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The position in the file or on the command line.
    pub at: Position,
}

impl ValidationError {
    /// A stable, kebab-case identifier of the kind of problem.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "too-large",
            Self::NotUtf8 { .. } => "not-utf8",
            Self::Syntax { .. } => "yaml-syntax",
            Self::MissingVersion => "missing-version",
            Self::ComfyUi { .. } => "comfyui-import",
            Self::UnsupportedVersion { .. } => "unsupported-version",
            Self::InvalidNodeId { .. } => "invalid-node-id",
            Self::DuplicateNodeId { .. } => "duplicate-node-id",
            Self::UnknownNodeType { .. } => "unknown-node-type",
            Self::UnknownParam { .. } => "unknown-param",
            Self::UnknownInput { .. } => "unknown-input",
            Self::DuplicateField { .. } => "duplicate-field",
            Self::LiteralAndLink { .. } => "literal-and-link",
            Self::MissingParam { .. } => "missing-param",
            Self::MissingInput { .. } => "missing-input",
            Self::InvalidParam {
                problem: ParamProblem::WrongType { .. },
                ..
            } => "param-type",
            Self::InvalidParam {
                problem: ParamProblem::OutOfRange { .. },
                ..
            } => "param-range",
            Self::InvalidParam {
                problem: ParamProblem::UnknownChoice { .. },
                ..
            } => "param-choice",
            Self::InvalidParam {
                problem: ParamProblem::Refused { .. },
                ..
            } => "param-refused",
            Self::MalformedLink { .. } => "malformed-link",
            Self::LinkToUnknownNode { .. } => "link-to-unknown-node",
            Self::LinkToUnknownOutput { .. } => "link-to-unknown-output",
            Self::SocketTypeMismatch { .. } => "socket-type-mismatch",
            Self::BypassWithoutSource { .. } => "bypass-without-source",
            Self::Cycle { .. } => "cycle",
            Self::NoOutputNode { .. } => "no-output-node",
            Self::BadOverride { .. } => "bad-override",
            Self::OverrideUnknownNode { .. } => "override-unknown-node",
        }
    }

    /// The node, field and position the problem belongs to.
    pub fn location(&self) -> Location {
        let whole = |at: &Position| Location {
            at: *at,
            ..Location::default()
        };
        let node = |node: &String, at: &Position| Location {
            node: Some(node.clone()),
            field: None,
            at: *at,
        };
        let field = |n: &String, f: &String, at: &Position| Location {
            node: Some(n.clone()),
            field: Some(f.clone()),
            at: *at,
        };
        match self {
            Self::TooLarge { .. } | Self::MissingVersion | Self::ComfyUi { .. } | Self::NoOutputNode { .. } => {
                Location::default()
            }
            Self::NotUtf8 { at }
            | Self::Syntax { at, .. }
            | Self::UnsupportedVersion { at, .. }
            | Self::BadOverride { at, .. }
            | Self::OverrideUnknownNode { at, .. } => whole(at),
            Self::Cycle { nodes, at } => Location {
                node: nodes.first().cloned(),
                field: None,
                at: *at,
            },
            Self::InvalidNodeId { node: n, at, .. }
            | Self::DuplicateNodeId { node: n, at, .. }
            | Self::UnknownNodeType { node: n, at, .. } => node(n, at),
            Self::UnknownParam {
                node: n, param: f, at, ..
            }
            | Self::LiteralAndLink { node: n, param: f, at }
            | Self::MissingParam {
                node: n, param: f, at, ..
            }
            | Self::InvalidParam {
                node: n, param: f, at, ..
            }
            | Self::UnknownInput {
                node: n, input: f, at, ..
            }
            | Self::MissingInput {
                node: n, input: f, at, ..
            }
            | Self::MalformedLink {
                node: n, input: f, at, ..
            }
            | Self::LinkToUnknownNode {
                node: n, input: f, at, ..
            }
            | Self::LinkToUnknownOutput {
                node: n, input: f, at, ..
            }
            | Self::SocketTypeMismatch {
                node: n, input: f, at, ..
            }
            | Self::BypassWithoutSource {
                node: n, input: f, at, ..
            }
            | Self::DuplicateField {
                node: n, field: f, at, ..
            } => field(n, f, at),
        }
    }
}

impl Serialize for ValidationError {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Diagnostic<'a> {
            code: &'a str,
            message: String,
            #[serde(flatten)]
            location: Location,
        }
        Diagnostic {
            code: self.code(),
            message: self.to_string(),
            location: self.location(),
        }
        .serialize(serializer)
    }
}
