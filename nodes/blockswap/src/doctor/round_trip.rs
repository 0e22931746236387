//! A small BlockSwap round trip on the device: the built-in tiny UNet run resident and streamed
//! must give identical outputs, also after a pass cut short, and device memory must return to
//! where it was once the stores are gone.

use crate::plan::plan;
use crate::settings::SwapSettings;
use crate::store::SwapStore;
use candle_core::{DType, Device, Tensor};
use swapgraph_model::{device_memory, weight_dtype, ResidentStore, WeightStore};
use swapgraph_node_api::VramBudget;
use swapgraph_sdxl::checkpoint::{load, TINY_SDXL};
use swapgraph_sdxl::unet::{UNet, UNetInput};

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

/// Runs the round trip on `device`.
///
/// # Errors
/// A message naming the step that failed.
pub fn round_trip(device: &Device) -> Result<RoundTrip, String> {
    let dtype = weight_dtype(device);
    let checkpoint = load(TINY_SDXL, device, VramBudget::Auto).map_err(|e| e.to_string())?;
    let model = checkpoint.model;
    let unet = model
        .network
        .as_any()
        .downcast_ref::<UNet>()
        .ok_or("the built-in model is not a UNet")?;
    let units = unet.units().to_vec();
    let inputs = Inputs::new(device, dtype).map_err(|e| format!("inputs: {e}"))?;
    {
        // The first pass allocates what the process keeps for every later one (the linear
        // layers' cuBLASLt workspace): that belongs to the starting point, not to a leak.
        let warm = ResidentStore::load(units.clone(), &model.source, dtype, device).map_err(|e| e.to_string())?;
        inputs.run(unet, &warm).map_err(|e| format!("resident pass: {e}"))?;
    }
    let baseline = device_memory(device);
    let (difference, transfers) = {
        let resident = ResidentStore::load(units.clone(), &model.source, dtype, device).map_err(|e| e.to_string())?;
        let expected = inputs.run(unet, &resident).map_err(|e| format!("resident pass: {e}"))?;
        let settings = SwapSettings {
            blocks_to_swap: 3,
            prefetch: 2,
            ..SwapSettings::default()
        };
        let swap_plan = plan(&units, dtype, &settings).map_err(|e| e.to_string())?;
        let streamed = SwapStore::load(units.clone(), &model.source, swap_plan, settings, device, dtype)
            .map_err(|e| e.to_string())?;
        let first = inputs.run(unet, &streamed).map_err(|e| format!("streamed pass: {e}"))?;
        // A pass cut short (as by cancellation) leaves copies in flight; the next pass must
        // still see the right weights.
        for unit in 0..units.len() / 2 {
            streamed.acquire(unit).map_err(|e| format!("cut-short pass: {e}"))?;
            streamed.release(unit);
        }
        let second = inputs
            .run(unet, &streamed)
            .map_err(|e| format!("pass after a cut-short one: {e}"))?;
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

/// Seeded inputs for the tiny UNet at 32x32 latents.
struct Inputs {
    sample: Tensor,
    timesteps: Tensor,
    context: Tensor,
    text_embeds: Tensor,
    time_ids: Tensor,
}

impl Inputs {
    fn new(device: &Device, dtype: DType) -> candle_core::Result<Self> {
        let cfg = swapgraph_sdxl::unet::UNetConfig::tiny();
        let ramp = |n: usize, shape: &[usize]| -> candle_core::Result<Tensor> {
            Tensor::arange(0u32, n as u32, &Device::Cpu)?
                .to_dtype(DType::F32)?
                .affine(0.37, 0.0)?
                .sin()?
                .reshape(shape)?
                .to_dtype(dtype)?
                .to_device(device)
        };
        Ok(Self {
            sample: ramp(2 * cfg.in_channels * 32 * 32, &[2, cfg.in_channels, 32, 32])?,
            timesteps: Tensor::new(&[500f32, 500.0], device)?,
            context: ramp(2 * 8 * cfg.cross_attention_dim, &[2, 8, cfg.cross_attention_dim])?,
            text_embeds: ramp(2 * cfg.pooled_text_dim, &[2, cfg.pooled_text_dim])?,
            time_ids: Tensor::new(&[[256f32, 256.0, 0.0, 0.0, 256.0, 256.0]; 2], device)?,
        })
    }

    fn run(&self, unet: &UNet, store: &dyn WeightStore) -> candle_core::Result<Tensor> {
        let input = UNetInput {
            sample: &self.sample,
            timesteps: &self.timesteps,
            context: &self.context,
            projected: None,
            text_embeds: &self.text_embeds,
            time_ids: &self.time_ids,
            control: None,
            extra_tokens: None,
        };
        unet.forward(store, &input)
    }
}
