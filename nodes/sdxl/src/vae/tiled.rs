//! Tiled decoding: large latents decoded in overlapping tiles blended with linear ramps, so the
//! decoder's activations for one tile, not the whole image, must fit in memory (ComfyUI's
//! `VAEDecodeTiled`). The middle block's attention then sees one tile at a time, so results
//! differ slightly from a whole decode; a tile covering the whole latent decodes it whole.

use super::Vae;
use candle_core::{DType, Device, Result, Tensor};

/// Decodes `latents` (`[b, c, h, w]`) in tiles of `tile` latent pixels overlapping by `overlap`.
///
/// # Errors
/// A tensor error, or `overlap` not smaller than `tile`.
pub fn decode_tiled(vae: &Vae, latents: &Tensor, tile: usize, overlap: usize) -> Result<Tensor> {
    let (b, _, h, w) = latents.dims4()?;
    if tile >= h && tile >= w {
        return vae.decode(latents);
    }
    if overlap >= tile {
        candle_core::bail!("overlap {overlap} must be smaller than the tile size {tile} (in latent pixels)");
    }
    let scale = 8;
    let device = latents.device();
    let mut sum = Tensor::zeros((b, 3, h * scale, w * scale), DType::F32, device)?;
    let mut weight = Tensor::zeros((1, 1, h * scale, w * scale), DType::F32, device)?;
    for y in starts(h, tile, overlap) {
        for x in starts(w, tile, overlap) {
            let (th, tw) = (tile.min(h - y), tile.min(w - x));
            let decoded = vae
                .decode(&latents.narrow(2, y, th)?.narrow(3, x, tw)?)?
                .to_dtype(DType::F32)?;
            let ramp_y = ramp(th * scale, overlap * scale, y > 0, y + th < h);
            let ramp_x = ramp(tw * scale, overlap * scale, x > 0, x + tw < w);
            let mask = mask(&ramp_y, &ramp_x, device)?;
            let region = |t: &Tensor, add: &Tensor| -> Result<Tensor> {
                let padded = add.pad_with_zeros(2, y * scale, (h - y - th) * scale)?.pad_with_zeros(
                    3,
                    x * scale,
                    (w - x - tw) * scale,
                )?;
                t + padded
            };
            sum = region(&sum, &decoded.broadcast_mul(&mask)?)?;
            weight = region(&weight, &mask)?;
        }
    }
    sum.broadcast_div(&weight)
}

/// Tile origins covering `0..size` with tiles of `tile` overlapping by `overlap`.
fn starts(size: usize, tile: usize, overlap: usize) -> Vec<usize> {
    if size <= tile {
        return vec![0];
    }
    let stride = tile - overlap;
    let mut origins: Vec<usize> = (0..).map(|i| i * stride).take_while(|&s| s + tile < size).collect();
    origins.push(size - tile);
    origins
}

/// Weights along one axis: rising over `overlap` pixels at a shared leading edge, falling at a
/// shared trailing edge, 1 elsewhere (never 0, so every pixel has weight).
fn ramp(length: usize, overlap: usize, lead: bool, trail: bool) -> Vec<f32> {
    (0..length)
        .map(|i| {
            let rise = if lead && overlap > 0 {
                ((i + 1) as f32 / overlap as f32).min(1.0)
            } else {
                1.0
            };
            let fall = if trail && overlap > 0 {
                ((length - i) as f32 / overlap as f32).min(1.0)
            } else {
                1.0
            };
            rise.min(fall)
        })
        .collect()
}

fn mask(ramp_y: &[f32], ramp_x: &[f32], device: &Device) -> Result<Tensor> {
    let y = Tensor::new(ramp_y, device)?.reshape((1, 1, ramp_y.len(), 1))?;
    let x = Tensor::new(ramp_x, device)?.reshape((1, 1, 1, ramp_x.len()))?;
    y.broadcast_mul(&x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_cover_everything_and_ramps_never_vanish() {
        assert_eq!(starts(10, 4, 1), [0, 3, 6]);
        assert_eq!(starts(4, 8, 2), [0]);
        assert_eq!(starts(9, 4, 2), [0, 2, 4, 5]);
        let r = ramp(8, 4, true, true);
        assert!(r.iter().all(|&v| v > 0.0));
        assert_eq!(r[3], 1.0);
        assert_eq!(ramp(5, 4, false, false), [1.0; 5]);
    }
}
