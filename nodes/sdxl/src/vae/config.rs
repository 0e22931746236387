//! Sizes of SDXL's VAE, as diffusers' `AutoencoderKL` config describes them.

/// An `AutoencoderKL` with four levels (eight-fold downscaling), as SDXL uses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VaeConfig {
    /// Channels of each level, from the image side.
    pub block_out_channels: [usize; 4],
    /// Resnets per encoder level; decoder levels have one more.
    pub layers_per_block: usize,
    /// Latent channels.
    pub latent_channels: usize,
    /// GroupNorm groups.
    pub norm_groups: usize,
    /// Latents are multiplied by this after encoding and divided by it before decoding.
    pub scaling_factor: f64,
}

impl VaeConfig {
    /// SDXL's VAE.
    pub const fn sdxl() -> Self {
        Self {
            block_out_channels: [128, 256, 512, 512],
            layers_per_block: 2,
            latent_channels: 4,
            norm_groups: 32,
            scaling_factor: 0.13025,
        }
    }

    /// The built-in tiny VAE: the same eight-fold downscaling at toy widths.
    pub const fn tiny() -> Self {
        Self {
            block_out_channels: [8, 16, 16, 16],
            layers_per_block: 1,
            norm_groups: 4,
            ..Self::sdxl()
        }
    }
}
