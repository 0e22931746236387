//! A linear layer whose bias, and a residual when there is one, are added on CUDA in the matrix
//! product's epilogue (`kernels::linear`, cuBLASLt), or else in one fused pass after it
//! (`kernels::bias_add`), instead of candle's broadcasting adds.

use crate::kernels;
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

/// `x W^T + b`, with the product and the bias kept apart so the bias can join a later fused
/// step (a residual add, GEGLU).
#[derive(Debug)]
pub struct Linear {
    product: candle_nn::Linear,
    bias: Tensor,
}

impl Linear {
    /// Loads `weight` (`[out_dim, in_dim]`) and `bias` (`[out_dim]`).
    ///
    /// # Errors
    /// A missing or mis-shaped weight.
    pub fn new(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Self> {
        let loaded = candle_nn::linear(in_dim, out_dim, vb)?;
        let bias = loaded
            .bias()
            .cloned()
            .ok_or_else(|| candle_core::Error::Msg("linear layer without a bias".into()))?;
        Ok(Self {
            product: candle_nn::Linear::new(loaded.weight().clone(), None),
            bias,
        })
    }

    /// `x W^T` without the bias.
    ///
    /// # Errors
    /// A tensor error on mismatched shapes.
    pub fn product(&self, xs: &Tensor) -> Result<Tensor> {
        self.product.forward(xs)
    }

    /// The bias, `[out_dim]`.
    pub fn bias(&self) -> &Tensor {
        &self.bias
    }

    /// `x W^T + b + residual`.
    ///
    /// # Errors
    /// A tensor error on mismatched shapes.
    pub fn forward_add(&self, xs: &Tensor, residual: &Tensor) -> Result<Tensor> {
        if let Some(out) = kernels::linear(xs, self.product.weight(), &self.bias, Some(residual))? {
            return Ok(out);
        }
        let product = self.product(xs)?;
        match kernels::bias_add(&product, &self.bias, Some(residual))? {
            Some(out) => Ok(out),
            None => product.broadcast_add(&self.bias)? + residual,
        }
    }
}

impl Module for Linear {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        if let Some(out) = kernels::linear(xs, self.product.weight(), &self.bias, None)? {
            return Ok(out);
        }
        let product = self.product(xs)?;
        match kernels::bias_add(&product, &self.bias, None)? {
            Some(out) => Ok(out),
            None => product.broadcast_add(&self.bias),
        }
    }
}
