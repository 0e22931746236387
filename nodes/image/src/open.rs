//! Opening the image file a loader's `image` param names, inside the input folder.

use image::DynamicImage;
use std::path::PathBuf;
use swapgraph_node_api::{Args, NodeError, RunContext};

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
