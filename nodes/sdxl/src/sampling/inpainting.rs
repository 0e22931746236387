//! Sampling within a mask (inpainting), as ComfyUI's `KSamplerX0Inpaint` does: before each
//! denoise, the latents outside the mask are replaced by the input latents noised to the step's
//! sigma (with the sampling's own starting noise), and the prediction outside the mask by the
//! input latents, so the sampler changes only what the mask lets it and what it keeps blends in.

use super::Denoiser;
use candle_core::{Result, Tensor};

/// A denoiser that changes only what its mask lets it.
pub struct MaskedDenoiser<'a, D: ?Sized> {
    /// The denoiser within the mask.
    pub inner: &'a mut D,
    /// 1 where the sampler denoises, 0 where the input is kept, shaped as the latents.
    pub mask: Tensor,
    /// The input latents.
    pub latents: Tensor,
    /// The noise sampling started from (zeros when none was added).
    pub noise: Tensor,
}

impl<D: Denoiser + ?Sized> Denoiser for MaskedDenoiser<'_, D> {
    fn denoise(&mut self, x: &Tensor, sigma: f64) -> Result<Tensor> {
        let x = self.masked_input(x, sigma)?;
        let denoised = self.inner.denoise(&x, sigma)?;
        self.masked_prediction(&denoised)
    }

    fn denoise_with_unconditioned(&mut self, x: &Tensor, sigma: f64) -> Result<(Tensor, Tensor)> {
        let x = self.masked_input(x, sigma)?;
        let (denoised, unconditioned) = self.inner.denoise_with_unconditioned(&x, sigma)?;
        Ok((
            self.masked_prediction(&denoised)?,
            self.masked_prediction(&unconditioned)?,
        ))
    }
}

impl<D: ?Sized> MaskedDenoiser<'_, D> {
    /// `x` within the mask, the input noised to `sigma` outside it.
    fn masked_input(&self, x: &Tensor, sigma: f64) -> Result<Tensor> {
        let noised_input = (&self.latents + (&self.noise * sigma)?)?;
        (x * &self.mask)? + (noised_input * (1.0 - &self.mask)?)?
    }

    /// `prediction` within the mask, the input outside it.
    fn masked_prediction(&self, prediction: &Tensor) -> Result<Tensor> {
        (prediction * &self.mask)? + (&self.latents * (1.0 - &self.mask)?)?
    }
}

/// `mask` (`[batch or 1, 1, height, width]`, any size) as the latents' shape `[batch, channels,
/// h, w]`: resampled bilinearly to their size, as ComfyUI prepares a noise mask, and repeated
/// over channels and, when it has fewer, over the batch.
///
/// # Errors
/// A mask that is not 4-D with one channel, or whose batch does not divide the latents'.
pub fn latent_mask(mask: &Tensor, shape: &[usize]) -> Result<Tensor> {
    let &[batch, channels, h, w] = shape else {
        candle_core::bail!("latents of shape {shape:?} are not 4-D")
    };
    let (mask_batch, mask_channels, _, _) = mask.dims4()?;
    if mask_channels != 1 || batch % mask_batch != 0 {
        candle_core::bail!(
            "a noise mask of shape {:?} does not fit latents of shape {shape:?}: it needs one channel and 1 or \
             {batch} masks",
            mask.dims()
        );
    }
    let resized = mask.upsample_bilinear2d(h, w, false)?;
    resized.repeat((batch / mask_batch, channels, 1, 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Denoises to a constant, so what the mask keeps is told apart from what it lets change.
    struct Constant(f32);

    impl Denoiser for Constant {
        fn denoise(&mut self, x: &Tensor, _: f64) -> Result<Tensor> {
            x.ones_like()? * f64::from(self.0)
        }
    }

    #[test]
    fn outside_the_mask_the_input_is_kept_and_inside_the_denoiser_decides() {
        let cpu = Device::Cpu;
        let latents = Tensor::full(3f32, (1, 4, 2, 2), &cpu).unwrap();
        let left = Tensor::new(&[[[[1f32, 0.0], [1.0, 0.0]]]], &cpu).unwrap();
        let mut inner = Constant(7.0);
        let mut masked = MaskedDenoiser {
            inner: &mut inner,
            mask: latent_mask(&left, latents.dims()).unwrap(),
            latents: latents.clone(),
            noise: latents.zeros_like().unwrap(),
        };
        let out = masked.denoise(&latents, 1.0).unwrap();
        let row = out.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(
            &row[..4],
            &[7.0, 3.0, 7.0, 3.0],
            "denoised on the left, kept on the right"
        );
    }

    #[test]
    fn a_mask_is_resampled_to_the_latents_and_repeated_over_channels_and_batch() {
        let cpu = Device::Cpu;
        let mask = Tensor::ones((1, 1, 16, 16), candle_core::DType::F32, &cpu).unwrap();
        let fitted = latent_mask(&mask, &[2, 4, 2, 2]).unwrap();
        assert_eq!(fitted.dims(), &[2, 4, 2, 2]);
        assert_eq!(fitted.sum_all().unwrap().to_scalar::<f32>().unwrap(), 32.0);
        let three = Tensor::ones((3, 1, 4, 4), candle_core::DType::F32, &cpu).unwrap();
        let error = latent_mask(&three, &[2, 4, 2, 2]).unwrap_err().to_string();
        assert!(error.contains("1 or 2 masks"), "{error}");
    }
}
