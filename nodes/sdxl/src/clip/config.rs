//! Sizes of the CLIP text encoders SDXL uses.

use crate::config_json::ConfigJson;

/// The feed-forward activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `x * sigmoid(1.702 x)`, OpenAI's CLIP ViT-L.
    QuickGelu,
    /// Exact (erf) GELU, OpenCLIP ViT-bigG.
    Gelu,
}

/// A CLIP text transformer's sizes, as in transformers' `CLIPTextConfig`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClipConfig {
    /// Tokens in the vocabulary.
    pub vocab_size: usize,
    /// Width of the hidden states.
    pub hidden_size: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Encoder layers.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Longest token sequence (77).
    pub max_positions: usize,
    /// Feed-forward activation.
    pub activation: Activation,
    /// Width of the pooled-output projection, for encoders that have one (bigG).
    pub projection_dim: Option<usize>,
    /// The end-of-text token id, whose position gives the pooled output.
    pub eos_token_id: u32,
}

impl ClipConfig {
    /// OpenAI CLIP ViT-L/14, SDXL's first text encoder.
    pub const fn vit_l() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 768,
            intermediate_size: 3072,
            layers: 12,
            heads: 12,
            max_positions: 77,
            activation: Activation::QuickGelu,
            projection_dim: None,
            eos_token_id: 49407,
        }
    }

    /// OpenCLIP ViT-bigG/14, SDXL's second text encoder, with its projection.
    pub const fn vit_big_g() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 1280,
            intermediate_size: 5120,
            layers: 32,
            heads: 20,
            max_positions: 77,
            activation: Activation::Gelu,
            projection_dim: Some(1280),
            eos_token_id: 49407,
        }
    }

    /// The built-in tiny first encoder: the real vocabulary at toy width.
    pub const fn tiny_l() -> Self {
        Self {
            hidden_size: 32,
            intermediate_size: 64,
            layers: 3,
            heads: 2,
            ..Self::vit_l()
        }
    }

    /// The built-in tiny second encoder, projecting to the tiny UNet's pooled width.
    pub const fn tiny_big_g() -> Self {
        Self {
            hidden_size: 32,
            intermediate_size: 64,
            layers: 3,
            heads: 2,
            projection_dim: Some(32),
            ..Self::vit_big_g()
        }
    }
}

impl ClipConfig {
    /// Reads transformers' `config.json` of a `CLIPTextModel` (no projection) or
    /// `CLIPTextModelWithProjection`. Older configs carry the placeholder 2 as the end-of-text
    /// token, for which transformers takes the highest token id, the vocabulary's last: so does
    /// this.
    ///
    /// # Errors
    /// A message naming the field that is missing or malformed, or an activation other than
    /// CLIP's two.
    pub fn from_transformers_json(text: &str) -> Result<Self, String> {
        let json = ConfigJson::parse(text)?;
        let activation = match json.text("hidden_act").unwrap_or("quick_gelu") {
            "quick_gelu" => Activation::QuickGelu,
            "gelu" => Activation::Gelu,
            other => return Err(format!("hidden_act \"{other}\" is not one CLIP text encoders use")),
        };
        let projects = json
            .texts("architectures")
            .is_ok_and(|names| names.iter().any(|n| n == "CLIPTextModelWithProjection"));
        let vocab_size = json.number("vocab_size")?;
        let eos_token_id = match json.number_or("eos_token_id", 2)? {
            2 => vocab_size.saturating_sub(1),
            id => id,
        };
        Ok(Self {
            vocab_size,
            hidden_size: json.number("hidden_size")?,
            intermediate_size: json.number("intermediate_size")?,
            layers: json.number("num_hidden_layers")?,
            heads: json.number("num_attention_heads")?,
            max_positions: json.number_or("max_position_embeddings", 77)?,
            activation,
            projection_dim: if projects {
                Some(json.number("projection_dim")?)
            } else {
                None
            },
            eos_token_id: u32::try_from(eos_token_id)
                .map_err(|_| format!("eos_token_id {eos_token_id} is too large"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sdxl_encoders_read_from_their_configs() {
        let l = r#"{"architectures": ["CLIPTextModel"], "hidden_act": "quick_gelu", "hidden_size": 768,
            "intermediate_size": 3072, "max_position_embeddings": 77, "num_attention_heads": 12,
            "num_hidden_layers": 12, "projection_dim": 768, "vocab_size": 49408, "eos_token_id": 2}"#;
        let g = r#"{"architectures": ["CLIPTextModelWithProjection"], "hidden_act": "gelu", "hidden_size": 1280,
            "intermediate_size": 5120, "max_position_embeddings": 77, "num_attention_heads": 20,
            "num_hidden_layers": 32, "projection_dim": 1280, "vocab_size": 49408}"#;
        assert_eq!(ClipConfig::from_transformers_json(l), Ok(ClipConfig::vit_l()));
        assert_eq!(ClipConfig::from_transformers_json(g), Ok(ClipConfig::vit_big_g()));
        let relu = l.replace("quick_gelu", "relu");
        assert!(ClipConfig::from_transformers_json(&relu).unwrap_err().contains("relu"));
    }
}
