//! The SDXL UNet's shape, as diffusers' `UNet2DConditionModel` config describes it.

use crate::config_json::ConfigJson;

/// Sizes of an SDXL-architecture UNet: three resolution levels, text-time added conditioning,
/// linear projections in the transformers. `sdxl()` is the real model, `tiny()` the built-in one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UNetConfig {
    /// Latent channels in.
    pub in_channels: usize,
    /// Latent channels out.
    pub out_channels: usize,
    /// Channels of each resolution level.
    pub block_out_channels: [usize; 3],
    /// Transformer blocks per attention layer at each level of the down path; 0 means the level
    /// has no attention (a plain `DownBlock2D`).
    pub transformer_layers: [usize; 3],
    /// Transformer blocks of each up level's attention layers, one per resnet (one more than
    /// `layers_per_block`), the deepest level first: SDXL mirrors the down path, distilled models
    /// (SSD-1B, Segmind Vega) have depths of their own. 0: the layer has no attention.
    pub up_transformer_layers: [Vec<usize>; 3],
    /// Transformer blocks of the middle block's attention layer; 0: the middle block is a single
    /// resnet without attention (diffusers' `UNetMidBlock2D`, as in SSD-1B and Segmind Vega).
    pub mid_transformer_layers: usize,
    /// Resnets per down block; up blocks have one more.
    pub layers_per_block: usize,
    /// Channels per attention head.
    pub head_dim: usize,
    /// Groups of every GroupNorm.
    pub norm_groups: usize,
    /// Width of the text conditioning (CLIP-L 768 + OpenCLIP bigG 1280 for SDXL).
    pub cross_attention_dim: usize,
    /// Width of each of the six size/crop time ids' sinusoidal embedding.
    pub addition_time_embed_dim: usize,
    /// Width of the pooled text embedding.
    pub pooled_text_dim: usize,
}

impl UNetConfig {
    /// Stable Diffusion XL base 1.0.
    pub fn sdxl() -> Self {
        Self {
            in_channels: 4,
            out_channels: 4,
            block_out_channels: [320, 640, 1280],
            transformer_layers: [0, 2, 10],
            up_transformer_layers: mirrored([0, 2, 10], 2),
            mid_transformer_layers: 10,
            layers_per_block: 2,
            head_dim: 64,
            norm_groups: 32,
            cross_attention_dim: 2048,
            addition_time_embed_dim: 256,
            pooled_text_dim: 1280,
        }
    }

    /// The built-in tiny model: SDXL's structure at toy widths.
    pub fn tiny() -> Self {
        Self {
            in_channels: 4,
            out_channels: 4,
            block_out_channels: [32, 32, 64],
            transformer_layers: [0, 1, 2],
            up_transformer_layers: mirrored([0, 1, 2], 2),
            mid_transformer_layers: 2,
            layers_per_block: 2,
            head_dim: 16,
            norm_groups: 32,
            cross_attention_dim: 64,
            addition_time_embed_dim: 8,
            pooled_text_dim: 32,
        }
    }

    /// Segmind's SSD-1B, distilled from SDXL: shallower transformers, up levels with depths of
    /// their own, a middle block without attention.
    pub fn ssd_1b() -> Self {
        Self {
            transformer_layers: [0, 2, 4],
            up_transformer_layers: [vec![4, 4, 10], vec![2, 1, 1], vec![0, 0, 0]],
            mid_transformer_layers: 0,
            ..Self::sdxl()
        }
    }

    /// Segmind Vega, distilled further than SSD-1B.
    pub fn segmind_vega() -> Self {
        Self {
            transformer_layers: [0, 1, 2],
            up_transformer_layers: [vec![2, 2, 2], vec![1, 1, 1], vec![0, 0, 0]],
            mid_transformer_layers: 0,
            ..Self::sdxl()
        }
    }

    /// Width of the time embedding (four times the first level's channels).
    pub fn time_embed_dim(&self) -> usize {
        self.block_out_channels[0] * 4
    }

    /// Input width of the added-condition embedding: pooled text plus six time-id embeddings.
    pub fn added_condition_dim(&self) -> usize {
        self.pooled_text_dim + 6 * self.addition_time_embed_dim
    }
}

impl Default for UNetConfig {
    fn default() -> Self {
        Self::sdxl()
    }
}

impl UNetConfig {
    /// Reads diffusers' `unet/config.json` of a `UNet2DConditionModel`: SDXL base and any UNet of
    /// its shape with other sizes (widths, transformer depths, head widths, conditioning widths).
    ///
    /// # Errors
    /// A message naming the field that is missing, malformed, or describes a shape this UNet
    /// does not have.
    pub fn from_diffusers_json(text: &str) -> Result<Self, String> {
        Self::from_config(&ConfigJson::parse(text)?, true)
    }

