//! When the device runs out of memory while the sampler loads or runs the UNet: an error that
//! says what was needed, what was free, and the BlockSwap budget that fits, instead of the
//! driver's bare `CUDA_ERROR_OUT_OF_MEMORY`.

use crate::unet::{step_activations, UNet};
use candle_core::{DType, Device};
use std::fmt;
use swapgraph_model::{device_memory, ModelHandle, Section, HEADROOM_FRACTION};
use swapgraph_node_api::NodeError;

/// Units whose transfer buffers BlockSwap's smallest setting needs beside the stem and head
/// (the one computing and, with the default prefetch of 2, two in flight).
const MINIMUM_BUFFERS: u64 = 3;

/// Latent sides the activations are measured at, small enough to fit beside the weights; the
/// activations at the real size follow from a line through both, as they grow with the latent
/// area (attention is computed in bounded blocks).
const PROBE_SIDES: [usize; 2] = [16, 32];

/// Whether a device error is the device running out of memory.
pub fn is_out_of_memory(error: &str) -> bool {
    error.contains("CUDA_ERROR_OUT_OF_MEMORY") || error.contains("out of memory")
}

/// What was on the device when the UNet ran out of memory, and what it needed.
#[derive(Clone, Debug, PartialEq)]
pub struct Shortfall {
    /// What the sampler was doing, e.g. "step 1 of 30".
    pub stage: String,
    /// The image size in pixels, width by height.
    pub size: (usize, usize),
    /// Bytes of weights the model's placement keeps on the device.
    pub weight_bytes: u64,
    /// Whether the model already streams through BlockSwap.
    pub streams: bool,
    /// Activation bytes of one step at this size, `None` where they could not be measured.
    pub activation_bytes: Option<u64>,
    /// Bytes the UNet could have: free device memory, the memory pool's cached blocks and the
    /// UNet's own weights if they were loaded.
    pub usable_bytes: u64,
    /// The device's total memory.
    pub total_bytes: u64,
    /// Bytes of weights BlockSwap's smallest setting keeps on the device.
    pub minimum_weight_bytes: u64,
}

impl Shortfall {
    /// The `vram_budget_mb` that fits beside the activations with headroom, if any does.
    pub fn budget_mb(&self) -> Option<u64> {
        let activations = self.activation_bytes?;
        let for_weights = ((self.usable_bytes as f64) * (1.0 - HEADROOM_FRACTION)) as u64;
        let budget = for_weights.checked_sub(activations)?;
        (budget >= self.minimum_weight_bytes).then_some(budget >> 20)
    }
}

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / f64::from(1u32 << 30))
}

impl fmt::Display for Shortfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (w, h) = self.size;
        let kept = if self.streams { "with BlockSwap" } else { "all of them" };
        write!(
            f,
            "out of device memory in {} at {w}x{h}: the UNet keeps {} of weights on the device ({kept})",
            self.stage,
            gib(self.weight_bytes)
        )?;
        let free = format!(
            "{} of the device's {} is free for it (other models and processes hold the rest)",
            gib(self.usable_bytes),
            gib(self.total_bytes)
        );
        let Some(activations) = self.activation_bytes else {
            return write!(
                f,
                " and {free}; a step's activations at this size did not fit even without the weights: \
                 lower the resolution or free device memory held by other processes"
            );
        };
        let needed = ((self.weight_bytes + activations) as f64 / (1.0 - HEADROOM_FRACTION)) as u64;
        write!(
            f,
            " and a step's activations need about {}, {} with {:.0}% headroom, but {free}. ",
            gib(activations),
            gib(needed),
            HEADROOM_FRACTION * 100.0
        )?;
        match (self.budget_mb(), self.streams) {
            (Some(budget), false) => write!(
                f,
                "Put a BlockSwap node between the model and the sampler with vram_budget_mb: {budget}"
            ),
            (Some(budget), true) => write!(f, "Lower the BlockSwap node's vram_budget_mb to {budget}"),
            (None, _) => write!(
                f,
                "Even BlockSwap's smallest setting keeps {} of weights on the device, which does not fit beside \
                 the activations: lower the resolution or free device memory held by other processes",
                gib(self.minimum_weight_bytes)
            ),
        }
    }
}

/// The sampler's UNet on its device, as an out-of-memory error needs to describe it.
pub struct UNetOnDevice<'a> {
    /// The model, for its placement.
    pub model: &'a ModelHandle,
    /// Its network.
    pub unet: &'a UNet,
    /// The device it runs on.
    pub device: &'a Device,
    /// The weights' dtype.
    pub dtype: DType,
    /// Latent height and width.
    pub latent: (usize, usize),
}

