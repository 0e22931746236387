//! BlockSwap: runs a model whose weights do not all fit on the device by keeping part of them in
//! host memory and copying each swapped unit in right before it runs.
//!
//! The swap code sees a model only as its unit list (names, sections, shapes): it plans which
//! units stream ([`plan`]), holds them ([`store`]) and plugs into the MODEL handle as a
//! placement ([`placement`]). The SDXL UNet, and any model exposing units, works unchanged.

pub mod doctor;
pub mod floor;
mod node;
pub mod pipeline;
pub mod placement;
pub mod plan;
pub mod preset;
pub mod probe;
pub mod report;
pub mod settings;
pub mod simulate;
pub mod store;
#[cfg(feature = "cuda")]
mod streaming;

pub use plan::{plan, PlanError, SwapPlan};
pub use settings::{Granularity, SwapSettings};

use swapgraph_node_api::{Registry, RegistryError};

/// Adds the `BlockSwap` node to `registry`.
///
/// # Errors
/// [`RegistryError`] when the name is taken.
pub fn register(registry: &mut Registry) -> Result<(), RegistryError> {
    registry.register(node::BlockSwap::new())
}
