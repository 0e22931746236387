//! The UNet as a flat list of steps in execution order, one swap unit each.
//!
//! Walking the list with a stack of skip connections is the whole forward pass, so the unit
//! order a weight store sees is the order the forward pass asks for units, by construction.
//! The cross-attention layers' key and value projections of the conditioning are steps of a
//! second list ([`context_steps`]), run once per conditioning instead of in every pass.

use super::attention::{BasicTransformerBlock, ContextProjection};
use super::stem::{Head, Stem};
use super::transformer::{TransformerIn, TransformerOut};
use super::Section;
use super::UNetConfig;
use crate::blocks::{Downsample2D, ResnetBlock2D, ResnetConfig, Upsample2D};
use candle_core::Result;
use candle_nn::VarBuilder;

/// What a step does.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Op {
    /// Embeddings and `conv_in`; pushes the first skip connection.
    Stem,
    /// A resnet block; `pop_skip` concatenates the top skip first (up path), `push_skip` saves the
    /// result as a skip connection (down path).
    Resnet {
        cfg: ResnetConfig,
        pop_skip: bool,
        push_skip: bool,
    },
    /// Enters a transformer: image to tokens.
    TransformerIn { channels: usize },
    /// One transformer block; `layer` counts cross-attention layers from 0 in execution order.
    Block {
        channels: usize,
        heads: usize,
        layer: usize,
    },
    /// Leaves a transformer: tokens to image, plus the residual; `push_skip` as for resnets.
    TransformerOut { channels: usize, push_skip: bool },
    /// Halves the resolution; pushes a skip connection.
    Downsample { channels: usize },
    /// Doubles the resolution (to the next skip's size).
    Upsample { channels: usize },
    /// Final norm and conv.
    Head,
    /// Projects the conditioning to cross-attention layer `layer`'s keys and values
    /// (`channels` wide).
    ContextProjection { channels: usize, layer: usize },
}

/// One step: the key prefix of its weights, its section and what it does.
#[derive(Clone, Debug)]
pub struct Step {
    /// Key prefix in diffusers naming (empty for stem and head, whose keys are top-level).
    pub name: String,
    /// Section of the UNet.
    pub section: Section,
    /// What it does.
    pub op: Op,
}

/// A step's layer, built from the weights of its unit.
#[derive(Debug)]
pub enum Layer {
    /// See [`Op::Stem`].
    Stem(Stem),
    /// See [`Op::Resnet`].
    Resnet(ResnetBlock2D),
    /// See [`Op::TransformerIn`].
    TransformerIn(TransformerIn),
    /// See [`Op::Block`].
    Block(BasicTransformerBlock),
    /// See [`Op::TransformerOut`].
    TransformerOut(TransformerOut),
    /// See [`Op::Downsample`].
    Downsample(Downsample2D),
    /// See [`Op::Upsample`].
    Upsample(Upsample2D),
    /// See [`Op::Head`].
    Head(Head),
    /// See [`Op::ContextProjection`].
    ContextProjection(ContextProjection),
}

impl Op {
    /// Builds the step's layer from `vb`, rooted at the step's key prefix.
    ///
    /// # Errors
    /// A missing or mis-shaped weight.
    pub fn build(&self, vb: VarBuilder, cfg: &UNetConfig) -> Result<Layer> {
        Ok(match *self {
            Op::Stem => Layer::Stem(Stem::new(vb, cfg)?),
            Op::Resnet { cfg: resnet, .. } => Layer::Resnet(ResnetBlock2D::new(vb, &resnet)?),
            Op::TransformerIn { channels } => Layer::TransformerIn(TransformerIn::new(vb, channels, cfg.norm_groups)?),
            Op::Block { channels, heads, .. } => Layer::Block(BasicTransformerBlock::new(vb, channels, heads)?),
            Op::TransformerOut { channels, .. } => Layer::TransformerOut(TransformerOut::new(vb, channels)?),
            Op::Downsample { channels } => Layer::Downsample(Downsample2D::new(vb, channels)?),
            Op::Upsample { channels } => Layer::Upsample(Upsample2D::new(vb, channels)?),
            Op::Head => Layer::Head(Head::new(vb, cfg)?),
            Op::ContextProjection { channels, .. } => {
                Layer::ContextProjection(ContextProjection::new(vb, cfg.cross_attention_dim, channels)?)
            }
        })
    }
}

/// Appends steps while counting cross-attention layers.
struct Builder<'a> {
    cfg: &'a UNetConfig,
    steps: Vec<Step>,
    cross_attention_layers: usize,
}

