//! Where a step of the UNet (or its ControlNet) sits, and how that reads to a weight placement.

use std::fmt;
use swapgraph_model::UnitGroup;

/// The part of the UNet a step belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Section {
    /// Always-resident input layers (conv_in, time and added-condition embeddings).
    Stem,
    /// Down block `n`.
    Down(usize),
    /// The middle block.
    Mid,
    /// Up block `n`.
    Up(usize),
    /// Output layers (final norm and conv).
    Head,
    /// Projections of the conditioning (the cross-attention layers' keys and values of the
    /// text): used once per conditioning, when a sampler projects it, not in every pass.
    Context,
}

impl Section {
    /// The section as a placement sees it, in a UNet of `levels` resolution levels: blocks named
    /// as diffusers names them, in the sections `down`, `mid` and `up` (BlockSwap's per-section
    /// switches), ranked by resolution (down block `n` and up block `levels - 1 - n` share one,
    /// the middle block sits at the deepest, the stem and head at the highest).
    pub fn group(self, levels: usize) -> UnitGroup {
        let deepest = levels.saturating_sub(1);
        match self {
            Self::Stem | Self::Head => UnitGroup::outside_blocks(0),
            Self::Down(n) => UnitGroup::in_block(self.to_string(), "down", n),
            Self::Mid => UnitGroup::in_block(self.to_string(), "mid", deepest),
            Self::Up(n) => UnitGroup::in_block(self.to_string(), "up", deepest.saturating_sub(n)),
            Self::Context => UnitGroup::once_per_conditioning(),
        }
    }
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stem => f.write_str("stem"),
            Self::Down(n) => write!(f, "down_blocks.{n}"),
            Self::Mid => f.write_str("mid_block"),
            Self::Up(n) => write!(f, "up_blocks.{n}"),
            Self::Head => f.write_str("head"),
            Self::Context => f.write_str("context projections"),
        }
    }
}
