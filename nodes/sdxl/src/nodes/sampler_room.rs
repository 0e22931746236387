//! The device memory the sampler's models get: what the run's budget leaves beside a step's
//! activations, once every other idle model (text encoders, the VAE, models of earlier runs) has
//! left the device. The UNet and a ControlNet sampled with it share it in proportion to what they
//! would keep on the device unconstrained, so BlockSwap plans them together.

use super::out_of_memory::UNetOnDevice;

/// A ControlNet's activations in a step, as a share of the UNet's: it runs the UNet's down and
/// middle blocks and keeps their residuals for the UNet.
const CONTROLNET_ACTIVATIONS: f64 = 0.5;
use swapgraph_model::{memory_manager, ModelHandle, Room};
use swapgraph_node_api::VramBudget;

/// The rooms of the UNet and of the ControlNet sampled with it.
pub struct SamplerRooms {
    /// The UNet's.
    pub unet: Room,
    /// The ControlNet's.
    pub controlnet: Room,
}

/// The rooms for sampling `on_device`'s UNet (with `controlnet`, placed as it will run) within
/// `budget`; unbounded on the CPU.
pub fn sampler_rooms(on_device: &UNetOnDevice, controlnet: Option<&ModelHandle>, budget: VramBudget) -> SamplerRooms {
    let Some(manager) = memory_manager(on_device.device, budget) else {
        return SamplerRooms {
            unet: Room::default(),
            controlnet: Room::default(),
        };
    };
    let dtype = on_device.dtype;
    let unet_activations = on_device.step_bytes().unwrap_or(0) as f64;
    let control_activations = controlnet.map_or(0.0, |_| unet_activations * CONTROLNET_ACTIVATIONS);
    let activations = (unet_activations + control_activations) as u64;
    let wish = |model: &ModelHandle| model.placement.device_bytes(model, dtype);
    let (unet_wish, control_wish) = (wish(on_device.model), controlnet.map_or(0, wish));
    let keep: Vec<_> = [Some(on_device.model), controlnet]
        .into_iter()
        .flatten()
        .filter_map(|model| model.placement.resident())
        .collect();
    let held = manager.bytes_of(&keep);
    // Sampling is the run's largest use of the device: everything idle leaves.
    let available = manager.make_room(u64::MAX, &keep);
    let for_weights = (available + held).saturating_sub(activations);
    let unet_share = for_weights as f64 * unet_wish as f64 / (unet_wish + control_wish).max(1) as f64;
    let room = |bytes: u64| Room {
        manager: Some(std::sync::Arc::clone(&manager)),
        bytes: Some(bytes),
    };
    tracing::info!(
        "sampling within {} MiB: {} MiB for the weights (unconstrained they would take {} MiB) beside {} MiB \
         for activations",
        manager.limit() >> 20,
        for_weights >> 20,
        (unet_wish + control_wish) >> 20,
        activations >> 20
    );
    SamplerRooms {
        unet: room(unet_share as u64),
        controlnet: room(for_weights.saturating_sub(unet_share as u64)),
    }
}
