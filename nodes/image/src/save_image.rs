//! `SaveImage` and `PreviewImage`: IMAGE batches to numbered PNG files.

use crate::pixels::encode_png;
use swapgraph_model::Image;
use swapgraph_node_api::output::{save_output, FilenamePrefix};
use swapgraph_node_api::{Args, NodeDescriptor, NodeError, NodeType, Params, RunContext, SocketType, Value};

/// Writes each image of a batch as `{prefix}_NNNNN.png`, the workflow embedded.
pub struct SaveImage {
    descriptor: NodeDescriptor,
    /// Sub-folder of the output folder previews go to; `None` for saved images.
    preview_folder: Option<&'static str>,
}

impl SaveImage {
    /// `SaveImage`.
    pub fn save() -> Self {
        let descriptor = NodeDescriptor::new(
            "SaveImage",
            "image",
            "Saves images as PNG files in the output folder, with the workflow embedded so they can be run again.",
        )
        .input("images", SocketType::IMAGE, "The images to save.")
        .params::<FilenamePrefix>()
        .output_node();
        Self {
            descriptor,
            preview_folder: None,
        }
    }

    /// `PreviewImage`: the same, into the output folder's `previews/` sub-folder.
    pub fn preview() -> Self {
        let descriptor = NodeDescriptor::new(
            "PreviewImage",
            "image",
            "Writes images to the output folder's previews/ sub-folder for a quick look.",
        )
        .input("images", SocketType::IMAGE, "The images to show.")
        .output_node();
        Self {
            descriptor,
            preview_folder: Some("previews/preview"),
        }
    }
}

impl NodeType for SaveImage {
    fn descriptor(&self) -> &NodeDescriptor {
        &self.descriptor
    }

    fn run(&self, args: &Args, ctx: &RunContext) -> Result<Vec<Value>, NodeError> {
        let images = args.handle::<Image>("images")?;
        let prefix = match self.preview_folder {
            Some(folder) => folder.to_string(),
            None => FilenamePrefix::from_args(args)?.filename_prefix.to_string(),
        };
        let batch = images.pixels.dim(0).map_err(|e| NodeError::msg(e.to_string()))?;
        for index in 0..batch {
            ctx.check_cancelled()?;
            let image = images.pixels.get(index).map_err(|e| NodeError::msg(e.to_string()))?;
            let png = encode_png(&image, ctx.workflow.as_deref())?;
            let path = save_output(&ctx.files.outputs, &prefix, "png", &png)?;
            ctx.reporter.output_written(&path);
        }
        Ok(Vec::new())
    }
}
