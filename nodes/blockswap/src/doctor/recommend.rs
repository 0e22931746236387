//! BlockSwap settings for a device: the largest weight budget that leaves room for the
//! activations at a resolution, and the block count that matches it.

use crate::plan::{plan, PlanError};
use crate::settings::SwapSettings;
use candle_core::DType;
use swapgraph_model::UnitSpec;

pub use swapgraph_model::HEADROOM_FRACTION;

/// What to use at one resolution.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Recommendation {
    /// Image side in pixels.
    pub resolution: usize,
    /// Activation memory measured at this resolution.
    pub activation_bytes: u64,
    /// Memory of the models resident beside the UNet (text encoders, VAE).
    pub companion_bytes: u64,
    /// What fits.
    pub fit: Fit,
}

/// How the model fits a device at a resolution.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "fit")]
pub enum Fit {
    /// Every weight fits with the activations: no BlockSwap needed.
    Resident,
    /// BlockSwap with this budget; `blocks_to_swap` is the smallest block count that fits it
    /// (`None` when only the unit-level budget fits), and each step streams `streamed_bytes`.
    Swap {
        /// `vram_budget_mb`.
        budget_mb: u64,
        /// The equivalent `blocks_to_swap`, if any block count fits.
        blocks_to_swap: Option<usize>,
        /// Bytes copied per forward pass with the budget.
        streamed_bytes: u64,
    },
    /// Not even a full swap fits: the weights need `minimum_mb` beyond what is free.
    TooSmall {
        /// Smallest weight budget BlockSwap can work with.
        minimum_mb: u64,
        /// What is left for weights after activations and headroom.
        available_mb: u64,
    },
}

/// Settings for `units` (in `dtype`) on a device with `free_bytes` free, of which
/// `companion_bytes` go to models that stay resident beside it (text encoders, VAE), at
/// `resolution` whose activations take `activation_bytes`.
///
/// # Errors
/// A [`PlanError`] other than a too-small budget (a model without swap units).
pub fn recommend(
    units: &[UnitSpec],
    dtype: DType,
    free_bytes: u64,
    companion_bytes: u64,
    resolution: usize,
    activation_bytes: u64,
) -> Result<Recommendation, PlanError> {
    let usable = (free_bytes as f64 * (1.0 - HEADROOM_FRACTION)) as u64;
    let for_weights = usable.saturating_sub(activation_bytes + companion_bytes);
    let total: u64 = units.iter().map(|u| u.bytes(dtype)).sum();
    let fit = if total <= for_weights {
        Fit::Resident
    } else {
        let budget_mb = for_weights / (1 << 20);
        let budget = SwapSettings {
            vram_budget_mb: Some(budget_mb),
            ..SwapSettings::default()
        };
        match plan(units, dtype, &budget) {
            Ok(swap) => Fit::Swap {
                budget_mb,
                blocks_to_swap: (1..=3).find(|&blocks| {
                    let by_blocks = SwapSettings {
                        blocks_to_swap: blocks,
                        ..SwapSettings::default()
                    };
                    plan(units, dtype, &by_blocks).is_ok_and(|p| p.device_bytes() <= for_weights)
                }),
                streamed_bytes: swap.streamed_bytes,
            },
            Err(PlanError::BudgetTooSmall { minimum_mb, .. }) => Fit::TooSmall {
                minimum_mb,
                available_mb: budget_mb,
            },
            Err(other) => return Err(other),
        }
    };
    Ok(Recommendation {
        resolution,
        activation_bytes,
        companion_bytes,
        fit,
    })
}
