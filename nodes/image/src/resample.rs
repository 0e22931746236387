//! Resampling `[batch, channels, height, width]` tensors as PyTorch's `F.interpolate` does
//! without aligned corners (`nearest-exact`, `bilinear`, `bicubic`) and as its adaptive average
//! pooling does (`area`): each axis is one matrix of weights, so an image or a latent is
//! resampled with two matrix products on whatever device it is on. ComfyUI's `bislerp` (for
//! latents) and `lanczos` (Pillow's, for images) run on the host.

use crate::{bislerp, lanczos};
use candle_core::{DType, Device, Result, Tensor};

/// How values between samples are found, with PyTorch's (and ComfyUI's) names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, swapgraph_node_api::Choice)]
pub enum ScaleMethod {
    /// The nearest sample, rounding half up.
    #[choice(name = "nearest-exact")]
    NearestExact,
    /// Linear between the two nearest samples on each axis.
    Bilinear,
    /// The average over the area each output sample covers.
    Area,
    /// Cubic convolution (a = -0.75) over the four nearest samples on each axis.
    Bicubic,
    /// Spherical interpolation of each sample's channel vector between its two nearest source
    /// samples, as ComfyUI does for latents (images take it too).
    Bislerp,
    /// Pillow's Lanczos filter (3 lobes) on the images in 8 bits, as ComfyUI's `lanczos`;
    /// latents are refused.
    Lanczos,
}

/// The methods that resample with one weight matrix per axis.
#[derive(Clone, Copy)]
enum Matrix {
    NearestExact,
    Bilinear,
    Area,
    Bicubic,
}

/// `x` resampled to `height` by `width`, in f32.
///
/// # Errors
/// A tensor that is not 4-D, or a device error.
pub fn resize(x: &Tensor, (height, width): (usize, usize), method: ScaleMethod) -> Result<Tensor> {
    let (batch, channels, in_height, in_width) = x.dims4()?;
    let device = x.device();
    let matrix = match method {
        ScaleMethod::NearestExact => Matrix::NearestExact,
        ScaleMethod::Bilinear => Matrix::Bilinear,
        ScaleMethod::Area => Matrix::Area,
        ScaleMethod::Bicubic => Matrix::Bicubic,
        ScaleMethod::Bislerp => return on_host(x, (height, width), bislerp::resize),
        ScaleMethod::Lanczos => return on_host(x, (height, width), lanczos::resize),
    };
    let rows = Tensor::from_vec(weights(matrix, in_height, height), (height, in_height), device)?;
    let columns = Tensor::from_vec(weights(matrix, in_width, width), (width, in_width), device)?.t()?;
    let planes = x
        .to_dtype(DType::F32)?
        .reshape((batch * channels, in_height, in_width))?;
    let resized = rows
        .broadcast_left(batch * channels)?
        .matmul(&planes)?
        .matmul(&columns.broadcast_left(batch * channels)?)?;
    resized.reshape((batch, channels, height, width))
}

/// A resampling of `[batch, channels, height, width]` values in host memory, to a new height
/// and width.
type HostResample = fn(&[f32], (usize, usize), (usize, usize), (usize, usize)) -> Vec<f32>;

/// `x` resampled to `size` by `resample` on the host, then returned to `x`'s device.
fn on_host(x: &Tensor, size: (usize, usize), resample: HostResample) -> Result<Tensor> {
    let (batch, channels, in_height, in_width) = x.dims4()?;
    let host = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let values = resample(&host, (batch, channels), (in_height, in_width), size);
    Tensor::from_vec(values, (batch, channels, size.0, size.1), &Device::Cpu)?.to_device(x.device())
}

/// The `output` x `input` weights that resample one axis.
fn weights(method: Matrix, input: usize, output: usize) -> Vec<f32> {
    let mut matrix = vec![0f32; output * input];
    let scale = input as f64 / output as f64;
    let last = input as i64 - 1;
    for out in 0..output {
        let row = &mut matrix[out * input..(out + 1) * input];
        let mut add = |index: i64, weight: f64| row[index.clamp(0, last) as usize] += weight as f32;
        let centre = (out as f64 + 0.5) * scale;
        match method {
            Matrix::NearestExact => add(centre.floor() as i64, 1.0),
            Matrix::Bilinear => {
                let source = (centre - 0.5).max(0.0);
                let low = source.floor();
                let t = source - low;
                add(low as i64, 1.0 - t);
                add(low as i64 + 1, t);
            }
            Matrix::Bicubic => {
                let source = centre - 0.5;
                let low = source.floor();
                let t = source - low;
                for (offset, weight) in [-1i64, 0, 1, 2].into_iter().zip(cubic_weights(t)) {
                    add(low as i64 + offset, weight);
                }
            }
            Matrix::Area => {
                let start = (out * input) / output;
                let end = ((out + 1) * input).div_ceil(output);
                for index in start..end {
                    add(index as i64, 1.0 / (end - start) as f64);
                }
            }
        }
    }
    matrix
}

/// Keys' cubic convolution weights (a = -0.75, as PyTorch) for the samples at -1, 0, 1 and 2
/// from the one below, at fraction `t` past it.
fn cubic_weights(t: f64) -> [f64; 4] {
    const A: f64 = -0.75;
    let near = |x: f64| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f64| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
}

/// `x` cropped about its centre to the aspect ratio of `width` by `height`, as ComfyUI's
/// `crop: center` does before resampling (Python's rounding, halves to even).
///
/// # Errors
/// A tensor that is not 4-D.
pub fn crop_to_aspect(x: &Tensor, (height, width): (usize, usize)) -> Result<Tensor> {
    let (_, _, old_height, old_width) = x.dims4()?;
    let (old_aspect, new_aspect) = (old_width as f64 / old_height as f64, width as f64 / height as f64);
    let (mut left, mut top) = (0, 0);
    if old_aspect > new_aspect {
        left = ((old_width as f64 - old_width as f64 * (new_aspect / old_aspect)) / 2.0).round_ties_even() as usize;
    } else if old_aspect < new_aspect {
        top = ((old_height as f64 - old_height as f64 * (old_aspect / new_aspect)) / 2.0).round_ties_even() as usize;
    }
    x.narrow(2, top, old_height - 2 * top)?
        .narrow(3, left, old_width - 2 * left)
}

/// Against PyTorch's `F.interpolate` (nearest-exact, bilinear and bicubic without aligned
/// corners) and adaptive average pooling (area), down and up, on the fixture
/// `fixtures/make_fixtures.py` writes.
#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use swapgraph_node_api::Choice;

    #[test]
    fn every_method_resamples_as_pytorch_does() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/resample_cases.safetensors");
        let cases = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
        let input = &cases["input"];
        let mut checked = 0;
        for (name, expected) in &cases {
            let Some((method, size)) = name.split_once('.') else {
                continue;
            };
            let (height, width) = size.split_once('x').unwrap();
            let size = (height.parse().unwrap(), width.parse().unwrap());
            let ours = resize(input, size, ScaleMethod::from_name(method).unwrap()).unwrap();
            let difference = (ours - expected)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(difference < 1e-5, "{name}: {difference}");
            checked += 1;
        }
        assert_eq!(checked, 24, "four sizes in six methods");
    }
}
