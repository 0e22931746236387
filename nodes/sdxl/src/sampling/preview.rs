//! Previews of sampling as ComfyUI's default latent previews make them: the sampler's current
//! prediction of the clean latents, projected to RGB by SDXL's fixed factors, one pixel per
//! latent.

use super::Denoiser;
use candle_core::{DType, Device, Result, Tensor};
use std::cell::RefCell;
use std::rc::Rc;
use swapgraph_node_api::Preview;

/// Each latent channel's contribution to red, green and blue (ComfyUI's SDXL latent format).
const RGB_FACTORS: [[f32; 3]; 4] = [
    [0.3651, 0.4232, 0.4341],
    [-0.2533, -0.0042, 0.1068],
    [0.1076, 0.1111, -0.0362],
    [-0.3165, -0.2492, -0.2188],
];
const RGB_BIAS: [f32; 3] = [0.1084, -0.0175, -0.0011];

/// A denoiser whose last prediction is kept for a preview.
pub struct Watched<'a, D: ?Sized> {
    /// The denoiser watched.
    pub inner: &'a mut D,
    /// Its latest prediction.
    pub latest: Rc<RefCell<Option<Tensor>>>,
}

impl<D: Denoiser + ?Sized> Denoiser for Watched<'_, D> {
    fn denoise(&mut self, x: &Tensor, sigma: f64) -> Result<Tensor> {
        let denoised = self.inner.denoise(x, sigma)?;
        *self.latest.borrow_mut() = Some(denoised.clone());
        Ok(denoised)
    }

    fn denoise_with_unconditioned(&mut self, x: &Tensor, sigma: f64) -> Result<(Tensor, Tensor)> {
        let (denoised, unconditioned) = self.inner.denoise_with_unconditioned(x, sigma)?;
        *self.latest.borrow_mut() = Some(denoised.clone());
        Ok((denoised, unconditioned))
    }
}

/// The first latent of `denoised` (`[batch, 4, height, width]`) as an RGB picture of its size.
///
/// # Errors
/// Latents of another shape, or a device error.
pub fn latent_preview(denoised: &Tensor) -> Result<Preview> {
    let (_, channels, height, width) = denoised.dims4()?;
    if channels != RGB_FACTORS.len() {
        candle_core::bail!("a preview needs latents of 4 channels, these have {channels}");
    }
    let planes = denoised
        .get(0)?
        .to_dtype(DType::F32)?
        .to_device(&Device::Cpu)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let pixels = height * width;
    let rgb: Vec<u8> = (0..pixels)
        .flat_map(|p| {
            let planes = &planes;
            (0..3).map(move |c| {
                let value = RGB_FACTORS.iter().enumerate().fold(RGB_BIAS[c], |sum, (k, factors)| {
                    sum + planes[k * pixels + p] * factors[c]
                });
                (((value + 1.0) / 2.0).clamp(0.0, 1.0) * 255.0) as u8
            })
        })
        .collect();
    Ok(Preview {
        width: width as u32,
        height: height as u32,
        rgb: rgb.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_latent_becomes_one_pixel_by_the_factors() {
        // One latent of 1 x 2: zeros, then the first channel at 1.
        let latents = Tensor::from_vec(
            vec![0f32, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            (1, 4, 1, 2),
            &Device::Cpu,
        )
        .unwrap();
        let preview = latent_preview(&latents).unwrap();
        assert_eq!((preview.width, preview.height), (2, 1));
        let expected = |value: f32| (((value + 1.0) / 2.0).clamp(0.0, 1.0) * 255.0) as u8;
        let zero: Vec<u8> = RGB_BIAS.iter().map(|&b| expected(b)).collect();
        let one: Vec<u8> = (0..3).map(|c| expected(RGB_BIAS[c] + RGB_FACTORS[0][c])).collect();
        assert_eq!(&preview.rgb[..3], zero.as_slice());
        assert_eq!(&preview.rgb[3..], one.as_slice());
    }
}
