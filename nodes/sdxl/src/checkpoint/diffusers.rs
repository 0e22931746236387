//! Diffusers SDXL folders (`unet/`, `text_encoder/`, `text_encoder_2/`, `vae/`), and telling
//! what a single checkpoint file holds.

use super::Checkpoint;
use crate::clip::{ClipConfig, ClipTokenizer};
use crate::conditioning::TextEncoders;
use crate::unet::{UNet, UNetConfig};
use crate::vae::{Vae, VaeConfig};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use swapgraph_model::{ModelHandle, SourceKey, TensorSource};
use swapgraph_node_api::NodeError;

/// Loads a diffusers SDXL folder, each model built from its own `config.json` (SDXL base, or a
/// model of its shape at other sizes), its weights still in the files.
pub fn load_folder(folder: &Path) -> Result<Checkpoint, NodeError> {
    check_unet_config(folder)?;
    let name = folder.display().to_string();
    let failed = |e: candle_core::Error| NodeError::msg(format!("{name}: {e}"));
    let unet_cfg = part_config(folder, "unet", UNetConfig::from_diffusers_json)?;
    let unet_source = open(&weights_file(folder, "unet", "diffusion_pytorch_model")?)?;
    let unet = UNet::new(unet_cfg).map_err(failed)?;
    let model = ModelHandle::new(name.clone(), Arc::new(unet), Arc::new(unet_source));

    let encoder = |part: &str| -> Result<(Arc<TensorSource>, ClipConfig), NodeError> {
        let source = with_text_model_prefix(open(&weights_file(folder, part, "model")?)?);
        Ok((
            Arc::new(source),
            part_config(folder, part, ClipConfig::from_transformers_json)?,
        ))
    };
    let clip = TextEncoders::new(
        &name,
        tokenizer(folder)?,
        encoder("text_encoder")?,
        encoder("text_encoder_2")?,
    )
    .map_err(failed)?;
    let vae_cfg = part_config(folder, "vae", VaeConfig::from_diffusers_json)?;
    let vae_source = Arc::new(open(&weights_file(folder, "vae", "diffusion_pytorch_model")?)?);
    let vae = Vae::on_demand(&name, vae_source, vae_cfg).map_err(failed)?;
    Ok(Checkpoint {
        model,
        clip: Arc::new(clip),
        vae: Arc::new(vae),
    })
}

/// `part/config.json` of `folder`, read by `parse`.
fn part_config<T>(folder: &Path, part: &str, parse: fn(&str) -> Result<T, String>) -> Result<T, NodeError> {
    let path = folder.join(part).join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| NodeError::msg(format!("{}: {e}", path.display())))?;
    parse(&text).map_err(|e| NodeError::msg(format!("{}: {e}", path.display())))
}

/// The folder's own tokenizer (`tokenizer/vocab.json` and `tokenizer/merges.txt`), or the
/// standard CLIP vocabulary when it has none.
fn tokenizer(folder: &Path) -> Result<ClipTokenizer, NodeError> {
    let (vocab, merges) = (folder.join("tokenizer/vocab.json"), folder.join("tokenizer/merges.txt"));
    if !(vocab.is_file() && merges.is_file()) {
        return ClipTokenizer::standard().map_err(|e| NodeError::msg(e.to_string()));
    }
    let read =
        |path: &Path| std::fs::read_to_string(path).map_err(|e| NodeError::msg(format!("{}: {e}", path.display())));
    ClipTokenizer::from_vocab_and_merges(&read(&vocab)?, &read(&merges)?)
        .map_err(|e| NodeError::msg(format!("{}: {e}", folder.join("tokenizer").display())))
}

/// One model of a diffusers pipeline given on its own: `path` itself when it holds
/// `config.json` (a `unet/` or `vae/` folder), else its `part/` (a pipeline folder). Returns the
/// config's text, read by `parse`, and the model's weights as a source.
///
/// # Errors
/// A message naming the folder and what is missing or unreadable.
pub(crate) fn part_folder<T>(
    path: &Path,
    part: &str,
    parse: impl FnOnce(&str) -> Result<T, NodeError>,
) -> Result<(T, TensorSource), NodeError> {
    let folder = if path.join("config.json").is_file() {
        path.to_path_buf()
    } else {
        path.join(part)
    };
    let config_path = folder.join("config.json");
    let text = std::fs::read_to_string(&config_path).map_err(|e| {
        NodeError::msg(format!(
            "{}: a {part} folder has config.json (or {part}/config.json): {e}",
            path.display()
        ))
    })?;
    let config = parse(&text).map_err(|e| NodeError::msg(format!("{}: {e}", config_path.display())))?;
    Ok((config, open(&weights_file(&folder, "", "diffusion_pytorch_model")?)?))
}

