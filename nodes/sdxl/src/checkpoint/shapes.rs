//! The sizes of the models in an original-layout SDXL file, read from its tensors' shapes, so
//! that files of SDXL's shape at other sizes (distilled UNets with fewer or shallower blocks,
//! other widths) load as what they are. What weights do not record is SDXL's: attention heads of
//! 64 channels, 32 GroupNorm groups, 256-wide time-id embeddings, the VAE's scaling factor.

use super::single_file::Sizes;
use crate::clip::{Activation, ClipConfig};
use crate::unet::UNetConfig;
use crate::vae::VaeConfig;
use std::collections::HashSet;
use swapgraph_model::TensorSource;

/// Channels per attention head in SDXL-family UNets and CLIP text encoders.
const HEAD_WIDTH: usize = 64;

/// Every model's sizes in `source`, an original-layout SDXL file.
///
/// # Errors
/// A message naming the tensor that is missing or the shape this code cannot build.
pub fn sizes_from_shapes(source: &TensorSource) -> Result<Sizes, String> {
    let file = Shapes {
        source,
        keys: source.keys().into_iter().collect(),
    };
    Ok(Sizes {
        unet: unet(&file, ORIGINAL_UNET_PREFIX)?,
        clip_l: clip_l(&file)?,
        clip_g: clip_g(&file)?,
        vae: vae(&file, VaeLayout::Original(ORIGINAL_VAE_PREFIX))?,
    })
}

/// Where a VAE's tensors are in an original-layout checkpoint.
pub const ORIGINAL_VAE_PREFIX: &str = "first_stage_model.";

/// Where a UNet's tensors are in an original-layout checkpoint.
pub const ORIGINAL_UNET_PREFIX: &str = "model.diffusion_model.";

/// The sizes of the original-layout UNet whose tensors are under `prefix` in `source` (a
/// checkpoint's `model.diffusion_model.`, or nothing in a file of the UNet alone).
///
/// # Errors
/// A message naming the tensor that is missing or the shape this code cannot build.
pub fn unet_sizes(source: &TensorSource, prefix: &str) -> Result<UNetConfig, String> {
    let file = Shapes {
        source,
        keys: source.keys().into_iter().collect(),
    };
    unet(&file, prefix)
}

/// A file's tensor names and shapes.
struct Shapes<'a> {
    source: &'a TensorSource,
    keys: HashSet<String>,
}

impl Shapes<'_> {
    fn shape(&self, key: &str) -> Result<Vec<usize>, String> {
        self.source
            .stored_shape(key)
            .ok_or_else(|| format!("no tensor \"{key}\""))
    }

    /// Dimension `dim` of `key`'s shape.
    fn dim(&self, key: &str, dim: usize) -> Result<usize, String> {
        let shape = self.shape(key)?;
        shape
            .get(dim)
            .copied()
            .ok_or_else(|| format!("tensor \"{key}\" of shape {shape:?} has no dimension {dim}"))
    }

    /// How many numbered children `prefix` has: one more than the largest `n` of keys
    /// `{prefix}{n}.…`, or 0.
    fn count(&self, prefix: &str) -> usize {
        self.keys
            .iter()
            .filter_map(|key| key.strip_prefix(prefix)?.split('.').next()?.parse::<usize>().ok())
            .max()
            .map_or(0, |n| n + 1)
    }

    fn has(&self, key: &str) -> bool {
        self.keys.contains(key)
    }
}

