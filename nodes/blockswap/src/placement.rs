//! BlockSwap as a model placement: the MODEL handle BlockSwap returns builds a [`SwapStore`]
//! where the upstream handle would build a resident one.

use crate::plan::plan;
use crate::settings::SwapSettings;
use crate::store::SwapStore;
use candle_core::{DType, Device};
use std::sync::{Arc, Mutex, PoisonError};
use swapgraph_model::{ModelHandle, Placement, SourceError, WeightStore};

/// Streams the units a plan picks; the store is kept per device and dtype, so later runs reuse
/// the host copies.
pub struct BlockSwapPlacement {
    settings: SwapSettings,
    loaded: Mutex<Option<(String, DType, Arc<SwapStore>)>>,
}

impl BlockSwapPlacement {
    /// A placement with `settings`.
    pub fn new(settings: SwapSettings) -> Self {
        Self {
            settings,
            loaded: Mutex::new(None),
        }
    }
}

impl Placement for BlockSwapPlacement {
    fn store(&self, model: &ModelHandle, device: &Device, dtype: DType) -> Result<Arc<dyn WeightStore>, SourceError> {
        let key = format!("{:?}", device.location());
        let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((k, d, store)) = loaded.as_ref() {
            if *k == key && *d == dtype {
                return Ok(Arc::clone(store) as Arc<dyn WeightStore>);
            }
        }
        let units = model.network.units().to_vec();
        let swap_plan = plan(&units, dtype, &self.settings).map_err(|e| SourceError::Tensor {
            source_name: model.name.clone(),
            key: String::new(),
            message: e.to_string(),
        })?;
        let store = Arc::new(SwapStore::load(
            units,
            &model.source,
            swap_plan,
            self.settings,
            device,
            dtype,
        )?);
        *loaded = Some((key, dtype, Arc::clone(&store)));
        Ok(store)
    }

    fn describe(&self) -> String {
        "BlockSwap".to_string()
    }
}
