//! The SDXL pack's nodes, with ComfyUI's names and parameters.

mod adapters;
mod checkpoint_loader;
mod clip_set_last_layer;
mod clip_text_encode;
mod conditioning_placement;
mod controlnet;
mod dual_clip_loader;
mod empty_latent_image;
mod inpaint_pixels;
mod ksampler;
mod latent_batch;
mod lora_loader;
mod out_of_memory;
mod sampler_room;
mod sampling_params;
mod sampling_times;
mod unet_loader;
mod unet_loader_gguf;
mod vae_decode;
mod vae_encode;
mod vae_loader;
mod zero_out;

use crate::controlnet::CONTROL_NET;
use swapgraph_node_api::{NodeError, Registry, RegistryError, SocketSpec};

/// Adds the SDXL nodes to `registry`.
///
/// # Errors
/// [`RegistryError`] when a name is taken.
pub fn register(registry: &mut Registry) -> Result<(), RegistryError> {
    registry.register_socket(SocketSpec::new(
        CONTROL_NET,
        "#00d78d",
        "A ControlNet, such as InstantID's IdentityNet.",
    ))?;
    registry.register(checkpoint_loader::CheckpointLoaderSimple::new())?;
    registry.register(clip_set_last_layer::ClipSetLastLayer::new())?;
    registry.register(clip_text_encode::ClipTextEncode::new())?;
    registry.register(clip_text_encode::ClipTextEncodeSdxl::new())?;
    registry.register(zero_out::ConditioningZeroOut::new())?;
    registry.register(conditioning_placement::ConditioningCombine::new())?;
    registry.register(conditioning_placement::SetPlacement::area())?;
    registry.register(conditioning_placement::SetPlacement::area_fraction())?;
    registry.register(conditioning_placement::SetPlacement::strength())?;
    registry.register(conditioning_placement::SetPlacement::mask())?;
    registry.register(conditioning_placement::SetPlacement::timestep_range())?;
    registry.register(latent_batch::RepeatLatentBatch::new())?;
    registry.register(latent_batch::LatentFromBatch::new())?;
    registry.register(controlnet::ControlNetLoader::new())?;
    registry.register(dual_clip_loader::DualClipLoader::new())?;
    registry.register(controlnet::ControlNetApplyAdvanced::new())?;
    registry.register(empty_latent_image::EmptyLatentImage::new())?;
    registry.register(ksampler::KSampler::new())?;
    registry.register(ksampler::KSampler::advanced())?;
    registry.register(lora_loader::LoraLoader::new())?;
    registry.register(lora_loader::LoraLoader::model_only())?;
    registry.register(unet_loader::UNetLoader::new())?;
    registry.register(unet_loader_gguf::UnetLoaderGguf::new())?;
    registry.register(vae_decode::VaeDecode::new())?;
    registry.register(vae_decode::VaeDecode::tiled())?;
    registry.register(vae_encode::VaeEncode::new())?;
    registry.register(vae_encode::VaeEncode::for_inpaint())?;
    registry.register(vae_loader::VaeLoader::new())?;
    Ok(())
}

/// A tensor error as a node failure.
fn tensor_error(error: candle_core::Error) -> NodeError {
    NodeError::msg(error.to_string())
}
