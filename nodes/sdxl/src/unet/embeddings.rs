//! Sinusoidal timestep embeddings and the MLPs that project them, as in diffusers'
//! `Timesteps(flip_sin_to_cos=True, downscale_freq_shift=0)` and `TimestepEmbedding`.

use crate::blocks::Linear;
use candle_core::{DType, Result, Tensor, D};
use candle_nn::{Module, VarBuilder};

/// `[cos(t * f_i), sin(t * f_i)]` with `f_i = 10000^(-i / (dim / 2))`, for each value of `t`
/// (shape `[n]`), computed in f32; shape `[n, dim]`.
///
/// # Errors
/// A tensor error if `t` is not one-dimensional.
pub fn timestep_embedding(t: &Tensor, dim: usize) -> Result<Tensor> {
    let half = dim / 2;
    let exponent: Vec<f32> = (0..half)
        .map(|i| (-(10000f64.ln()) * i as f64 / half as f64).exp() as f32)
        .collect();
    let frequencies = Tensor::from_vec(exponent, (1, half), t.device())?;
    let angles = t.to_dtype(DType::F32)?.unsqueeze(1)?.broadcast_mul(&frequencies)?;
    Tensor::cat(&[angles.cos()?, angles.sin()?], D::Minus1)
}

/// `linear_2(silu(linear_1(x)))`.
#[derive(Debug)]
pub struct TimestepEmbedding {
    linear_1: Linear,
    linear_2: Linear,
}

impl TimestepEmbedding {
    /// Loads `linear_1` (`in_dim -> out_dim`) and `linear_2` (`out_dim -> out_dim`).
    ///
    /// # Errors
    /// A missing or mis-shaped weight.
    pub fn new(vb: VarBuilder, in_dim: usize, out_dim: usize) -> Result<Self> {
        Ok(Self {
            linear_1: Linear::new(in_dim, out_dim, vb.pp("linear_1"))?,
            linear_2: Linear::new(out_dim, out_dim, vb.pp("linear_2"))?,
        })
    }
}

impl Module for TimestepEmbedding {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.linear_2.forward(&self.linear_1.forward(xs)?.silu()?)
    }
}
