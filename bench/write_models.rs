//! Writes the SDXL-size built-in models as files in the formats they are published in, so that
//! benchmarks load them as users load real weights:
//!
//! - `sd_xl_random.safetensors`: a single-file SDXL checkpoint in the original layout (UNet,
//!   both text encoders, VAE), the weights of `builtin:random-sdxl`;
//! - `ControlNetModel/`: a diffusers ControlNet folder, the weights of
//!   `builtin:random-controlnet`;
//! - `ip-adapter.safetensors`: InstantID's adapter (`image_proj.` and `ip_adapter.` keys), the
//!   weights of `builtin:random-instantid`; `bench/gpu_small_card.sh` turns it into the
//!   published `ip-adapter.bin` with PyTorch.
//!
//! Every tensor is written in f16 as the built-ins draw it, so a workflow on these files gives
//! the built-ins' image. Tensors are drawn and written one at a time.
//!
//! `--unet-gguf q8_0,q4_k` (any of q8_0, q5_0, q4_0, q6_k, q5_k, q4_k) also writes the
//! checkpoint's UNet as `unet_<kind>.gguf` for each, laid out as ComfyUI-GGUF's converter lays
//! out SDXL UNets (the original layout's keys, without the checkpoint's prefix).
//!
//! Run with `cargo bench --bench write_models -- DIR [--unet-gguf KINDS]`.

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Shape, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;
use swapgraph_instantid::weights::InstantIdWeights;
use swapgraph_model::{record_params, seeded_tensor, Network, Part, SourceKey};
use swapgraph_sdxl::checkpoint::single_file::{clip_g_key, unet_key, vae_key};
use swapgraph_sdxl::clip::{ClipConfig, ClipTextEncoder};
use swapgraph_sdxl::controlnet::{ControlNet, ControlNetConfig};
use swapgraph_sdxl::ip_adapter::ResamplerConfig;
use swapgraph_sdxl::unet::{UNet, UNetConfig};
use swapgraph_sdxl::vae::{Vae, VaeConfig};

#[path = "gguf_writer.rs"]
mod gguf_writer;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The published SDXL ControlNet configuration (InstantID's IdentityNet has this one).
const CONTROLNET_CONFIG: &str = r#"{
  "_class_name": "ControlNetModel",
  "act_fn": "silu",
  "addition_embed_type": "text_time",
  "addition_embed_type_num_heads": 64,
  "addition_time_embed_dim": 256,
  "attention_head_dim": [5, 10, 20],
  "block_out_channels": [320, 640, 1280],
  "class_embed_type": null,
  "conditioning_channels": 3,
  "conditioning_embedding_out_channels": [16, 32, 96, 256],
  "controlnet_conditioning_channel_order": "rgb",
  "cross_attention_dim": 2048,
  "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
  "downsample_padding": 1,
  "encoder_hid_dim": null,
  "flip_sin_to_cos": true,
  "freq_shift": 0,
  "global_pool_conditions": false,
  "in_channels": 4,
  "layers_per_block": 2,
  "mid_block_scale_factor": 1,
  "norm_eps": 1e-05,
  "norm_num_groups": 32,
  "num_attention_heads": null,
  "num_class_embeds": null,
  "only_cross_attention": false,
  "projection_class_embeddings_input_dim": 2816,
  "resnet_time_scale_shift": "default",
  "transformer_layers_per_block": [1, 2, 10],
  "upcast_attention": null,
  "use_linear_projection": true
}
"#;

/// One tensor of a file: its shape as stored and how to draw it.
struct Stored {
    shape: Vec<usize>,
    parts: Vec<(Part, String, String, Shape)>,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let gguf_kinds = match args.iter().position(|a| a == "--unet-gguf") {
        Some(at) => {
            let kinds = args
                .get(at + 1)
                .ok_or("--unet-gguf takes the block types, as q8_0,q4_k")?;
            kinds.split(',').map(block_kind).collect::<Result<Vec<_>>>()?
        }
        None => Vec::new(),
    };
    let dir = args
        .iter()
        .enumerate()
        .find(|(i, a)| !a.starts_with('-') && (*i == 0 || args[i - 1] != "--unet-gguf"))
        .map(|(_, a)| a)
        .ok_or("give the folder to write into")?;
    let dir = Path::new(dir);
    std::fs::create_dir_all(dir.join("ControlNetModel"))?;

