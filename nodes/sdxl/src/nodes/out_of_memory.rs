//! When the device runs out of memory while the sampler loads or runs the UNet, or the VAE
//! decodes: an error that says what was needed, what was free, and the BlockSwap budget or
//! tile size that fits, instead of the driver's bare `CUDA_ERROR_OUT_OF_MEMORY`.

use crate::measured::Measured;
use crate::unet::{step_activations, UNet};
use candle_core::{DType, Device};
use std::convert::Infallible;
use std::fmt;
use swapgraph_model::{device_memory, is_out_of_memory, ModelHandle, HEADROOM_FRACTION};
use swapgraph_node_api::NodeError;

/// Device memory the memory pool reserves around a step's activations beyond the activations
/// themselves, as a multiple of them: blocks of many sizes fragment it. Measured on an H200
/// with 6 GiB free at 1024x1024: 0.78 GiB of activations peaked at 4.52 GiB allocated and
/// 5.28 GiB reserved, and the largest budget that sampled was within 0.77 GiB of the first that
/// did not.
const POOL_OVERHEAD: f64 = 1.0;

/// Latent sides the activations are measured at, small enough to fit beside the weights; the
/// activations at the real size follow from a line through both, as they grow with the latent
/// area (attention is computed in bounded blocks).
const PROBE_SIDES: [usize; 2] = [16, 32];

/// `activations` with the memory the pool reserves around them.
fn with_pool_overhead(activations: u64) -> u64 {
    (activations as f64 * (1.0 + POOL_OVERHEAD)) as u64
}

/// What was on the device when the UNet ran out of memory, and what it needed.
#[derive(Clone, Debug, PartialEq)]
pub struct Shortfall {
    /// What the sampler was doing, e.g. "in step 1 of 30".
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
    /// Bytes of weights the smallest streaming setting keeps on the device: the placement's own
    /// figure when it streams, else at least the largest unit, which any streaming needs room
    /// for.
    pub minimum_weight_bytes: u64,
}

impl Shortfall {
    /// Device memory a step takes beside the weights: the activations and what the memory
    /// pool reserves around them.
    fn step_bytes(&self) -> Option<u64> {
        self.activation_bytes.map(with_pool_overhead)
    }

    /// The `vram_budget_mb` that fits beside a step with headroom, if any does.
    pub fn budget_mb(&self) -> Option<u64> {
        let for_weights = ((self.usable_bytes as f64) * (1.0 - HEADROOM_FRACTION)) as u64;
        let budget = for_weights.checked_sub(self.step_bytes()?)?;
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
            "out of device memory {} at {w}x{h}: the UNet keeps {} of weights on the device ({kept})",
            self.stage,
            gib(self.weight_bytes)
        )?;
        let free = format!(
            "{} of the device's {} is free for it (other models and processes hold the rest)",
            gib(self.usable_bytes),
            gib(self.total_bytes)
        );
        let (Some(activations), Some(step)) = (self.activation_bytes, self.step_bytes()) else {
            return write!(
                f,
                " and {free}; a step's activations at this size did not fit even without the weights: \
                 lower the resolution or free device memory held by other processes"
            );
        };
        let needed = ((self.weight_bytes + step) as f64 / (1.0 - HEADROOM_FRACTION)) as u64;
        write!(
            f,
            " and a step's activations about {}, as much again for the memory pool around them and {:.0}% \
             headroom: {} in all, but {free}. ",
            gib(activations),
            HEADROOM_FRACTION * 100.0,
            gib(needed),
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
        let kept = model.dtypes(dtype).kept;
        let largest = model
            .kept_units(dtype)
            .iter()
            .map(|unit| unit.bytes(kept))
            .max()
            .unwrap_or(0);
        let streaming_minimum = model.placement.streaming_minimum_bytes(model, dtype);
        let shortfall = Shortfall {
            stage: stage.to_owned(),
            size: (self.latent.1 * 8, self.latent.0 * 8),
            weight_bytes,
            streams: streaming_minimum.is_some(),
            activation_bytes: self.estimate_activations(),
            usable_bytes: memory.free + memory.reserved.saturating_sub(memory.allocated) + held,
            total_bytes: memory.total,
            minimum_weight_bytes: streaming_minimum.unwrap_or(largest),
        };
        tracing::debug!("{error}");
        NodeError::msg(shortfall.to_string())
    }

