//! Single-file SDXL checkpoints in the original (SGM) layout: every model in one file, under
//! `model.diffusion_model.`, `conditioner.embedders.{0,1}.` and `first_stage_model.`.
//!
//! The models here are written with diffusers' names; these maps give each name's place in the
//! original layout, including OpenCLIP's fused q/k/v and transposed projection and the VAE's 1x1
//! attention convolutions. The fixture script checks the same maps against diffusers' own
//! converters.

use super::diffusers::open;
use super::shapes::sizes_from_shapes;
use super::Checkpoint;
use crate::clip::{ClipConfig, ClipTokenizer};
use crate::conditioning::TextEncoders;
use crate::unet::{UNet, UNetConfig};
use crate::vae::{Vae, VaeConfig};
use std::path::Path;
use std::sync::Arc;
use swapgraph_model::{ModelHandle, Part, SourceKey, TensorSource};
use swapgraph_node_api::NodeError;

/// Every model of an original-layout SDXL file of the given sizes, their weights still in the
/// file, read when a model comes to a device.
///
/// # Errors
/// A message naming the file when it cannot be opened or a configuration is invalid.
pub fn load_with(path: &Path, sizes: &Sizes) -> Result<Checkpoint, NodeError> {
    let name = path.display().to_string();
    let failed = |e: candle_core::Error| NodeError::msg(format!("{name}: {e}"));
    let unet_cfg = sizes.unet.clone();
    let unet_source = open(path)?.with_key_map(Arc::new(move |key: &str| {
        unet_key(key, &unet_cfg).map(SourceKey::whole)
    }));
    let unet = UNet::new(sizes.unet.clone()).map_err(failed)?;
    let model = ModelHandle::new(name.clone(), Arc::new(unet), Arc::new(unet_source));

    let clip_l = Arc::new(open(path)?.with_key_map(Arc::new(|key: &str| {
        Some(SourceKey::whole(format!("conditioner.embedders.0.transformer.{key}")))
    })));
    let clip_g = Arc::new(open(path)?.with_key_map(Arc::new(clip_g_key)));
    let tokenizer = ClipTokenizer::standard().map_err(|e| NodeError::msg(e.to_string()))?;
    let clip = TextEncoders::new(&name, tokenizer, (clip_l, sizes.clip_l), (clip_g, sizes.clip_g)).map_err(failed)?;
    let levels = sizes.vae.block_out_channels.len();
    let vae_source: Arc<TensorSource> =
        Arc::new(open(path)?.with_key_map(Arc::new(move |key: &str| vae_key(key, levels))));
    let vae = Vae::on_demand(&name, vae_source, sizes.vae).map_err(failed)?;
    Ok(Checkpoint {
        model,
        clip: Arc::new(clip),
        vae: Arc::new(vae),
    })
}

/// The sizes of the models in a file.
#[derive(Clone, Debug, PartialEq)]
pub struct Sizes {
    /// The UNet.
    pub unet: UNetConfig,
    /// CLIP ViT-L.
    pub clip_l: ClipConfig,
    /// OpenCLIP bigG.
    pub clip_g: ClipConfig,
    /// The VAE.
    pub vae: VaeConfig,
}

/// Loads an SDXL file, its models' sizes read from its tensors' shapes.
///
/// # Errors
/// A message naming the file when it cannot be opened or holds models of another shape.
pub fn load(path: &Path) -> Result<Checkpoint, NodeError> {
    let sizes = sizes_from_shapes(&open(path)?).map_err(|e| NodeError::msg(format!("{}: {e}", path.display())))?;
    load_with(path, &sizes)
}

/// Renames the start of `rest` by the first matching `(diffusers, original)` pair.
fn rename(rest: &str, table: &[(&str, &str)]) -> String {
    for (new, old) in table {
        if let Some(tail) = rest.strip_prefix(new).filter(|t| t.starts_with('.')) {
            return format!("{old}{tail}");
        }
    }
    rest.to_string()
}

