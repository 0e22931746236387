//! The device memory the sampler's models get: what the run's budget leaves beside a step's
//! activations, once other idle models (text encoders, the VAE, models of earlier runs) have left
//! the device as far as the sampler's models want the room. The UNet and a ControlNet sampled with it share it in proportion to what they
//! would keep on the device unconstrained, so BlockSwap plans them together.

use super::out_of_memory::UNetOnDevice;
use swapgraph_model::{device_ceiling, memory_manager, ModelHandle, Room};
use swapgraph_node_api::{DeviceNeed, VramBudget};

/// A ControlNet's activations in a step, as a share of the UNet's: it runs the UNet's down and
/// middle blocks and keeps their residuals for the UNet.
const CONTROLNET_ACTIVATIONS: f64 = 0.5;

/// What sampling takes of the device beside its weights, and what its weights take.
struct Footprint {
    /// A step's activations (the ControlNet's included), with the memory pool's slack.
    activations: u64,
    /// Bytes the UNet and the ControlNet keep on the device as placed, unconstrained.
    wishes: (u64, u64),
    /// Bytes of the UNet's and the ControlNet's weights the smallest streaming setting keeps on
    /// the device; all of them where a model does not stream.
    leasts: (u64, u64),
    /// Both of those together.
    least_weights: u64,
}

impl Footprint {
    /// The footprint of `on_device`'s UNet with `controlnet`, a UNet step taking `unet_step`
    /// bytes beside the weights.
    fn of(on_device: &UNetOnDevice, controlnet: Option<&ModelHandle>, unet_step: u64) -> Self {
        let dtype = on_device.dtype;
        let unet_activations = unet_step as f64;
        let control_activations = controlnet.map_or(0.0, |_| unet_activations * CONTROLNET_ACTIVATIONS);
        let wish = |model: &ModelHandle| model.placement.device_bytes(model, dtype);
        let least = |model: &ModelHandle| {
            model
                .placement
                .streaming_minimum_bytes(model, dtype)
                .unwrap_or_else(|| wish(model))
        };
        let leasts = (least(on_device.model), controlnet.map_or(0, least));
        Self {
            activations: (unet_activations + control_activations) as u64,
            wishes: (wish(on_device.model), controlnet.map_or(0, wish)),
            leasts,
            least_weights: leasts.0 + leasts.1,
        }
    }
}

/// What sampling `on_device`'s UNet (with `controlnet`, placed as it will run) needs of the
/// device: `None` on the CPU, whose memory the operating system manages.
pub fn sampler_need(on_device: &UNetOnDevice, controlnet: Option<&ModelHandle>) -> Option<DeviceNeed> {
    let footprint = Footprint::of(on_device, controlnet, on_device.step_bytes()?);
    let (w, h) = (on_device.latent.1 * 8, on_device.latent.0 * 8);
    let streams = |model: &ModelHandle| {
        model
            .placement
            .streaming_minimum_bytes(model, on_device.dtype)
            .is_some()
    };
    let weights = match (controlnet, streams(on_device.model)) {
        (Some(_), _) => "the UNet and its ControlNet at their smallest streaming setting",
        (None, true) => "the UNet at its smallest streaming setting",
        (None, false) => "the UNet, every weight on the device (a BlockSwap node before the sampler streams them)",
    };
    Some(DeviceNeed {
        least: footprint.least_weights + footprint.activations,
        unconstrained: footprint.wishes.0 + footprint.wishes.1 + footprint.activations,
        detail: format!(
            "{weights} ({} MiB of weights) beside a step's activations at {w}x{h} ({} MiB)",
            footprint.least_weights >> 20,
            footprint.activations >> 20
        ),
    })
}

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
    let Footprint {
        activations,
        wishes: (unet_wish, control_wish),
        leasts: (unet_least, control_least),
        least_weights,
    } = Footprint::of(on_device, controlnet, on_device.step_bytes().unwrap_or(0));
    let keep: Vec<_> = [Some(on_device.model), controlnet]
        .into_iter()
        .flatten()
        .filter_map(|model| model.placement.resident())
        .collect();
    let held = manager.bytes_of(&keep);
    // Idle models (text encoders, the VAE) leave as far as the sampler's models want the room
    // unconstrained: on a card with room for all, the VAE stays for the decode.
    let wanted = (unet_wish + control_wish + activations).saturating_sub(held);
    let available = manager.make_room(wanted, &keep);
    let mut for_weights = (available + held).saturating_sub(activations);
    // The check before the run lets a run dip into `auto`'s margin; so does sampling, as far
    // as its smallest streaming setting needs.
    if for_weights < least_weights {
        let ceiling = device_ceiling(on_device.device, budget).map_or(0, |ceiling| ceiling.bytes);
        let most = ceiling.saturating_sub(activations).max(for_weights);
        if most > for_weights {
            tracing::info!(
                "sampling dips into the budget's margin: {} MiB for the weights where the margin leaves {} MiB",
                least_weights.min(most) >> 20,
                for_weights >> 20
            );
        }
        for_weights = least_weights.min(most);
    }
    let (unet_share, control_share) = split(for_weights, (unet_least, control_least), (unet_wish, control_wish));
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
        unet: room(unet_share),
        controlnet: room(control_share),
    }
}

/// `bytes` for two models' weights: each its least first, the rest in proportion to its wish.
fn split(bytes: u64, (least_a, least_b): (u64, u64), (wish_a, wish_b): (u64, u64)) -> (u64, u64) {
    let spare = bytes.saturating_sub(least_a + least_b);
    let a = least_a.min(bytes) + (spare as f64 * wish_a as f64 / (wish_a + wish_b).max(1) as f64) as u64;
    (a, bytes.saturating_sub(a).max(least_b.min(bytes)))
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn each_model_gets_its_least_before_the_rest_is_shared_by_wish() {
        const MIB: u64 = 1 << 20;
        // The main job's UNet and IdentityNet at their smallest streaming settings.
        let (unet, control) = split(372 * MIB, (188 * MIB, 118 * MIB), (233 * MIB, 157 * MIB));
        assert!(
            unet >= 188 * MIB && control >= 118 * MIB,
            "{} {}",
            unet / MIB,
            control / MIB
        );
        assert_eq!(unet + control, 372 * MIB);
        let (unet, control) = split(3900 * MIB, (188 * MIB, 118 * MIB), (300 * MIB, 100 * MIB));
        assert_eq!((unet + control, unet > 2 * control), (3900 * MIB, true));
    }
}
