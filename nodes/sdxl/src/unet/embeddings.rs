//! Sinusoidal timestep embeddings and the MLPs that project them, as in diffusers'
//! `Timesteps(flip_sin_to_cos=True, downscale_freq_shift=0)` and `TimestepEmbedding`.

use crate::blocks::Linear;
use candle_core::{DType, Device, Result, Tensor, D};
use candle_nn::{Module, VarBuilder};
use std::sync::{Mutex, PoisonError};

/// `[cos(t * f_i), sin(t * f_i)]` with `f_i = 10000^(-i / (dim / 2))`, for each value of `t`
/// (shape `[n]`), computed in f32; shape `[n, dim]`.
///
/// # Errors
/// A tensor error if `t` is not one-dimensional.
pub fn timestep_embedding(t: &Tensor, dim: usize) -> Result<Tensor> {
    let frequencies = frequencies(dim / 2, t.device())?;
    let angles = t.to_dtype(DType::F32)?.unsqueeze(1)?.broadcast_mul(&frequencies)?;
    Tensor::cat(&[angles.cos()?, angles.sin()?], D::Minus1)
}

/// Each width's frequencies, on each device that asked for them.
static KEPT_FREQUENCIES: Mutex<Vec<(usize, Tensor)>> = Mutex::new(Vec::new());

/// The `half` frequencies `f_i` (`[1, half]`, f32) on `device`. They depend on the width alone,
/// so each device keeps its copy: a forward pass then copies nothing from the host, whose
/// pageable memory a CUDA stream would otherwise read at every step (and a captured CUDA graph
/// cannot read at all).
fn frequencies(half: usize, device: &Device) -> Result<Tensor> {
    let mut kept = KEPT_FREQUENCIES.lock().unwrap_or_else(PoisonError::into_inner);
    let found = kept
        .iter()
        .find(|(width, frequencies)| *width == half && frequencies.device().same_device(device));
    if let Some((_, frequencies)) = found {
        return Ok(frequencies.clone());
    }
    let exponent: Vec<f32> = (0..half)
        .map(|i| (-(10000f64.ln()) * i as f64 / half as f64).exp() as f32)
        .collect();
    let frequencies = Tensor::from_vec(exponent, (1, half), device)?;
    kept.push((half, frequencies.clone()));
    Ok(frequencies)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embeddings_follow_the_closed_form_from_one_copy_of_the_frequencies() -> Result<()> {
        let steps = [0f32, 1.5, 500.0];
        let t = Tensor::new(&steps, &Device::Cpu)?;
        let rows = timestep_embedding(&t, 14)?.to_vec2::<f32>()?;
        for (row, step) in rows.iter().zip(steps) {
            for i in 0..7 {
                let angle = step * (-(10000f64.ln()) * i as f64 / 7.0).exp() as f32;
                assert!((row[i] - angle.cos()).abs() < 1e-6, "cos {i} at {step}");
                assert!((row[7 + i] - angle.sin()).abs() < 1e-6, "sin {i} at {step}");
            }
        }
        assert_eq!(timestep_embedding(&t, 14)?.to_vec2::<f32>()?, rows);
        let kept = KEPT_FREQUENCIES.lock().unwrap_or_else(PoisonError::into_inner);
        let copies = kept
            .iter()
            .filter(|(width, f)| *width == 7 && f.device().is_cpu())
            .count();
        assert_eq!(copies, 1, "the second call reused the first one's frequencies");
        Ok(())
    }
}
