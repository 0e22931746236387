//! Resolution changes between levels: a strided conv down, nearest-neighbour doubling and a conv
//! up (diffusers' `Downsample2D` and `Upsample2D` with `use_conv=True`).

use super::Conv2d;
use crate::kernels;
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

/// Halves height and width with a 3x3 conv of stride 2.
#[derive(Debug)]
pub struct Downsample2D {
    conv: Conv2d,
    pad_after: bool,
}

impl Downsample2D {
    /// Loads `conv`, padded by one on every side (the UNet's downsamplers).
    ///
    /// # Errors
    /// A missing or mis-shaped weight.
    pub fn new(vb: VarBuilder, channels: usize) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::new(channels, channels, 3, 1, 2, vb.pp("conv"))?,
            pad_after: false,
        })
    }

    /// Loads `conv`, padded by one only after the last row and column (the VAE's downsamplers,
    /// `padding=0` in diffusers).
    ///
    /// # Errors
    /// A missing or mis-shaped weight.
    pub fn asymmetric(vb: VarBuilder, channels: usize) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::new(channels, channels, 3, 0, 2, vb.pp("conv"))?,
            pad_after: true,
        })
    }
}

impl Module for Downsample2D {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        if self.pad_after {
            self.conv.forward(&xs.pad_with_zeros(2, 0, 1)?.pad_with_zeros(3, 0, 1)?)
        } else {
            self.conv.forward(xs)
        }
    }
}

/// Scales to a target size by nearest neighbour (twice the size for even inputs), then a 3x3 conv.
#[derive(Debug)]
pub struct Upsample2D {
    conv: Conv2d,
}

impl Upsample2D {
    /// Loads `conv`.
    ///
    /// # Errors
    /// A missing or mis-shaped weight.
    pub fn new(vb: VarBuilder, channels: usize) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::new(channels, channels, 3, 1, 1, vb.pp("conv"))?,
        })
    }

    /// Upsamples `xs` to `(height, width)`: the size of the skip connection it meets next.
    ///
    /// # Errors
    /// A tensor error on mismatched shapes.
    pub fn forward(&self, xs: &Tensor, height: usize, width: usize) -> Result<Tensor> {
        self.conv.forward(&kernels::upsample_nearest(xs, height, width)?)
    }
}
