//! The MODEL value: shared network and host weights, plus how weights reach the device.
//!
//! Like ComfyUI's model patcher, a handle never changes: nodes that transform a model (BlockSwap,
//! adapters) return a new handle sharing the same network and weights, so the cached upstream
//! model stays as it was. Weights reach the device only when a sampler asks for a store.

use crate::memory::{DeviceSlot, Fill};
use crate::{
    DeviceMemoryManager, ResidentId, ResidentStore, SourceError, TensorSource, UnitSpec, WeightDTypes, WeightStore,
};
use candle_core::{DType, Device, Tensor};
use std::any::Any;
use std::sync::Arc;

/// A network whose forward pass takes its weights from a [`WeightStore`]: the SDXL UNet, a
/// ControlNet.
pub trait Network: Send + Sync {
    /// The swap units in execution order.
    fn units(&self) -> &[UnitSpec];
    /// What kind of network it is, for messages (e.g. "SDXL UNet").
    fn kind(&self) -> &'static str;
    /// The concrete type, for the pack that runs it.
    fn as_any(&self) -> &dyn Any;

    /// `weight` in the layout the network's kernels read it in, made once by stores that keep
    /// it on the device for good, where the kernels would otherwise lay it out again at every
    /// pass (SDXL: convolution filters channels-last). Streamed weights arrive as loaded. The
    /// default keeps the layout the weight was loaded in.
    ///
    /// # Errors
    /// A device error while laying the weight out.
    fn resident_layout(&self, weight: &Tensor) -> candle_core::Result<Tensor> {
        Ok(weight.clone())
    }
}

/// The device memory a placement may build its store in: the run's manager (none on the CPU),
/// which the store registers with, and the bytes left for this model's weights.
#[derive(Clone, Default)]
pub struct Room {
    /// The device's memory manager.
    pub manager: Option<Arc<DeviceMemoryManager>>,
    /// Bytes the model's weights may take; `None`: as many as the placement wants.
    pub bytes: Option<u64>,
}

/// Decides where a model's weights live while it runs and builds the store that hands them out.
pub trait Placement: Send + Sync {
    /// The store for `model`'s weights on `device` in `dtype`, within `room` where the
    /// placement can fit itself to it (BlockSwap streams more in less room).
    ///
    /// # Errors
    /// A weight that cannot be loaded, or a device that cannot hold what the placement needs.
    fn store(
        &self,
        model: &ModelHandle,
        device: &Device,
        dtype: DType,
        room: &Room,
    ) -> Result<Arc<dyn WeightStore>, SourceError>;

    /// Bytes of `model`'s weights this placement keeps on the device in `dtype` (resident
    /// weights plus transfer buffers) when room is no concern.
    fn device_bytes(&self, model: &ModelHandle, dtype: DType) -> u64;

    /// The least device memory `model`'s weights can take in `dtype` with everything this
    /// placement can stream streamed, for placements that stream (so that advice can say to
    /// tighten the streaming instead of adding it); `None` for those that do not.
    fn streaming_minimum_bytes(&self, _model: &ModelHandle, _dtype: DType) -> Option<u64> {
        None
    }

    /// What sets this placement's stores apart from another's for the same model ("resident",
    /// or BlockSwap and its settings): a placement made again with the same settings (its node
    /// ran again because something upstream changed) reuses the store the last one built.
    fn store_key(&self) -> String;
}

/// Keeps the store a placement built for one model, device and dtype, so later runs of the same
/// model reuse it instead of loading the weights again; the device's memory manager may drop it
/// between runs when another model needs the room. Every handle made from one loaded model
/// shares its cache ([`ModelHandle::stores`]), so the model has one store on the device at a time.
#[derive(Default)]
pub struct StoreCache {
    slot: Arc<DeviceSlot<StoreKey, dyn WeightStore>>,
}

/// What a cached store was built for: the model (its network's and weights' addresses and its
/// name), device (as its debug location) and placement, the dtypes, and the store's device bytes.
type StoreKey = (String, WeightDTypes, u64);

impl StoreCache {
    /// The cached store for `model` on `device` in `dtype` as `placement` places it, when it fits
    /// `room`; or the one `build` makes with its device bytes (then cached, and registered with
    /// `room`'s manager).
    ///
    /// # Errors
    /// Whatever `build` returns.
    pub fn get_or_build<E>(
        &self,
        model: &ModelHandle,
        placement: &dyn Placement,
        (device, dtype): (&Device, DType),
        room: &Room,
        build: impl FnOnce() -> Result<(Arc<dyn WeightStore>, u64), E>,
    ) -> Result<Arc<dyn WeightStore>, E> {
        let network = Arc::as_ptr(&model.network).cast::<()>() as usize;
        // The same network with other weights (a LoRA merged in) needs a store of its own.
        let weights = Arc::as_ptr(&model.source) as usize;
        let key = format!(
            "{network:x} {weights:x} {} {:?} {}",
            model.name,
            device.location(),
            placement.store_key()
        );
        let dtypes = model.dtypes(dtype);
        let fill = Fill {
            name: format!("{} ({})", model.network.kind(), model.name),
            manager: room.manager.as_ref(),
            room_for: None,
        };
        self.slot.get_or_fill(
            |(made_for, made_in, bytes)| {
                *made_for == key && *made_in == dtypes && room.bytes.is_none_or(|room| *bytes <= room)
            },
            fill,
            || build().map(|(store, bytes)| ((key.clone(), dtypes, bytes), store, bytes)),
        )
    }

