//! The device memory the sampler's models get: what the run's budget leaves beside a step's
//! activations, once other idle models (text encoders, the VAE, models of earlier runs) have left
//! the device as far as the sampler's models want the room. The UNet and the ControlNets sampled
//! with it share it, each its smallest streaming setting first and the rest in proportion to
//! what they would keep on the device unconstrained, so BlockSwap plans them together.

use super::out_of_memory::UNetOnDevice;
use swapgraph_model::{device_ceiling, memory_manager, ModelHandle, Room};
use swapgraph_node_api::{DeviceNeed, VramBudget};

/// A ControlNet's activations in a step, as a share of the UNet's: it runs the UNet's down and
/// middle blocks and keeps their residuals for the UNet. ControlNets of a chain run one after
/// the other, but each one's residuals stay until the UNet has added them all.
const CONTROLNET_ACTIVATIONS: f64 = 0.5;

/// What sampling takes of the device beside its weights, and what its weights take.
struct Footprint {
    /// A step's activations (the ControlNets' included), with the memory pool's slack.
    activations: u64,
    /// Bytes each model (the UNet, then each ControlNet) keeps on the device as placed,
    /// unconstrained.
    wishes: Vec<u64>,
    /// Bytes of each model's weights the smallest streaming setting keeps on the device; all
    /// of them where a model does not stream.
    leasts: Vec<u64>,
}

impl Footprint {
    /// The footprint of `on_device`'s UNet with `controlnets`, a UNet step taking `unet_step`
    /// bytes beside the weights.
    fn of(on_device: &UNetOnDevice, controlnets: &[ModelHandle], unet_step: u64) -> Self {
        let dtype = on_device.dtype;
        let control_activations = unet_step as f64 * CONTROLNET_ACTIVATIONS * controlnets.len() as f64;
        let wish = |model: &ModelHandle| model.placement.device_bytes(model, dtype);
        let least = |model: &ModelHandle| {
            model
                .placement
                .streaming_minimum_bytes(model, dtype)
                .unwrap_or_else(|| wish(model))
        };
        let models: Vec<&ModelHandle> = std::iter::once(on_device.model).chain(controlnets).collect();
        Self {
            activations: unet_step + control_activations as u64,
            wishes: models.iter().map(|m| wish(m)).collect(),
            leasts: models.iter().map(|m| least(m)).collect(),
        }
    }

    fn least_weights(&self) -> u64 {
        self.leasts.iter().sum()
    }

    fn wished_weights(&self) -> u64 {
        self.wishes.iter().sum()
    }
}

/// What sampling `on_device`'s UNet (with `controlnets`, placed as they will run) needs of
/// the device: `None` on the CPU, whose memory the operating system manages.
pub fn sampler_need(on_device: &UNetOnDevice, controlnets: &[ModelHandle]) -> Option<DeviceNeed> {
    let footprint = Footprint::of(on_device, controlnets, on_device.step_bytes()?);
    let (w, h) = (on_device.latent.1 * 8, on_device.latent.0 * 8);
    let streams = on_device
        .model
        .placement
        .streaming_minimum_bytes(on_device.model, on_device.dtype)
        .is_some();
    let weights = match (controlnets.len(), streams) {
        (0, true) => "the UNet at its smallest streaming setting".to_string(),
        (0, false) => {
            "the UNet, every weight on the device (a BlockSwap node before the sampler streams them)".to_string()
        }
        (1, _) => "the UNet and its ControlNet at their smallest streaming setting".to_string(),
        (n, _) => format!("the UNet and its {n} ControlNets at their smallest streaming setting"),
    };
    let least_weights = footprint.least_weights();
    Some(DeviceNeed {
        least: least_weights + footprint.activations,
        unconstrained: footprint.wished_weights() + footprint.activations,
        detail: format!(
            "{weights} ({} MiB of weights) beside a step's activations at {w}x{h} ({} MiB)",
            least_weights >> 20,
            footprint.activations >> 20
        ),
    })
}

/// The rooms of the UNet and of the ControlNets sampled with it.
pub struct SamplerRooms {
    /// The UNet's.
    pub unet: Room,
    /// Each ControlNet's, in the chain's order.
    pub controlnets: Vec<Room>,
}

