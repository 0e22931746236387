//! GroupNorm, and GroupNorm followed by SiLU as every resnet uses it, in one fused kernel on
//! CUDA (`kernels::group_norm`); LayerNorm in a warp-per-row kernel on CUDA
//! (`kernels::layer_norm`); both through candle's operations elsewhere.

use crate::kernels;
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

/// GroupNorm over the channels of `[b, c, h, w]` images, with an affine weight and bias.
#[derive(Debug)]
pub struct GroupNorm {
    generic: candle_nn::GroupNorm,
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    /// Loads `weight` and `bias` (`[channels]`) for `groups` groups.
    ///
    /// # Errors
    /// A missing or mis-shaped weight, or `groups` not dividing `channels`.
    pub fn new(groups: usize, channels: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(channels, "weight", candle_nn::Init::Const(1.))?;
        let bias = vb.get_with_hints(channels, "bias", candle_nn::Init::Const(0.))?;
        Ok(Self {
            generic: candle_nn::GroupNorm::new(weight.clone(), bias.clone(), channels, groups, eps)?,
            weight,
            bias,
            groups,
            eps,
        })
    }

    /// `silu(GroupNorm(x))`.
    ///
    /// # Errors
    /// A tensor error on mismatched shapes.
    pub fn forward_silu(&self, xs: &Tensor) -> Result<Tensor> {
        match kernels::group_norm(xs, &self.weight, &self.bias, None, self.groups, self.eps, true)? {
            Some(out) => Ok(out),
            None => self.generic.forward(xs)?.silu(),
        }
    }

    /// `silu(GroupNorm(x + shift))` for a per-channel `shift` (`[b, c]`): the resnets' time
    /// embedding, added inside the fused kernel on CUDA.
    ///
    /// # Errors
    /// A tensor error on mismatched shapes.
    pub fn forward_silu_shifted(&self, xs: &Tensor, shift: &Tensor) -> Result<Tensor> {
        match kernels::group_norm(xs, &self.weight, &self.bias, Some(shift), self.groups, self.eps, true)? {
            Some(out) => Ok(out),
            None => self
                .generic
                .forward(&xs.broadcast_add(&shift.unsqueeze(2)?.unsqueeze(3)?)?)?
                .silu(),
        }
    }
}

impl Module for GroupNorm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match kernels::group_norm(xs, &self.weight, &self.bias, None, self.groups, self.eps, false)? {
            Some(out) => Ok(out),
            None => self.generic.forward(xs),
        }
    }
}

/// LayerNorm over the last dimension, with an affine weight and bias: the transformer blocks'.
#[derive(Debug)]
pub struct LayerNorm {
    generic: candle_nn::LayerNorm,
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    /// Loads `weight` and `bias` (`[width]`).
    ///
    /// # Errors
    /// A missing or mis-shaped weight.
    pub fn new(width: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(width, "weight", candle_nn::Init::Const(1.))?;
        let bias = vb.get_with_hints(width, "bias", candle_nn::Init::Const(0.))?;
        Ok(Self {
            generic: candle_nn::LayerNorm::new(weight.clone(), bias.clone(), eps),
            weight,
            bias,
            eps,
        })
    }
}

impl Module for LayerNorm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match kernels::layer_norm(xs, &self.weight, &self.bias, self.eps)? {
            Some(out) => Ok(out),
            None => self.generic.forward(xs),
        }
    }
}
