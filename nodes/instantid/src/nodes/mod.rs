//! The InstantID pack's nodes, with ComfyUI_InstantID's names and parameters.

mod apply;
mod faces;
mod loader;

use swapgraph_node_api::{NodeError, Registry, RegistryError, SocketSpec, SocketType};

/// Adds the InstantID nodes to `registry`.
///
/// # Errors
/// [`RegistryError`] when a name is taken.
pub fn register(registry: &mut Registry) -> Result<(), RegistryError> {
    registry.register_socket(SocketSpec::new(
        INSTANTID,
        "#f06292",
        "InstantID's adapter: the face embedding's projection and the UNet's IP-Adapter layers.",
    ))?;
    registry.register_socket(SocketSpec::new(
        FACEANALYSIS,
        "#ba68c8",
        "A face detector with its recognition model.",
    ))?;
    registry.register(loader::InstantIdModelLoader::new())?;
    registry.register(faces::InstantIdFaceAnalysis::new())?;
    registry.register(faces::FaceKeypointsPreprocessor::new())?;
    registry.register(apply::ApplyInstantId::simple())?;
    registry.register(apply::ApplyInstantId::advanced())?;
    Ok(())
}

/// The socket type of InstantID's adapter.
pub const INSTANTID: SocketType = SocketType::new("INSTANTID", "instantid");

/// The socket type of a face analyzer.
pub const FACEANALYSIS: SocketType = SocketType::new("FACEANALYSIS", "faceanalysis");

/// A tensor error as a node failure.
fn tensor_error(error: candle_core::Error) -> NodeError {
    NodeError::msg(error.to_string())
}
