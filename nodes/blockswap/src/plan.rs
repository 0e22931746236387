//! Which units to stream: by the seed's per-section block counts, or to fit a device budget,
//! from what the network says of each unit ([`swapgraph_model::UnitGroup`]) and nothing else.
//!
//! Blocks are the network's (SDXL: `down_blocks.N`, `mid_block`, `up_blocks.N`; a plain stack:
//! its transformer blocks). Block counts swap blocks and keep units outside blocks resident. In
//! budget mode, whole ranks are swapped from the lowest up (in a UNet the highest resolution: a
//! unit's weights are used once per spatial position, so there its transfer hides best behind its
//! compute), and the rank that only needs part swapped has its swapped units spread evenly
//! through it, so resident compute separates their transfers.
//!
//! Units used once per conditioning (the context projections) run outside the passes: they stay
//! on the host under any plan and are copied in when the conditioning is projected, outside the
//! budget and the transfer ring.

use crate::settings::{Granularity, SwapSettings};
use candle_core::DType;
use std::collections::{BTreeMap, BTreeSet};
use swapgraph_model::UnitSpec;

/// Why a plan cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// `blocks_to_swap` exceeds the largest section.
    #[error("blocks_to_swap {asked} is more than this model's {available} {section}; valid range 0..={available}")]
    TooManyBlocks {
        /// The value given.
        asked: usize,
        /// Blocks the section has.
        available: usize,
        /// Which section, e.g. "down blocks".
        section: &'static str,
    },
    /// Even with everything swappable swapped, the weights exceed the budget.
    #[error("vram_budget_mb {budget_mb} MiB is too small: this model needs at least {minimum_mb} MiB of device memory for weights (everything streamed through {buffers} transfer buffers); raise the budget to {minimum_mb} or more")]
    BudgetTooSmall {
        /// The budget given.
        budget_mb: u64,
        /// The smallest budget that works.
        minimum_mb: u64,
        /// Transfer buffers counted.
        buffers: usize,
    },
    /// The model has no swap units.
    #[error("model \"{model}\" ({kind}) has no swap units; BlockSwap supports the SDXL UNet and ControlNet")]
    NoUnits {
        /// The model's name.
        model: String,
        /// Its kind.
        kind: String,
    },
}

/// The outcome: which units stream, and the memory that follows.
#[derive(Clone, Debug, PartialEq)]
pub struct SwapPlan {
    /// `swapped[i]`: unit `i` streams from host memory.
    pub swapped: Vec<bool>,
    /// Blocks with at least one swapped unit, e.g. `up_blocks.0`.
    pub swapped_blocks: Vec<String>,
    /// Bytes of weights that stay on the device.
    pub resident_bytes: u64,
    /// Bytes streamed per forward pass.
    pub streamed_bytes: u64,
    /// Bytes of the device buffers that receive streamed weights.
    pub buffer_bytes: u64,
    /// Bytes of the context projections, held on the host and copied in once per conditioning.
    pub context_bytes: u64,
    /// Units that run in every pass (all but the context projections).
    pub pass_units: usize,
}

impl SwapPlan {
    /// Device memory for weights: resident weights plus transfer buffers.
    pub fn device_bytes(&self) -> u64 {
        self.resident_bytes + self.buffer_bytes
    }

    /// Units that stream.
    pub fn swapped_units(&self) -> usize {
        self.swapped.iter().filter(|s| **s).count()
    }
}

/// The block a unit belongs to (`down_blocks.1`), or `None` outside blocks and for weights
/// used once per conditioning.
pub fn block_of(unit: &UnitSpec) -> Option<String> {
    unit.group.block.clone().filter(|_| unit.group.every_pass)
}