    let mut checkpoint = BTreeMap::new();
    let unet_cfg = UNetConfig::sdxl();
    let unet = UNet::new(unet_cfg.clone())?;
    let mut unet_keys = HashMap::new();
    for (key, shape) in unit_params(unet.units()) {
        let stored = unet_key(&key, &unet_cfg).ok_or_else(|| format!("no original key for UNet {key}"))?;
        let bare = stored
            .strip_prefix("model.diffusion_model.")
            .unwrap_or(&stored)
            .to_string();
        unet_keys.insert(bare, (key.clone(), shape.clone()));
        add(&mut checkpoint, SourceKey::whole(stored), "unet", key, shape);
    }
    for kind in gguf_kinds {
        let path = dir.join(format!(
            "unet_{}.gguf",
            format!("{kind:?}").to_lowercase().replace('k', "_k")
        ));
        let tensors: Vec<(String, Shape)> = unet_keys
            .iter()
            .map(|(bare, (_, shape))| (bare.clone(), shape.clone()))
            .collect();
        let bytes = gguf_writer::write_gguf(&path, &tensors, kind, |bare| {
            let (key, shape) = &unet_keys[bare];
            seeded_tensor("unet", key, shape, DType::F16).expect("the UNet's weights")
        })?;
        println!(
            "{}: {} tensors, {:.2} GiB",
            path.display(),
            tensors.len(),
            bytes as f64 / (1u64 << 30) as f64
        );
    }
    for (part, cfg) in [("clip_l", ClipConfig::vit_l()), ("clip_g", ClipConfig::vit_big_g())] {
        for (key, shape) in record_params(|vb| ClipTextEncoder::new(vb, &cfg))? {
            let stored = match part {
                "clip_l" => Some(SourceKey::whole(format!("conditioner.embedders.0.transformer.{key}"))),
                _ => clip_g_key(&key),
            };
            add(
                &mut checkpoint,
                stored.ok_or(format!("no original key for {part} {key}"))?,
                part,
                key,
                shape,
            );
        }
    }
    let vae_cfg = VaeConfig::sdxl();
    for (key, shape) in record_params(|vb| Vae::new(vb, &vae_cfg))? {
        let stored = vae_key(&key, vae_cfg.block_out_channels.len()).ok_or(format!("no original key for VAE {key}"))?;
        add(&mut checkpoint, stored, "vae", key, shape);
    }
    write_safetensors(&dir.join("sd_xl_random.safetensors"), checkpoint)?;

    let controlnet_cfg = ControlNetConfig::from_diffusers_json(CONTROLNET_CONFIG)?;
    if controlnet_cfg != ControlNetConfig::sdxl() {
        return Err("the ControlNet config.json differs from builtin:random-controlnet's".into());
    }
    let controlnet = ControlNet::new(controlnet_cfg)?;
    let controlnet_tensors = unit_params(controlnet.units())
        .map(|(key, shape)| (key.clone(), whole("controlnet", key, shape)))
        .collect();
    let folder = dir.join("ControlNetModel");
    std::fs::write(folder.join("config.json"), CONTROLNET_CONFIG)?;
    write_safetensors(&folder.join("diffusion_pytorch_model.safetensors"), controlnet_tensors)?;

    let (resampler, layers) = InstantIdWeights::params(&ResamplerConfig::instantid(), &UNetConfig::sdxl())?;
    let adapter = [("image_proj", resampler), ("ip_adapter", layers)]
        .into_iter()
        .flat_map(|(part, params)| {
            params
                .into_iter()
                .map(move |(key, shape)| (format!("{part}.{key}"), whole(part, key, shape)))
        })
        .collect();
    write_safetensors(&dir.join("ip-adapter.safetensors"), adapter)?;
    println!("wrote {}", dir.display());
    Ok(())
}

