//! Channels-last images: the logical shape stays `[n, c, h, w]` while memory holds each pixel's
//! channels side by side (`[n, h, w, c]`), the order cuDNN's tensor-core convolutions work in.
//! Convolutions hand their outputs back in it and GroupNorm keeps it, so on CUDA an image stays
//! channels-last from layer to layer and no layout transform runs between them; candle's generic
//! operations take such a tensor as any other strided view.

use super::to_pixels::to_pixels;
use candle_core::{Result, Tensor};

/// The memory order a kernel reads and writes images in.
#[cfg(feature = "cuda")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Order {
    /// Packed `[n, h, w, c]` (filters `[k, kh, kw, c]`).
    ChannelsLast,
    /// Packed `[n, c, h, w]` (filters `[k, c, kh, kw]`).
    Planes,
}

/// Whether `t` is a `[n, c, h, w]` view of packed `[n, h, w, c]` memory.
pub fn is_channels_last(t: &Tensor) -> bool {
    let Ok((_, c, h, w)) = t.dims4() else {
        return false;
    };
    t.stride() == [h * w * c, 1, w * c, c]
}

/// `t` (`[n, c, h, w]`) as a channels-last view, copied into that order unless it is already.
///
/// # Errors
/// A tensor that is not of rank 4, or a kernel failure.
pub fn to_channels_last(t: &Tensor) -> Result<Tensor> {
    if is_channels_last(t) {
        return Ok(t.clone());
    }
    image(&packed_pixels(t)?)
}

/// `t` (`[n, c, h, w]`, any layout) as a packed `[n, h, w, c]` tensor: its own memory when it
/// is channels-last or `h * w` is 1, else a copy (by [`to_pixels`] where it applies). Filters `[k, c, kh, kw]`
/// become the `[k, kh, kw, c]` channels-last convolutions take.
///
/// # Errors
/// A tensor that is not of rank 4, or a kernel failure.
pub fn packed_pixels(t: &Tensor) -> Result<Tensor> {
    // Channels-last already, or planes of one position (a 1x1 filter) that are the same memory.
    let viewed = pixels(t)?;
    if viewed.is_contiguous() {
        return Ok(viewed);
    }
    if t.is_contiguous() {
        if let Some(moved) = to_pixels(t)? {
            return Ok(moved);
        }
    }
    viewed.contiguous()
}

/// The packed `[n, h, w, c]` tensor behind a channels-last `t`: the same memory, no copy.
///
/// # Errors
/// A tensor that is not of rank 4.
pub fn pixels(t: &Tensor) -> Result<Tensor> {
    t.permute((0, 2, 3, 1))
}

/// The `[n, c, h, w]` view of a packed `[n, h, w, c]` tensor: the channels-last image.
///
/// # Errors
/// A tensor that is not of rank 4.
pub fn image(pixels: &Tensor) -> Result<Tensor> {
    pixels.permute((0, 3, 1, 2))
}

/// `a` and `b` (`[n, _, h, w]`) joined along the channels: channels-last when either is (a
/// copy of each pixel's two runs of channels), else packed.
///
/// # Errors
/// Tensors that differ in batch, height or width.
pub fn cat_channels(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if is_channels_last(a) || is_channels_last(b) {
        return image(&Tensor::cat(&[&packed_pixels(a)?, &packed_pixels(b)?], 3)?);
    }
    Tensor::cat(&[a, b], 1)
}

/// `op`, an elementwise operation, applied to `xs` in its own layout: a channels-last image
/// stays channels-last, where candle's elementwise operations hand back packed planes.
///
/// # Errors
/// Whatever `op` returns.
pub fn elementwise(xs: &Tensor, op: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    if is_channels_last(xs) {
        return image(&op(&pixels(xs)?)?);
    }
    op(xs)
}

/// `a + b` in the layout of `a`: channels-last when `a` is (`b` made so if it is not).
///
/// # Errors
/// Tensors of different shapes or dtypes.
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if is_channels_last(a) {
        return image(&(pixels(a)? + packed_pixels(b)?)?);
    }
    a + b
}

