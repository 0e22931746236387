//! `SaveText`: writes a string to a numbered text file in the output folder.

use swapgraph_node_api::output::{filename_prefix_param, save_output};
use swapgraph_node_api::{Args, NodeDescriptor, NodeError, NodeType, ParamKind, ParamSpec, RunContext, Value};

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
        .param(ParamSpec::new(
            "text",
            ParamKind::String {
                default: None,
                multiline: true,
            },
            "The text to save; usually linked from another node.",
        ))
        .param(filename_prefix_param())
        .output_node();
        Self { descriptor }
    }
}

impl NodeType for SaveText {
    fn descriptor(&self) -> &NodeDescriptor {
        &self.descriptor
    }

    fn run(&self, args: &Args, ctx: &RunContext) -> Result<Vec<Value>, NodeError> {
        let text = args.string("text")?;
        let path = save_output(
            &ctx.files.outputs,
            &args.string("filename_prefix")?,
            "txt",
            text.as_bytes(),
        )?;
        ctx.reporter.output_written(&path);
        Ok(Vec::new())
    }
}
