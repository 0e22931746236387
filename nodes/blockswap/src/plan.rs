//! Which units to stream: by the seed's per-section block counts, or to fit a device budget.
//!
//! A block is a top-level `down_blocks.N`, `mid_block` or `up_blocks.N`; the stem and head are
//! always resident. In budget mode, units are swapped in order of how well their transfer hides
//! behind compute: a unit's weights are used once per spatial position, so units at high
//! resolution compute longest per byte and go first, larger units before smaller at a level.

use crate::settings::{Granularity, SwapSettings};
use candle_core::DType;
use std::collections::BTreeMap;
use swapgraph_model::{Section, UnitSpec};

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
    #[error("vram_budget_mb {budget_mb} MiB is too small: this model needs at least {minimum_mb} MiB of device memory for weights (stem, head and {buffers} transfer buffers); raise the budget to {minimum_mb} or more")]
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

/// The block a unit belongs to (`down_blocks.1`), or `None` for the stem and head.
pub fn block_of(unit: &UnitSpec) -> Option<String> {
    match unit.section {
        Section::Stem | Section::Head => None,
        Section::Down(n) => Some(format!("down_blocks.{n}")),
        Section::Mid => Some("mid_block".to_string()),
        Section::Up(n) => Some(format!("up_blocks.{n}")),
    }
}

/// Plans `units` (in `dtype`) under `settings`.
///
/// # Errors
/// [`PlanError`] for a block count beyond a section's blocks or an impossible budget.
pub fn plan(units: &[UnitSpec], dtype: DType, settings: &SwapSettings) -> Result<SwapPlan, PlanError> {
    let swapped = match settings.vram_budget_mb {
        Some(budget) => by_budget(units, dtype, settings, budget)?,
        None => by_blocks(units, dtype, settings)?,
    };
    Ok(summarize(units, dtype, settings, swapped))
}

fn block_bytes(units: &[UnitSpec], dtype: DType) -> BTreeMap<String, (Section, u64)> {
    let mut blocks = BTreeMap::new();
    for unit in units {
        if let Some(block) = block_of(unit) {
            blocks.entry(block).or_insert((unit.section, 0)).1 += unit.bytes(dtype);
        }
    }
    blocks
}

/// Whether a section belongs to one of the seed's three section switches.
type InSection = fn(&Section) -> bool;

fn by_blocks(units: &[UnitSpec], dtype: DType, settings: &SwapSettings) -> Result<Vec<bool>, PlanError> {
    let blocks = block_bytes(units, dtype);
    let sections: [(bool, InSection); 3] = [
        (settings.swap_down, |s| matches!(s, Section::Down(_))),
        (settings.swap_mid, |s| matches!(s, Section::Mid)),
        (settings.swap_up, |s| matches!(s, Section::Up(_))),
    ];
    // A count applies to every enabled section, taking all of a section with fewer blocks (the
    // single middle block); it may not exceed the largest section.
    let largest = sections
        .iter()
        .map(|(_, belongs)| blocks.values().filter(|(section, _)| belongs(section)).count())
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
    for (_, belongs) in sections.into_iter().filter(|(enabled, _)| *enabled) {
        let mut members: Vec<(&String, u64)> = blocks
            .iter()
            .filter(|(_, (section, _))| belongs(section))
            .map(|(b, (_, bytes))| (b, *bytes))
            .collect();
        members.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        chosen.extend(
            members
                .into_iter()
                .take(settings.blocks_to_swap)
                .map(|(b, _)| b.clone()),
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
    let mut swapped = vec![false; units.len()];
    let fits = |swapped: &[bool]| summarize(units, dtype, settings, swapped.to_vec()).device_bytes() <= budget;
    if fits(&swapped) {
        return Ok(swapped);
    }
    let mut order: Vec<usize> = (0..units.len()).filter(|&i| block_of(&units[i]).is_some()).collect();
    order.sort_by_key(|&i| {
        (
            resolution_rank(units[i].section),
            std::cmp::Reverse(units[i].bytes(dtype)),
            i,
        )
    });
    for i in order {
        swapped[i] = true;
        if fits(&swapped) {
            return Ok(swapped);
        }
    }
    let everything = summarize(units, dtype, settings, swapped);
    let buffers = match settings.granularity {
        Granularity::Unit => settings.prefetch + 1,
        Granularity::Block => 1,
    };
    Err(PlanError::BudgetTooSmall {
        budget_mb,
        minimum_mb: everything.device_bytes().div_ceil(1024 * 1024),
        buffers,
    })
}

/// Lower ranks swap first: the highest resolutions (down 0 / up 2 for SDXL) hide transfers best.
fn resolution_rank(section: Section) -> usize {
    match section {
        Section::Down(n) => n,
        Section::Up(n) => 2usize.saturating_sub(n),
        Section::Mid => 3,
        Section::Stem | Section::Head => usize::MAX,
    }
}

fn summarize(units: &[UnitSpec], dtype: DType, settings: &SwapSettings, swapped: Vec<bool>) -> SwapPlan {
    let mut resident_bytes = 0;
    let mut streamed_bytes = 0;
    let mut largest_unit = 0;
    let mut per_block: BTreeMap<String, u64> = BTreeMap::new();
    for (unit, &streams) in units.iter().zip(&swapped) {
        let bytes = unit.bytes(dtype);
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
    }
}