impl Builder<'_> {
    fn push(&mut self, name: String, section: Section, op: Op) {
        self.steps.push(Step { name, section, op });
    }

    fn resnet(&mut self, name: String, section: Section, channels: (usize, usize), skips: (bool, bool)) {
        let cfg = ResnetConfig {
            in_channels: channels.0,
            out_channels: channels.1,
            temb_dim: Some(self.cfg.time_embed_dim()),
            groups: self.cfg.norm_groups,
            eps: 1e-5,
        };
        self.push(
            name,
            section,
            Op::Resnet {
                cfg,
                pop_skip: skips.0,
                push_skip: skips.1,
            },
        );
    }

    fn transformer(&mut self, name: &str, section: Section, channels: usize, blocks: usize, push_skip: bool) {
        self.push(name.to_string(), section, Op::TransformerIn { channels });
        let heads = channels / self.cfg.head_dim;
        for block in 0..blocks {
            let layer = self.cross_attention_layers;
            self.cross_attention_layers += 1;
            self.push(
                format!("{name}.transformer_blocks.{block}"),
                section,
                Op::Block { channels, heads, layer },
            );
        }
        self.push(name.to_string(), section, Op::TransformerOut { channels, push_skip });
    }
}

/// The steps of an SDXL-architecture UNet in execution order.
pub fn layout(cfg: &UNetConfig) -> Vec<Step> {
    let mut b = Builder {
        cfg,
        steps: Vec::new(),
        cross_attention_layers: 0,
    };
    let levels = cfg.block_out_channels.len();
    b.push(String::new(), Section::Stem, Op::Stem);
    let mut channels = cfg.block_out_channels[0];
    for level in 0..levels {
        let section = Section::Down(level);
        let out = cfg.block_out_channels[level];
        let blocks = cfg.transformer_layers[level];
        for layer in 0..cfg.layers_per_block {
            let has_attention = blocks > 0;
            b.resnet(
                format!("down_blocks.{level}.resnets.{layer}"),
                section,
                (channels, out),
                (false, !has_attention),
            );
            channels = out;
            if has_attention {
                b.transformer(
                    &format!("down_blocks.{level}.attentions.{layer}"),
                    section,
                    out,
                    blocks,
                    true,
                );
            }
        }
        if level + 1 < levels {
            b.push(
                format!("down_blocks.{level}.downsamplers.0"),
                section,
                Op::Downsample { channels: out },
            );
        }
    }
    b.resnet(
        "mid_block.resnets.0".to_string(),
        Section::Mid,
        (channels, channels),
        (false, false),
    );
    // A middle block without attention is that one resnet.
    if cfg.mid_transformer_layers > 0 {
        b.transformer(
            "mid_block.attentions.0",
            Section::Mid,
            channels,
            cfg.mid_transformer_layers,
            false,
        );
        b.resnet(
            "mid_block.resnets.1".to_string(),
            Section::Mid,
            (channels, channels),
            (false, false),
        );
    }

    let reversed: Vec<usize> = cfg.block_out_channels.iter().rev().copied().collect();
    for level in 0..levels {
        let section = Section::Up(level);
        let out = reversed[level];
        for layer in 0..=cfg.layers_per_block {
            // The skip this resnet concatenates: from the same level of the down path, or from
            // the level below for the last resnet of the level.
            let skip = if layer == cfg.layers_per_block {
                reversed[(level + 1).min(levels - 1)]
            } else {
                out
            };
            b.resnet(
                format!("up_blocks.{level}.resnets.{layer}"),
                section,
                (channels + skip, out),
                (true, false),
            );
            channels = out;
            let blocks = cfg.up_transformer_layers[level][layer];
            if blocks > 0 {
                b.transformer(
                    &format!("up_blocks.{level}.attentions.{layer}"),
                    section,
                    out,
                    blocks,
                    false,
                );
            }
        }
        if level + 1 < levels {
            b.push(
                format!("up_blocks.{level}.upsamplers.0"),
                section,
                Op::Upsample { channels: out },
            );
        }
    }
    b.push(String::new(), Section::Head, Op::Head);
    b.steps
}

/// The context projection steps of `steps`' transformer blocks, in layer order: each block's
/// `attn2.to_k` and `attn2.to_v`.
pub fn context_steps(steps: &[Step]) -> Vec<Step> {
    steps
        .iter()
        .filter_map(|step| match step.op {
            Op::Block { channels, layer, .. } => Some(Step {
                name: format!("{}.attn2", step.name),
                section: Section::Context,
                op: Op::ContextProjection { channels, layer },
            }),
            _ => None,
        })
        .collect()
}
