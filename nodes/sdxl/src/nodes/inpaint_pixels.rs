//! What `VAEEncodeForInpaint` encodes, as ComfyUI prepares it: the pixels under the mask set to
//! mid-grey, so the encoded latents carry nothing of what is to be replaced, and the mask grown
//! by a few pixels for the sampler, so that the seam falls where the latents were kept.

use candle_core::{DType, Result, Tensor};

/// The images `pixels` (`[batch, height, width, 3]`) with mid-grey where `mask`
/// (`[batch or 1, h, w]`, any size, resampled bilinearly to the images') rounds to 1, and the
/// noise mask for the sampler: the rounded mask grown by `grow` pixels (a `grow` x `grow` box,
/// as ComfyUI's convolution with ones), `[batch or 1, 1, height, width]`.
///
/// # Errors
/// Tensors of other ranks.
pub fn masked_for_inpainting(pixels: &Tensor, mask: &Tensor, grow: usize) -> Result<(Tensor, Tensor)> {
    let (_, height, width, _) = pixels.dims4()?;
    let (mask_batch, mask_height, mask_width) = mask.dims3()?;
    let rounded = mask
        .to_dtype(DType::F32)?
        .reshape((mask_batch, 1, mask_height, mask_width))?
        .upsample_bilinear2d(height, width, false)?
        .round()?;
    let grown = match grow {
        0 => rounded.clone(),
        _ => {
            let kernel = Tensor::ones((1, 1, grow, grow), DType::F32, mask.device())?;
            rounded
                .conv2d(&kernel, (grow - 1).div_ceil(2), 1, 1, 1)?
                .clamp(0f32, 1f32)?
                .narrow(2, 0, height)?
                .narrow(3, 0, width)?
        }
    };
    let kept = (1.0 - rounded.squeeze(1)?)?.unsqueeze(3)?;
    let greyed = ((pixels.to_dtype(DType::F32)? - 0.5)?.broadcast_mul(&kept)? + 0.5)?;
    Ok((greyed, grown.round()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, IndexOp};

    #[test]
    fn pixels_under_the_mask_turn_grey_and_the_mask_grows_by_the_box() {
        let cpu = Device::Cpu;
        let pixels = Tensor::ones((1, 8, 8, 3), DType::F32, &cpu).unwrap();
        // One pixel at (3, 3), given at half the size: resampled, it covers a 2x2 block.
        let mut values = vec![0f32; 16];
        values[4 + 1] = 1.0;
        let mask = Tensor::from_vec(values, (1, 4, 4), &cpu).unwrap();
        let (greyed, grown) = masked_for_inpainting(&pixels, &mask, 0).unwrap();
        let grey = greyed
            .i((0, .., .., 0))
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let masked_pixels = grown.sum_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(
            grey,
            64.0 - masked_pixels * 0.5,
            "masked pixels are 0.5, the rest stay 1"
        );
        assert!(masked_pixels > 0.0);
        let (_, wider) = masked_for_inpainting(&pixels, &mask, 3).unwrap();
        assert_eq!(wider.dims(), &[1, 1, 8, 8]);
        let wider_pixels = wider.sum_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(
            wider_pixels > masked_pixels,
            "{wider_pixels} after growing {masked_pixels}"
        );
        let (_, even) = masked_for_inpainting(&pixels, &mask, 6).unwrap();
        assert_eq!(even.dims(), &[1, 1, 8, 8], "an even box is cut back to the image");
    }
}
