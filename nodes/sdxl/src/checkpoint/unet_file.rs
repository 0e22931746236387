//! A UNet on its own, as ComfyUI's `models/unet/` (or `diffusion_models/`) folder holds them: a
//! single file in the original layout (with or without a checkpoint's `model.diffusion_model.`
//! prefix), safetensors or GGUF, a diffusers `unet/` folder (or a pipeline folder holding one),
//! or a built-in model's UNet.

use super::diffusers::{check_unet_json, not_sdxl, open, part_folder};
use super::shapes::{unet_sizes, ORIGINAL_UNET_PREFIX};
use super::single_file::unet_key;
use super::ModelFile;
use crate::unet::{UNet, UNetConfig};
use candle_core::DType;
use std::path::Path;
use std::sync::Arc;
use swapgraph_model::{GgufFile, ModelHandle, SourceKey, TensorSource, KEPT_AS_STORED};
use swapgraph_node_api::NodeError;

/// Loads the UNet `name`, its weights still in the file, kept in 8 bits when the file stores
/// them so.
///
/// # Errors
/// A message naming the file: not found, not an SDXL UNet (SD 1.x and 2.x are named), a
/// diffusers-layout file without its folder, or a shape this code cannot build.
pub fn load(name: &str) -> Result<ModelHandle, NodeError> {
    let give = "an SDXL UNet .safetensors or .gguf file (original layout) or a diffusers unet/ folder";
    match ModelFile::find(name, "UNet", give)? {
        ModelFile::Builtin(checkpoint) => Ok(checkpoint.model),
        ModelFile::Folder(path) => load_folder(path),
        ModelFile::File(path) if is_gguf(path) => load_gguf(path, None),
        ModelFile::File(path) => load_single_file(path, None),
    }
}

/// Whether `path` is a GGUF file (it starts with the format's magic).
pub fn is_gguf(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut file| std::io::Read::read_exact(&mut file, &mut magic))
        .is_ok_and(|()| &magic == b"GGUF")
}

/// A GGUF UNet as ComfyUI-GGUF's converter writes SDXL's (architecture `sdxl`, the original
/// layout), of sizes `cfg` (`None`: read from its tensors' shapes, as [`load_single_file`]),
/// its quantized tensors kept quantized (in host memory, on the bus and on the device) and
/// dequantized on the device as each layer is built.
///
/// # Errors
/// As [`load`], and a GGUF file of another architecture, named.
pub fn load_gguf(path: &Path, cfg: Option<UNetConfig>) -> Result<ModelHandle, NodeError> {
    let file = GgufFile::open(path).map_err(NodeError::msg)?;
    match file.architecture() {
        Some("sdxl") | None => {}
        Some("sd1") => return Err(not_sdxl(path, "Stable Diffusion 1.x")),
        Some(other) => {
            return Err(NodeError::msg(format!(
                "{} holds a GGUF model of architecture \"{other}\", not an SDXL UNet",
                path.display()
            )))
        }
    }
    let types: Vec<String> = file
        .type_counts()
        .iter()
        .map(|(kind, n)| format!("{kind} ({n})"))
        .collect();
    tracing::info!("{}: GGUF tensor types {}", path.display(), types.join(", "));
    from_single_file(path, TensorSource::from_gguf(file, path.display().to_string()), cfg)
}

/// Whether any of the model's weights is stored in 8-bit floats: such a file keeps its weights
/// in 8 bits (half the memory and transfers of f16), as it was made to.
pub fn stored_in_eight_bits(model: &ModelHandle) -> bool {
    model.network.units().iter().any(|unit| {
        unit.tensors
            .iter()
            .any(|(name, _)| model.source.stored_dtype(&unit.key(name)) == Some(DType::F8E4M3))
    })
}

/// A diffusers UNet folder (`config.json` beside `diffusion_pytorch_model.safetensors`), or a
/// pipeline folder with one under `unet/`.
fn load_folder(path: &Path) -> Result<ModelHandle, NodeError> {
    let (cfg, source) = part_folder(path, "unet", |text| {
        check_unet_json(text, path)?;
        UNetConfig::from_diffusers_json(text).map_err(NodeError::msg)
    })?;
    handle(path, cfg, source)
}

/// A single file in the original layout, with or without the checkpoint's prefix, of sizes `cfg`
/// (`None`: read from its tensors' shapes, which takes SDXL's heads of 64 channels).
///
/// # Errors
/// As [`load`].
pub fn load_single_file(path: &Path, cfg: Option<UNetConfig>) -> Result<ModelHandle, NodeError> {
    from_single_file(path, open(path)?, cfg)
}