    /// Device memory a step takes beside the weights: its activations, measured, and what the
    /// memory pool reserves around them; `None` when they cannot be measured (the CPU).
    pub fn step_bytes(&self) -> Option<u64> {
        self.estimate_activations().map(with_pool_overhead)
    }

    /// A step's activations at the real latent size, extrapolated from measurements at two
    /// small sizes; `None` when even those do not fit or the device reports no memory.
    fn estimate_activations(&self) -> Option<u64> {
        // Measured once per UNet shape, dtypes and size on a card (see `measured`).
        static ACTIVATIONS: Measured<u64> = Measured::new("unet-step-activations");
        let key = format!(
            "{:?} {:?} {:?}",
            self.unet.config(),
            self.model.dtypes(self.dtype),
            self.latent
        );
        ACTIVATIONS
            .get_or_measure(self.device, &key, || Ok::<_, Infallible>(self.measure_activations()))
            .unwrap_or_else(|never| match never {})
    }

    /// Measures [`UNetOnDevice::estimate_activations`] on the device.
    fn measure_activations(&self) -> Option<u64> {
        let measure = |side: usize| {
            step_activations(self.unet, self.device, self.model.dtypes(self.dtype), (side, side))
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

/// The error for `error` from decoding an image of `size` (width, height) with the VAE on
/// `device`, in tiles of `tile_size` pixels or at once: out of memory says what was free and how
/// to decode in less; other errors pass through as messages.
pub fn explain_vae_decode(error: String, size: (usize, usize), tile_size: Option<usize>, device: &Device) -> NodeError {
    if !is_out_of_memory(&error) {
        return NodeError::msg(error);
    }
    let free = device_memory(device).map_or_else(String::new, |m| {
        let usable = m.free + m.reserved.saturating_sub(m.allocated);
        format!(" ({} of the device's {} free)", gib(usable), gib(m.total))
    });
    let advice = match tile_size {
        None => "decode in tiles with VAEDecodeTiled".to_owned(),
        Some(tile) if tile > 64 => format!(
            "lower VAEDecodeTiled's tile_size from {tile} to {} (a tile's memory grows with its area)",
            (tile / 2).max(64) / 8 * 8
        ),
        Some(_) => "free device memory held by other models or processes".to_owned(),
    };
    let (w, h) = size;
    NodeError::msg(format!(
        "out of device memory decoding {w}x{h} with the VAE{free}: {advice}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn shortfall() -> Shortfall {
        Shortfall {
            stage: "in step 1 of 30".into(),
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
    fn a_vae_decode_out_of_memory_says_how_to_decode_in_less() {
        let oom = || "DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")".to_owned();
        let at_once = explain_vae_decode(oom(), (1024, 768), None, &Device::Cpu).to_string();
        assert_eq!(
            at_once,
            "out of device memory decoding 1024x768 with the VAE: decode in tiles with VAEDecodeTiled"
        );
        let tiled = explain_vae_decode(oom(), (1024, 768), Some(512), &Device::Cpu).to_string();
        assert!(
            tiled.ends_with("lower VAEDecodeTiled's tile_size from 512 to 256 (a tile's memory grows with its area)")
        );
        let other = explain_vae_decode("shape mismatch".into(), (8, 8), None, &Device::Cpu);
        assert_eq!(other.to_string(), "shape mismatch");
    }

    #[test]
    fn a_resident_unet_that_does_not_fit_gets_a_budget() {
        let s = shortfall();
        // 4 GiB less 10% headroom is 3686 MiB; less twice 800 MiB of activations leaves 2086.
        assert_eq!(s.budget_mb(), Some(2086));
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
            text.ends_with("Put a BlockSwap node between the model and the sampler with vram_budget_mb: 2086"),
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
            .ends_with("Lower the BlockSwap node's vram_budget_mb to 2086"));
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
