//! SDXL's VAE (diffusers' `AutoencoderKL`): images to latents and back.
//!
//! Reference: Kingma and Welling, "Auto-Encoding Variational Bayes" (2013); diffusers
//! `models/autoencoders/autoencoder_kl.py`.

mod attention;
mod coder;
mod config;
#[cfg(all(test, feature = "cuda"))]
mod cuda_tests;
mod fit;
mod tiled;

pub use config::VaeConfig;
pub use fit::{CoderCost, DecodePlan, MIN_TILE, TILE_OVERLAP};
pub use tiled::decode_tiled;

use crate::device::vae_dtype;
use candle_core::{Device, Module, Result, Tensor};
use candle_nn::{conv2d, Conv2d, VarBuilder};
use coder::{Decoder, Encoder};
use std::sync::Arc;
use swapgraph_model::{record_params, OnDevice, TensorSource};

/// The VAE value: its master on the host, on a device while it encodes or decodes.
pub type VaeModel = OnDevice<Vae>;

/// An `AutoencoderKL` with its quantisation convolutions.
#[derive(Debug)]
pub struct Vae {
    encoder: Encoder,
    decoder: Decoder,
    quant_conv: Conv2d,
    post_quant_conv: Conv2d,
    cfg: VaeConfig,
}

impl Vae {
    /// Loads `encoder.*`, `decoder.*`, `quant_conv` and `post_quant_conv`.
    ///
    /// # Errors
    /// A missing or mis-shaped weight.
    pub fn new(vb: VarBuilder, cfg: &VaeConfig) -> Result<Self> {
        let latent = cfg.latent_channels;
        Ok(Self {
            encoder: Encoder::new(vb.pp("encoder"), cfg)?,
            decoder: Decoder::new(vb.pp("decoder"), cfg)?,
            quant_conv: conv2d(2 * latent, 2 * latent, 1, Default::default(), vb.pp("quant_conv"))?,
            post_quant_conv: conv2d(latent, latent, 1, Default::default(), vb.pp("post_quant_conv"))?,
            cfg: *cfg,
        })
    }

    /// Its sizes.
    pub fn config(&self) -> &VaeConfig {
        &self.cfg
    }

    /// The VAE whose master is `source`, built on a device when it is used there and dropped
    /// from it when another model needs the room.
    ///
    /// # Errors
    /// A configuration whose parameters cannot be listed.
    pub fn on_demand(name: &str, source: Arc<TensorSource>, cfg: VaeConfig) -> Result<VaeModel> {
        let params = record_params(|vb| Self::new(vb, &cfg))?;
        let elements = params.iter().map(|(_, shape)| shape.elem_count() as u64).sum::<u64>();
        let bytes = move |device: &Device| elements * vae_dtype(device).size_in_bytes() as u64;
        Ok(OnDevice::new(format!("VAE ({name})"), bytes, move |device: &Device| {
            Self::new(source.var_builder(vae_dtype(device), device), &cfg)
        }))
    }

    /// Channels of the latents it decodes.
    pub fn latent_channels(&self) -> usize {
        self.cfg.latent_channels
    }

    /// The mean of the latent distribution of `images` (`[b, 3, H, W]` in -1..1), scaled by the
    /// scaling factor: the latents a sampler works on.
    ///
    /// # Errors
    /// A tensor error on mismatched shapes.
    pub fn encode(&self, images: &Tensor) -> Result<Tensor> {
        let moments = self.quant_conv.forward(&self.encoder.forward(images)?)?;
        let mean = moments.narrow(1, 0, self.cfg.latent_channels)?;
        mean * self.cfg.scaling_factor
    }

    /// Images in -1..1 (unclamped) from scaled latents.
    ///
    /// # Errors
    /// A tensor error on mismatched shapes.
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        let latents = (latents / self.cfg.scaling_factor)?;
        self.decoder.forward(&self.post_quant_conv.forward(&latents)?)
    }
}
