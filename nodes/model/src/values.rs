//! Tensor values that travel between nodes of different packs.

use candle_core::Tensor;

/// A batch of latent images, `[batch, channels, height / 8, width / 8]`, scaled as the sampler
/// expects (VAE scaling factor applied).
#[derive(Clone, Debug)]
pub struct Latent {
    /// The latents, in f32.
    pub samples: Tensor,
}

/// A batch of images, `[batch, height, width, 3]`, RGB in 0..1, f32 (ComfyUI's layout).
#[derive(Clone, Debug)]
pub struct Image {
    /// The pixels.
    pub pixels: Tensor,
}

/// A batch of masks, `[batch, height, width]`, f32 in 0..1 (ComfyUI's layout): 1 where
/// something applies, 0 where it does not.
#[derive(Clone, Debug)]
pub struct Mask {
    /// The mask values.
    pub values: Tensor,
}
