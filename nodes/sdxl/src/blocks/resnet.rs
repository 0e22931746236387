//! `ResnetBlock2D` as diffusers builds it for SDXL's UNet and VAE: GroupNorm, SiLU, 3x3 conv, the
//! time embedding added per channel (UNet only), GroupNorm, SiLU, 3x3 conv, plus a 1x1-conv
//! shortcut when widths differ.

use super::Linear;
use super::{Conv2d, GroupNorm};
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

/// Channel widths of a resnet block.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ResnetConfig {
    /// Channels in.
    pub in_channels: usize,
    /// Channels out.
    pub out_channels: usize,
    /// Width of the time embedding; `None` for the VAE's resnets, which have none.
    pub temb_dim: Option<usize>,
    /// GroupNorm groups.
    pub groups: usize,
    /// GroupNorm epsilon (1e-5 in the UNet, 1e-6 in the VAE).
    pub eps: f64,
}

/// One resnet block.
#[derive(Debug)]
pub struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
    span: tracing::Span,
}

impl ResnetBlock2D {
    /// Loads the block's weights.
    ///
    /// # Errors
    /// A missing or mis-shaped weight.
    pub fn new(vb: VarBuilder, cfg: &ResnetConfig) -> Result<Self> {
        let conv_shortcut = if cfg.in_channels == cfg.out_channels {
            None
        } else {
            Some(Conv2d::new(
                cfg.in_channels,
                cfg.out_channels,
                1,
                0,
                1,
                vb.pp("conv_shortcut"),
            )?)
        };
        Ok(Self {
            norm1: GroupNorm::new(cfg.groups, cfg.in_channels, cfg.eps, vb.pp("norm1"))?,
            conv1: Conv2d::new(cfg.in_channels, cfg.out_channels, 3, 1, 1, vb.pp("conv1"))?,
            time_emb_proj: match cfg.temb_dim {
                Some(temb_dim) => Some(Linear::new(temb_dim, cfg.out_channels, vb.pp("time_emb_proj"))?),
                None => None,
            },
            norm2: GroupNorm::new(cfg.groups, cfg.out_channels, cfg.eps, vb.pp("norm2"))?,
            conv2: Conv2d::new(cfg.out_channels, cfg.out_channels, 3, 1, 1, vb.pp("conv2"))?,
            conv_shortcut,
            span: tracing::span!(tracing::Level::TRACE, "resnet"),
        })
    }

    /// Applies the block to `xs` (`[b, c, h, w]`) with time embedding `temb` (`[b, temb_dim]`),
    /// which blocks without a time projection ignore.
    ///
    /// # Errors
    /// A tensor error on mismatched shapes.
    pub fn forward(&self, xs: &Tensor, temb: Option<&Tensor>) -> Result<Tensor> {
        let _enter = self.span.enter();
        let h = self.conv1.forward(&self.norm1.forward_silu(xs)?)?;
        let h = match (&self.time_emb_proj, temb) {
            (Some(projection), Some(temb)) => {
                let t = projection.forward(&temb.silu()?)?;
                self.norm2.forward_silu_shifted(&h, &t)?
            }
            _ => self.norm2.forward_silu(&h)?,
        };
        let shortcut = match &self.conv_shortcut {
            Some(conv) => conv.forward(xs)?,
            None => xs.clone(),
        };
        self.conv2.forward_add(&h, &shortcut)
    }
}
