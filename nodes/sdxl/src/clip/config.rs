//! Sizes of the CLIP text encoders SDXL uses.

/// The feed-forward activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `x * sigmoid(1.702 x)`, OpenAI's CLIP ViT-L.
    QuickGelu,
    /// Exact (erf) GELU, OpenCLIP ViT-bigG.
    Gelu,
}

/// A CLIP text transformer's sizes, as in transformers' `CLIPTextConfig`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClipConfig {
    /// Tokens in the vocabulary.
    pub vocab_size: usize,
    /// Width of the hidden states.
    pub hidden_size: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Encoder layers.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Longest token sequence (77).
    pub max_positions: usize,
    /// Feed-forward activation.
    pub activation: Activation,
    /// Width of the pooled-output projection, for encoders that have one (bigG).
    pub projection_dim: Option<usize>,
    /// The end-of-text token id, whose position gives the pooled output.
    pub eos_token_id: u32,
}

impl ClipConfig {
    /// OpenAI CLIP ViT-L/14, SDXL's first text encoder.
    pub const fn vit_l() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 768,
            intermediate_size: 3072,
            layers: 12,
            heads: 12,
            max_positions: 77,
            activation: Activation::QuickGelu,
            projection_dim: None,
            eos_token_id: 49407,
        }
    }

    /// OpenCLIP ViT-bigG/14, SDXL's second text encoder, with its projection.
    pub const fn vit_big_g() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 1280,
            intermediate_size: 5120,
            layers: 32,
            heads: 20,
            max_positions: 77,
            activation: Activation::Gelu,
            projection_dim: Some(1280),
            eos_token_id: 49407,
        }
    }

    /// The built-in tiny first encoder: the real vocabulary at toy width.
    pub const fn tiny_l() -> Self {
        Self {
            hidden_size: 32,
            intermediate_size: 64,
            layers: 3,
            heads: 2,
            ..Self::vit_l()
        }
    }

    /// The built-in tiny second encoder, projecting to the tiny UNet's pooled width.
    pub const fn tiny_big_g() -> Self {
        Self {
            hidden_size: 32,
            intermediate_size: 64,
            layers: 3,
            heads: 2,
            projection_dim: Some(32),
            ..Self::vit_big_g()
        }
    }
}