/// Plans `units` (in `dtype`) under `settings`.
///
/// # Errors
/// [`PlanError`] for a block count beyond a section's blocks or an impossible budget.
pub fn plan(units: &[UnitSpec], dtype: DType, settings: &SwapSettings) -> Result<SwapPlan, PlanError> {
    let Some(budget_mb) = settings.vram_budget_mb else {
        return Ok(summarize(units, dtype, settings, by_blocks(units, dtype, settings)?));
    };
    let mut plan = summarize(units, dtype, settings, by_budget(units, dtype, settings, budget_mb)?);
    // The ring takes what the budget leaves: more room to copy ahead while resident and
    // high-resolution units compute, at no cost in device memory the budget did not allow.
    if settings.granularity == Granularity::Unit && plan.swapped_units() > 0 {
        plan.buffer_bytes = plan
            .buffer_bytes
            .max((budget_mb << 20).saturating_sub(plan.resident_bytes));
    }
    Ok(plan)
}

/// Each block's section, bytes and first unit (its place in execution order).
fn block_bytes(units: &[UnitSpec], dtype: DType) -> BTreeMap<String, (Option<&'static str>, u64, usize)> {
    let mut blocks = BTreeMap::new();
    for (index, unit) in units.iter().enumerate() {
        if let Some(block) = block_of(unit) {
            blocks.entry(block).or_insert((unit.group.section, 0, index)).1 += unit.bytes(dtype);
        }
    }
    blocks
}

/// Whether the seed's switches enable `section`: `swap_down`, `swap_mid` and `swap_up` name
/// SDXL's sections; a network's other sections have no switch and are always enabled.
fn section_enabled(section: Option<&str>, settings: &SwapSettings) -> bool {
    match section {
        Some("down") => settings.swap_down,
        Some("mid") => settings.swap_mid,
        Some("up") => settings.swap_up,
        _ => true,
    }
}

fn by_blocks(units: &[UnitSpec], dtype: DType, settings: &SwapSettings) -> Result<Vec<bool>, PlanError> {
    let blocks = block_bytes(units, dtype);
    let sections: BTreeSet<Option<&'static str>> = blocks.values().map(|(section, ..)| *section).collect();
    // A count applies to every enabled section, taking all of a section with fewer blocks (the
    // single middle block); it may not exceed the largest section.
    let members = |section: Option<&'static str>| blocks.iter().filter(move |(_, (s, ..))| *s == section);
    let largest = sections
        .iter()
        .map(|&section| members(section).count())
        .max()
        .unwrap_or(0);
    if settings.blocks_to_swap > largest {
        return Err(PlanError::TooManyBlocks {
            asked: settings.blocks_to_swap,
            available: largest,
            section: "blocks per section",
        });
    }
    let mut chosen = Vec::new();
    for section in sections.into_iter().filter(|&s| section_enabled(s, settings)) {
        let mut largest_first: Vec<(&String, u64, usize)> = members(section)
            .map(|(b, (_, bytes, first))| (b, *bytes, *first))
            .collect();
        largest_first.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)));
        chosen.extend(
            largest_first
                .into_iter()
                .take(settings.blocks_to_swap)
                .map(|(b, ..)| b.clone()),
        );
    }
    Ok(units
        .iter()
        .map(|u| block_of(u).is_some_and(|b| chosen.contains(&b)))
        .collect())
}

fn by_budget(
    units: &[UnitSpec],
    dtype: DType,
    settings: &SwapSettings,
    budget_mb: u64,
) -> Result<Vec<bool>, PlanError> {
    let budget = budget_mb * 1024 * 1024;
    let fits = |swapped: &[bool]| summarize(units, dtype, settings, swapped.to_vec()).device_bytes() <= budget;
    let mut swapped = vec![false; units.len()];
    if fits(&swapped) {
        return Ok(swapped);
    }
    for level in resolution_levels(units) {
        for &i in &level {
            swapped[i] = true;
        }
        if fits(&swapped) {
            thin_out(&mut swapped, &level, units, dtype, &fits);
            return Ok(swapped);
        }
    }
    let buffers = match settings.granularity {
        Granularity::Unit => settings.prefetch + 1,
        Granularity::Block => 1,
    };
    Err(PlanError::BudgetTooSmall {
        budget_mb,
        minimum_mb: minimum_device_bytes(units, dtype, settings).div_ceil(1024 * 1024),
        buffers,
    })
}

