//! `StringConcatenate`: joins two strings with a delimiter, as ComfyUI's node of that name.

use std::sync::Arc;
use swapgraph_node_api::{Args, NodeDescriptor, NodeError, NodeType, Params, RunContext, SocketType, Value};

/// The two strings and what goes between them.
#[derive(Params)]
struct Strings {
    /// The first string.
    #[param(multiline)]
    string_a: Arc<str>,
    /// The second string.
    #[param(multiline)]
    string_b: Arc<str>,
    /// Put between the two strings.
    #[param(default = "")]
    delimiter: Arc<str>,
}

/// Joins `string_a`, `delimiter` and `string_b`.
pub struct StringConcatenate {
    descriptor: NodeDescriptor,
}

impl StringConcatenate {
    /// The node type.
    pub fn new() -> Self {
        let descriptor = NodeDescriptor::new(
            "StringConcatenate",
            "utils/text",
            "Joins two strings with a delimiter between them, e.g. a subject and a style.",
        )
        .params::<Strings>()
        .output(SocketType::STRING, "string_a + delimiter + string_b.");
        Self { descriptor }
    }
}

impl NodeType for StringConcatenate {
    fn descriptor(&self) -> &NodeDescriptor {
        &self.descriptor
    }

    fn run(&self, args: &Args, _ctx: &RunContext) -> Result<Vec<Value>, NodeError> {
        let Strings {
            string_a,
            string_b,
            delimiter,
        } = Strings::from_args(args)?;
        let joined = format!("{string_a}{delimiter}{string_b}");
        Ok(vec![Value::string(joined)])
    }
}