    /// The UNet `json` describes; `up_path` checks the decoder half too (a ControlNet has none).
    pub(crate) fn from_config(json: &ConfigJson, up_path: bool) -> Result<Self, String> {
        if json.text("addition_embed_type") != Some("text_time") {
            return Err("addition_embed_type is not \"text_time\": not an SDXL UNet".into());
        }
        let channels = json.numbers("block_out_channels")?;
        let [c0, c1, c2] = channels[..] else {
            return Err(format!("block_out_channels {channels:?}: SDXL UNets have three levels"));
        };
        let down_types = json.texts("down_block_types")?;
        let attention: Vec<bool> = down_types
            .iter()
            .map(|t| match t.as_str() {
                "CrossAttnDownBlock2D" => Ok(true),
                "DownBlock2D" => Ok(false),
                other => Err(format!("down block type \"{other}\" is not one an SDXL UNet has")),
            })
            .collect::<Result<_, _>>()?;
        if attention.len() != 3 {
            return Err(format!("down_block_types has {} blocks for 3 levels", attention.len()));
        }
        let layers_per_block = json.number_or("layers_per_block", 2)?;
        let depths = json.per_layer("transformer_layers_per_block", 3, layers_per_block, 1)?;
        let mut transformer_layers = [0; 3];
        for level in (0..3).filter(|&level| attention[level]) {
            let found = &depths[level];
            if found.windows(2).any(|w| w[0] != w[1]) || found[0] == 0 {
                return Err(format!(
                    "transformer_layers_per_block: down level {level}'s depths {found:?} differ or are 0; \
                     down levels with a depth per layer are not supported"
                ));
            }
            transformer_layers[level] = found[0];
        }
        let up_transformer_layers = match up_path {
            true => up_depths(json, &down_types, transformer_layers, layers_per_block)?,
            false => mirrored(transformer_layers, layers_per_block),
        };
        if json.is_null("mid_block_type") {
            return Err("mid_block_type is null: a UNet without a middle block is not supported".into());
        }
        let mid_transformer_layers = match json.text("mid_block_type").unwrap_or("UNetMidBlock2DCrossAttn") {
            // diffusers gives the middle block the last level's depth.
            "UNetMidBlock2DCrossAttn" => depths[2][0].max(1),
            "UNetMidBlock2D" => 0,
            other => {
                return Err(format!(
                    "mid_block_type \"{other}\" is not supported: the middle block is UNetMidBlock2DCrossAttn or \
                     UNetMidBlock2D"
                ))
            }
        };
        if json.get("use_linear_projection").and_then(|v| v.as_bool()) == Some(false) {
            return Err("use_linear_projection is false: convolutional attention projections are not supported".into());
        }
        let heads_field = if json.get("num_attention_heads").is_some() {
            "num_attention_heads"
        } else {
            "attention_head_dim"
        };
        let heads = json.per_level(heads_field, 3, 8)?;
        let head_dims: Vec<usize> = (0..3)
            .filter(|&level| attention[level] || level == 2)
            .map(|level| match heads[level] {
                0 => Err(format!("\"{heads_field}\" is 0")),
                n if channels[level] % n != 0 => Err(format!(
                    "{} channels of level {level} do not split into {n} heads",
                    channels[level]
                )),
                n => Ok(channels[level] / n),
            })
            .collect::<Result<_, _>>()?;
        if head_dims.windows(2).any(|w| w[0] != w[1]) {
            return Err(format!(
                "heads of different widths per level ({head_dims:?} channels) are not supported"
            ));
        }
        let time_embed = json.number("addition_time_embed_dim")?;
        let pooled_text_dim = json
            .number("projection_class_embeddings_input_dim")?
            .checked_sub(6 * time_embed)
            .ok_or("projection_class_embeddings_input_dim is smaller than the six time ids")?;
        let in_channels = json.number_or("in_channels", 4)?;
        Ok(Self {
            in_channels,
            out_channels: if up_path {
                json.number_or("out_channels", 4)?
            } else {
                in_channels
            },
            block_out_channels: [c0, c1, c2],
            transformer_layers,
            up_transformer_layers,
            mid_transformer_layers,
            layers_per_block,
            head_dim: head_dims[0],
            norm_groups: json.number_or("norm_num_groups", 32)?,
            cross_attention_dim: json.number("cross_attention_dim")?,
            addition_time_embed_dim: time_embed,
            pooled_text_dim,
        })
    }
}