/// A safetensors file as a tensor source.
pub fn open(path: &Path) -> Result<TensorSource, NodeError> {
    TensorSource::open(&[path]).map_err(|e| NodeError::msg(e.to_string()))
}

/// `part/stem.safetensors`, or its `.fp16` variant.
pub(crate) fn weights_file(folder: &Path, part: &str, stem: &str) -> Result<PathBuf, NodeError> {
    let candidates = [format!("{stem}.safetensors"), format!("{stem}.fp16.safetensors")];
    candidates
        .iter()
        .map(|file| folder.join(part).join(file))
        .find(|path| path.is_file())
        .ok_or_else(|| {
            NodeError::msg(format!(
                "{}: no {part}/{stem}.safetensors (or .fp16.safetensors)",
                folder.display()
            ))
        })
}

/// Checks `unet/config.json` describes a UNet of SDXL's family, naming SD 1.x and 2.x when it
/// does not.
fn check_unet_config(folder: &Path) -> Result<(), NodeError> {
    let path = folder.join("unet").join("config.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| NodeError::msg(format!("{}: cannot read unet/config.json: {e}", folder.display())))?;
    check_unet_json(&text, folder)
}

/// Checks a UNet's `config.json` text describes a UNet of SDXL's family, naming SD 1.x and 2.x
/// (found in `what`) when it does not.
pub(crate) fn check_unet_json(text: &str, what: &Path) -> Result<(), NodeError> {
    let config: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| NodeError::msg(format!("{}: the UNet's config.json is not JSON: {e}", what.display())))?;
    let cross_attention = config["cross_attention_dim"].as_u64();
    let text_time = config["addition_embed_type"].as_str() == Some("text_time");
    match (cross_attention, text_time) {
        // SDXL's text-time conditioning: its sizes are read from the config next.
        (_, true) => Ok(()),
        (Some(768), _) => Err(not_sdxl(what, "Stable Diffusion 1.x")),
        (Some(1024), false) => Err(not_sdxl(what, "Stable Diffusion 2.x")),
        _ => Err(not_sdxl(what, "an unknown UNet")),
    }
}

pub(crate) fn not_sdxl(what: &Path, found: &str) -> NodeError {
    NodeError::msg(format!(
        "{} holds {found}, not SDXL; swapgraph runs SDXL models",
        what.display()
    ))
}

/// Loads a single checkpoint file: SDXL in the original layout, or names what else it holds.
pub fn load_single_file(path: &Path) -> Result<Checkpoint, NodeError> {
    let source = open(path)?;
    let keys: HashSet<String> = source.keys().into_iter().collect();
    let has = |prefix: &str| keys.iter().any(|k| k.starts_with(prefix));
    if has("conditioner.embedders.1.model.") && has("model.diffusion_model.") {
        super::single_file::load(path)
    } else if has("cond_stage_model.transformer.") {
        Err(not_sdxl(path, "Stable Diffusion 1.x"))
    } else if has("cond_stage_model.model.") {
        Err(not_sdxl(path, "Stable Diffusion 2.x"))
    } else {
        Err(NodeError::msg(format!(
            "{} is not a Stable Diffusion checkpoint",
            path.display()
        )))
    }
}

/// transformers 5 writes `CLIPTextModel` keys without the `text_model.` prefix that hub files
/// have; accept both.
pub(crate) fn with_text_model_prefix(source: TensorSource) -> TensorSource {
    let keys: HashSet<String> = source.keys().into_iter().collect();
    source.with_key_map(Arc::new(move |key: &str| {
        if keys.contains(key) {
            Some(SourceKey::whole(key))
        } else {
            key.strip_prefix("text_model.")
                .filter(|k| keys.contains(*k))
                .map(SourceKey::whole)
        }
    }))
}
