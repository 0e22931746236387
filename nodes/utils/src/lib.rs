//! swapgraph's utility node pack: primitive values, text joining, and saving text.
//!
//! Small, real nodes that every workflow can use: a `PrimitiveInt` feeding several samplers'
//! seeds, a prompt assembled with `StringConcatenate`, a prompt log written by `SaveText`.

mod primitive;
mod save_text;
mod string_concatenate;

use swapgraph_node_api::{Registry, RegistryError};

/// Adds this pack's node types to `registry`.
///
/// # Errors
/// [`RegistryError`] when one of the names is already registered.
pub fn register(registry: &mut Registry) -> Result<(), RegistryError> {
    for primitive in primitive::Primitive::all() {
        registry.register(primitive)?;
    }
    registry.register(string_concatenate::StringConcatenate::new())?;
    registry.register(save_text::SaveText::new())?;
    Ok(())
}
