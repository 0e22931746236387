//! The SDXL UNet's shape, as diffusers' `UNet2DConditionModel` config describes it.

/// Sizes of an SDXL-architecture UNet: three resolution levels, text-time added conditioning,
/// linear projections in the transformers. `sdxl()` is the real model, `tiny()` the built-in one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UNetConfig {
    /// Latent channels in.
    pub in_channels: usize,
    /// Latent channels out.
    pub out_channels: usize,
    /// Channels of each resolution level.
    pub block_out_channels: [usize; 3],
    /// Transformer blocks per attention layer at each level of the down path; 0 means the level
    /// has no attention (a plain `DownBlock2D`). The up path uses them in reverse.
    pub transformer_layers: [usize; 3],
    /// Transformer blocks of the middle block's attention layer.
    pub mid_transformer_layers: usize,
    /// Resnets per down block; up blocks have one more.
    pub layers_per_block: usize,
    /// Channels per attention head.
    pub head_dim: usize,
    /// Groups of every GroupNorm.
    pub norm_groups: usize,
    /// Width of the text conditioning (CLIP-L 768 + OpenCLIP bigG 1280 for SDXL).
    pub cross_attention_dim: usize,
    /// Width of each of the six size/crop time ids' sinusoidal embedding.
    pub addition_time_embed_dim: usize,
    /// Width of the pooled text embedding.
    pub pooled_text_dim: usize,
}

impl UNetConfig {
    /// Stable Diffusion XL base 1.0.
    pub const fn sdxl() -> Self {
        Self {
            in_channels: 4,
            out_channels: 4,
            block_out_channels: [320, 640, 1280],
            transformer_layers: [0, 2, 10],
            mid_transformer_layers: 10,
            layers_per_block: 2,
            head_dim: 64,
            norm_groups: 32,
            cross_attention_dim: 2048,
            addition_time_embed_dim: 256,
            pooled_text_dim: 1280,
        }
    }

    /// The built-in tiny model: SDXL's structure at toy widths.
    pub const fn tiny() -> Self {
        Self {
            in_channels: 4,
            out_channels: 4,
            block_out_channels: [32, 32, 64],
            transformer_layers: [0, 1, 2],
            mid_transformer_layers: 2,
            layers_per_block: 2,
            head_dim: 16,
            norm_groups: 32,
            cross_attention_dim: 64,
            addition_time_embed_dim: 8,
            pooled_text_dim: 32,
        }
    }

    /// Width of the time embedding (four times the first level's channels).
    pub fn time_embed_dim(&self) -> usize {
        self.block_out_channels[0] * 4
    }

    /// Input width of the added-condition embedding: pooled text plus six time-id embeddings.
    pub fn added_condition_dim(&self) -> usize {
        self.pooled_text_dim + 6 * self.addition_time_embed_dim
    }
}

impl Default for UNetConfig {
    fn default() -> Self {
        Self::sdxl()
    }
}