impl UNetOnDevice<'_> {
    /// The error for `error` at `stage`: an explained [`Shortfall`] when it is the device
    /// running out of memory, else the message as it is. `weights_loaded` says whether the
    /// model's weights were on the device when it failed.
    pub fn explain(&self, error: String, stage: &str, weights_loaded: bool) -> NodeError {
        if !is_out_of_memory(&error) {
            return NodeError::msg(error);
        }
        let Some(memory) = device_memory(self.device) else {
            return NodeError::msg(error);
        };
        let (model, dtype) = (self.model, self.dtype);
        let weight_bytes = model.placement.device_bytes(model, dtype);
        let held = if weights_loaded { weight_bytes } else { 0 };
        let units = self.unet.units();
        let largest = units.iter().map(|unit| unit.bytes(dtype)).max().unwrap_or(0);
        let stem_and_head: u64 = units
            .iter()
            .filter(|unit| matches!(unit.section, Section::Stem | Section::Head))
            .map(|unit| unit.bytes(dtype))
            .sum();
        let shortfall = Shortfall {
            stage: stage.to_owned(),
            size: (self.latent.1 * 8, self.latent.0 * 8),
            weight_bytes,
            streams: model.placement.streams(),
            activation_bytes: self.estimate_activations(),
            usable_bytes: memory.free + memory.reserved.saturating_sub(memory.allocated) + held,
            total_bytes: memory.total,
            minimum_weight_bytes: stem_and_head + MINIMUM_BUFFERS * largest,
        };
        tracing::debug!("{error}");
        NodeError::msg(shortfall.to_string())
    }

    /// A step's activations at the real latent size, extrapolated from measurements at two
    /// small sizes; `None` when even those do not fit or the device reports no memory.
    fn estimate_activations(&self) -> Option<u64> {
        let measure = |side: usize| {
            step_activations(self.unet, self.device, self.dtype, (side, side))
                .ok()
                .flatten()
        };
        let [small, large] = PROBE_SIDES.map(measure);
        let (small, large) = (small? as f64, large? as f64);
        let area = |side: usize| (side * side) as f64;
        let per_area = (large - small) / (area(PROBE_SIDES[1]) - area(PROBE_SIDES[0]));
        let at_size = small + per_area * ((self.latent.0 * self.latent.1) as f64 - area(PROBE_SIDES[0]));
        Some(at_size.max(large) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn shortfall() -> Shortfall {
        Shortfall {
            stage: "step 1 of 30".into(),
            size: (1024, 1024),
            weight_bytes: 4_780 << 20,
            streams: false,
            activation_bytes: Some(800 << 20),
            usable_bytes: 4 * GIB,
            total_bytes: 8 * GIB,
            minimum_weight_bytes: 300 << 20,
        }
    }

    #[test]
    fn recognises_the_drivers_out_of_memory() {
        assert!(is_out_of_memory(
            "DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")"
        ));
        assert!(!is_out_of_memory("shape mismatch in matmul"));
    }

    #[test]
    fn a_resident_unet_that_does_not_fit_gets_a_budget() {
        let s = shortfall();
        // 4 GiB less 10% headroom is 3686 MiB; less 800 MiB of activations leaves 2886 MiB.
        assert_eq!(s.budget_mb(), Some(2886));
        let text = s.to_string();
        assert!(
            text.starts_with("out of device memory in step 1 of 30 at 1024x1024"),
            "{text}"
        );
        assert!(
            text.contains("4.67 GiB of weights") && text.contains("0.78 GiB"),
            "{text}"
        );
        assert!(text.contains("4.00 GiB of the device's 8.00 GiB"), "{text}");
        assert!(
            text.ends_with("Put a BlockSwap node between the model and the sampler with vram_budget_mb: 2886"),
            "{text}"
        );
    }

    #[test]
    fn a_streaming_unet_is_told_to_lower_its_budget() {
        let s = Shortfall {
            streams: true,
            ..shortfall()
        };
        assert!(s
            .to_string()
            .ends_with("Lower the BlockSwap node's vram_budget_mb to 2886"));
    }

    #[test]
    fn too_little_memory_for_any_budget_says_so() {
        let s = Shortfall {
            usable_bytes: GIB,
            ..shortfall()
        };
        assert_eq!(s.budget_mb(), None);
        assert!(s.to_string().contains("lower the resolution"), "{s}");
        let unmeasured = Shortfall {
            activation_bytes: None,
            ..shortfall()
        };
        assert!(unmeasured.to_string().contains("did not fit even without the weights"));
    }
}
