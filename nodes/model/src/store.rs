//! Weight stores: who holds each unit's weights and hands them to the model when it runs.

use crate::encoding::{decode, Encoding};
use crate::widen::{widen, widen_all};
use crate::{Network, SourceError, TensorSource, UnitSpec};
use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use std::collections::HashMap;
use std::sync::Arc;

/// The weights of one unit on the compute device, keyed by names relative to the unit, with
/// what those kept in another form need to become values (see [`UnitDecoding`]). Cloning shares
/// them.
#[derive(Clone, Debug)]
pub struct UnitWeights {
    tensors: Arc<HashMap<String, Tensor>>,
    decoding: Arc<UnitDecoding>,
    eight_bit_products: bool,
}

/// What a unit's weights, as kept, need to become the values its layers use, keyed by the
/// unit's tensor names: the scales of weights kept in 8 bits that were stored scaled, and the
/// encodings of weights kept as stored (quantized blocks), decoded as each layer asks for them.
#[derive(Clone, Debug, Default)]
pub struct UnitDecoding {
    /// The multiplier of each weight kept in 8 bits that its file stored scaled.
    pub scales: HashMap<String, f64>,
    /// How each weight kept as stored reads back.
    pub encodings: HashMap<String, Encoding>,
}

impl UnitDecoding {
    /// Whether the weights are used as kept (no scales, nothing encoded).
    pub fn is_empty(&self) -> bool {
        self.scales.is_empty() && self.encodings.is_empty()
    }
}

impl UnitWeights {
    /// Wraps tensors keyed by names relative to the unit.
    pub fn new(tensors: HashMap<String, Tensor>) -> Self {
        Self {
            tensors: Arc::new(tensors),
            decoding: Arc::default(),
            eight_bit_products: false,
        }
    }

    /// The same weights, decoded as `decoding` says when layers ask for them (see
    /// [`TensorSource::unit_decoding`]).
    pub fn with_decoding(self, decoding: Arc<UnitDecoding>) -> Self {
        Self { decoding, ..self }
    }

    /// The same weights, offered to layers that take their products in 8 bits when `on` (see
    /// [`var_builder`](Self::var_builder)).
    pub fn with_eight_bit_products(self, on: bool) -> Self {
        Self {
            eight_bit_products: on,
            ..self
        }
    }

    /// A builder that unit layers are constructed from, exactly as from a checkpoint: weights
    /// kept in 8-bit floats are widened to `dtype` here, all of the unit's together (see
    /// [`widen_all`]), and weights kept as stored are decoded as each layer asks for them.
    ///
    /// With 8-bit products, a layer whose `weight` is kept in 8 bits also finds its
    /// `scale_weight` (the name scaled 8-bit files give it), a host f32 scalar, 1 where the
    /// file had none: it then asks for `weight` in its kept dtype and gets it as stored, to
    /// multiply on 8-bit tensor cores with that scale. Such matrices are not widened here.
    ///
    /// # Errors
    /// A device error while widening.
    pub fn var_builder(&self, dtype: DType, device: &Device) -> Result<VarBuilder<'static>> {
        let weights = self.widened_together(dtype)?;
        Ok(VarBuilder::from_backend(Box::new(weights), dtype, device.clone()))
    }

    /// These weights with those kept in 8 bits that layers take in `dtype` widened, together:
    /// every one but the matrices offered for 8-bit products (which a layer multiplies as kept
    /// where the device takes such products, and else has widened on its own).
    fn widened_together(&self, dtype: DType) -> Result<Self> {
        let taken_as_kept =
            |name: &str, tensor: &Tensor| self.eight_bit_products && tensor.rank() == 2 && name.ends_with("weight");
        let widening: Vec<(&String, &Tensor)> = self
            .tensors
            .iter()
            .filter(|(name, tensor)| {
                tensor.dtype() == DType::F8E4M3 && dtype != DType::F8E4M3 && !taken_as_kept(name, tensor)
            })
            .collect();
        if widening.is_empty() {
            return Ok(self.clone());
        }
        let kept: Vec<Tensor> = widening.iter().map(|(_, tensor)| (*tensor).clone()).collect();
        let mut tensors = (*self.tensors).clone();
        for ((name, _), wide) in widening.iter().zip(widen_all(&kept, dtype)?) {
            tensors.insert((*name).clone(), wide);
        }
        Ok(Self {
            tensors: Arc::new(tensors),
            ..self.clone()
        })
    }

    /// The same weights, each passed through `arrange` (see [`Network::resident_layout`]).
    ///
    /// # Errors
    /// The first error `arrange` returns.
    pub fn arranged(&self, arrange: impl Fn(&Tensor) -> Result<Tensor>) -> Result<Self> {
        let tensors = self
            .tensors
            .iter()
            .map(|(name, tensor)| Ok((name.clone(), arrange(tensor)?)))
            .collect::<Result<HashMap<_, _>>>()?;
        Ok(Self {
            tensors: Arc::new(tensors),
            ..self.clone()
        })
    }

    /// Total bytes of the tensors.
    pub fn bytes(&self) -> u64 {
        self.tensors
            .values()
            .map(|t| (t.elem_count() * t.dtype().size_in_bytes()) as u64)
            .sum()
    }
}

