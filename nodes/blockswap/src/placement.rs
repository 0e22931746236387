//! BlockSwap as a model placement: the MODEL handle BlockSwap returns builds a [`SwapStore`]
//! where the upstream handle would build a resident one.

use crate::plan::plan;
use crate::settings::SwapSettings;
use crate::store::SwapStore;
use candle_core::{DType, Device};
use std::sync::Arc;
use swapgraph_model::{ModelHandle, Placement, SourceError, StoreCache, WeightStore};

/// Streams the units a plan picks; the store is kept per model, device and dtype, so later runs
/// reuse the host copies.
pub struct BlockSwapPlacement {
    settings: SwapSettings,
    cache: StoreCache,
}

impl BlockSwapPlacement {
    /// A placement with `settings`.
    pub fn new(settings: SwapSettings) -> Self {
        Self {
            settings,
            cache: StoreCache::default(),
        }
    }
}

impl Placement for BlockSwapPlacement {
    fn store(&self, model: &ModelHandle, device: &Device, dtype: DType) -> Result<Arc<dyn WeightStore>, SourceError> {
        self.cache.get_or_build(model, device, dtype, || {
            let units = model.network.units().to_vec();
            let swap_plan = plan(&units, dtype, &self.settings).map_err(|e| SourceError::Tensor {
                source_name: model.name.clone(),
                key: String::new(),
                message: e.to_string(),
            })?;
            let store = SwapStore::load(units, &model.source, swap_plan, self.settings, device, dtype)?;
            Ok(Arc::new(store) as Arc<dyn WeightStore>)
        })
    }

    fn device_bytes(&self, model: &ModelHandle, dtype: DType) -> u64 {
        let units = model.network.units();
        plan(units, dtype, &self.settings).map_or_else(
            |_| units.iter().map(|unit| unit.bytes(dtype)).sum(),
            |swap_plan| swap_plan.device_bytes(),
        )
    }

    fn streams(&self) -> bool {
        true
    }
}
