//! SDXL's VAE (diffusers' `AutoencoderKL`): images to latents and back.
//!
//! Reference: Kingma and Welling, "Auto-Encoding Variational Bayes" (2013); diffusers
//! `models/autoencoders/autoencoder_kl.py`.

mod attention;
mod coder;
mod config;
mod tiled;

pub use config::VaeConfig;
pub use tiled::decode_tiled;

use candle_core::{Module, Result, Tensor};
use candle_nn::{conv2d, Conv2d, VarBuilder};
use coder::{Decoder, Encoder};

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
