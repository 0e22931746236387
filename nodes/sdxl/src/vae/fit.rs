//! Fitting a decode into the device memory a run has left: the decoder's (or the encoder's)
//! working memory measured at two small sizes (it grows with the latent's area), and from it,
//! before anything is decoded, whether the image decodes in one piece or the largest tile that
//! fits.

use super::Vae;
use candle_core::{DType, Device, Result, Tensor};
use swapgraph_model::{device_memory, reset_peak_memory};

/// Latent sides the decoder's working memory is measured at.
const PROBE_SIDES: [usize; 2] = [16, 32];

/// The smallest tile, in latent pixels, a decode is split into (128 pixels): what a card with
/// 3 GiB free leaves SDXL's decoder after the sampler.
pub const MIN_TILE: usize = 16;

/// Overlap between tiles, in latent pixels, blended so that seams do not show (64 pixels).
pub const TILE_OVERLAP: usize = 8;

/// Device memory a decode or an encode takes beside the VAE's weights, as a line over the
/// latent's area.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CoderCost {
    /// Bytes at no area: the line's intercept.
    pub base: f64,
    /// Bytes per latent pixel.
    pub per_latent_pixel: f64,
}

/// How a decode is split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodePlan {
    /// The whole latent at once.
    Whole,
    /// Tiles of this many latent pixels a side, overlapping by [`TILE_OVERLAP`].
    Tiles(usize),
}

impl CoderCost {
    /// Measures `vae`'s decoder on `device` in `dtype`; `None` where the device reports no
    /// memory (the CPU).
    ///
    /// # Errors
    /// A tensor error while decoding the probes.
    pub fn measure_decoder(vae: &Vae, device: &Device, dtype: DType) -> Result<Option<Self>> {
        Self::measure(device, |side| {
            drop(vae.decode(&Tensor::zeros((1, vae.latent_channels(), side, side), dtype, device)?)?);
            Ok(())
        })
    }

    /// Measures `vae`'s encoder on `device` in `dtype` (images of 8 pixels per latent pixel);
    /// `None` where the device reports no memory (the CPU).
    ///
    /// # Errors
    /// A tensor error while encoding the probes.
    pub fn measure_encoder(vae: &Vae, device: &Device, dtype: DType) -> Result<Option<Self>> {
        Self::measure(device, |side| {
            drop(vae.encode(&Tensor::zeros((1, 3, side * 8, side * 8), dtype, device)?)?);
            Ok(())
        })
    }

    /// The line through the peaks `probe` reaches at the probe sides, after a first small probe
    /// has allocated what every later one reuses (library workspaces).
    fn measure(device: &Device, probe: impl Fn(usize) -> Result<()>) -> Result<Option<Self>> {
        probe(8)?;
        let mut peaks = [0f64; 2];
        for (peak, side) in peaks.iter_mut().zip(PROBE_SIDES) {
            let Some(before) = device_memory(device) else {
                return Ok(None);
            };
            reset_peak_memory(device);
            probe(side)?;
            let after = device_memory(device).unwrap_or(before);
            *peak = after.peak_allocated.saturating_sub(before.allocated) as f64;
        }
        let area = |side: usize| (side * side) as f64;
        let per_latent_pixel = ((peaks[1] - peaks[0]) / (area(PROBE_SIDES[1]) - area(PROBE_SIDES[0]))).max(0.0);
        Ok(Some(Self {
            base: (peaks[0] - per_latent_pixel * area(PROBE_SIDES[0])).max(0.0),
            per_latent_pixel,
        }))
    }

    /// Bytes decoding (or encoding) `batch` latents of `height` by `width` takes, with the memory pool's slack
    /// around them (as much again, as for the UNet's activations).
    pub fn bytes(&self, (batch, height, width): (usize, usize, usize)) -> u64 {
        (2.0 * (self.base + self.per_latent_pixel * (batch * height * width) as f64)) as u64
    }

    /// Whole when `batch` latents of `height` by `width` decode in `room` bytes, else the
    /// largest tile (a multiple of 8 latent pixels, at least [`MIN_TILE`]) that does.
    ///
    /// # Errors
    /// The least room that decodes them (in [`MIN_TILE`] tiles) when even those do not fit.
    pub fn plan(
        &self,
        (batch, height, width): (usize, usize, usize),
        room: u64,
    ) -> std::result::Result<DecodePlan, u64> {
        if self.bytes((batch, height, width)) <= room {
            return Ok(DecodePlan::Whole);
        }
        let eighths = height.max(width).div_ceil(8);
        (MIN_TILE / 8..eighths)
            .rev()
            .map(|eighth| eighth * 8)
            .find(|&tile| self.bytes((batch, tile, tile)) <= room)
            .map(DecodePlan::Tiles)
            .ok_or_else(|| self.bytes((batch, MIN_TILE, MIN_TILE)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_whole_when_it_fits_else_in_the_largest_tile_that_does() {
        // About SDXL's decoder in f32 with im2col convolutions: 11.5 KiB per image pixel, 64
        // image pixels per latent pixel.
        let cost = CoderCost {
            base: 64.0 * 1024.0 * 1024.0,
            per_latent_pixel: 64.0 * 11.5 * 1024.0,
        };
        const GIB: u64 = 1 << 30;
        assert_eq!(cost.plan((1, 128, 128), 40 * GIB), Ok(DecodePlan::Whole));
        assert_ne!(
            cost.plan((2, 128, 128), 40 * GIB),
            Ok(DecodePlan::Whole),
            "a batch takes more"
        );
        let Ok(DecodePlan::Tiles(tile)) = cost.plan((1, 128, 128), 3 * GIB) else {
            panic!("3 GiB should decode in tiles");
        };
        assert!(tile % 8 == 0 && cost.bytes((1, tile, tile)) <= 3 * GIB);
        assert!(
            cost.bytes((1, tile + 8, tile + 8)) > 3 * GIB,
            "the largest tile that fits"
        );
        assert_eq!(
            cost.plan((1, 128, 128), 100 << 20),
            Err(cost.bytes((1, MIN_TILE, MIN_TILE)))
        );
    }
}
