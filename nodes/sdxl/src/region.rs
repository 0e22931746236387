//! Where an adapter acts: a mask over the image that limits what InstantID's face tokens and
//! IdentityNet add to the places it covers, at whatever grid each layer works on.

use candle_core::{DType, Device, Result, Tensor};

/// A region of the generated image, 1 inside and 0 outside, with soft edges allowed.
///
/// Kept at its own resolution; each layer asks for it at its feature-map size, resized
/// bilinearly (half-pixel centres, as PyTorch's `interpolate` without `align_corners`), so
/// one mask serves every resolution of the UNet and of the ControlNet.
#[derive(Clone, Debug)]
pub struct RegionMask {
    /// `[1, 1, h, w]`, f32, on the CPU.
    mask: Tensor,
}

impl RegionMask {
    /// The region `mask` (`[h, w]` or a batch `[b, h, w]` whose first mask is used), values
    /// clamped to 0..1.
    ///
    /// # Errors
    /// A mask of another rank, or an empty one.
    pub fn new(mask: &Tensor) -> Result<Self> {
        let mask = match mask.rank() {
            2 => mask.clone(),
            3 => mask.get(0)?,
            rank => candle_core::bail!("a mask is [height, width] or [batch, height, width], not rank {rank}"),
        };
        let (h, w) = mask.dims2()?;
        if h == 0 || w == 0 {
            candle_core::bail!("the mask is empty ({w}x{h})");
        }
        let mask = mask
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F32)?
            .clamp(0.0, 1.0)?
            .reshape((1, 1, h, w))?;
        Ok(Self { mask })
    }

    /// The mask at `height` x `width`, `[1, 1, height, width]` in `dtype` on `device`.
    ///
    /// # Errors
    /// A tensor error.
    pub fn at(&self, height: usize, width: usize, device: &Device, dtype: DType) -> Result<Tensor> {
        let (_, _, h, w) = self.mask.dims4()?;
        let resized = if (h, w) == (height, width) {
            self.mask.clone()
        } else {
            self.mask.upsample_bilinear2d(height, width, false)?
        };
        resized.to_device(device)?.to_dtype(dtype)
    }

    /// The mask over the `height * width` tokens of a transformer, row-major as the tokens are:
    /// `[1, height * width, 1]`, to weight an attention output in token layout.
    ///
    /// # Errors
    /// A tensor error.
    pub fn token_weights(&self, height: usize, width: usize, device: &Device, dtype: DType) -> Result<Tensor> {
        self.at(height, width, device, dtype)?.reshape((1, height * width, 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mask_of_the_grid_size_is_used_as_is_and_values_are_clamped() -> Result<()> {
        let values = Tensor::new(&[[0.0f32, 2.0], [-1.0, 0.5]], &Device::Cpu)?;
        let region = RegionMask::new(&values)?;
        let at = region
            .at(2, 2, &Device::Cpu, DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        assert_eq!(at, vec![0.0, 1.0, 0.0, 0.5]);
        let tokens = region.token_weights(2, 2, &Device::Cpu, DType::F32)?;
        assert_eq!(tokens.dims(), &[1, 4, 1]);
        Ok(())
    }

    #[test]
    fn masks_of_other_ranks_or_empty_are_refused() {
        let flat = Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap();
        assert!(RegionMask::new(&flat).unwrap_err().to_string().contains("rank 1"));
        let empty = Tensor::zeros((0, 3), DType::F32, &Device::Cpu).unwrap();
        assert!(RegionMask::new(&empty).unwrap_err().to_string().contains("empty"));
    }
}
