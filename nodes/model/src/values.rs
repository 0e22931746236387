//! Tensor values that travel between nodes of different packs.

use candle_core::Tensor;

/// A batch of latent images, `[batch, channels, height / 8, width / 8]`, scaled as the sampler
/// expects (VAE scaling factor applied).
#[derive(Clone, Debug)]
pub struct Latent {
    /// The latents, in f32.
    pub samples: Tensor,
    /// Where the sampler may change them (inpainting): `[batch or 1, 1, height, width]` in
    /// 0..1 at any size (resampled to the latents' when sampling), 1 where the sampler denoises
    /// and 0 where the latents are kept; `None`: everywhere.
    pub noise_mask: Option<Tensor>,
    /// Each latent's number in the batch it was taken from (`LatentFromBatch`), which decides
    /// the starting noise a seed gives it; `None`: numbered from 0 in order.
    pub batch_index: Option<Vec<usize>>,
}

impl Latent {
    /// Latents the sampler may change everywhere.
    pub fn new(samples: Tensor) -> Self {
        Self {
            samples,
            noise_mask: None,
            batch_index: None,
        }
    }
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
