//! The always-resident ends of the UNet: the stem (input conv, time and added-condition
//! embeddings) and the head (final norm and conv).

use super::embeddings::{timestep_embedding, TimestepEmbedding};
use super::UNetConfig;
use crate::blocks::{Conv2d, GroupNorm};
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

/// `conv_in`, `time_embedding` and `add_embedding`.
#[derive(Debug)]
pub struct Stem {
    conv_in: Conv2d,
    time_embedding: TimestepEmbedding,
    add_embedding: TimestepEmbedding,
    /// Width of the timestep's sinusoidal embedding (the first level's channels).
    time_channels: usize,
    /// Width of each time id's sinusoidal embedding.
    time_id_channels: usize,
}

impl Stem {
    /// Loads the stem's weights.
    ///
    /// # Errors
    /// A missing or mis-shaped weight.
    pub fn new(vb: VarBuilder, cfg: &UNetConfig) -> Result<Self> {
        let channels = cfg.block_out_channels[0];
        Ok(Self {
            conv_in: Conv2d::new(cfg.in_channels, channels, 3, 1, 1, vb.pp("conv_in"))?,
            time_embedding: TimestepEmbedding::new(vb.pp("time_embedding"), channels, cfg.time_embed_dim())?,
            add_embedding: TimestepEmbedding::new(
                vb.pp("add_embedding"),
                cfg.added_condition_dim(),
                cfg.time_embed_dim(),
            )?,
            time_channels: cfg.block_out_channels[0],
            time_id_channels: cfg.addition_time_embed_dim,
        })
    }

    /// The embedding of timestep `timesteps` (`[b]`) plus the added conditioning from the pooled
    /// text `text_embeds` (`[b, pooled]`) and the six size/crop ids `time_ids` (`[b, 6]`).
    ///
    /// # Errors
    /// A tensor error on mismatched shapes.
    pub fn embedding(&self, timesteps: &Tensor, text_embeds: &Tensor, time_ids: &Tensor) -> Result<Tensor> {
        let dtype = text_embeds.dtype();
        let t = timestep_embedding(timesteps, self.time_channels)?.to_dtype(dtype)?;
        let emb = self.time_embedding.forward(&t)?;
        let batch = time_ids.dim(0)?;
        let ids = timestep_embedding(&time_ids.flatten_all()?, self.time_id_channels)?
            .reshape((batch, 6 * self.time_id_channels))?
            .to_dtype(dtype)?;
        let added = self.add_embedding.forward(&Tensor::cat(&[text_embeds, &ids], 1)?)?;
        emb + added
    }

    /// `conv_in(sample)`.
    ///
    /// # Errors
    /// A tensor error on mismatched shapes.
    pub fn conv_in(&self, sample: &Tensor) -> Result<Tensor> {
        self.conv_in.forward(sample)
    }
}

/// `conv_norm_out` and `conv_out`.
#[derive(Debug)]
pub struct Head {
    norm: GroupNorm,
    conv_out: Conv2d,
}

impl Head {
    /// Loads the head's weights.
    ///
    /// # Errors
    /// A missing or mis-shaped weight.
    pub fn new(vb: VarBuilder, cfg: &UNetConfig) -> Result<Self> {
        let channels = cfg.block_out_channels[0];
        Ok(Self {
            norm: GroupNorm::new(cfg.norm_groups, channels, 1e-5, vb.pp("conv_norm_out"))?,
            conv_out: Conv2d::new(channels, cfg.out_channels, 3, 1, 1, vb.pp("conv_out"))?,
        })
    }
}

impl Module for Head {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.conv_out.forward(&self.norm.forward_silu(xs)?)
    }
}