/// GGML's block type named `name` (`q8_0`, `q4_k`, ...).
fn block_kind(name: &str) -> Result<GgmlDType> {
    Ok(match name {
        "q8_0" => GgmlDType::Q8_0,
        "q5_0" => GgmlDType::Q5_0,
        "q4_0" => GgmlDType::Q4_0,
        "q6_k" => GgmlDType::Q6K,
        "q5_k" => GgmlDType::Q5K,
        "q4_k" => GgmlDType::Q4K,
        other => return Err(format!("--unet-gguf: no block type {other} (q8_0, q5_0, q4_0, q6_k, q5_k, q4_k)").into()),
    })
}

/// Each unit's tensors under the model's own keys.
fn unit_params(units: &[swapgraph_model::UnitSpec]) -> impl Iterator<Item = (String, Shape)> + '_ {
    units
        .iter()
        .flat_map(|u| u.tensors.iter().map(|(n, s)| (u.key(n), s.clone())))
}

/// A stored tensor that is model `model`'s tensor `key` whole.
fn whole(model: &str, key: String, shape: Shape) -> Stored {
    Stored {
        shape: shape.dims().to_vec(),
        parts: vec![(Part::Whole, model.to_string(), key, shape)],
    }
}

/// Adds model `model`'s tensor `key` to the stored tensor it is part of.
fn add(file: &mut BTreeMap<String, Stored>, at: SourceKey, model: &str, key: String, shape: Shape) {
    let entry = file.entry(at.key).or_insert(Stored {
        shape: Vec::new(),
        parts: Vec::new(),
    });
    entry.parts.push((at.part, model.to_string(), key, shape));
    entry.parts.sort_by_key(|(part, ..)| match part {
        Part::Chunk { index, .. } => *index,
        _ => 0,
    });
    let dims = |shape: &Shape| shape.dims().to_vec();
    entry.shape = match at.part {
        Part::Whole => dims(&entry.parts[0].3),
        Part::Transposed => dims(&entry.parts[0].3).into_iter().rev().collect(),
        Part::Squeezed => [dims(&entry.parts[0].3), vec![1, 1]].concat(),
        Part::Chunk { .. } => {
            let mut shape = dims(&entry.parts[0].3);
            shape[0] = entry.parts.iter().map(|(.., s)| s.dims()[0]).sum();
            shape
        }
    };
}

/// Draws a stored tensor from its parts.
fn draw(stored: &Stored) -> Result<Tensor> {
    let drawn = stored
        .parts
        .iter()
        .map(|(part, model, key, shape)| {
            let tensor = seeded_tensor(model, key, shape, DType::F16)?;
            Ok(match part {
                Part::Transposed => tensor.t()?.contiguous()?,
                _ => tensor,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(&drawn, 0)?.reshape(stored.shape.as_slice())?)
}

/// Writes `tensors` as a safetensors file in f16, drawing one tensor at a time.
fn write_safetensors(path: &Path, tensors: BTreeMap<String, Stored>) -> Result<()> {
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, stored) in &tensors {
        let bytes = stored.shape.iter().product::<usize>() * 2;
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F16", "shape": stored.shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let mut header = serde_json::to_vec(&header)?;
    header.resize(header.len().next_multiple_of(8), b' ');
    let mut file = std::io::BufWriter::with_capacity(1 << 24, std::fs::File::create(path)?);
    file.write_all(&(header.len() as u64).to_le_bytes())?;
    file.write_all(&header)?;
    for stored in tensors.values() {
        let values = draw(stored)?.flatten_all()?.to_vec1::<half::f16>()?;
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        file.write_all(&bytes)?;
    }
    file.flush()?;
    println!(
        "{}: {} tensors, {:.2} GiB",
        path.display(),
        tensors.len(),
        offset as f64 / (1u64 << 30) as f64
    );
    Ok(())
}