fn unet(file: &Shapes, p: &str) -> Result<UNetConfig, String> {
    let conv_in = file.shape(&format!("{p}input_blocks.0.0.weight"))?;
    let blocks = file.count(&format!("{p}input_blocks."));
    let per_level = (1..blocks)
        .find(|n| file.has(&format!("{p}input_blocks.{n}.0.op.weight")))
        .ok_or("the UNet has no downsampler: not an SDXL-shaped UNet")?;
    if per_level < 2 || blocks != 3 * per_level {
        return Err(format!(
            "the UNet's {blocks} input blocks are not three levels of {} resnets: not an SDXL-shaped UNet",
            per_level.saturating_sub(1)
        ));
    }
    let layers = per_level - 1;
    let depth = |block: &str| file.count(&format!("{p}{block}.1.transformer_blocks."));
    let mut depths = [0; 3];
    for (level, depth_of_level) in depths.iter_mut().enumerate() {
        let found: Vec<usize> = (0..layers)
            .map(|r| depth(&format!("input_blocks.{}", level * per_level + r + 1)))
            .collect();
        if found.windows(2).any(|w| w[0] != w[1]) {
            return Err(format!(
                "level {level}'s blocks have different transformer depths {found:?}"
            ));
        }
        *depth_of_level = found[0];
    }
    // Up levels may have depths of their own, layer by layer (SSD-1B, Segmind Vega).
    let up_depths = [0, 1, 2].map(|up| {
        (0..per_level)
            .map(|r| depth(&format!("output_blocks.{}", up * per_level + r)))
            .collect::<Vec<_>>()
    });
    for (up, found) in up_depths.iter().enumerate() {
        if depths[2 - up] == 0 && found.iter().any(|&d| d > 0) {
            return Err(format!(
                "up level {up} has attention {found:?} where the down level it mirrors has none: not an \
                 SDXL-shaped UNet"
            ));
        }
    }
    // A middle block with attention, or a single resnet without (SSD-1B, Segmind Vega).
    let mid_depth = depth("middle_block");
    let mid_blocks = file.count(&format!("{p}middle_block."));
    if (mid_depth > 0 && mid_blocks != 3) || (mid_depth == 0 && mid_blocks != 1) {
        return Err(format!(
            "the middle block has {mid_blocks} parts and {mid_depth} transformer blocks: neither attention \
             between two resnets nor a single resnet"
        ));
    }
    let channel = |level: usize| {
        let key = format!("{p}input_blocks.{}.0.out_layers.3.weight", level * per_level + 1);
        file.dim(&key, 0)
    };
    let [c0, c1, c2] = [channel(0)?, channel(1)?, channel(2)?];
    let attention = (0..3)
        .find(|&level| depths[level] > 0)
        .ok_or("the UNet has no attention: not an SDXL-shaped UNet")?;
    for (level, c) in [c0, c1, c2].into_iter().enumerate() {
        if depths[level] > 0 && c % HEAD_WIDTH != 0 {
            return Err(format!(
                "level {level}'s {c} channels do not split into heads of {HEAD_WIDTH}"
            ));
        }
    }
    let cross_key = format!(
        "{p}input_blocks.{}.1.transformer_blocks.0.attn2.to_k.weight",
        attention * per_level + 1
    );
    let added = file.dim(&format!("{p}label_emb.0.0.weight"), 1)?;
    let time_embed = 256;
    Ok(UNetConfig {
        in_channels: conv_in[1],
        out_channels: file.dim(&format!("{p}out.2.weight"), 0)?,
        block_out_channels: [c0, c1, c2],
        transformer_layers: depths,
        up_transformer_layers: up_depths,
        mid_transformer_layers: mid_depth,
        layers_per_block: layers,
        head_dim: HEAD_WIDTH,
        norm_groups: 32,
        cross_attention_dim: file.dim(&cross_key, 1)?,
        addition_time_embed_dim: time_embed,
        pooled_text_dim: added
            .checked_sub(6 * time_embed)
            .ok_or_else(|| format!("the added conditioning's {added} inputs are fewer than the six time ids"))?,
    })
}

/// A CLIP encoder whose heads are 64 channels wide.
fn clip(vocab_and_width: [usize; 2], positions: usize, layers: usize, intermediate: usize) -> ClipConfig {
    let [vocab_size, hidden_size] = vocab_and_width;
    ClipConfig {
        vocab_size,
        hidden_size,
        intermediate_size: intermediate,
        layers,
        heads: hidden_size / HEAD_WIDTH,
        max_positions: positions,
        activation: Activation::QuickGelu,
        projection_dim: None,
        eos_token_id: u32::try_from(vocab_size.saturating_sub(1)).unwrap_or(u32::MAX),
    }
}

fn vocab_and_width(file: &Shapes, key: &str) -> Result<[usize; 2], String> {
    Ok([file.dim(key, 0)?, file.dim(key, 1)?])
}

fn clip_l(file: &Shapes) -> Result<ClipConfig, String> {
    transformers_clip(file, "conditioner.embedders.0.transformer.text_model.")
}

