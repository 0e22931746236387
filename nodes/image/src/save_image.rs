//! `SaveImage` and `PreviewImage`: IMAGE batches to numbered PNG files.

use crate::pixels::encode_png;
use std::path::Path;
use std::time::{Duration, Instant};
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

/// Where saving one image's time went, for the log: its pixels brought to the host and encoded
/// as a PNG of `bytes`, then the file written.
fn describe_times(path: &Path, bytes: usize, encoded: Duration, written: Duration) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let name = path
        .file_name()
        .map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
    format!(
        "{name}: PNG encoded in {:.1} ms (pixels to the host included; {} KiB), written in {:.1} ms",
        ms(encoded),
        bytes.div_ceil(1024),
        ms(written)
    )
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
            let started = Instant::now();
            let png = encode_png(&image, ctx.workflow.as_deref())?;
            let encoded = started.elapsed();
            let path = save_output(&ctx.files.outputs, &prefix, "png", &png)?;
            let written = started.elapsed() - encoded;
            tracing::info!(
                "{}: {}",
                ctx.node_id,
                describe_times(&path, png.len(), encoded, written)
            );
            ctx.reporter.output_written(&path);
        }
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::describe_times;
    use std::path::Path;
    use std::time::Duration;

    #[test]
    fn save_times_name_the_file_and_split_encoding_from_writing() {
        let line = describe_times(
            Path::new("/out/sdxl/txt2img_00001.png"),
            1_500_000,
            Duration::from_micros(38_260),
            Duration::from_micros(1_040),
        );
        assert_eq!(
            line,
            "txt2img_00001.png: PNG encoded in 38.3 ms (pixels to the host included; 1465 KiB), written in 1.0 ms"
        );
    }
}