/// The suffix under which a weight kept in 8 bits offers its scale to layers that take their
/// products in 8 bits.
pub(crate) const SCALE_SUFFIX: &str = "scale_weight";

impl UnitWeights {
    fn tensor(&self, name: &str) -> Result<&Tensor> {
        self.tensors
            .get(name)
            .ok_or_else(|| candle_core::Error::CannotFindTensor { path: name.to_string() }.bt())
    }

    /// The weight whose scale `name` names (`x.scale_weight` for `x.weight`), when it is
    /// offered for 8-bit products.
    fn scaled_weight_of(&self, name: &str) -> Option<String> {
        let layer = name.strip_suffix(SCALE_SUFFIX)?;
        let weight = format!("{layer}weight");
        let kept_in_eight_bits = self.tensors.get(&weight)?.dtype() == DType::F8E4M3;
        (self.eight_bit_products && kept_in_eight_bits).then_some(weight)
    }

    /// Tensor `name` as a layer asks for it: its scale as a host scalar, decoded to `dtype` when
    /// kept as stored, as stored when kept and asked in 8 bits with 8-bit products, else widened
    /// to `dtype` and multiplied by its scale, if it has one.
    fn widened(&self, name: &str, dtype: DType) -> Result<Tensor> {
        if let Some(weight) = self.scaled_weight_of(name) {
            let scale = self.decoding.scales.get(&weight).copied().unwrap_or(1.0);
            return Tensor::new(scale, &Device::Cpu)?.to_dtype(dtype);
        }
        let tensor = self.tensor(name)?;
        if let Some(encoding) = self.decoding.encodings.get(name) {
            return decode(tensor, encoding, dtype);
        }
        if self.eight_bit_products && tensor.dtype() == DType::F8E4M3 && dtype == DType::F8E4M3 {
            return Ok(tensor.clone());
        }
        let tensor = widen(tensor, dtype)?;
        match self.decoding.scales.get(name) {
            Some(&scale) => tensor.affine(scale, 0.0),
            None => Ok(tensor),
        }
    }

    /// `tensor` on `device`, except a scale, which stays on the host.
    fn placed(&self, name: &str, tensor: Tensor, device: &Device) -> Result<Tensor> {
        if self.scaled_weight_of(name).is_some() {
            return Ok(tensor);
        }
        tensor.to_device(device)
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
        self.placed(name, tensor, device)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        let tensor = self.widened(name, dtype)?;
        self.placed(name, tensor, device)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name) || self.scaled_weight_of(name).is_some()
    }
}

/// The dtype a model computes in, and the one its weights are kept and moved in: the same,
/// 8-bit floats (half the bytes of f16 to hold and to stream), widened layer by layer as the
/// model runs or, for linear layers with 8-bit products, multiplied as kept, or
/// [`crate::KEPT_AS_STORED`] (a GGUF file's blocks), decoded layer by layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WeightDTypes {
    /// The dtype layers compute in.
    pub compute: DType,
    /// The dtype the weights are kept in.
    pub kept: DType,
    /// Whether linear layers whose weights are kept in 8 bits take their products in 8 bits
    /// (inputs rounded to 8 bits too) instead of widening the weights.
    pub eight_bit_products: bool,
}

