//! The image file a loader's `image` param names, inside the input folder: its declaration and
//! opening it.

use image::DynamicImage;
use std::path::PathBuf;
use swapgraph_node_api::{Args, FileFolder, NodeError, ParamKind, ParamSpec, RunContext};

/// The `image` param of the loaders: a file in the input folder, read again when it changes.
pub fn image_param() -> ParamSpec {
    ParamSpec::new(
        "image",
        ParamKind::String {
            default: None,
            multiline: false,
        },
        "The image file, inside the input folder (--input-dir).",
    )
    .reads_file(FileFolder::Inputs)
}

/// The decoded image the `image` param names, with its resolved path for messages.
///
/// # Errors
/// A message naming the file when it is outside the input folder, missing or not a PNG, JPEG
/// or WebP image.
pub fn open_image(args: &Args, ctx: &RunContext) -> Result<(PathBuf, DynamicImage), NodeError> {
    let path = ctx.files.input("image", &args.string("image")?)?;
    let decoded =
        image::open(&path).map_err(|e| NodeError::msg(format!("cannot load image {}: {e}", path.display())))?;
    Ok((path, decoded))
}
