//! A ControlNet's shape: the SDXL UNet's encoder half plus the hint's embedding network, as
//! diffusers' `ControlNetModel` config describes it.

use crate::unet::UNetConfig;

/// Sizes of an SDXL ControlNet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlNetConfig {
    /// The encoder half: stem, down blocks and middle block, as in the UNet.
    pub unet: UNetConfig,
    /// Channels of the hint image (3 for RGB).
    pub conditioning_channels: usize,
    /// Channels of the hint embedding's convolutions; each step after the first halves the
    /// resolution, so the hint is `2^(len - 1)` times the latent's size.
    pub embedding_channels: Vec<usize>,
}

impl ControlNetConfig {
    /// An SDXL ControlNet such as InstantID's IdentityNet.
    pub fn sdxl() -> Self {
        Self {
            unet: UNetConfig::sdxl(),
            conditioning_channels: 3,
            embedding_channels: vec![16, 32, 96, 256],
        }
    }

    /// The built-in tiny ControlNet, matching the built-in tiny UNet.
    pub fn tiny() -> Self {
        Self {
            unet: UNetConfig::tiny(),
            conditioning_channels: 3,
            embedding_channels: vec![8, 8, 16, 16],
        }
    }

    /// How many times larger than the latent the hint image is.
    pub fn hint_factor(&self) -> usize {
        1 << self.embedding_channels.len().saturating_sub(1)
    }

    /// Reads diffusers' `config.json` of a `ControlNetModel`.
    ///
    /// # Errors
    /// A message naming the missing or unsupported field.
    pub fn from_diffusers_json(text: &str) -> Result<Self, String> {
        let json: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let usize_of = |v: &serde_json::Value| v.as_u64().map(|n| n as usize);
        let field = |name: &str| json.get(name).ok_or_else(|| format!("missing \"{name}\""));
        let list = |name: &str| -> Result<Vec<usize>, String> {
            let value = field(name)?;
            match value {
                serde_json::Value::Array(items) => items
                    .iter()
                    .map(|v| usize_of(v).ok_or_else(|| format!("\"{name}\" must hold whole numbers")))
                    .collect(),
                other => usize_of(other)
                    .map(|n| vec![n; 3])
                    .ok_or_else(|| format!("\"{name}\" must be a number or a list")),
            }
        };
        let number = |name: &str| usize_of(field(name)?).ok_or_else(|| format!("\"{name}\" must be a whole number"));
        let channels = list("block_out_channels")?;
        let [c0, c1, c2] = channels[..] else {
            return Err(format!(
                "block_out_channels {channels:?}: SDXL ControlNets have three levels"
            ));
        };
        let heads = list("attention_head_dim")?;
        let layers = list("transformer_layers_per_block")?;
        let down_types: Vec<String> = field("down_block_types")?
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        if json.get("addition_embed_type").and_then(|v| v.as_str()) != Some("text_time") {
            return Err("addition_embed_type is not \"text_time\": not an SDXL ControlNet".into());
        }
        let transformer_layers: Vec<usize> = (0..3)
            .map(|level| {
                let cross = down_types.get(level).is_some_and(|t| t.starts_with("CrossAttn"));
                if cross {
                    layers.get(level).copied().unwrap_or(1)
                } else {
                    0
                }
            })
            .collect();
        let pooled = number("projection_class_embeddings_input_dim")?
            .checked_sub(6 * number("addition_time_embed_dim")?)
            .ok_or("projection_class_embeddings_input_dim is smaller than the six time ids")?;
        let unet = UNetConfig {
            in_channels: number("in_channels")?,
            out_channels: number("in_channels")?,
            block_out_channels: [c0, c1, c2],
            transformer_layers: [transformer_layers[0], transformer_layers[1], transformer_layers[2]],
            mid_transformer_layers: *layers.last().unwrap_or(&1),
            layers_per_block: number("layers_per_block")?,
            head_dim: c2
                / heads
                    .last()
                    .copied()
                    .filter(|h| *h > 0)
                    .ok_or("attention_head_dim is 0")?,
            norm_groups: number("norm_num_groups")?,
            cross_attention_dim: number("cross_attention_dim")?,
            addition_time_embed_dim: number("addition_time_embed_dim")?,
            pooled_text_dim: pooled,
        };
        Ok(Self {
            unet,
            conditioning_channels: json.get("conditioning_channels").and_then(usize_of).unwrap_or(3),
            embedding_channels: list("conditioning_embedding_out_channels")?,
        })
    }
}
