//! BlockSwap: runs a model whose weights do not all fit on the device by keeping part of them in
//! host memory and copying each swapped unit in right before it runs.
//!
//! The swap code sees a model only as its unit list (names, sections, shapes): it plans which
//! units stream ([`plan`]), holds them ([`store`]) and plugs into the MODEL handle as a
//! placement ([`placement`]). The SDXL UNet, and any model exposing units, works unchanged.

pub mod doctor;
#[cfg(feature = "yardsticks")]
pub mod floor;
mod node;
#[cfg(feature = "cuda")]
mod pinned_arena;
pub mod pipeline;
pub mod placement;
pub mod plan;
pub mod preset;
pub mod probe;
pub mod report;
pub mod settings;
#[cfg(feature = "yardsticks")]
pub mod simulate;
pub mod store;
// The CUDA streaming path's operations; on the CPU only their tests are built.
#[cfg(any(feature = "cuda", test))]
mod stream_ops;
#[cfg(feature = "cuda")]
mod streaming;
mod timeline;

pub use plan::{plan, PlanError, SwapPlan};
pub use settings::{Granularity, SwapSettings};

use std::sync::Arc;
use swapgraph_model::StreamedFamily;
use swapgraph_node_api::{Pack, Registry, RegistryError, TypeFlag};

/// The BlockSwap pack: the `BlockSwap` node, `--blockswap-preset` on `run` and `validate`, and
/// `swapgraph doctor`, which streams and sizes a model of `family` (the model pack supplies it).
pub fn pack(family: Arc<dyn StreamedFamily>) -> Pack {
    Pack::new("BlockSwap", register)
        .type_flag(TypeFlag {
            flag: "blockswap-preset",
            value_name: "FILE",
            node_type: "BlockSwap",
            param: "preset",
            help: "A BlockSwap preset file (JSON with the keys enable_blockswap, blockswap_blocks, blockswap_down, \
                   blockswap_mid, blockswap_up, blockswap_nonblocking, blockswap_debug) for every BlockSwap node; \
                   the same as --set-type BlockSwap.preset=FILE.",
        })
        .command(doctor::doctor_command(family))
}

/// Adds the `BlockSwap` node to `registry`.
///
/// # Errors
/// [`RegistryError`] when the name is taken.
fn register(registry: &mut Registry) -> Result<(), RegistryError> {
    registry.register(node::BlockSwap::new())
}