/// Weights kept in the dtype they compute in.
impl From<DType> for WeightDTypes {
    fn from(dtype: DType) -> Self {
        Self {
            compute: dtype,
            kept: dtype,
            eight_bit_products: false,
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
    let decoding = source.unit_decoding(unit, dtypes.kept)?;
    Ok(UnitWeights::new(tensors)
        .with_decoding(Arc::new(decoding))
        .with_eight_bit_products(dtypes.eight_bit_products))
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

    /// Memory as it stands, cheaply (no waiting on the device), from stores that keep a
    /// summary: samplers publish it after every step, for memory over the run.
    fn memory_now(&self) -> Option<swapgraph_node_api::MemoryReport> {
        None
    }

    /// Whether every forward pass asks the same of the store: the same weights, already on the
    /// device, with no copies and no host-side bookkeeping. Then a pass's device work can be
    /// recorded once and replayed (a CUDA graph) without asking the store again. Stores that
    /// move weights during a pass say no.
    fn replayable(&self) -> bool {
        false
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

    /// Loads every unit of `network` as [`load`](Self::load) does, each weight then laid out
    /// once as the network's kernels read it ([`Network::resident_layout`]).
    ///
    /// # Errors
    /// The first [`SourceError`]: a missing or mis-shaped tensor names its key; a weight the
    /// device could not lay out names the network.
    pub fn load_for(
        network: &dyn Network,
        source: &TensorSource,
        dtypes: impl Into<WeightDTypes>,
        device: &Device,
    ) -> std::result::Result<Self, SourceError> {
        let mut store = Self::load(network.units().to_vec(), source, dtypes, device)?;
        for weights in &mut store.weights {
            *weights = weights
                .arranged(|weight| network.resident_layout(weight))
                .map_err(|e| SourceError::Device(format!("laying out the {}'s weights: {e}", network.kind())))?;
        }
        Ok(store)
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

    fn replayable(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(eight_bit_products: bool) -> UnitWeights {
        let weight = Tensor::new(&[[2f32, -4.0]], &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F8E4M3)
            .unwrap();
        let bias = Tensor::new(&[1f32], &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F8E4M3)
            .unwrap();
        let tensors = HashMap::from([("l.weight".to_string(), weight), ("l.bias".to_string(), bias)]);
        UnitWeights::new(tensors)
            .with_decoding(Arc::new(UnitDecoding {
                scales: HashMap::from([("l.weight".to_string(), 0.5)]),
                ..UnitDecoding::default()
            }))
            .with_eight_bit_products(eight_bit_products)
    }

    /// Two units of one weight each, whose layout for the device is the weight doubled.
    struct Doubling(Vec<UnitSpec>);

    impl Network for Doubling {
        fn units(&self) -> &[UnitSpec] {
            &self.0
        }

        fn kind(&self) -> &'static str {
            "doubling network"
        }

        fn as_any(&self) -> &dyn std::any::Any {
            self
        }

        fn resident_layout(&self, weight: &Tensor) -> Result<Tensor> {
            weight * 2.0
        }
    }

    #[test]
    fn a_store_for_a_network_holds_its_weights_in_the_network_s_resident_layout() {
        let unit = |name: &str| UnitSpec {
            name: name.to_string(),
            group: crate::UnitGroup::outside_blocks(0),
            tensors: vec![("weight".to_string(), Shape::from((2, 3)))],
        };
        let network = Doubling(vec![unit("a"), unit("b")]);
        let params = ["a.weight", "b.weight"].map(|key| (key.to_string(), Shape::from((2, 3))));
        let source = TensorSource::seeded("seeded", "doubling network", params.to_vec(), DType::F32);
        let loaded = ResidentStore::load(network.units().to_vec(), &source, DType::F32, &Device::Cpu).unwrap();
        let laid_out = ResidentStore::load_for(&network, &source, DType::F32, &Device::Cpu).unwrap();
        for index in 0..2 {
            let weight = |store: &ResidentStore| {
                let weights = store.acquire(index).unwrap();
                let vb = weights.var_builder(DType::F32, &Device::Cpu).unwrap();
                vb.get((2, 3), "weight")
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
            };
            let doubled: Vec<f32> = weight(&loaded).iter().map(|value| value * 2.0).collect();
            assert!(doubled.iter().any(|&value| value != 0.0), "seeded weights");
            assert_eq!(weight(&laid_out), doubled, "unit {index}");
        }
    }

    #[test]
    fn a_weight_kept_in_eight_bits_is_offered_as_stored_with_its_scale_only_for_eight_bit_products() {
        let vb = layer(true).var_builder(DType::F32, &Device::Cpu).unwrap().pp("l");
        assert!(vb.contains_tensor("scale_weight") && !vb.contains_tensor("bias_scale_weight"));
        let scale = vb.get((), "scale_weight").unwrap();
        assert_eq!(scale.to_scalar::<f32>().unwrap(), 0.5);
        let stored = vb
            .get_with_hints_dtype((1, 2), "weight", Init::Const(0.), DType::F8E4M3)
            .unwrap();
        assert_eq!(
            stored.to_dtype(DType::F32).unwrap().to_vec2::<f32>().unwrap(),
            [[2.0, -4.0]]
        );
        let widened = vb.get((1, 2), "weight").unwrap();
        assert_eq!(widened.to_vec2::<f32>().unwrap(), [[1.0, -2.0]], "widened and scaled");
        assert_eq!(
            vb.get(1, "bias").unwrap().to_vec1::<f32>().unwrap(),
            [1.0],
            "widened with the unit"
        );

        let vb = layer(false).var_builder(DType::F32, &Device::Cpu).unwrap().pp("l");
        assert!(!vb.contains_tensor("scale_weight"), "no scale without 8-bit products");
        assert_eq!(
            vb.get((1, 2), "weight").unwrap().to_vec2::<f32>().unwrap(),
            [[1.0, -2.0]]
        );
        assert_eq!(vb.get(1, "bias").unwrap().to_vec1::<f32>().unwrap(), [1.0]);
    }
}
