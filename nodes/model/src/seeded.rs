//! Seeded random weights for the built-in models: the same on every machine and release,
//! so workflows on built-in models give the same images everywhere.
//!
//! Each tensor is drawn in chunks of [`CHUNK`] values, chunk `i` from stream `i` of a ChaCha
//! generator keyed by the tensor's model and name: chunks are drawn in parallel, straight into
//! the dtype the tensor is kept in, so no tensor ever exists in f32 beside its f16 copy and a
//! tensor can be drawn again, identically, whenever a model needs it.

use candle_core::{DType, Device, Shape, Tensor, WithDType};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use std::collections::HashMap;

/// Values drawn from one generator stream.
const CHUNK: usize = 1 << 16;

/// The seeded tensor `name` of `model`, of `shape`, in `dtype`: matrices and kernels
/// ~ N(0, 1/fan_in), norm scales 1, biases 0.
///
/// # Errors
/// A tensor error (not expected).
pub fn seeded_tensor(model: &str, name: &str, shape: &Shape, dtype: DType) -> candle_core::Result<Tensor> {
    let dims = shape.dims();
    if dims.len() <= 1 {
        let fill = if name.ends_with("weight") { 1.0 } else { 0.0 };
        return Tensor::full(fill, dims, &Device::Cpu)?.to_dtype(dtype);
    }
    let fan_in: usize = dims[1..].iter().product();
    let scale = 1.0 / (fan_in as f32).sqrt();
    let key = fnv1a(&format!("{model}/{name}"));
    match dtype {
        DType::F16 => normal::<half::f16>(key, scale, shape),
        DType::BF16 => normal::<half::bf16>(key, scale, shape),
        DType::F64 => normal::<f64>(key, scale, shape),
        _ => normal::<f32>(key, scale, shape)?.to_dtype(dtype),
    }
}

/// `shape`'s values ~ N(0, scale²) in `T`, drawn chunk by chunk from the streams of `key`.
fn normal<T: WithDType>(key: u64, scale: f32, shape: &Shape) -> candle_core::Result<Tensor> {
    let mut values = vec![T::zero(); shape.elem_count()];
    values.par_chunks_mut(CHUNK).enumerate().for_each(|(index, chunk)| {
        let mut rng = ChaCha8Rng::seed_from_u64(key);
        rng.set_stream(index as u64);
        for value in chunk {
            let drawn: f32 = StandardNormal.sample(&mut rng);
            *value = T::from_f64(f64::from(drawn * scale));
        }
    });
    Tensor::from_vec(values, shape, &Device::Cpu)
}

/// Every seeded tensor of `params`, for models built straight onto a device (the InstantID
/// adapter) rather than read through a [`crate::TensorSource`].
///
/// # Errors
/// A tensor error (not expected).
pub fn seeded_tensors(
    model: &str,
    params: &[(String, Shape)],
    dtype: DType,
) -> candle_core::Result<HashMap<String, Tensor>> {
    params
        .iter()
        .map(|(name, shape)| Ok((name.clone(), seeded_tensor(model, name, shape, dtype)?)))
        .collect()
}

/// FNV-1a, a hash that is the same on every platform and release.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tensor_is_drawn_the_same_every_time_and_in_every_dtype() {
        let shape = Shape::from((3, CHUNK / 2 + 5));
        let f32s = seeded_tensor("m", "w", &shape, DType::F32).unwrap();
        let again = seeded_tensor("m", "w", &shape, DType::F32).unwrap();
        let f16s = seeded_tensor("m", "w", &shape, DType::F16).unwrap();
        let difference = |a: &Tensor, b: &Tensor| {
            let diff = (a.to_dtype(DType::F32).unwrap() - b.to_dtype(DType::F32).unwrap()).unwrap();
            diff.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()
        };
        assert_eq!(difference(&f32s, &again), 0.0);
        let scale = 1.0 / ((CHUNK / 2 + 5) as f32).sqrt();
        assert!(difference(&f32s, &f16s) < 4e-3 * scale, "f16 rounds the same values");
        let other = seeded_tensor("m", "v", &shape, DType::F32).unwrap();
        assert!(difference(&f32s, &other) > scale, "another name draws other values");
    }

    #[test]
    fn chunks_draw_distinct_values_with_the_scale_of_the_fan_in() {
        let shape = Shape::from((4, 2 * CHUNK));
        let values = seeded_tensor("m", "w", &shape, DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_ne!(values[..16], values[CHUNK..CHUNK + 16], "each chunk has its own stream");
        let variance = values.iter().map(|v| v * v).sum::<f32>() / values.len() as f32;
        let expected = 1.0 / (2 * CHUNK) as f32;
        assert!(
            (variance / expected - 1.0).abs() < 0.02,
            "variance {variance}, expected {expected}"
        );
        let bias = seeded_tensor("m", "b.bias", &Shape::from(3), DType::F16).unwrap();
        let scale = seeded_tensor("m", "norm.weight", &Shape::from(3), DType::F16).unwrap();
        assert_eq!(bias.to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap(), [0.0; 3]);
        assert_eq!(scale.to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap(), [1.0; 3]);
    }
}
