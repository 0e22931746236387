//! swapgraph's image I/O node pack: loading images and masks and saving them as PNG with the workflow
//! embedded, so a saved image carries what made it.

mod load_image;
mod load_image_mask;
mod open;
mod pixels;
mod save_image;

use swapgraph_node_api::{Registry, RegistryError};

pub use pixels::{decode_png_workflow, encode_png};

/// Adds this pack's node types to `registry`.
///
/// # Errors
/// [`RegistryError`] when one of the names is already registered.
pub fn register(registry: &mut Registry) -> Result<(), RegistryError> {
    registry.register(load_image::LoadImage::new())?;
    registry.register(load_image_mask::LoadImageMask::new())?;
    registry.register(save_image::SaveImage::save())?;
    registry.register(save_image::SaveImage::preview())?;
    Ok(())
}
