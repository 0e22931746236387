//! A small BlockSwap round trip on the device: a model family's tiny instance run resident and
//! streamed must give identical outputs, also after a pass cut short, and device memory must
//! return to where it was once the stores are gone.

use crate::plan::plan;
use crate::settings::SwapSettings;
use crate::store::SwapStore;
use candle_core::{DType, Device, Tensor};
use swapgraph_model::{device_memory, weight_dtype, ResidentStore, StreamedFamily, WeightStore};

/// What the round trip found.
#[derive(Clone, Debug, PartialEq)]
pub struct RoundTrip {
    /// How the streamed units moved (streaming or synchronous, and why).
    pub transfers: String,
    /// Largest absolute difference between resident and streamed outputs (0 when identical).
    pub max_difference: f32,
    /// Device bytes still allocated after the stores were dropped, beyond the starting point;
    /// `None` where the device does not report memory.
    pub leaked_bytes: Option<i64>,
}

/// Runs the round trip on `device` with `family`'s tiny instance.
///
/// # Errors
/// A message naming the step that failed.
pub fn round_trip(device: &Device, family: &dyn StreamedFamily) -> Result<RoundTrip, String> {
    let dtype = weight_dtype(device);
    let tiny = family.tiny(device, dtype)?;
    let model = tiny.model();
    let units = model.network.units().to_vec();
    let run = |store: &dyn WeightStore| tiny.run(store);
    {
        // The first pass allocates what the process keeps for every later one (the linear
        // layers' cuBLASLt workspace): that belongs to the starting point, not to a leak.
        let warm =
            ResidentStore::load_for(model.network.as_ref(), &model.source, dtype, device).map_err(|e| e.to_string())?;
        run(&warm).map_err(|e| format!("resident pass: {e}"))?;
    }
    let baseline = device_memory(device);
    let (difference, transfers) = {
        let resident =
            ResidentStore::load_for(model.network.as_ref(), &model.source, dtype, device).map_err(|e| e.to_string())?;
        let expected = run(&resident).map_err(|e| format!("resident pass: {e}"))?;
        let settings = SwapSettings {
            blocks_to_swap: 3,
            prefetch: 2,
            ..SwapSettings::default()
        };
        let swap_plan = plan(&units, dtype, &settings).map_err(|e| e.to_string())?;
        let streamed = SwapStore::load(units.clone(), &model.source, swap_plan, settings, device, dtype)
            .and_then(|store| store.with_resident_layout(model.network.as_ref()))
            .map_err(|e| e.to_string())?;
        let first = run(&streamed).map_err(|e| format!("streamed pass: {e}"))?;
        // A pass cut short (as by cancellation) leaves copies in flight; the next pass must
        // still see the right weights.
        for unit in 0..units.len() / 2 {
            streamed.acquire(unit).map_err(|e| format!("cut-short pass: {e}"))?;
            streamed.release(unit);
        }
        let second = run(&streamed).map_err(|e| format!("pass after a cut-short one: {e}"))?;
        let difference = max_difference(&expected, &first)?.max(max_difference(&expected, &second)?);
        (difference, streamed.figures().transfers)
    };
    let leaked_bytes = baseline
        .zip(device_memory(device))
        .map(|(before, after)| after.allocated as i64 - before.allocated as i64);
    Ok(RoundTrip {
        transfers,
        max_difference: difference,
        leaked_bytes,
    })
}

fn max_difference(a: &Tensor, b: &Tensor) -> Result<f32, String> {
    let compare = || -> candle_core::Result<f32> {
        (a.to_dtype(DType::F32)? - b.to_dtype(DType::F32)?)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()
    };
    compare().map_err(|e| format!("comparing outputs: {e}"))
}
