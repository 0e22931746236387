//! Sizes of SDXL's VAE, as diffusers' `AutoencoderKL` config describes them.

use crate::config_json::ConfigJson;

/// An `AutoencoderKL` with four levels (eight-fold downscaling), as SDXL uses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VaeConfig {
    /// Channels of each level, from the image side.
    pub block_out_channels: [usize; 4],
    /// Resnets per encoder level; decoder levels have one more.
    pub layers_per_block: usize,
    /// Latent channels.
    pub latent_channels: usize,
    /// GroupNorm groups.
    pub norm_groups: usize,
    /// Latents are multiplied by this after encoding and divided by it before decoding.
    pub scaling_factor: f64,
}

impl VaeConfig {
    /// SDXL's VAE.
    pub const fn sdxl() -> Self {
        Self {
            block_out_channels: [128, 256, 512, 512],
            layers_per_block: 2,
            latent_channels: 4,
            norm_groups: 32,
            scaling_factor: 0.13025,
        }
    }

    /// The built-in tiny VAE: the same eight-fold downscaling at toy widths.
    pub const fn tiny() -> Self {
        Self {
            block_out_channels: [8, 16, 16, 16],
            layers_per_block: 1,
            norm_groups: 4,
            ..Self::sdxl()
        }
    }
}

impl VaeConfig {
    /// Reads diffusers' `vae/config.json` of an `AutoencoderKL`, its `scaling_factor` included
    /// (0.18215, diffusers' default, when absent).
    ///
    /// # Errors
    /// A message naming the field that is missing, malformed, or describes a VAE of another
    /// shape (another number of levels, a latent shift as later models use).
    pub fn from_diffusers_json(text: &str) -> Result<Self, String> {
        let json = ConfigJson::parse(text)?;
        let channels = json.numbers("block_out_channels")?;
        let [c0, c1, c2, c3] = channels[..] else {
            return Err(format!("block_out_channels {channels:?}: SDXL's VAE has four levels"));
        };
        if json.get("shift_factor").is_some() || json.get("latents_mean").is_some() {
            return Err("shift_factor or latents_mean is set: latents shifted before scaling are not supported".into());
        }
        for (flag, what) in [
            ("use_quant_conv", "quant_conv"),
            ("use_post_quant_conv", "post_quant_conv"),
            ("mid_block_add_attention", "the middle block's attention"),
        ] {
            if json.get(flag).and_then(|v| v.as_bool()) == Some(false) {
                return Err(format!("{flag} is false: a VAE without {what} is not supported"));
            }
        }
        Ok(Self {
            block_out_channels: [c0, c1, c2, c3],
            layers_per_block: json.number_or("layers_per_block", 1)?,
            latent_channels: json.number_or("latent_channels", 4)?,
            norm_groups: json.number_or("norm_num_groups", 32)?,
            scaling_factor: json.real_or("scaling_factor", 0.18215)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scaling_factor_and_sizes_come_from_the_config() {
        let sdxl = r#"{"_class_name": "AutoencoderKL", "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
            "in_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32, "out_channels": 3,
            "scaling_factor": 0.13025, "shift_factor": null, "force_upcast": true}"#;
        assert_eq!(VaeConfig::from_diffusers_json(sdxl), Ok(VaeConfig::sdxl()));
        let other = sdxl
            .replace("0.13025", "0.5")
            .replace("[128, 256, 512, 512]", "[32, 64, 64, 64]");
        let read = VaeConfig::from_diffusers_json(&other).unwrap();
        assert_eq!((read.scaling_factor, read.block_out_channels), (0.5, [32, 64, 64, 64]));
        let shifted = sdxl.replace("\"shift_factor\": null", "\"shift_factor\": 0.0609");
        assert!(VaeConfig::from_diffusers_json(&shifted)
            .unwrap_err()
            .contains("shift_factor"));
    }
}