const RESNET: [(&str, &str); 6] = [
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("time_emb_proj", "emb_layers.1"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("conv_shortcut", "skip_connection"),
];

/// A UNet key's place under `model.diffusion_model.`.
pub fn unet_key(key: &str, cfg: &UNetConfig) -> Option<String> {
    const TOP: [(&str, &str); 7] = [
        ("conv_in", "input_blocks.0.0"),
        ("time_embedding.linear_1", "time_embed.0"),
        ("time_embedding.linear_2", "time_embed.2"),
        ("add_embedding.linear_1", "label_emb.0.0"),
        ("add_embedding.linear_2", "label_emb.0.2"),
        ("conv_norm_out", "out.0"),
        ("conv_out", "out.2"),
    ];
    let prefix = "model.diffusion_model.";
    if TOP.iter().any(|(new, _)| key.starts_with(&format!("{new}."))) {
        return Some(format!("{prefix}{}", rename(key, &TOP)));
    }
    let per_level = cfg.layers_per_block + 1;
    let parts: Vec<&str> = key.splitn(5, '.').collect();
    let number = |i: usize| parts.get(i).and_then(|p| p.parse::<usize>().ok());
    let mapped = match parts.first().copied()? {
        "down_blocks" => {
            let level = number(1)?;
            match *parts.get(2)? {
                "downsamplers" => format!(
                    "input_blocks.{}.0.op.{}",
                    (level + 1) * per_level,
                    parts.get(4)?.strip_prefix("conv.")?
                ),
                "resnets" => format!(
                    "input_blocks.{}.0.{}",
                    level * per_level + number(3)? + 1,
                    rename(parts.get(4)?, &RESNET)
                ),
                "attentions" => format!(
                    "input_blocks.{}.1.{}",
                    level * per_level + number(3)? + 1,
                    parts.get(4)?
                ),
                _ => return None,
            }
        }
        "mid_block" => {
            let rest: Vec<&str> = key.splitn(4, '.').collect();
            let index: usize = rest.get(2)?.parse().ok()?;
            match *rest.get(1)? {
                "resnets" => format!("middle_block.{}.{}", 2 * index, rename(rest.get(3)?, &RESNET)),
                "attentions" => format!("middle_block.1.{}", rest.get(3)?),
                _ => return None,
            }
        }
        "up_blocks" => {
            let level = number(1)?;
            match *parts.get(2)? {
                "upsamplers" => {
                    // After the level's last resnet, and its attention when it has one.
                    let has_attention = cfg.up_transformer_layers.get(level)?.get(cfg.layers_per_block)? > &0;
                    let slot = if has_attention { 2 } else { 1 };
                    let index = level * per_level + cfg.layers_per_block;
                    format!("output_blocks.{index}.{slot}.{}", parts.get(4)?)
                }
                "resnets" => format!(
                    "output_blocks.{}.0.{}",
                    level * per_level + number(3)?,
                    rename(parts.get(4)?, &RESNET)
                ),
                "attentions" => format!("output_blocks.{}.1.{}", level * per_level + number(3)?, parts.get(4)?),
                _ => return None,
            }
        }
        _ => return None,
    };
    Some(format!("{prefix}{mapped}"))
}

/// A VAE key's place under `first_stage_model.`, with the 1x1-conv attention weights squeezed.
pub fn vae_key(key: &str, levels: usize) -> Option<SourceKey> {
    let (coder, rest) = key.split_once('.')?;
    let parts: Vec<&str> = rest.splitn(5, '.').collect();
    let resnet = |tail: &str| rename(tail, &[("conv_shortcut", "nin_shortcut")]);
    let mut part = Part::Whole;
    let mapped = match parts[0] {
        "down_blocks" => match *parts.get(2)? {
            "downsamplers" => format!("down.{}.downsample.{}", parts[1], parts.get(4)?),
            _ => format!("down.{}.block.{}.{}", parts[1], parts.get(3)?, resnet(parts.get(4)?)),
        },
        "up_blocks" => {
            let level = levels.checked_sub(1 + parts[1].parse::<usize>().ok()?)?;
            match *parts.get(2)? {
                "upsamplers" => format!("up.{level}.upsample.{}", parts.get(4)?),
                _ => format!("up.{level}.block.{}.{}", parts.get(3)?, resnet(parts.get(4)?)),
            }
        }
        "mid_block" if parts.get(1) == Some(&"resnets") => {
            let index: usize = parts.get(2)?.parse().ok()?;
            let tail = rest.splitn(4, '.').nth(3)?;
            format!("mid.block_{}.{}", index + 1, resnet(tail))
        }
        "mid_block" => {
            let tail = rest.splitn(4, '.').nth(3)?;
            let renamed = rename(
                tail,
                &[
                    ("group_norm", "norm"),
                    ("to_q", "q"),
                    ("to_k", "k"),
                    ("to_v", "v"),
                    ("to_out.0", "proj_out"),
                ],
            );
            if renamed.ends_with("weight") && !renamed.starts_with("norm.") {
                part = Part::Squeezed;
            }
            format!("mid.attn_1.{renamed}")
        }
        _ => rename(rest, &[("conv_norm_out", "norm_out")]),
    };
    let key = match coder {
        "encoder" | "decoder" => format!("first_stage_model.{coder}.{mapped}"),
        _ => format!("first_stage_model.{key}"),
    };
    Some(SourceKey { key, part })
}

/// A bigG key's place under `conditioner.embedders.1.model.` (OpenCLIP's layout).
pub fn clip_g_key(key: &str) -> Option<SourceKey> {
    let prefix = "conditioner.embedders.1.model.";
    let whole = |name: String| Some(SourceKey::whole(format!("{prefix}{name}")));
    match key {
        "text_model.embeddings.token_embedding.weight" => return whole("token_embedding.weight".into()),
        "text_model.embeddings.position_embedding.weight" => return whole("positional_embedding".into()),
        "text_projection.weight" => {
            return Some(SourceKey {
                key: format!("{prefix}text_projection"),
                part: Part::Transposed,
            });
        }
        _ => {}
    }
    if let Some(tail) = key.strip_prefix("text_model.final_layer_norm.") {
        return whole(format!("ln_final.{tail}"));
    }
    let rest = key.strip_prefix("text_model.encoder.layers.")?;
    let (layer, tail) = rest.split_once('.')?;
    let block = format!("transformer.resblocks.{layer}");
    for (index, projection) in ["q_proj", "k_proj", "v_proj"].iter().enumerate() {
        if let Some(kind) = tail.strip_prefix(&format!("self_attn.{projection}.")) {
            let key = format!("{prefix}{block}.attn.in_proj_{kind}");
            return Some(SourceKey {
                key,
                part: Part::Chunk { index, count: 3 },
            });
        }
    }
    let table = [
        ("self_attn.out_proj", "attn.out_proj"),
        ("layer_norm1", "ln_1"),
        ("layer_norm2", "ln_2"),
        ("mlp.fc1", "mlp.c_fc"),
        ("mlp.fc2", "mlp.c_proj"),
    ];
    whole(format!("{block}.{}", rename(tail, &table)))
}