/// Each up level's depths, one per resnet, the deepest level first: its own where the config
/// gives `reverse_transformer_layers_per_block`, else the down path's mirrored. The up blocks'
/// types must mirror the down blocks'.
fn up_depths(
    json: &ConfigJson,
    down_types: &[String],
    down: [usize; 3],
    layers_per_block: usize,
) -> Result<[Vec<usize>; 3], String> {
    let expected: Vec<String> = down_types.iter().rev().map(|t| t.replace("Down", "Up")).collect();
    let up_types = json.texts("up_block_types")?;
    if up_types != expected {
        return Err(format!(
            "up_block_types {up_types:?} do not mirror the down blocks ({expected:?})"
        ));
    }
    let field = "reverse_transformer_layers_per_block";
    if json.get(field).is_none() {
        return Ok(mirrored(down, layers_per_block));
    }
    let own = json.per_layer(field, 3, layers_per_block + 1, 1)?;
    let mut up: [Vec<usize>; 3] = Default::default();
    for (level, depths) in own.into_iter().enumerate() {
        // diffusers reads them for attention levels only.
        if down[2 - level] == 0 {
            up[level] = vec![0; layers_per_block + 1];
        } else if depths.contains(&0) {
            return Err(format!("{field}: up level {level}'s depths {depths:?} hold a 0"));
        } else {
            up[level] = depths;
        }
    }
    Ok(up)
}

/// Up depths that mirror the down path's `down`: each up level as deep as the down level it
/// mirrors, for each of its `layers_per_block` + 1 resnets.
fn mirrored(down: [usize; 3], layers_per_block: usize) -> [Vec<usize>; 3] {
    [2, 1, 0].map(|level| vec![down[level]; layers_per_block + 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdxl_base_config_reads_as_sdxl() {
        let sdxl = r#"{"addition_embed_type": "text_time", "addition_time_embed_dim": 256,
            "attention_head_dim": [5, 10, 20], "block_out_channels": [320, 640, 1280], "cross_attention_dim": 2048,
            "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
            "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
            "in_channels": 4, "out_channels": 4, "layers_per_block": 2, "norm_num_groups": 32,
            "projection_class_embeddings_input_dim": 2816, "transformer_layers_per_block": [1, 2, 10],
            "use_linear_projection": true, "num_attention_heads": null}"#;
        assert_eq!(UNetConfig::from_diffusers_json(sdxl), Ok(UNetConfig::sdxl()));
        let sd15 = sdxl.replace("\"text_time\"", "null");
        assert!(UNetConfig::from_diffusers_json(&sd15)
            .unwrap_err()
            .contains("not an SDXL UNet"));
        let uneven = sdxl.replace("[5, 10, 20]", "[5, 10, 10]");
        assert!(UNetConfig::from_diffusers_json(&uneven)
            .unwrap_err()
            .contains("different widths"));
        let no_middle = sdxl.replace("\"num_attention_heads\": null", "\"mid_block_type\": null");
        assert!(UNetConfig::from_diffusers_json(&no_middle)
            .unwrap_err()
            .contains("without a middle block"));
    }

    #[test]
    fn distilled_configs_read_with_up_depths_of_their_own_and_a_middle_block_without_attention() {
        let ssd_1b = r#"{"addition_embed_type": "text_time", "addition_time_embed_dim": 256,
            "attention_head_dim": [5, 10, 20], "block_out_channels": [320, 640, 1280], "cross_attention_dim": 2048,
            "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
            "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
            "mid_block_type": "UNetMidBlock2D", "layers_per_block": 2,
            "projection_class_embeddings_input_dim": 2816, "transformer_layers_per_block": [1, [2, 2], 4],
            "reverse_transformer_layers_per_block": [[4, 4, 10], [2, 1, 1], 1],
            "use_linear_projection": true}"#;
        assert_eq!(UNetConfig::from_diffusers_json(ssd_1b), Ok(UNetConfig::ssd_1b()));
        let uneven_down = ssd_1b.replace("[2, 2]", "[2, 3]");
        assert!(UNetConfig::from_diffusers_json(&uneven_down)
            .unwrap_err()
            .contains("down level 1's depths [2, 3] differ"));
        let short = ssd_1b.replace("[2, 1, 1]", "[2, 1]");
        assert!(UNetConfig::from_diffusers_json(&short)
            .unwrap_err()
            .contains("has 2 values for level 1's 3 layers"));
        let other_mid = ssd_1b.replace("UNetMidBlock2D\"", "UNetMidBlock2DSimpleCrossAttn\"");
        assert!(UNetConfig::from_diffusers_json(&other_mid)
            .unwrap_err()
            .contains("mid_block_type \"UNetMidBlock2DSimpleCrossAttn\" is not supported"));
    }
}