/// The UNet in `source`, a single file in the original layout at `path`.
fn from_single_file(path: &Path, source: TensorSource, cfg: Option<UNetConfig>) -> Result<ModelHandle, NodeError> {
    let keys = source.keys();
    let prefix = if keys.iter().any(|k| k.starts_with(ORIGINAL_UNET_PREFIX)) {
        ORIGINAL_UNET_PREFIX
    } else {
        ""
    };
    let has = |key: &str| source.stored_shape(&format!("{prefix}{key}")).is_some();
    if !has("input_blocks.0.0.weight") {
        let diffusers = keys.iter().any(|k| k.starts_with("down_blocks."));
        return Err(NodeError::msg(if diffusers {
            format!(
                "{} is a UNet in diffusers' layout, which a single file cannot be read in without its config.json: \
                 give the folder holding both",
                path.display()
            )
        } else {
            format!("{} is not a UNet (it has no input_blocks.0.0.weight)", path.display())
        }));
    }
    if !has("label_emb.0.0.weight") {
        // SD 1.x and 2.x have no added conditioning; their cross-attention width tells them apart.
        let width = source
            .stored_shape(&format!(
                "{prefix}input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
            ))
            .and_then(|shape| shape.get(1).copied());
        return Err(not_sdxl(
            path,
            match width {
                Some(768) => "Stable Diffusion 1.x",
                Some(1024) => "Stable Diffusion 2.x",
                _ => "a UNet without SDXL's added conditioning",
            },
        ));
    }
    let cfg = match cfg {
        Some(cfg) => cfg,
        None => unet_sizes(&source, prefix).map_err(|e| NodeError::msg(format!("{}: {e}", path.display())))?,
    };
    let key_cfg = cfg.clone();
    let source = source.with_key_map(Arc::new(move |key: &str| {
        let key = unet_key(key, &key_cfg)?;
        let bare = key.strip_prefix(ORIGINAL_UNET_PREFIX).unwrap_or(&key);
        Some(SourceKey::whole(format!("{prefix}{bare}")))
    }));
    handle(path, cfg, source)
}

/// The UNet of `cfg` reading `source`, kept in 8 bits when the file stores it so, and as
/// stored when it holds quantized blocks (a GGUF file).
fn handle(path: &Path, cfg: UNetConfig, source: TensorSource) -> Result<ModelHandle, NodeError> {
    let name = path.display().to_string();
    let unet = UNet::new(cfg).map_err(|e| NodeError::msg(format!("{name}: {e}")))?;
    let model = ModelHandle::new(name, Arc::new(unet), Arc::new(source));
    let kept = if stored_in_eight_bits(&model) {
        Some(DType::F8E4M3)
    } else {
        model.source.holds_quantized_blocks().then_some(KEPT_AS_STORED)
    };
    Ok(model.with_kept_dtype(kept))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};
    use std::collections::HashMap;

    /// A file holding only `tensors` (name and shape), zeros.
    fn file_with(dir: &Path, tensors: &[(&str, &[usize])]) -> std::path::PathBuf {
        let tensors: HashMap<String, Tensor> = tensors
            .iter()
            .map(|(name, shape)| {
                (
                    name.to_string(),
                    Tensor::zeros(*shape, DType::F16, &Device::Cpu).unwrap(),
                )
            })
            .collect();
        let path = dir.join("unet.safetensors");
        candle_core::safetensors::save(&tensors, &path).unwrap();
        path
    }

    #[test]
    fn unets_of_other_models_and_other_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let refused = |tensors: &[(&str, &[usize])]| {
            let path = file_with(dir.path(), tensors);
            load_single_file(&path, None).err().unwrap().to_string()
        };
        let conv_in: (&str, &[usize]) = ("input_blocks.0.0.weight", &[320, 4, 3, 3]);
        for (width, model) in [(768, "Stable Diffusion 1.x"), (1024, "Stable Diffusion 2.x")] {
            let shape = [320, width];
            let attention = ("input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", &shape[..]);
            let error = refused(&[conv_in, attention]);
            assert!(error.contains(model) && error.contains("not SDXL"), "{error}");
        }
        let error = refused(&[("down_blocks.0.resnets.0.conv1.weight", &[320, 320, 3, 3])]);
        assert!(
            error.contains("diffusers' layout") && error.contains("config.json"),
            "{error}"
        );
        let error = refused(&[("encoder.down.0.block.0.conv1.weight", &[128, 3, 3, 3])]);
        assert!(error.contains("is not a UNet"), "{error}");
        let missing = load("no/such/unet.safetensors").err().unwrap().to_string();
        assert!(
            missing.contains("not found") && missing.contains("built-in"),
            "{missing}"
        );
    }
}