/// The rooms for sampling `on_device`'s UNet (with `controlnets`, placed as they will run)
/// within `budget`; unbounded on the CPU.
pub fn sampler_rooms(on_device: &UNetOnDevice, controlnets: &[ModelHandle], budget: VramBudget) -> SamplerRooms {
    let Some(manager) = memory_manager(on_device.device, budget) else {
        return SamplerRooms {
            unet: Room::default(),
            controlnets: vec![Room::default(); controlnets.len()],
        };
    };
    let footprint = Footprint::of(on_device, controlnets, on_device.step_bytes().unwrap_or(0));
    let (activations, least_weights, wished_weights) = (
        footprint.activations,
        footprint.least_weights(),
        footprint.wished_weights(),
    );
    let keep: Vec<_> = std::iter::once(on_device.model)
        .chain(controlnets)
        .filter_map(|model| model.stores.resident())
        .collect();
    let held = manager.bytes_of(&keep);
    // Idle models (text encoders, the VAE) leave as far as the sampler's models want the room
    // unconstrained: on a card with room for all, the VAE stays for the decode.
    let wanted = (wished_weights + activations).saturating_sub(held);
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
    let shares = split(for_weights, &footprint.leasts, &footprint.wishes);
    let room = |bytes: u64| Room {
        manager: Some(std::sync::Arc::clone(&manager)),
        bytes: Some(bytes),
    };
    tracing::info!(
        "sampling within {} MiB: {} MiB for the weights (unconstrained they would take {} MiB) beside {} MiB \
         for activations",
        manager.limit() >> 20,
        for_weights >> 20,
        wished_weights >> 20,
        activations >> 20
    );
    let mut rooms = shares.into_iter().map(room);
    SamplerRooms {
        unet: rooms.next().unwrap_or_default(),
        controlnets: rooms.collect(),
    }
}

/// `bytes` for several models' weights: each its least first (in order, as far as the bytes
/// go), the rest in proportion to each one's wish; the last takes what rounding leaves.
fn split(bytes: u64, leasts: &[u64], wishes: &[u64]) -> Vec<u64> {
    let spare = bytes.saturating_sub(leasts.iter().sum());
    let wished = wishes.iter().sum::<u64>().max(1);
    let mut left = bytes;
    let last = leasts.len().saturating_sub(1);
    leasts
        .iter()
        .zip(wishes)
        .enumerate()
        .map(|(number, (&least, &wish))| {
            let share = match number == last {
                true => left,
                false => (least + (spare as f64 * wish as f64 / wished as f64) as u64).min(left),
            };
            left -= share;
            share
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::split;

    const MIB: u64 = 1 << 20;

    #[test]
    fn each_model_gets_its_least_before_the_rest_is_shared_by_wish() {
        // The main job's UNet and IdentityNet at their smallest streaming settings.
        let shares = split(372 * MIB, &[188 * MIB, 118 * MIB], &[233 * MIB, 157 * MIB]);
        assert!(shares[0] >= 188 * MIB && shares[1] >= 118 * MIB, "{shares:?}");
        assert_eq!(shares.iter().sum::<u64>(), 372 * MIB);
        let shares = split(3900 * MIB, &[188 * MIB, 118 * MIB], &[300 * MIB, 100 * MIB]);
        assert_eq!(
            (shares.iter().sum::<u64>(), shares[0] > 2 * shares[1]),
            (3900 * MIB, true)
        );
    }

    #[test]
    fn a_chain_of_controlnets_shares_the_room_and_never_more_than_it() {
        let shares = split(
            1000 * MIB,
            &[200 * MIB, 100 * MIB, 100 * MIB],
            &[400 * MIB, 200 * MIB, 200 * MIB],
        );
        assert_eq!(shares.iter().sum::<u64>(), 1000 * MIB);
        assert!(shares[0] > shares[1] && shares[1] == shares[2], "{shares:?}");
        let short = split(250 * MIB, &[200 * MIB, 100 * MIB], &[400 * MIB, 200 * MIB]);
        assert_eq!(
            short,
            [200 * MIB, 50 * MIB],
            "the least goes first, in order, as far as it goes"
        );
    }
}
