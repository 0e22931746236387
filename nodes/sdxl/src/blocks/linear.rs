//! A linear layer whose bias, and a residual when there is one, are added on CUDA in the matrix
//! product's epilogue (`kernels::linear`, cuBLASLt), or else in one fused pass after it
//! (`kernels::bias_add`), instead of candle's broadcasting adds. A weight kept in 8 bits, when
//! the model asks for 8-bit products, is multiplied as kept (see [`EightBit`]).

use crate::kernels;
use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Init, VarBuilder};
use swapgraph_model::{to_e4m3, widen};

/// `x W^T (+ b)`, with the product and the bias kept apart so the bias can join a later fused
/// step (a residual add, GEGLU).
#[derive(Debug)]
pub struct Linear {
    weight: Weight,
    bias: Option<Tensor>,
}

/// How a layer's weight meets its input.
#[derive(Debug)]
enum Weight {
    /// In the compute dtype (widened from 8 bits where it was kept in them).
    Wide(candle_nn::Linear),
    /// Kept in 8 bits.
    EightBit(EightBit),
}

/// A weight kept in e4m3 and multiplied as kept: the input is rounded to e4m3 (clamped to
/// ±448), the product accumulates in f32 and is multiplied by the weight's scale, as ComfyUI's
/// `fp8_e4m3fn_fast` takes it. On cards with 8-bit tensor cores it is one cuBLASLt product;
/// on the CPU the same rounded factors are widened and multiplied in the compute dtype, the
/// reference the GPU is checked against.
#[derive(Debug)]
struct EightBit {
    weight: Tensor,
    scale: f32,
}

impl Linear {
    /// Loads `weight` (`[out_dim, in_dim]`) and `bias` (`[out_dim]`).
    ///
    /// # Errors
    /// A missing or mis-shaped weight.
    pub fn new(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Self> {
        let weight = Weight::load(in_dim, out_dim, &vb)?;
        Ok(Self {
            weight,
            bias: Some(vb.get(out_dim, "bias")?),
        })
    }

    /// Loads `weight` (`[out_dim, in_dim]`) of a layer without a bias.
    ///
    /// # Errors
    /// A missing or mis-shaped weight.
    pub fn no_bias(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: Weight::load(in_dim, out_dim, &vb)?,
            bias: None,
        })
    }

    /// `x W^T` without the bias.
    ///
    /// # Errors
    /// A tensor error on mismatched shapes.
    pub fn product(&self, xs: &Tensor) -> Result<Tensor> {
        self.weight.apply(xs, None, None)
    }

    /// The bias, `[out_dim]`, of a layer that has one.
    ///
    /// # Errors
    /// A layer loaded without a bias.
    pub fn bias(&self) -> Result<&Tensor> {
        self.bias
            .as_ref()
            .ok_or_else(|| candle_core::Error::Msg("a linear layer without a bias was asked for one".into()))
    }

    /// `x W^T (+ b) + residual`.
    ///
    /// # Errors
    /// A tensor error on mismatched shapes.
    pub fn forward_add(&self, xs: &Tensor, residual: &Tensor) -> Result<Tensor> {
        self.weight.apply(xs, self.bias.as_ref(), Some(residual))
    }
}

impl Module for Linear {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.weight.apply(xs, self.bias.as_ref(), None)
    }
}

impl Weight {
    /// The layer's weight: kept in 8 bits where the store offers it so (with its
    /// `scale_weight`) and the device takes 8-bit products, else in the compute dtype.
    fn load(in_dim: usize, out_dim: usize, vb: &VarBuilder) -> Result<Self> {
        if vb.contains_tensor("scale_weight") && kernels::takes_e4m3_products(vb.device()) {
            let weight = vb.get_with_hints_dtype((out_dim, in_dim), "weight", Init::Const(0.), DType::F8E4M3)?;
            let scale = vb
                .get_with_hints_dtype((), "scale_weight", Init::Const(1.), DType::F32)?
                .to_scalar::<f32>()?;
            return Ok(Self::EightBit(EightBit { weight, scale }));
        }
        let weight = vb.get((out_dim, in_dim), "weight")?;
        Ok(Self::Wide(candle_nn::Linear::new(weight, None)))
    }

    /// `x W^T + bias + residual`, each addition where given.
    fn apply(&self, xs: &Tensor, bias: Option<&Tensor>, residual: Option<&Tensor>) -> Result<Tensor> {
        let product = match self {
            Self::Wide(linear) => {
                if let Some(bias) = bias {
                    if let Some(out) = kernels::linear(xs, linear.weight(), bias, residual)? {
                        return Ok(out);
                    }
                }
                linear.forward(xs)?
            }
            Self::EightBit(eight_bit) => {
                let rounded = to_e4m3(xs)?;
                if xs.dtype() == DType::F16 {
                    let fused = kernels::linear_e4m3(&rounded, &eight_bit.weight, eight_bit.scale, bias, residual)?;
                    if let Some(out) = fused {
                        return Ok(out);
                    }
                }
                eight_bit.product(&rounded, xs.dtype())?
            }
        };
        let summed = match bias {
            Some(bias) => match kernels::bias_add(&product, bias, residual)? {
                Some(out) => return Ok(out),
                None => product.broadcast_add(bias)?,
            },
            None => product,
        };
        match residual {
            Some(residual) => summed + residual,
            None => Ok(summed),
        }
    }
}

impl EightBit {
    /// `scale * rounded W^T` with both factors widened to `dtype`: the reference product.
    fn product(&self, rounded: &Tensor, dtype: DType) -> Result<Tensor> {
        let weight = (widen(&self.weight, dtype)? * f64::from(self.scale))?;
        widen(rounded, dtype)?.broadcast_matmul(&weight.t()?)
    }
}
