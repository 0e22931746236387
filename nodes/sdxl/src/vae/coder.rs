//! The VAE's encoder and decoder (diffusers' `Encoder` and `Decoder` in `models/autoencoders/vae.py`).

use super::attention::SpatialAttention;
use super::VaeConfig;
use crate::blocks::{Conv2d, Downsample2D, GroupNorm, ResnetBlock2D, ResnetConfig, Upsample2D};
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

fn resnet(vb: VarBuilder, cfg: &VaeConfig, in_channels: usize, out_channels: usize) -> Result<ResnetBlock2D> {
    let resnet = ResnetConfig {
        in_channels,
        out_channels,
        temb_dim: None,
        groups: cfg.norm_groups,
        eps: 1e-6,
    };
    ResnetBlock2D::new(vb, &resnet)
}

/// resnet, attention, resnet at the lowest resolution.
#[derive(Debug)]
struct MidBlock {
    first: ResnetBlock2D,
    attention: SpatialAttention,
    second: ResnetBlock2D,
}

impl MidBlock {
    fn new(vb: VarBuilder, cfg: &VaeConfig, channels: usize) -> Result<Self> {
        Ok(Self {
            first: resnet(vb.pp("resnets.0"), cfg, channels, channels)?,
            attention: SpatialAttention::new(vb.pp("attentions.0"), channels, cfg.norm_groups)?,
            second: resnet(vb.pp("resnets.1"), cfg, channels, channels)?,
        })
    }
}

impl Module for MidBlock {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let xs = self.first.forward(xs, None)?;
        let xs = self.attention.forward(&xs)?;
        self.second.forward(&xs, None)
    }
}

/// Image `[b, 3, H, W]` to the latent distribution's parameters `[b, 2 * latent, H/8, W/8]`.
#[derive(Debug)]
pub struct Encoder {
    conv_in: Conv2d,
    levels: Vec<(Vec<ResnetBlock2D>, Option<Downsample2D>)>,
    mid: MidBlock,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Encoder {
    /// Loads `encoder.*` (pass `vb.pp("encoder")`).
    ///
    /// # Errors
    /// A missing or mis-shaped weight.
    pub fn new(vb: VarBuilder, cfg: &VaeConfig) -> Result<Self> {
        let channels = cfg.block_out_channels;
        let mut previous = channels[0];
        let mut levels = Vec::new();
        for (level, &out) in channels.iter().enumerate() {
            let block = vb.pp(format!("down_blocks.{level}"));
            let resnets = (0..cfg.layers_per_block)
                .map(|i| {
                    resnet(
                        block.pp(format!("resnets.{i}")),
                        cfg,
                        if i == 0 { previous } else { out },
                        out,
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            let down = match level + 1 < channels.len() {
                true => Some(Downsample2D::asymmetric(block.pp("downsamplers.0"), out)?),
                false => None,
            };
            levels.push((resnets, down));
            previous = out;
        }
        let last = channels[3];
        Ok(Self {
            conv_in: Conv2d::new(3, channels[0], 3, 1, 1, vb.pp("conv_in"))?,
            levels,
            mid: MidBlock::new(vb.pp("mid_block"), cfg, last)?,
            norm_out: GroupNorm::new(cfg.norm_groups, last, 1e-6, vb.pp("conv_norm_out"))?,
            conv_out: Conv2d::new(last, 2 * cfg.latent_channels, 3, 1, 1, vb.pp("conv_out"))?,
        })
    }
}

impl Module for Encoder {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut xs = self.conv_in.forward(xs)?;
        for (resnets, down) in &self.levels {
            for resnet in resnets {
                xs = resnet.forward(&xs, None)?;
            }
            if let Some(down) = down {
                xs = down.forward(&xs)?;
            }
        }
        let xs = self.mid.forward(&xs)?;
        self.conv_out.forward(&self.norm_out.forward_silu(&xs)?)
    }
}

/// Latents `[b, latent, h, w]` to an image `[b, 3, 8h, 8w]` in -1..1 (before clamping).
#[derive(Debug)]
pub struct Decoder {
    conv_in: Conv2d,
    mid: MidBlock,
    levels: Vec<(Vec<ResnetBlock2D>, Option<Upsample2D>)>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Decoder {
    /// Loads `decoder.*` (pass `vb.pp("decoder")`).
    ///
    /// # Errors
    /// A missing or mis-shaped weight.
    pub fn new(vb: VarBuilder, cfg: &VaeConfig) -> Result<Self> {
        let reversed: Vec<usize> = cfg.block_out_channels.iter().rev().copied().collect();
        let mut previous = reversed[0];
        let mut levels = Vec::new();
        for (level, &out) in reversed.iter().enumerate() {
            let block = vb.pp(format!("up_blocks.{level}"));
            let resnets = (0..=cfg.layers_per_block)
                .map(|i| {
                    resnet(
                        block.pp(format!("resnets.{i}")),
                        cfg,
                        if i == 0 { previous } else { out },
                        out,
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            let up = match level + 1 < reversed.len() {
                true => Some(Upsample2D::new(block.pp("upsamplers.0"), out)?),
                false => None,
            };
            levels.push((resnets, up));
            previous = out;
        }
        let first = cfg.block_out_channels[0];
        Ok(Self {
            conv_in: Conv2d::new(cfg.latent_channels, reversed[0], 3, 1, 1, vb.pp("conv_in"))?,
            mid: MidBlock::new(vb.pp("mid_block"), cfg, reversed[0])?,
            levels,
            norm_out: GroupNorm::new(cfg.norm_groups, first, 1e-6, vb.pp("conv_norm_out"))?,
            conv_out: Conv2d::new(first, 3, 3, 1, 1, vb.pp("conv_out"))?,
        })
    }
}

impl Module for Decoder {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut xs = self.mid.forward(&self.conv_in.forward(xs)?)?;
        for (resnets, up) in &self.levels {
            for resnet in resnets {
                xs = resnet.forward(&xs, None)?;
            }
            if let Some(up) = up {
                let (h, w) = (xs.dim(2)? * 2, xs.dim(3)? * 2);
                xs = up.forward(&xs, h, w)?;
            }
        }
        self.conv_out.forward(&self.norm_out.forward_silu(&xs)?)
    }
}