/// A text encoder in transformers' layout under `p` (`….text_model.`): CLIP-L (quick GELU), or
/// bigG when a `text_projection.weight` sits beside it (GELU, projected).
fn transformers_clip(file: &Shapes, p: &str) -> Result<ClipConfig, String> {
    let plain = clip(
        vocab_and_width(file, &format!("{p}embeddings.token_embedding.weight"))?,
        file.dim(&format!("{p}embeddings.position_embedding.weight"), 0)?,
        file.count(&format!("{p}encoder.layers.")),
        file.dim(&format!("{p}encoder.layers.0.mlp.fc1.weight"), 0)?,
    );
    let projection = format!("{}text_projection.weight", p.strip_suffix("text_model.").unwrap_or(p));
    if !file.has(&projection) {
        return Ok(plain);
    }
    Ok(ClipConfig {
        activation: Activation::Gelu,
        projection_dim: Some(file.dim(&projection, 0)?),
        ..plain
    })
}

/// How a file names a text encoder's tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClipLayout {
    /// transformers' `CLIPTextModel` names under a prefix ending in `text_model.` (or none).
    Transformers(&'static str),
    /// OpenCLIP's names (bigG in the original SDXL checkpoint) under a prefix.
    OpenClip(&'static str),
}

/// The sizes of the text encoder in `source`, named as `layout` says: CLIP-L or bigG.
///
/// # Errors
/// A message naming the tensor that is missing or the shape this code cannot build.
pub fn clip_sizes(source: &TensorSource, layout: ClipLayout) -> Result<ClipConfig, String> {
    let file = Shapes {
        source,
        keys: source.keys().into_iter().collect(),
    };
    match layout {
        ClipLayout::Transformers(prefix) => transformers_clip(&file, prefix),
        ClipLayout::OpenClip(prefix) => open_clip(&file, prefix),
    }
}

fn clip_g(file: &Shapes) -> Result<ClipConfig, String> {
    open_clip(file, "conditioner.embedders.1.model.")
}

/// bigG in OpenCLIP's layout under `p`.
fn open_clip(file: &Shapes, p: &str) -> Result<ClipConfig, String> {
    Ok(ClipConfig {
        activation: Activation::Gelu,
        projection_dim: Some(file.dim(&format!("{p}text_projection"), 1)?),
        ..clip(
            vocab_and_width(file, &format!("{p}token_embedding.weight"))?,
            file.dim(&format!("{p}positional_embedding"), 0)?,
            file.count(&format!("{p}transformer.resblocks.")),
            file.dim(&format!("{p}transformer.resblocks.0.mlp.c_fc.weight"), 0)?,
        )
    })
}

fn vae(file: &Shapes, layout: VaeLayout) -> Result<VaeConfig, String> {
    let (down, block, resnet) = match layout {
        VaeLayout::Original(prefix) => (format!("{prefix}encoder.down."), "block", format!("{prefix}decoder.")),
        VaeLayout::Diffusers => ("encoder.down_blocks.".to_string(), "resnets", "decoder.".to_string()),
    };
    let levels = file.count(&down);
    if levels != 4 {
        return Err(format!("the VAE has {levels} levels; SDXL's has four"));
    }
    let channel = |level: usize| file.dim(&format!("{down}{level}.{block}.0.conv1.weight"), 0);
    Ok(VaeConfig {
        block_out_channels: [channel(0)?, channel(1)?, channel(2)?, channel(3)?],
        layers_per_block: file.count(&format!("{down}0.{block}.")),
        latent_channels: file.dim(&format!("{resnet}conv_in.weight"), 1)?,
        ..VaeConfig::sdxl()
    })
}

/// How a file names a VAE's tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VaeLayout {
    /// The original layout, under a prefix (a checkpoint's `first_stage_model.`, or nothing).
    Original(&'static str),
    /// diffusers' `AutoencoderKL` names.
    Diffusers,
}

/// The sizes of the VAE in `source`, named as `layout` says. What weights do not record is
/// SDXL's: 32 GroupNorm groups, the scaling factor.
///
/// # Errors
/// A message naming the tensor that is missing or the shape this code cannot build.
pub fn vae_sizes(source: &TensorSource, layout: VaeLayout) -> Result<VaeConfig, String> {
    let file = Shapes {
        source,
        keys: source.keys().into_iter().collect(),
    };
    vae(&file, layout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::single_file::{clip_g_key, unet_key, vae_key};
    use crate::clip::ClipTextEncoder;
    use crate::unet::UNet;
    use crate::vae::Vae;
    use candle_core::{DType, Shape};
    use std::collections::HashMap;
    use swapgraph_model::{record_params, Part, SourceKey};

    /// A source with the shapes an original-layout file of `sizes` stores (no weights drawn).
    fn file_of(sizes: &Sizes, leave_out: &str) -> TensorSource {
        let mut stored: HashMap<String, Vec<usize>> = HashMap::new();
        let mut add = |at: SourceKey, shape: &Shape| {
            let dims = shape.dims().to_vec();
            let dims = match at.part {
                Part::Whole => dims,
                Part::Transposed => dims.into_iter().rev().collect(),
                Part::Squeezed => [dims, vec![1, 1]].concat(),
                Part::Chunk { count, .. } => [vec![dims[0] * count], dims[1..].to_vec()].concat(),
            };
            stored.insert(at.key, dims);
        };
        for unit in UNet::new(sizes.unet.clone()).unwrap().units() {
            for (name, shape) in &unit.tensors {
                add(SourceKey::whole(unet_key(&unit.key(name), &sizes.unet).unwrap()), shape);
            }
        }
        for (key, shape) in record_params(|vb| ClipTextEncoder::new(vb, &sizes.clip_l)).unwrap() {
            add(
                SourceKey::whole(format!("conditioner.embedders.0.transformer.{key}")),
                &shape,
            );
        }
        for (key, shape) in record_params(|vb| ClipTextEncoder::new(vb, &sizes.clip_g)).unwrap() {
            add(clip_g_key(&key).unwrap(), &shape);
        }
        for (key, shape) in record_params(|vb| Vae::new(vb, &sizes.vae)).unwrap() {
            add(vae_key(&key, 4).unwrap(), &shape);
        }
        let params = stored
            .into_iter()
            .filter(|(key, _)| leave_out.is_empty() || !key.starts_with(leave_out))
            .map(|(key, dims)| (key, Shape::from(dims)))
            .collect();
        TensorSource::seeded("file", "file", params, DType::F16)
    }

    fn sdxl() -> Sizes {
        Sizes {
            unet: UNetConfig::sdxl(),
            clip_l: ClipConfig::vit_l(),
            clip_g: ClipConfig::vit_big_g(),
            vae: VaeConfig::sdxl(),
        }
    }

    #[test]
    fn sdxl_base_and_a_distilled_unet_read_from_their_shapes() {
        assert_eq!(sizes_from_shapes(&file_of(&sdxl(), "")), Ok(sdxl()));
        let distilled = Sizes {
            unet: UNetConfig {
                block_out_channels: [256, 512, 1024],
                transformer_layers: [0, 1, 4],
                up_transformer_layers: [vec![4, 4], vec![1, 1], vec![0, 0]],
                mid_transformer_layers: 2,
                layers_per_block: 1,
                ..UNetConfig::sdxl()
            },
            ..sdxl()
        };
        assert_eq!(sizes_from_shapes(&file_of(&distilled, "")), Ok(distilled));
    }

    #[test]
    fn ssd_1b_and_segmind_vega_read_from_their_shapes_at_their_published_sizes() {
        for (unet, parameters) in [(UNetConfig::ssd_1b(), 1.3e9), (UNetConfig::segmind_vega(), 0.745e9)] {
            let sizes = Sizes { unet, ..sdxl() };
            let counted: usize = UNet::new(sizes.unet.clone())
                .unwrap()
                .units()
                .iter()
                .flat_map(|unit| unit.tensors.iter().map(|(_, shape)| shape.elem_count()))
                .sum();
            assert!(
                (counted as f64 / parameters - 1.0).abs() < 0.05,
                "{counted} parameters, published: {parameters}"
            );
            assert_eq!(sizes_from_shapes(&file_of(&sizes, "")), Ok(sizes));
        }
    }

    #[test]
    fn a_middle_block_of_another_shape_is_refused_by_name() {
        let no_second_resnet = "model.diffusion_model.middle_block.2.";
        let error = sizes_from_shapes(&file_of(&sdxl(), no_second_resnet)).unwrap_err();
        assert!(error.contains("the middle block has 2 parts"), "{error}");
    }
}