/// `xs` (`[n, c, h, w]`) scaled up to `height` x `width` by repeating pixels; a channels-last
/// image doubled in each direction stays channels-last (each pixel's channels copied whole).
///
/// # Errors
/// A tensor that is not of rank 4.
pub fn upsample_nearest(xs: &Tensor, height: usize, width: usize) -> Result<Tensor> {
    let (n, c, h, w) = xs.dims4()?;
    if !is_channels_last(xs) || height != 2 * h || width != 2 * w {
        return xs.upsample_nearest2d(height, width);
    }
    let repeated = pixels(xs)?
        .reshape((n, h, 1, w, 1, c))?
        .broadcast_as((n, h, 2, w, 2, c))?
        .contiguous()?;
    image(&repeated.reshape((n, height, width, c))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn elementwise_operations_keep_the_layout_they_are_given() -> Result<()> {
        let planes = Tensor::arange(-12f32, 12.0, &Device::Cpu)?.reshape((1, 6, 2, 2))?;
        let channels_last = to_channels_last(&planes)?;
        let out = elementwise(&channels_last, |t| t.silu())?;
        assert!(is_channels_last(&out), "a channels-last image stays so");
        assert_eq!(
            out.flatten_all()?.to_vec1::<f32>()?,
            planes.silu()?.flatten_all()?.to_vec1::<f32>()?
        );
        let out = elementwise(&planes, |t| t * 0.5)?;
        assert!(out.is_contiguous() && !is_channels_last(&out));
        assert_eq!(
            out.flatten_all()?.to_vec1::<f32>()?,
            (planes * 0.5)?.flatten_all()?.to_vec1::<f32>()?
        );
        Ok(())
    }

    #[test]
    fn channels_last_views_hold_the_same_values_in_pixel_order() -> Result<()> {
        let t = Tensor::arange(0f32, 24.0, &Device::Cpu)?.reshape((1, 3, 2, 4))?;
        assert!(!is_channels_last(&t));
        let last = to_channels_last(&t)?;
        assert!(is_channels_last(&last));
        assert_eq!(
            last.flatten_all()?.to_vec1::<f32>()?,
            t.flatten_all()?.to_vec1::<f32>()?
        );
        // Element (c, y, x) is 8c + 4y + x: the pixel at y = 1, x = 2 holds 6, 14 and 22.
        let memory = pixels(&last)?;
        assert!(memory.is_contiguous());
        assert_eq!(memory.get(0)?.get(1)?.get(2)?.to_vec1::<f32>()?, [6.0, 14.0, 22.0]);
        assert!(is_channels_last(&image(&memory)?));
        Ok(())
    }

    fn same(a: &Tensor, b: &Tensor) -> Result<bool> {
        Ok(a.dims() == b.dims() && a.flatten_all()?.to_vec1::<f32>()? == b.flatten_all()?.to_vec1::<f32>()?)
    }

    #[test]
    fn joins_sums_and_upsampling_keep_channels_last_and_their_values() -> Result<()> {
        let image_of = |channels: usize, start: f32| -> Result<Tensor> {
            Tensor::arange(start, start + (2 * channels * 12) as f32, &Device::Cpu)?.reshape((2, channels, 3, 4))
        };
        let (a, b) = (image_of(3, 0.0)?, image_of(5, 100.0)?);
        let (a_last, b_last) = (to_channels_last(&a)?, to_channels_last(&b)?);

        let joined = cat_channels(&a_last, &b)?;
        assert!(is_channels_last(&joined));
        assert!(same(&joined, &Tensor::cat(&[&a, &b], 1)?)?);
        assert!(!is_channels_last(&cat_channels(&a, &b)?));

        let other = image_of(5, 7.0)?;
        let sum = add(&b_last, &other)?;
        assert!(is_channels_last(&sum));
        assert!(same(&sum, &(&b + &other)?)?);
        assert!(same(&add(&b, &other)?, &(&b + &other)?)?);

        let doubled = upsample_nearest(&a_last, 6, 8)?;
        assert!(is_channels_last(&doubled));
        assert!(same(&doubled, &a.upsample_nearest2d(6, 8)?)?);
        assert!(same(&upsample_nearest(&a_last, 9, 8)?, &a.upsample_nearest2d(9, 8)?)?);
        Ok(())
    }

    #[test]
    fn mismatched_images_and_other_ranks_are_errors() -> Result<()> {
        let image = to_channels_last(&Tensor::zeros((1, 8, 3, 4), candle_core::DType::F32, &Device::Cpu)?)?;
        let taller = Tensor::zeros((1, 8, 5, 4), candle_core::DType::F32, &Device::Cpu)?;
        assert!(cat_channels(&image, &taller).is_err(), "heights differ");
        assert!(add(&image, &taller).is_err(), "shapes differ");
        let tokens = Tensor::zeros((1, 12, 8), candle_core::DType::F32, &Device::Cpu)?;
        assert!(!is_channels_last(&tokens));
        assert!(to_channels_last(&tokens).is_err(), "rank 3");
        assert!(upsample_nearest(&tokens, 6, 8).is_err(), "rank 3");
        Ok(())
    }
}
