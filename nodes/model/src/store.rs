//! Weight stores: who holds each unit's weights and hands them to the model when it runs.

use crate::widen::widen;
use crate::{SourceError, TensorSource, UnitSpec};
use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use std::collections::HashMap;
use std::sync::Arc;

/// The weights of one unit on the compute device, keyed by names relative to the unit, with the
/// scales of those kept in 8 bits that were stored scaled. Cloning shares them.
#[derive(Clone, Debug)]
pub struct UnitWeights {
    tensors: Arc<HashMap<String, Tensor>>,
    scales: Arc<HashMap<String, f64>>,
}

impl UnitWeights {
    /// Wraps tensors keyed by names relative to the unit.
    pub fn new(tensors: HashMap<String, Tensor>) -> Self {
        Self {
            tensors: Arc::new(tensors),
            scales: Arc::default(),
        }
    }

    /// The same weights, each named in `scales` multiplied by its scale when it is widened to
    /// run (see [`TensorSource::unit_scales`]).
    pub fn with_scales(self, scales: Arc<HashMap<String, f64>>) -> Self {
        Self { scales, ..self }
    }

    /// A builder that unit layers are constructed from, exactly as from a checkpoint: weights
    /// kept in another dtype (8-bit floats) are widened to `dtype` as each layer asks for them.
    pub fn var_builder(&self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.clone()), dtype, device.clone())
    }

    /// Total bytes of the tensors.
    pub fn bytes(&self) -> u64 {
        self.tensors
            .values()
            .map(|t| (t.elem_count() * t.dtype().size_in_bytes()) as u64)
            .sum()
    }
}

impl UnitWeights {
    /// Tensor `name` widened to `dtype` and multiplied by its scale, if it has one.
    fn widened(&self, name: &str, dtype: DType) -> Result<Tensor> {
        let tensor = self
            .tensors
            .get(name)
            .ok_or_else(|| candle_core::Error::CannotFindTensor { path: name.to_string() }.bt())?;
        let tensor = widen(tensor, dtype)?;
        match self.scales.get(name) {
            Some(&scale) => tensor.affine(scale, 0.0),
            None => Ok(tensor),
        }
    }
}

impl SimpleBackend for UnitWeights {
    fn get(&self, shape: Shape, name: &str, _: Init, dtype: DType, device: &Device) -> Result<Tensor> {
        let tensor = self.widened(name, dtype)?;
        if tensor.shape() != &shape {
            return Err(candle_core::Error::UnexpectedShape {
                msg: format!("shape mismatch for {name}"),
                expected: shape,
                got: tensor.shape().clone(),
            }
            .bt());
        }
        tensor.to_device(device)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        self.widened(name, dtype)?.to_device(device)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

/// The dtype a model computes in, and the one its weights are kept and moved in: the same, or
/// 8-bit floats (half the bytes of f16 to hold and to stream), widened layer by layer as the
/// model runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WeightDTypes {
    /// The dtype layers compute in.
    pub compute: DType,
    /// The dtype the weights are kept in.
    pub kept: DType,
}

/// Weights kept in the dtype they compute in.
impl From<DType> for WeightDTypes {
    fn from(dtype: DType) -> Self {
        Self {
            compute: dtype,
            kept: dtype,
        }
    }
}

/// `unit`'s weights from `source`, kept as `dtypes` says, on `device`.
///
/// # Errors
/// The first [`SourceError`]: a missing or mis-shaped tensor names its key.
pub fn load_unit(
    unit: &UnitSpec,
    source: &TensorSource,
    dtypes: WeightDTypes,
    device: &Device,
) -> std::result::Result<UnitWeights, SourceError> {
    let tensors = unit
        .tensors
        .iter()
        .map(|(name, shape)| Ok((name.clone(), source.load(&unit.key(name), shape, dtypes.kept, device)?)))
        .collect::<std::result::Result<HashMap<_, _>, SourceError>>()?;
    let scales = source.unit_scales(unit, dtypes.kept)?;
    Ok(UnitWeights::new(tensors).with_scales(Arc::new(scales)))
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

    /// The dtype the model computes in (the weights are widened to it as each layer is built).
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
    /// Loads every unit from `source` onto `device`, kept as `dtypes` says.
    ///
    /// # Errors
    /// The first [`SourceError`]: a missing or mis-shaped tensor names its key.
    pub fn load(
        units: Vec<UnitSpec>,
        source: &TensorSource,
        dtypes: impl Into<WeightDTypes>,
        device: &Device,
    ) -> std::result::Result<Self, SourceError> {
        let dtypes = dtypes.into();
        let weights = units
            .iter()
            .map(|unit| load_unit(unit, source, dtypes, device))
            .collect::<std::result::Result<Vec<_>, SourceError>>()?;
        Ok(Self {
            units,
            weights,
            device: device.clone(),
            dtype: dtypes.compute,
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
