//! What a user asks of BlockSwap: the seed's controls plus granularity, prefetch and a budget.

/// How swapped weights move.
#[derive(Clone, Copy, Debug, PartialEq, Eq, swapgraph_node_api::Choice)]
pub enum Granularity {
    /// Each unit (resnet, transformer block, resampler) arrives just before it runs, the next
    /// `prefetch` units in flight; the device needs room for `prefetch + 1` units.
    Unit,
    /// A swapped block's units all arrive before the block runs (the seed's behaviour); the
    /// device needs room for the largest swapped block.
    Block,
}

/// BlockSwap's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SwapSettings {
    /// Blocks to swap in each enabled section (the largest ones first).
    pub blocks_to_swap: usize,
    /// Swap down blocks.
    pub swap_down: bool,
    /// Swap the middle block.
    pub swap_mid: bool,
    /// Swap up blocks.
    pub swap_up: bool,
    /// Copy on a side stream from page-locked memory (`true`), or copy then compute (`false`).
    pub non_blocking: bool,
    /// Transfer granularity.
    pub granularity: Granularity,
    /// Units in flight ahead of the one computing (unit granularity).
    pub prefetch: usize,
    /// A device-memory budget for weights in MiB; when set, it decides what is swapped.
    pub vram_budget_mb: Option<u64>,
    /// Publish the memory summary and per-unit timings.
    pub debug: bool,
}

impl Default for SwapSettings {
    fn default() -> Self {
        Self {
            blocks_to_swap: 2,
            swap_down: true,
            swap_mid: true,
            swap_up: true,
            non_blocking: true,
            granularity: Granularity::Unit,
            prefetch: 1,
            vram_budget_mb: None,
            debug: false,
        }
    }
}