    /// The cached store's registration with the memory manager.
    pub fn resident(&self) -> Option<ResidentId> {
        self.slot.resident()
    }
}

/// Every weight on the device.
#[derive(Default)]
pub struct Resident;

impl Placement for Resident {
    fn store(
        &self,
        model: &ModelHandle,
        device: &Device,
        dtype: DType,
        room: &Room,
    ) -> Result<Arc<dyn WeightStore>, SourceError> {
        // Every weight goes to the device whatever the room: the cached store is always reused.
        let unbounded = Room {
            bytes: None,
            ..room.clone()
        };
        model.stores.get_or_build(model, self, (device, dtype), &unbounded, || {
            let store = ResidentStore::load_for(model.network.as_ref(), &model.source, model.dtypes(dtype), device)?;
            Ok((Arc::new(store) as Arc<dyn WeightStore>, self.device_bytes(model, dtype)))
        })
    }

    fn device_bytes(&self, model: &ModelHandle, dtype: DType) -> u64 {
        let kept = model.dtypes(dtype).kept;
        model.kept_units(dtype).iter().map(|unit| unit.bytes(kept)).sum()
    }

    fn store_key(&self) -> String {
        "resident".to_string()
    }
}

/// A model as it travels between nodes.
#[derive(Clone)]
pub struct ModelHandle {
    /// Where the model came from (a path or a built-in name), for messages.
    pub name: String,
    /// The network.
    pub network: Arc<dyn Network>,
    /// Where the weights are read from (files, or a built-in model's seeded weights).
    pub source: Arc<TensorSource>,
    /// Where the weights live while the model runs.
    pub placement: Arc<dyn Placement>,
    /// The store the model's weights run from on a device, kept between runs; shared by every
    /// handle made from this one (what BlockSwap and the adapters return), whatever their
    /// placement.
    pub stores: Arc<StoreCache>,
    /// Where the weights of models sampled alongside this one (ControlNets attached to the
    /// conditioning) live; `None` keeps their own placement.
    pub companion_placement: Option<Arc<dyn Placement>>,
    /// The dtype the weights are kept and moved in when not the one the model computes in
    /// (8-bit floats: half the memory and transfers of f16; [`crate::KEPT_AS_STORED`]: a GGUF
    /// file's quantized blocks as stored); `None`: the compute dtype.
    pub kept_dtype: Option<DType>,
    /// Whether linear layers whose weights are kept in 8 bits multiply them as kept, on 8-bit
    /// tensor cores, with their inputs rounded to 8 bits (ComfyUI's `fp8_e4m3fn_fast`).
    pub eight_bit_products: bool,
}

impl ModelHandle {
    /// A resident model.
    pub fn new(name: impl Into<String>, network: Arc<dyn Network>, source: Arc<TensorSource>) -> Self {
        Self {
            name: name.into(),
            network,
            source,
            placement: Arc::new(Resident),
            stores: Arc::default(),
            companion_placement: None,
            kept_dtype: None,
            eight_bit_products: false,
        }
    }

    /// The same model with its weights kept in `dtype` (`None`: the compute dtype).
    pub fn with_kept_dtype(&self, dtype: Option<DType>) -> Self {
        Self {
            kept_dtype: dtype,
            ..self.clone()
        }
    }

    /// The same model with its linear layers' products taken in 8 bits (`on`) where their
    /// weights are kept in 8 bits, or widened to the compute dtype.
    pub fn with_eight_bit_products(&self, on: bool) -> Self {
        Self {
            eight_bit_products: on,
            ..self.clone()
        }
    }

    /// The dtypes the model's weights are kept in and computed in when it computes in `compute`.
    pub fn dtypes(&self, compute: DType) -> WeightDTypes {
        WeightDTypes {
            compute,
            kept: self.kept_dtype.unwrap_or(compute),
            eight_bit_products: self.eight_bit_products,
        }
    }

    /// The model's units with each tensor's shape as kept when it computes in `compute`: their
    /// bytes, for weights kept as stored (see [`TensorSource::kept_unit`]). What placements
    /// plan and count device memory with.
    pub fn kept_units(&self, compute: DType) -> Vec<UnitSpec> {
        let kept = self.dtypes(compute).kept;
        self.network
            .units()
            .iter()
            .map(|unit| self.source.kept_unit(unit, kept))
            .collect()
    }

    /// The same model with another placement (what BlockSwap returns).
    pub fn with_placement(&self, placement: Arc<dyn Placement>) -> Self {
        Self {
            placement,
            ..self.clone()
        }
    }

    /// The same model reading its weights from `source` (the same weights with a LoRA merged
    /// in), placed as before.
    pub fn with_source(&self, source: Arc<TensorSource>) -> Self {
        Self { source, ..self.clone() }
    }

    /// The same model, with `placement` for the models sampled alongside it.
    pub fn with_companion_placement(&self, placement: Arc<dyn Placement>) -> Self {
        Self {
            companion_placement: Some(placement),
            ..self.clone()
        }
    }

    /// The store the model runs from on `device`, within `room`.
    ///
    /// # Errors
    /// See [`Placement::store`].
    pub fn store(&self, device: &Device, dtype: DType, room: &Room) -> Result<Arc<dyn WeightStore>, SourceError> {
        self.placement.store(self, device, dtype, room)
    }
}
