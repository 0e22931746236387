//! Swap units: the pieces of a model whose weights move together.

use candle_core::{DType, Shape};
use std::fmt;

/// Where in a model a unit sits; BlockSwap's per-section controls select by it.
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
    /// Always-resident output layers (final norm and conv).
    Head,
    /// Projections of the conditioning (the cross-attention layers' keys and values of the
    /// text): used once per conditioning, when a sampler projects it, not in every pass.
    Context,
}

impl Section {
    /// Whether the section's units run in every forward pass (all but [`Section::Context`]).
    pub fn in_every_pass(self) -> bool {
        self != Self::Context
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

/// One swap unit: a key prefix (`down_blocks.1.attentions.0.transformer_blocks.0`), its section,
/// and the tensors under that prefix with their shapes, in the order the unit's code asks for
/// them.
#[derive(Clone, Debug, PartialEq)]
pub struct UnitSpec {
    /// The key prefix of the unit's tensors, in diffusers naming.
    pub name: String,
    /// The section the unit belongs to.
    pub section: Section,
    /// Tensor names relative to `name`, with shapes.
    pub tensors: Vec<(String, Shape)>,
}

impl UnitSpec {
    /// Number of parameters in the unit.
    pub fn parameter_count(&self) -> usize {
        self.tensors.iter().map(|(_, shape)| shape.elem_count()).sum()
    }

    /// Bytes the unit's weights take in `dtype`.
    pub fn bytes(&self, dtype: DType) -> u64 {
        (self.parameter_count() * dtype.size_in_bytes()) as u64
    }

    /// The full key of a tensor of this unit.
    pub fn key(&self, tensor: &str) -> String {
        if self.name.is_empty() {
            tensor.to_string()
        } else {
            format!("{}.{tensor}", self.name)
        }
    }
}
