//! Swap units: the pieces of a model whose weights move together.

use candle_core::{DType, Shape};

/// Where a unit sits in its network, as the network describes it to whoever places its weights:
/// BlockSwap plans from this alone, whatever the network's shape (a UNet's levels, a plain stack
/// of transformer blocks).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UnitGroup {
    /// The block whose units move together when whole blocks are swapped (`down_blocks.1`,
    /// `transformer_blocks.7`); `None` outside any block (a stem, a head).
    pub block: Option<String>,
    /// The section a per-section switch selects the block by (SDXL: `down`, `mid`, `up`).
    pub section: Option<&'static str>,
    /// How long the unit computes per byte of its weights, as a rank: 0 the longest (in a UNet,
    /// the highest resolution). A budget streams the lowest ranks first, where transfers hide
    /// best behind compute.
    pub rank: usize,
    /// Whether the unit runs in every forward pass; `false` for weights used once per
    /// conditioning (the projections of the text into the cross-attention's keys and values).
    pub every_pass: bool,
}

impl UnitGroup {
    /// A unit of block `block` in section `section`, at `rank`.
    pub fn in_block(block: impl Into<String>, section: &'static str, rank: usize) -> Self {
        Self {
            block: Some(block.into()),
            section: Some(section),
            rank,
            every_pass: true,
        }
    }

    /// A unit outside any block (a stem, a head), at `rank`.
    pub fn outside_blocks(rank: usize) -> Self {
        Self {
            block: None,
            section: None,
            rank,
            every_pass: true,
        }
    }

    /// Weights used once per conditioning rather than in every pass.
    pub fn once_per_conditioning() -> Self {
        Self {
            every_pass: false,
            ..Self::outside_blocks(0)
        }
    }
}

/// One swap unit: a key prefix (`down_blocks.1.attentions.0.transformer_blocks.0`), its place in
/// the network, and the tensors under that prefix with their shapes, in the order the unit's code
/// asks for them.
#[derive(Clone, Debug, PartialEq)]
pub struct UnitSpec {
    /// The key prefix of the unit's tensors, in diffusers naming.
    pub name: String,
    /// Where the unit sits in its network.
    pub group: UnitGroup,
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
