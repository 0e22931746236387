//! BlockSwap as a model placement: the MODEL handle BlockSwap returns builds a [`SwapStore`]
//! where the upstream handle would build a resident one.

use crate::plan::{minimum_device_bytes, plan, PlanError};
use crate::settings::SwapSettings;
use crate::store::SwapStore;
use candle_core::{DType, Device};
use std::sync::Arc;
use swapgraph_model::{ModelHandle, Placement, Room, SourceError, UnitSpec, WeightStore};

/// Streams the units a plan picks; the store is kept with the model ([`ModelHandle::stores`])
/// per device, dtype and settings, so later runs reuse the host copies and the resident units,
/// even through a BlockSwap node that ran again.
pub struct BlockSwapPlacement {
    settings: SwapSettings,
}

impl BlockSwapPlacement {
    /// A placement with `settings`.
    pub fn new(settings: SwapSettings) -> Self {
        Self { settings }
    }
}

impl BlockSwapPlacement {
    /// The settings to plan with when `room` bytes are left for the weights: a budget of the
    /// node's own never exceeds the room, and without one the per-section plan is kept when it
    /// fits, else the room becomes the budget (in whole [`ROOM_STEP_MB`] steps, so that a room a
    /// little different from the last run's reuses its store, but never below the least
    /// streaming needs when the room holds that).
    fn fitted(&self, units: &[UnitSpec], dtype: DType, room: Option<u64>) -> SwapSettings {
        let Some(room) = room else {
            return self.settings;
        };
        // Never stepped below the least streaming needs, which the room was sized to hold.
        let least = minimum_device_bytes(units, dtype, &self.settings);
        let stepped = (room >> 20) / ROOM_STEP_MB * ROOM_STEP_MB;
        let room_mb = if stepped << 20 < least && least <= room {
            least.div_ceil(1 << 20)
        } else {
            stepped
        };
        let budget = match self.settings.vram_budget_mb {
            Some(own) => own.min(room_mb),
            None => match plan(units, dtype, &self.settings) {
                Ok(own_plan) if own_plan.device_bytes() <= room => return self.settings,
                _ => room_mb,
            },
        };
        SwapSettings {
            vram_budget_mb: Some(budget),
            ..self.settings
        }
    }
}

/// The steps, in MiB, a room is rounded down to when it becomes a budget.
pub const ROOM_STEP_MB: u64 = 128;

impl Placement for BlockSwapPlacement {
    fn store(
        &self,
        model: &ModelHandle,
        device: &Device,
        dtype: DType,
        room: &Room,
    ) -> Result<Arc<dyn WeightStore>, SourceError> {
        model.stores.get_or_build(model, self, (device, dtype), room, || {
            // Planned in the bytes the weights are kept and moved in.
            let kept_units = model.kept_units(dtype);
            let dtypes = model.dtypes(dtype);
            let settings = self.fitted(&kept_units, dtypes.kept, room.bytes);
            let fitted = settings.vram_budget_mb != self.settings.vram_budget_mb;
            if fitted {
                tracing::info!(
                    "BlockSwap: the run's device budget leaves {} MiB for the weights of {}; streaming to fit",
                    settings.vram_budget_mb.unwrap_or_default(),
                    model.name
                );
            }
            let swap_plan = plan(&kept_units, dtypes.kept, &settings).map_err(|e| match e {
                PlanError::BudgetTooSmall {
                    budget_mb, minimum_mb, ..
                } if fitted => SourceError::Device(format!(
                    "the run's device budget leaves {budget_mb} MiB for the weights of {} beside the sampler's \
                     activations, and streaming them needs at least {minimum_mb} MiB: raise --vram-budget, lower \
                     the resolution, or free device memory held by other processes",
                    model.name
                )),
                other => SourceError::Tensor {
                    source_name: model.name.clone(),
                    key: String::new(),
                    message: other.to_string(),
                },
            })?;
            let bytes = swap_plan.device_bytes();
            let units = model.network.units().to_vec();
            let store = SwapStore::load(units, &model.source, swap_plan, settings, device, dtypes)?
                .with_resident_layout(model.network.as_ref())?;
            Ok((Arc::new(store) as Arc<dyn WeightStore>, bytes))
        })
    }

    fn device_bytes(&self, model: &ModelHandle, dtype: DType) -> u64 {
        let units = model.kept_units(dtype);
        let kept = model.dtypes(dtype).kept;
        plan(&units, kept, &self.settings).map_or_else(
            |_| units.iter().map(|unit| unit.bytes(kept)).sum(),
            |swap_plan| swap_plan.device_bytes(),
        )
    }

    fn streaming_minimum_bytes(&self, model: &ModelHandle, dtype: DType) -> Option<u64> {
        Some(minimum_device_bytes(
            &model.kept_units(dtype),
            model.dtypes(dtype).kept,
            &self.settings,
        ))
    }

