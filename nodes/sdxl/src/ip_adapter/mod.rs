//! IP-Adapter for the SDXL UNet: image tokens made by a [`Resampler`] are attended to by every
//! cross-attention layer through its own key and value projections (`to_k_ip`, `to_v_ip`), the
//! result added to the text attention's with a weight ("decoupled cross-attention").
//!
//! Reference: Ye et al., "IP-Adapter: Text Compatible Image Prompt Adapter for Text-to-Image
//! Diffusion Models" (2023); diffusers' `IPAdapterAttnProcessor2_0`.

mod resampler;

pub use resampler::{Resampler, ResamplerConfig};

use crate::unet::Section;
use crate::unet::{layout, ExtraTokens, Op, UNetConfig};
use candle_core::{Module, Result, Tensor};
use candle_nn::{linear_no_bias, Linear, VarBuilder};

/// The per-layer key and value projections of the image tokens, in the UNet's execution order
/// of cross-attention layers (down, middle, up).
#[derive(Debug)]
pub struct IpAdapterLayers {
    to_k: Vec<Linear>,
    to_v: Vec<Linear>,
}

impl IpAdapterLayers {
    /// Loads the projections of every cross-attention layer of a UNet shaped `cfg` from `vb`
    /// (the `ip_adapter` weights). Their keys number the layers as diffusers' attention
    /// processors do: all processors of the down blocks, then the up blocks, then the middle
    /// block, self-attention included, so cross-attention layer `j` in that order is `2j + 1`.
    ///
    /// # Errors
    /// A missing or mis-shaped weight, naming its key.
    pub fn new(vb: VarBuilder, cfg: &UNetConfig) -> Result<Self> {
        let layers = cross_attention_layers(cfg);
        let mut to_k = Vec::with_capacity(layers.len());
        let mut to_v = Vec::with_capacity(layers.len());
        for (channels, index) in layers {
            let key = 2 * index + 1;
            to_k.push(linear_no_bias(
                cfg.cross_attention_dim,
                channels,
                vb.pp(format!("{key}.to_k_ip")),
            )?);
            to_v.push(linear_no_bias(
                cfg.cross_attention_dim,
                channels,
                vb.pp(format!("{key}.to_v_ip")),
            )?);
        }
        Ok(Self { to_k, to_v })
    }

    /// Cross-attention layers covered.
    pub fn len(&self) -> usize {
        self.to_k.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.to_k.is_empty()
    }

    /// The extra key/value tokens layer `layer` attends to for image tokens `tokens`
    /// (`[b, n, cross_attention_dim]`), weighted `scale` (carried in the values).
    ///
    /// # Errors
    /// A tensor error, or a layer this adapter does not have.
    pub fn extra_tokens(&self, layer: usize, tokens: &Tensor, scale: f64) -> Result<ExtraTokens> {
        let (to_k, to_v) = self
            .to_k
            .get(layer)
            .zip(self.to_v.get(layer))
            .ok_or_else(|| candle_core::Error::Msg(format!("IP-Adapter has no cross-attention layer {layer}")))?;
        let tokens = tokens.to_dtype(to_k.weight().dtype())?;
        Ok(ExtraTokens {
            keys: to_k.forward(&tokens)?,
            values: (to_v.forward(&tokens)? * scale)?,
            token_weights: None,
        })
    }
}

/// For each cross-attention layer in execution order: its width and its position in diffusers'
/// processor order (down blocks, up blocks, middle block).
fn cross_attention_layers(cfg: &UNetConfig) -> Vec<(usize, usize)> {
    let rank = |section: Section| match section {
        Section::Up(_) => 1,
        Section::Mid => 2,
        _ => 0,
    };
    let layers: Vec<(usize, usize, usize)> = layout(cfg)
        .iter()
        .filter_map(|step| match step.op {
            Op::Block { channels, layer, .. } => Some((layer, channels, rank(step.section))),
            _ => None,
        })
        .collect();
    let mut diffusers_order: Vec<usize> = (0..layers.len()).collect();
    diffusers_order.sort_by_key(|&i| (layers[i].2, layers[i].0));
    let mut position = vec![0; layers.len()];
    for (j, &i) in diffusers_order.iter().enumerate() {
        position[i] = j;
    }
    layers.iter().enumerate().map(|(i, l)| (l.1, position[i])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdxl_has_seventy_layers_numbered_as_diffusers_does() {
        let layers = cross_attention_layers(&UNetConfig::sdxl());
        assert_eq!(layers.len(), 70);
        // Execution order: 24 down, 10 middle, 36 up; diffusers: down, up, middle.
        assert_eq!(layers[0], (640, 0));
        assert_eq!(layers[23], (1280, 23));
        assert_eq!(
            layers[24],
            (1280, 60),
            "the first middle layer comes after all up layers"
        );
        assert_eq!(layers[34], (1280, 24), "the first up layer follows the down layers");
        assert_eq!(layers[69], (640, 59));
    }
}
