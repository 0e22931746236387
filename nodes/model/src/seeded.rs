//! Seeded random weights for the built-in models: the same on every machine and release,
//! so workflows on built-in models give the same images everywhere.

use candle_core::{DType, Device, Shape, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use std::collections::HashMap;

/// Seeded weights for each named shape, kept in `dtype`: matrices and kernels ~ N(0, 1/fan_in),
/// norm scales 1, biases 0. Each tensor's seed comes from its model and name, so adding a tensor
/// elsewhere never changes the others. Each tensor is drawn in f32 and converted on its own, so
/// a model kept in f16 never exists whole in f32.
pub fn seeded_tensors(
    model: &str,
    params: &[(String, Shape)],
    dtype: DType,
) -> candle_core::Result<HashMap<String, Tensor>> {
    params
        .par_iter()
        .map(|(name, shape)| {
            let dims = shape.dims();
            let tensor = if dims.len() > 1 {
                let fan_in: usize = dims[1..].iter().product();
                let mut rng = ChaCha8Rng::seed_from_u64(fnv1a(&format!("{model}/{name}")));
                let values: Vec<f32> = (0..shape.elem_count())
                    .map(|_| StandardNormal.sample(&mut rng))
                    .collect::<Vec<f32>>();
                let scale = 1.0 / (fan_in as f32).sqrt();
                Tensor::from_vec(
                    values.into_iter().map(|v| v * scale).collect::<Vec<f32>>(),
                    dims,
                    &Device::Cpu,
                )?
            } else if name.ends_with("weight") {
                Tensor::ones(dims, DType::F32, &Device::Cpu)?
            } else {
                Tensor::zeros(dims, DType::F32, &Device::Cpu)?
            };
            Ok((name.clone(), tensor.to_dtype(dtype)?))
        })
        .collect()
}

/// FNV-1a, a hash that is the same on every platform and release.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}
