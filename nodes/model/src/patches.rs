//! Low-rank changes (LoRA, LoCon) merged into weights as a source reads them. The files'
//! weights are never written: a model without the change reads them as they are, so taking a
//! LoRA away gives back the original weights exactly, and no second copy of the model is kept.

use candle_core::{DType, Result, Tensor};
use std::collections::HashMap;

/// One low-rank change to a weight: `scale * up · down`, the factors flattened to matrices
/// (`up` to `[out, rank]`, `down` to `[rank, in × kernel]`) and the product shaped as the
/// weight, so linear and convolution layers take the same form.
#[derive(Clone, Debug)]
pub struct LowRank {
    /// The up factor, `[out, rank, ...]`.
    pub up: Tensor,
    /// The down factor, `[rank, in, ...]`.
    pub down: Tensor,
    /// What the product is multiplied by: the strength asked for, times alpha over rank.
    pub scale: f64,
}

impl LowRank {
    /// Elements of the weight this change fits: `out × in × kernel`.
    pub fn weight_elements(&self) -> usize {
        self.up.dims().first().copied().unwrap_or(0) * self.down.dims()[1..].iter().product::<usize>()
    }

    /// The change to a weight of `weight`'s shape, in f32 on `weight`'s device.
    fn delta(&self, weight: &Tensor) -> Result<Tensor> {
        let device = weight.device();
        let up = self.up.to_device(device)?.to_dtype(DType::F32)?.flatten_from(1)?;
        let down = self.down.to_device(device)?.to_dtype(DType::F32)?.flatten_from(1)?;
        (up.matmul(&down)? * self.scale)?.reshape(weight.shape())
    }
}

/// The low-rank changes to a model's weights, by the model's own key of each weight.
#[derive(Clone, Debug, Default)]
pub struct WeightPatches {
    changes: HashMap<String, Vec<LowRank>>,
}

impl WeightPatches {
    /// Adds `change` to the weight the model calls `key`, after any it already has.
    pub fn add(&mut self, key: impl Into<String>, change: LowRank) {
        self.changes.entry(key.into()).or_default().push(change);
    }

    /// These changes followed by `later`'s (LoRAs chained one after another).
    pub fn then(&self, later: &WeightPatches) -> WeightPatches {
        let mut merged = self.clone();
        for (key, changes) in &later.changes {
            merged
                .changes
                .entry(key.clone())
                .or_default()
                .extend(changes.iter().cloned());
        }
        merged
    }

    /// How many weights are changed.
    pub fn len(&self) -> usize {
        self.changes.len()
    }

    /// Whether no weight is changed.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Whether the weight the model calls `key` is changed.
    pub fn changes(&self, key: &str) -> bool {
        self.changes.contains_key(key)
    }

    /// `weight` (the model's `key`) with its changes merged in, computed in f32 on its device
    /// and returned in f32; `None` when it has none.
    ///
    /// # Errors
    /// A change whose factors do not multiply out to the weight's shape.
    pub fn apply(&self, key: &str, weight: &Tensor) -> Option<Result<Tensor>> {
        let changes = self.changes.get(key)?;
        Some(weight.to_dtype(DType::F32).and_then(|weight| {
            changes
                .iter()
                .try_fold(weight.clone(), |merged, change| merged + change.delta(&weight)?)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn tensor(values: &[f32], shape: &[usize]) -> Tensor {
        Tensor::from_slice(values, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn linear_and_convolution_changes_are_the_scaled_product_shaped_as_the_weight() {
        let mut patches = WeightPatches::default();
        let up = tensor(&[1.0, 2.0], &[2, 1]);
        let down = tensor(&[3.0, 4.0], &[1, 2]);
        patches.add(
            "linear",
            LowRank {
                up: up.clone(),
                down: down.clone(),
                scale: 0.5,
            },
        );
        let weight = tensor(&[0.0, 1.0, 2.0, 3.0], &[2, 2]);
        let merged = patches.apply("linear", &weight).unwrap().unwrap();
        assert_eq!(merged.to_vec2::<f32>().unwrap(), [[1.5, 3.0], [5.0, 7.0]]);

        // A convolution's factors: up [out, rank, 1, 1], down [rank, in, kh, kw].
        let conv_up = up.reshape((2, 1, 1, 1)).unwrap();
        let conv_down = tensor(&[1.0, -1.0], &[1, 1, 1, 2]);
        patches.add(
            "conv",
            LowRank {
                up: conv_up,
                down: conv_down,
                scale: 1.0,
            },
        );
        let conv = Tensor::zeros((2, 1, 1, 2), DType::F16, &Device::Cpu).unwrap();
        let merged = patches.apply("conv", &conv).unwrap().unwrap();
        assert_eq!(merged.dims(), [2, 1, 1, 2]);
        assert_eq!(
            merged.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [1.0, -1.0, 2.0, -2.0]
        );
        assert!(patches.apply("other", &conv).is_none());

        let chained = patches.then(&patches);
        let twice = chained.apply("linear", &weight).unwrap().unwrap();
        assert_eq!(twice.to_vec2::<f32>().unwrap(), [[3.0, 5.0], [8.0, 11.0]]);
        assert_eq!(chained.len(), 2);
    }
}
