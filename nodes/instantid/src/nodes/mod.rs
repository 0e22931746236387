//! The InstantID pack's nodes, with ComfyUI_InstantID's names and parameters.

mod apply;
mod faces;
mod loader;

use swapgraph_node_api::{NodeError, Registry, RegistryError};

/// Adds the InstantID nodes to `registry`.
///
/// # Errors
/// [`RegistryError`] when a name is taken.
pub fn register(registry: &mut Registry) -> Result<(), RegistryError> {
    registry.register(loader::InstantIdModelLoader::new())?;
    registry.register(faces::InstantIdFaceAnalysis::new())?;
    registry.register(faces::FaceKeypointsPreprocessor::new())?;
    registry.register(apply::ApplyInstantId::simple())?;
    registry.register(apply::ApplyInstantId::advanced())?;
    Ok(())
}

/// A tensor error as a node failure.
fn tensor_error(error: candle_core::Error) -> NodeError {
    NodeError::msg(error.to_string())
}
