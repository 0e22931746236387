//! The image file a loader's `image` param names, inside the input folder: its declaration and
//! opening it.

use image::DynamicImage;
use std::path::PathBuf;
use std::sync::Arc;
use swapgraph_node_api::{NodeError, Params, RunContext};

/// The `image` param of the loaders: a file in the input folder, read again when it changes.
#[derive(Params)]
pub struct ImageFile {
    /// The image file, inside the input folder (--input-dir).
    #[param(reads = Inputs)]
    pub image: Arc<str>,
}

impl ImageFile {
    /// The decoded image the param names, with its resolved path for messages.
    ///
    /// # Errors
    /// A message naming the file when it is outside the input folder, missing or not a PNG,
    /// JPEG or WebP image.
    pub fn open(&self, ctx: &RunContext) -> Result<(PathBuf, DynamicImage), NodeError> {
        let path = ctx.files.input("image", &self.image)?;
        let decoded =
            image::open(&path).map_err(|e| NodeError::msg(format!("cannot load image {}: {e}", path.display())))?;
        Ok((path, decoded))
    }
}
