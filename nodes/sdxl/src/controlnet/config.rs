//! A ControlNet's shape: the SDXL UNet's encoder half plus the hint's embedding network, as
//! diffusers' `ControlNetModel` config describes it.

use crate::config_json::ConfigJson;
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
        let json = ConfigJson::parse(text)?;
        let unet = UNetConfig::from_config(&json, false).map_err(|e| e.replace("SDXL UNet", "SDXL ControlNet"))?;
        Ok(Self {
            unet,
            conditioning_channels: json.number_or("conditioning_channels", 3)?,
            embedding_channels: json.numbers("conditioning_embedding_out_channels")?,
        })
    }
}
