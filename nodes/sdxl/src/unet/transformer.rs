//! The two ends of `Transformer2DModel` around its blocks: GroupNorm and linear projections between
//! the image layout `[b, c, h, w]` and the token layout `[b, h*w, c]`.

use crate::blocks::{GroupNorm, Linear};
use crate::kernels;
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

/// `norm` and `proj_in` of a `Transformer2DModel` with linear projections: the way in. A swap
/// unit of its own, so the way out need not stay on the device while the blocks run.
#[derive(Debug)]
pub struct TransformerIn {
    norm: GroupNorm,
    proj_in: Linear,
}

impl TransformerIn {
    /// Loads `norm` and `proj_in` for `channels` channels.
    ///
    /// # Errors
    /// A missing or mis-shaped weight.
    pub fn new(vb: VarBuilder, channels: usize, groups: usize) -> Result<Self> {
        Ok(Self {
            norm: GroupNorm::new(groups, channels, 1e-6, vb.pp("norm"))?,
            proj_in: Linear::new(channels, channels, vb.pp("proj_in"))?,
        })
    }

    /// Image to tokens: `proj_in(norm(x))` as `[b, h*w, c]`.
    ///
    /// # Errors
    /// A tensor error on mismatched shapes.
    pub fn enter(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = xs.dims4()?;
        let tokens = self.norm.forward(xs)?.permute((0, 2, 3, 1))?.reshape((b, h * w, c))?;
        self.proj_in.forward(&tokens)
    }
}

/// `proj_out` of a `Transformer2DModel`: the way out.
#[derive(Debug)]
pub struct TransformerOut {
    proj_out: Linear,
}

impl TransformerOut {
    /// Loads `proj_out` for `channels` channels.
    ///
    /// # Errors
    /// A missing or mis-shaped weight.
    pub fn new(vb: VarBuilder, channels: usize) -> Result<Self> {
        Ok(Self {
            proj_out: Linear::new(channels, channels, vb.pp("proj_out"))?,
        })
    }

    /// Tokens back to the image: `proj_out(tokens)` as `[b, c, h, w]`, plus the input `residual`.
    /// A channels-last residual is added in the product's epilogue, its memory already in token
    /// order, and the image stays channels-last.
    ///
    /// # Errors
    /// A tensor error on mismatched shapes.
    pub fn leave(&self, tokens: &Tensor, residual: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = residual.dims4()?;
        if kernels::is_channels_last(residual) {
            let residual_tokens = kernels::pixels(residual)?.reshape((b, h * w, c))?;
            let summed = self.proj_out.forward_add(tokens, &residual_tokens)?;
            return kernels::image(&summed.reshape((b, h, w, c))?);
        }
        let image = self
            .proj_out
            .forward(tokens)?
            .reshape((b, h, w, c))?
            .permute((0, 3, 1, 2))?;
        image + residual
    }
}
