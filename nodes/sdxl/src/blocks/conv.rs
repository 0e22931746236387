//! A 2-D convolution whose bias, and a residual when there is one, are added in the same pass
//! after cuDNN's convolution on CUDA (`kernels::conv2d`), and through candle's im2col elsewhere.

use crate::kernels;
use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};

/// A square-kernel convolution with a bias, padded equally on every side.
#[derive(Debug)]
pub struct Conv2d {
    generic: candle_nn::Conv2d,
    weight: Tensor,
    bias: Tensor,
    padding: usize,
    stride: usize,
}

impl Conv2d {
    /// Loads `weight` (`[out, in, kernel, kernel]`) and `bias` (`[out]`).
    ///
    /// # Errors
    /// A missing or mis-shaped weight.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        padding: usize,
        stride: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let config = Conv2dConfig {
            padding,
            stride,
            ..Default::default()
        };
        let generic = candle_nn::conv2d(in_channels, out_channels, kernel, config, vb)?;
        let bias = generic
            .bias()
            .cloned()
            .ok_or_else(|| candle_core::Error::Msg("convolution without a bias".into()))?;
        Ok(Self {
            weight: generic.weight().clone(),
            bias,
            generic,
            padding,
            stride,
        })
    }

    /// `conv(x) + b + residual`, the residual of the output's shape.
    ///
    /// # Errors
    /// A tensor error on mismatched shapes.
    pub fn forward_add(&self, xs: &Tensor, residual: &Tensor) -> Result<Tensor> {
        match kernels::conv2d(xs, &self.weight, &self.bias, Some(residual), self.padding, self.stride)? {
            Some(out) => Ok(out),
            None => self.generic.forward(xs)? + residual,
        }
    }
}

impl Module for Conv2d {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match kernels::conv2d(xs, &self.weight, &self.bias, None, self.padding, self.stride)? {
            Some(out) => Ok(out),
            None => self.generic.forward(xs),
        }
    }
}