    fn store_key(&self) -> String {
        format!("BlockSwap {:?}", self.settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use swapgraph_model::{UnitGroup, UnitSpec};
    use swapgraph_sdxl::unet::{UNet, UNetConfig};

    #[test]
    fn a_placement_made_again_with_the_same_settings_reuses_the_models_store() -> Result<(), SourceError> {
        let (_, source) = crate::store::tests::tiny_model();
        let unet = UNet::new(UNetConfig::tiny()).expect("the tiny UNet");
        let model = ModelHandle::new("tiny", Arc::new(unet), source);
        let settings = SwapSettings::default();
        let store_with = |settings: SwapSettings| {
            // What a BlockSwap node returns each time it runs: a new placement on the same model.
            let handle = model.with_placement(Arc::new(BlockSwapPlacement::new(settings)));
            handle.store(&Device::Cpu, DType::F32, &Room::default())
        };
        let first = store_with(settings)?;
        assert!(
            Arc::ptr_eq(&first, &store_with(settings)?),
            "the node ran again with the same settings: the store is reused"
        );
        let more = store_with(SwapSettings {
            blocks_to_swap: settings.blocks_to_swap + 1,
            ..settings
        })?;
        assert!(!Arc::ptr_eq(&first, &more), "other settings build their own store");
        let resident = model.store(&Device::Cpu, DType::F32, &Room::default())?;
        assert!(
            !Arc::ptr_eq(&more, &resident),
            "the upstream model builds a resident store"
        );
        assert!(
            Arc::ptr_eq(&resident, &model.store(&Device::Cpu, DType::F32, &Room::default())?),
            "and keeps it"
        );
        Ok(())
    }

    fn units() -> Vec<UnitSpec> {
        let unit = |name: &str, group, mib: usize| UnitSpec {
            name: name.to_string(),
            group,
            tensors: vec![("weight".to_string(), (mib << 19).into())],
        };
        vec![
            unit("stem", UnitGroup::outside_blocks(0), 1),
            unit(
                "down_blocks.0.resnets.0",
                UnitGroup::in_block("down_blocks.0", "down", 0),
                64,
            ),
            unit("mid_block.resnets.0", UnitGroup::in_block("mid_block", "mid", 0), 512),
            unit(
                "up_blocks.0.resnets.0",
                UnitGroup::in_block("up_blocks.0", "up", 0),
                1024,
            ),
            unit("head", UnitGroup::outside_blocks(0), 1),
        ]
    }

    #[test]
    fn the_room_caps_the_budget_and_replaces_a_plan_that_does_not_fit() {
        let placement = BlockSwapPlacement::new(SwapSettings {
            blocks_to_swap: 0,
            ..SwapSettings::default()
        });
        let units = units();
        let mib = |m: u64| Some(m << 20);
        assert_eq!(placement.fitted(&units, DType::F16, None).vram_budget_mb, None);
        assert_eq!(
            placement.fitted(&units, DType::F16, mib(4096)).vram_budget_mb,
            None,
            "everything resident fits in 4 GiB: the node's own plan stays"
        );
        assert_eq!(
            placement.fitted(&units, DType::F16, mib(1000)).vram_budget_mb,
            Some(896)
        );
        let budgeted = BlockSwapPlacement::new(SwapSettings {
            vram_budget_mb: Some(1500),
            ..SwapSettings::default()
        });
        assert_eq!(
            budgeted.fitted(&units, DType::F16, mib(4096)).vram_budget_mb,
            Some(1500)
        );
        assert_eq!(
            budgeted.fitted(&units, DType::F16, mib(1200)).vram_budget_mb,
            Some(1152)
        );
    }

    #[test]
    fn a_room_that_holds_the_least_streaming_is_not_stepped_below_it() {
        let mut units = units();
        units[3].tensors[0].1 = (188usize << 19).into(); // 188 MiB in f16: not a whole step
        let placement = BlockSwapPlacement::new(SwapSettings {
            prefetch: 0,
            ..SwapSettings::default()
        });
        let least = minimum_device_bytes(&units, DType::F16, &placement.settings) >> 20;
        assert_eq!(least, 512, "the middle block's unit is now the largest");
        units[2].tensors[0].1 = (100usize << 19).into();
        let least = minimum_device_bytes(&units, DType::F16, &placement.settings) >> 20;
        assert_eq!(least, 188);
        let exactly = placement.fitted(&units, DType::F16, Some(188 << 20)).vram_budget_mb;
        assert_eq!(exactly, Some(188), "a room of exactly the least");
        let fitted = placement.fitted(&units, DType::F16, Some(200 << 20)).vram_budget_mb;
        assert_eq!(
            fitted,
            Some(188),
            "200 MiB in steps of 128 would leave 128, less than streaming needs"
        );
        plan(
            &units,
            DType::F16,
            &placement.fitted(&units, DType::F16, Some(200 << 20)),
        )
        .unwrap();
        assert_eq!(
            placement.fitted(&units, DType::F16, Some(300 << 20)).vram_budget_mb,
            Some(256)
        );
        assert_eq!(
            placement.fitted(&units, DType::F16, Some(150 << 20)).vram_budget_mb,
            Some(128),
            "a room below the least is stepped as any other, and the plan says it is too small"
        );
    }

    #[test]
    fn the_smallest_streaming_setting_is_the_ring_for_the_largest_unit() {
        let units = units();
        let largest = 1024u64 << 20; // the up block's unit, in f16
        for prefetch in [0, 1, 4] {
            let settings = SwapSettings {
                prefetch,
                ..SwapSettings::default()
            };
            assert_eq!(
                minimum_device_bytes(&units, DType::F16, &settings),
                (prefetch as u64 + 1) * largest
            );
        }
        let whole_blocks = SwapSettings {
            granularity: crate::settings::Granularity::Block,
            ..SwapSettings::default()
        };
        assert_eq!(minimum_device_bytes(&units, DType::F16, &whole_blocks), largest);
    }
}
