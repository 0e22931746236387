//! Weight stores: who holds each unit's weights and hands them to the model when it runs.

use crate::{SourceError, TensorSource, UnitSpec};
use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use std::collections::HashMap;
use std::sync::Arc;

/// The weights of one unit on the compute device, keyed by names relative to the unit.
/// Cloning shares them.
#[derive(Clone, Debug)]
pub struct UnitWeights(Arc<HashMap<String, Tensor>>);

impl UnitWeights {
    /// Wraps tensors keyed by names relative to the unit.
    pub fn new(tensors: HashMap<String, Tensor>) -> Self {
        Self(Arc::new(tensors))
    }

    /// A builder that unit layers are constructed from, exactly as from a checkpoint.
    pub fn var_builder(&self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(Shared(Arc::clone(&self.0))), dtype, device.clone())
    }

    /// Total bytes of the tensors.
    pub fn bytes(&self) -> u64 {
        self.0
            .values()
            .map(|t| (t.elem_count() * t.dtype().size_in_bytes()) as u64)
            .sum()
    }
}

struct Shared(Arc<HashMap<String, Tensor>>);

impl SimpleBackend for Shared {
    fn get(&self, shape: Shape, name: &str, init: Init, dtype: DType, device: &Device) -> Result<Tensor> {
        SimpleBackend::get(&*self.0, shape, name, init, dtype, device)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        SimpleBackend::get_unchecked(&*self.0, name, dtype, device)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}

/// Hands a model its units' weights. The model calls [`acquire`](Self::acquire) right before a
/// unit runs and [`release`](Self::release) right after; what happens in between (nothing, or
/// a copy from host memory) is the store's business.
pub trait WeightStore: Send + Sync {
    /// The model's units, in execution order.
    fn units(&self) -> &[UnitSpec];

    /// The weights of unit `unit` on the compute device.
    ///
    /// # Errors
    /// A device error while making the weights available.
    fn acquire(&self, unit: usize) -> Result<UnitWeights>;

    /// The model is done with unit `unit` for this forward pass.
    fn release(&self, unit: usize);

    /// The device the model computes on.
    fn device(&self) -> &Device;

    /// The dtype the weights are in.
    fn dtype(&self) -> DType;

    /// A memory and timing summary for users, from stores that keep one (BlockSwap in debug
    /// mode); samplers publish it after sampling.
    fn report(&self) -> Option<swapgraph_node_api::MemoryReport> {
        None
    }
}

/// Every unit's weights on the compute device for the model's lifetime.
pub struct ResidentStore {
    units: Vec<UnitSpec>,
    weights: Vec<UnitWeights>,
    device: Device,
    dtype: DType,
}

impl ResidentStore {
    /// Loads every unit from `source` onto `device` as `dtype`.
    ///
    /// # Errors
    /// The first [`SourceError`]: a missing or mis-shaped tensor names its key.
    pub fn load(
        units: Vec<UnitSpec>,
        source: &TensorSource,
        dtype: DType,
        device: &Device,
    ) -> std::result::Result<Self, SourceError> {
        let weights = units
            .iter()
            .map(|unit| {
                let tensors = unit
                    .tensors
                    .iter()
                    .map(|(name, shape)| Ok((name.clone(), source.load(&unit.key(name), shape, dtype, device)?)))
                    .collect::<std::result::Result<HashMap<_, _>, SourceError>>()?;
                Ok(UnitWeights::new(tensors))
            })
            .collect::<std::result::Result<Vec<_>, SourceError>>()?;
        Ok(Self {
            units,
            weights,
            device: device.clone(),
            dtype,
        })
    }
}

impl WeightStore for ResidentStore {
    fn units(&self) -> &[UnitSpec] {
        &self.units
    }

    fn acquire(&self, unit: usize) -> Result<UnitWeights> {
        self.weights
            .get(unit)
            .cloned()
            .ok_or_else(|| candle_core::Error::Msg(format!("no unit {unit}")))
    }

    fn release(&self, _unit: usize) {}

    fn device(&self) -> &Device {
        &self.device
    }

    fn dtype(&self) -> DType {
        self.dtype
    }
}