/// The least device memory `units` take in `dtype` under `settings`' granularity and prefetch:
/// everything streamed, the transfer buffers alone on the device.
pub fn minimum_device_bytes(units: &[UnitSpec], dtype: DType, settings: &SwapSettings) -> u64 {
    summarize(units, dtype, settings, vec![true; units.len()]).device_bytes()
}

/// Swappable units grouped by the rank their network gives them, lowest first (in a UNet, the
/// highest resolution), each group in execution order.
///
/// A unit's weights are used once per token or spatial position, so where it computes longer
/// per byte its transfer hides better: whole ranks swap from the lowest up. In SDXL, down block
/// `n` and up block `deepest - n` share a resolution and the middle block sits at the deepest;
/// the stem and head run at the highest: streamed, their few weights cross the bus while the
/// highest level computes and leave their room to the deep blocks, whose copies the bus is short
/// of time for. A plain stack of equal blocks is one rank, spread evenly.
fn resolution_levels(units: &[UnitSpec]) -> Vec<Vec<usize>> {
    let mut levels: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, unit) in units.iter().enumerate().filter(|(_, u)| u.group.every_pass) {
        levels.entry(unit.group.rank).or_default().push(i);
    }
    levels.into_values().collect()
}

/// Streams as little of `level` (all of it swapped on entry) as still `fits`, spread evenly
/// through the level's execution order.
///
/// Resident units between swapped ones are compute the copy stream can hide the next swapped
/// unit's transfer behind; the same bytes swapped as one run would leave the compute stream
/// waiting on the bus. The spread is error diffusion over bytes at a swapped fraction, the
/// smallest fraction that fits found by bisection (the whole level, fraction 1, fits).
fn thin_out(swapped: &mut [bool], level: &[usize], units: &[UnitSpec], dtype: DType, fits: &dyn Fn(&[bool]) -> bool) {
    let spread = |swapped: &mut [bool], fraction: f64| {
        let mut owed = 0.0;
        for &i in level {
            let bytes = units[i].bytes(dtype) as f64;
            owed += fraction * bytes;
            swapped[i] = owed >= bytes / 2.0;
            if swapped[i] {
                owed -= bytes;
            }
        }
    };
    let (mut low, mut high) = (0.0, 1.0);
    for _ in 0..32 {
        let middle = (low + high) / 2.0;
        spread(swapped, middle);
        if fits(swapped) {
            high = middle;
        } else {
            low = middle;
        }
    }
    spread(swapped, high);
}

fn summarize(units: &[UnitSpec], dtype: DType, settings: &SwapSettings, swapped: Vec<bool>) -> SwapPlan {
    let mut resident_bytes = 0;
    let mut streamed_bytes = 0;
    let mut context_bytes = 0;
    let mut pass_units = 0;
    let mut largest_unit = 0;
    let mut per_block: BTreeMap<String, u64> = BTreeMap::new();
    for (unit, &streams) in units.iter().zip(&swapped) {
        let bytes = unit.bytes(dtype);
        if !unit.group.every_pass {
            context_bytes += bytes;
            continue;
        }
        pass_units += 1;
        if streams {
            streamed_bytes += bytes;
            largest_unit = largest_unit.max(bytes);
            if let Some(block) = block_of(unit) {
                *per_block.entry(block).or_default() += bytes;
            }
        } else {
            resident_bytes += bytes;
        }
    }
    let buffer_bytes = match settings.granularity {
        Granularity::Unit => (settings.prefetch as u64 + 1) * largest_unit,
        Granularity::Block => per_block.values().copied().max().unwrap_or(0),
    };
    SwapPlan {
        swapped,
        swapped_blocks: per_block.into_keys().collect(),
        resident_bytes,
        streamed_bytes,
        buffer_bytes,
        context_bytes,
        pass_units,
    }
}
