//! `StringConcatenate`: joins two strings with a delimiter, as ComfyUI's node of that name.

use swapgraph_node_api::{
    Args, NodeDescriptor, NodeError, NodeType, ParamKind, ParamSpec, RunContext, SocketType, Value,
};

/// Joins `string_a`, `delimiter` and `string_b`.
pub struct StringConcatenate {
    descriptor: NodeDescriptor,
}

impl StringConcatenate {
    /// The node type.
    pub fn new() -> Self {
        let text = |default| ParamKind::String {
            default,
            multiline: true,
        };
        let descriptor = NodeDescriptor::new(
            "StringConcatenate",
            "utils/text",
            "Joins two strings with a delimiter between them, e.g. a subject and a style.",
        )
        .param(ParamSpec::new("string_a", text(None), "The first string."))
        .param(ParamSpec::new("string_b", text(None), "The second string."))
        .param(ParamSpec::new(
            "delimiter",
            ParamKind::String {
                default: Some(""),
                multiline: false,
            },
            "Put between the two strings.",
        ))
        .output(SocketType::String, "string_a + delimiter + string_b.");
        Self { descriptor }
    }
}

impl NodeType for StringConcatenate {
    fn descriptor(&self) -> &NodeDescriptor {
        &self.descriptor
    }

    fn run(&self, args: &Args, _ctx: &RunContext) -> Result<Vec<Value>, NodeError> {
        let joined = format!(
            "{}{}{}",
            args.string("string_a")?,
            args.string("delimiter")?,
            args.string("string_b")?
        );
        Ok(vec![Value::string(joined)])
    }
}
