//! swapgraph's image node pack: loading images and masks, saving them as PNG with the workflow
//! embedded (so a saved image carries what made it), and resampling images and latents.

mod batch;
mod bislerp;
mod lanczos;
mod load_image;
mod load_image_mask;
mod masks;
mod noise_mask;
mod open;
mod pixels;
mod resample;
mod save_image;
mod scale;

use swapgraph_node_api::{Registry, RegistryError};

pub use pixels::{decode_png_workflow, encode_png, png_texts};
pub use resample::{crop_to_aspect, resize, ScaleMethod};

/// Adds this pack's node types to `registry`.
///
/// # Errors
/// [`RegistryError`] when one of the names is already registered.
pub fn register(registry: &mut Registry) -> Result<(), RegistryError> {
    registry.register(load_image::LoadImage::new())?;
    registry.register(load_image_mask::LoadImageMask::new())?;
    registry.register(save_image::SaveImage::save())?;
    registry.register(save_image::SaveImage::preview())?;
    registry.register(scale::Scale::image())?;
    registry.register(scale::Scale::image_by())?;
    registry.register(scale::Scale::latent())?;
    registry.register(scale::Scale::latent_by())?;
    registry.register(batch::ImageBatch::new())?;
    registry.register(noise_mask::SetLatentNoiseMask::new())?;
    registry.register(masks::SolidMask::new())?;
    registry.register(masks::InvertMask::new())?;
    registry.register(masks::MaskComposite::new())?;
    Ok(())
}
