//! `SaveText`: writes a string to a numbered text file in the output folder.

use std::sync::Arc;
use swapgraph_node_api::output::{save_output, FilenamePrefix};
use swapgraph_node_api::{Args, NodeDescriptor, NodeError, NodeType, Params, RunContext, Value};

/// The text and where it goes.
#[derive(Params)]
struct SaveTextParams {
    /// The text to save; usually linked from another node.
    #[param(multiline)]
    text: Arc<str>,
    #[param(flatten)]
    prefix: FilenamePrefix,
}

/// An output node that saves its `text` as `{filename_prefix}_NNNNN.txt`.
pub struct SaveText {
    descriptor: NodeDescriptor,
}

impl SaveText {
    /// The node type.
    pub fn new() -> Self {
        let descriptor = NodeDescriptor::new(
            "SaveText",
            "utils/text",
            "Saves text (a prompt, a log line) to a numbered .txt file in the output folder.",
        )
        .params::<SaveTextParams>()
        .output_node();
        Self { descriptor }
    }
}

impl NodeType for SaveText {
    fn descriptor(&self) -> &NodeDescriptor {
        &self.descriptor
    }

    fn run(&self, args: &Args, ctx: &RunContext) -> Result<Vec<Value>, NodeError> {
        let SaveTextParams { text, prefix } = SaveTextParams::from_args(args)?;
        let path = save_output(&ctx.files.outputs, &prefix.filename_prefix, "txt", text.as_bytes())?;
        ctx.reporter.output_written(&path);
        Ok(Vec::new())
    }
}
