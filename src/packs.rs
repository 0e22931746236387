//! The node packs the swapgraph binary ships. The engine itself never names a pack; this list
//! is the one place that does, shared by the binary, its tests and the fuzz targets.

use std::sync::Arc;
use swapgraph_node_api::{Pack, Registry, RegistryError};

/// Every shipped pack, in registration order (a pack comes after those whose socket types it
/// uses): utilities, SDXL, images, BlockSwap and InstantID.
pub fn packs() -> Vec<Pack> {
    vec![
        Pack::new("utilities", swapgraph_utils::register),
        Pack::new("SDXL", swapgraph_sdxl::register),
        Pack::new("images", swapgraph_image::register),
        swapgraph_blockswap::pack(Arc::new(swapgraph_sdxl::SdxlFamily)),
        Pack::new("InstantID", swapgraph_instantid::register),
    ]
}

/// A registry with every shipped pack's types.
///
/// # Errors
/// [`RegistryError`] when two packs register the same type.
pub fn registry() -> Result<Registry, RegistryError> {
    registry_of(&packs())
}

/// A registry with `packs`' types.
///
/// # Errors
/// [`RegistryError`] when two packs register the same type, or a pack uses a socket type no
/// pack before it registered.
pub fn registry_of(packs: &[Pack]) -> Result<Registry, RegistryError> {
    let mut registry = Registry::new();
    for pack in packs {
        (pack.register)(&mut registry)?;
    }
    Ok(registry)
}
