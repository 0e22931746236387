//! The MODEL value: shared network and host weights, plus how weights reach the device.
//!
//! Like ComfyUI's model patcher, a handle never changes: nodes that transform a model (BlockSwap,
//! adapters) return a new handle sharing the same network and weights, so the cached upstream
//! model stays as it was. Weights reach the device only when a sampler asks for a store.

use crate::{ResidentStore, SourceError, TensorSource, UnitSpec, WeightStore};
use candle_core::{DType, Device};
use std::any::Any;
use std::sync::{Arc, Mutex, PoisonError};

/// A network whose forward pass takes its weights from a [`WeightStore`]: the SDXL UNet, a
/// ControlNet.
pub trait Network: Send + Sync {
    /// The swap units in execution order.
    fn units(&self) -> &[UnitSpec];
    /// What kind of network it is, for messages (e.g. "SDXL UNet").
    fn kind(&self) -> &'static str;
    /// The concrete type, for the pack that runs it.
    fn as_any(&self) -> &dyn Any;
}

/// Decides where a model's weights live while it runs and builds the store that hands them out.
pub trait Placement: Send + Sync {
    /// The store for `model`'s weights on `device` in `dtype`.
    ///
    /// # Errors
    /// A weight that cannot be loaded, or a device that cannot hold what the placement needs.
    fn store(&self, model: &ModelHandle, device: &Device, dtype: DType) -> Result<Arc<dyn WeightStore>, SourceError>;

    /// Bytes of `model`'s weights this placement keeps on the device in `dtype` (resident
    /// weights plus transfer buffers), for advice when the device runs out of memory.
    fn device_bytes(&self, model: &ModelHandle, dtype: DType) -> u64;

    /// Whether weights stream from host memory, so that advice can say to tighten the
    /// streaming instead of adding it.
    fn streams(&self) -> bool;
}

/// Keeps the store a placement built for one model, device and dtype, so later runs of the same
/// model reuse it instead of loading the weights again.
#[derive(Default)]
pub struct StoreCache {
    loaded: Mutex<Option<CachedStore>>,
}

/// A store with the model (its network's address and name), device (as its debug location) and
/// dtype it was built for.
type CachedStore = (String, DType, Arc<dyn WeightStore>);

impl StoreCache {
    /// The cached store for `model` on `device` in `dtype`, or the one `build` makes (then
    /// cached).
    ///
    /// # Errors
    /// Whatever `build` returns.
    pub fn get_or_build<E>(
        &self,
        model: &ModelHandle,
        device: &Device,
        dtype: DType,
        build: impl FnOnce() -> Result<Arc<dyn WeightStore>, E>,
    ) -> Result<Arc<dyn WeightStore>, E> {
        let network = Arc::as_ptr(&model.network).cast::<()>() as usize;
        let key = format!("{network:x} {} {:?}", model.name, device.location());
        let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((k, d, store)) = loaded.as_ref() {
            if *k == key && *d == dtype {
                return Ok(Arc::clone(store));
            }
        }
        // Drop the old store before building the next, so two never hold device memory at once.
        *loaded = None;
        let store = build()?;
        *loaded = Some((key, dtype, Arc::clone(&store)));
        Ok(store)
    }
}

/// Every weight on the device.
#[derive(Default)]
pub struct Resident {
    cache: StoreCache,
}

impl Placement for Resident {
    fn store(&self, model: &ModelHandle, device: &Device, dtype: DType) -> Result<Arc<dyn WeightStore>, SourceError> {
        self.cache.get_or_build(model, device, dtype, || {
            let store = ResidentStore::load(model.network.units().to_vec(), &model.source, dtype, device)?;
            Ok(Arc::new(store) as Arc<dyn WeightStore>)
        })
    }

    fn device_bytes(&self, model: &ModelHandle, dtype: DType) -> u64 {
        model.network.units().iter().map(|unit| unit.bytes(dtype)).sum()
    }

    fn streams(&self) -> bool {
        false
    }
}

/// A model as it travels between nodes.
#[derive(Clone)]
pub struct ModelHandle {
    /// Where the model came from (a path or a built-in name), for messages.
    pub name: String,
    /// The network.
    pub network: Arc<dyn Network>,
    /// The weights on the host (memory-mapped file or built-in tensors).
    pub source: Arc<TensorSource>,
    /// Where the weights live while the model runs.
    pub placement: Arc<dyn Placement>,
    /// Where the weights of models sampled alongside this one (ControlNets attached to the
    /// conditioning) live; `None` keeps their own placement.
    pub companion_placement: Option<Arc<dyn Placement>>,
}

impl ModelHandle {
    /// A resident model.
    pub fn new(name: impl Into<String>, network: Arc<dyn Network>, source: Arc<TensorSource>) -> Self {
        Self {
            name: name.into(),
            network,
            source,
            placement: Arc::new(Resident::default()),
            companion_placement: None,
        }
    }

    /// The same model with another placement (what BlockSwap returns).
    pub fn with_placement(&self, placement: Arc<dyn Placement>) -> Self {
        Self {
            placement,
            ..self.clone()
        }
    }

    /// The same model, with `placement` for the models sampled alongside it.
    pub fn with_companion_placement(&self, placement: Arc<dyn Placement>) -> Self {
        Self {
            companion_placement: Some(placement),
            ..self.clone()
        }
    }

    /// The store the model runs from on `device`.
    ///
    /// # Errors
    /// See [`Placement::store`].
    pub fn store(&self, device: &Device, dtype: DType) -> Result<Arc<dyn WeightStore>, SourceError> {
        self.placement.store(self, device, dtype)
    }
}
