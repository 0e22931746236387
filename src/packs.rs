//! The node packs the swapgraph binary ships. The engine itself never names a pack; this list
//! is the one place that does, shared by the binary, its tests and the fuzz targets.

use swapgraph_node_api::{Registry, RegistryError};

/// A registry with every shipped pack's node types: utilities, SDXL, images, BlockSwap and
/// InstantID.
///
/// # Errors
/// [`RegistryError`] when two packs register the same node type.
pub fn registry() -> Result<Registry, RegistryError> {
    let mut registry = Registry::new();
    swapgraph_utils::register(&mut registry)?;
    swapgraph_sdxl::register(&mut registry)?;
    swapgraph_image::register(&mut registry)?;
    swapgraph_blockswap::register(&mut registry)?;
    swapgraph_instantid::register(&mut registry)?;
    Ok(registry)
}
