//! The hint embedding of a ControlNet (diffusers' `ControlNetConditioningEmbedding`): a small
//! convolutional network taking the hint image down to the latent's size and width.

use crate::blocks::Conv2d;
use crate::kernels;
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

/// `conv_in`, pairs of convolutions (the second of each halving the resolution), `conv_out`,
/// with SiLU between them.
#[derive(Debug)]
pub struct HintEmbedding {
    conv_in: Conv2d,
    blocks: Vec<Conv2d>,
    conv_out: Conv2d,
}

impl HintEmbedding {
    /// Loads the embedding from `hint_channels` image channels through `channels` to
    /// `out_channels` (the UNet's first level).
    ///
    /// # Errors
    /// A missing or mis-shaped weight.
    pub fn new(vb: VarBuilder, hint_channels: usize, channels: &[usize], out_channels: usize) -> Result<Self> {
        let first = *channels
            .first()
            .ok_or_else(|| candle_core::Error::Msg("no hint channels".into()))?;
        let last = *channels.last().unwrap_or(&first);
        let mut blocks = Vec::new();
        for (i, pair) in channels.windows(2).enumerate() {
            blocks.push(Conv2d::new(
                pair[0],
                pair[0],
                3,
                1,
                1,
                vb.pp(format!("blocks.{}", 2 * i)),
            )?);
            blocks.push(Conv2d::new(
                pair[0],
                pair[1],
                3,
                1,
                2,
                vb.pp(format!("blocks.{}", 2 * i + 1)),
            )?);
        }
        Ok(Self {
            conv_in: Conv2d::new(hint_channels, first, 3, 1, 1, vb.pp("conv_in"))?,
            blocks,
            conv_out: Conv2d::new(last, out_channels, 3, 1, 1, vb.pp("conv_out"))?,
        })
    }
}

impl Module for HintEmbedding {
    fn forward(&self, hint: &Tensor) -> Result<Tensor> {
        // On CUDA the image stays channels-last from one convolution to the next.
        let mut x = kernels::elementwise(&self.conv_in.forward(hint)?, Tensor::silu)?;
        for block in &self.blocks {
            x = kernels::elementwise(&block.forward(&x)?, Tensor::silu)?;
        }
        self.conv_out.forward(&x)
    }
}

/// A ControlNet pass's hint: the image, made only when needed, and where its embedding is
/// kept from one pass to the next.
pub struct Hint<'a> {
    /// The image `[b, 3, 8h, 8w]` (values 0..1) for a batch of `b` rows at latent size
    /// `h`x`w`; called only by a pass whose batch and size the kept embedding does not fit.
    pub image: &'a dyn Fn() -> Result<Tensor>,
    /// The embedding the passes of one run share.
    pub embedded: &'a EmbeddedHint,
}

/// The hint's embedding, made by a run's first ControlNet pass and reused by the passes after
/// it: it depends on the image alone, so each step would otherwise run the same convolutions
/// over the full-size image again. Kept for one batch and latent size (the rows, the latent's
/// height and width), made again for another.
pub type EmbeddedHint = crate::kept::KeptForLayout<(usize, usize, usize), Tensor>;
