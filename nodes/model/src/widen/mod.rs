//! Converting to and from 8-bit floats (e4m3): widening weights kept in 8 bits to the dtype a
//! layer computes in, and rounding a layer's inputs to 8 bits for products taken in 8 bits. On
//! CUDA this runs the kernels of `eight_bit.cu`, sixteen elements a thread, a unit's weights in a
//! launch or a few (a launch per tensor costs more than widening the small ones, the norms and
//! biases kept in 8 bits beside the matrices); what they do not take (a strided tensor, a card
//! without 8-bit float units for rounding) goes to candle's own cast kernels, launched by the
//! names they are compiled under (candle's `to_dtype` asks for them under another spelling,
//! `f8e4m3`, and finds none). Elsewhere it is `to_dtype`.

use candle_core::{DType, Result, Tensor};

/// The largest finite e4m3 value: inputs beyond it are clamped to it when rounded to 8 bits.
pub const E4M3_MAX: f64 = 448.0;

/// `tensor` in `dtype`: an 8-bit float tensor widened, anything else converted as candle does.
///
/// # Errors
/// A device error, or a dtype 8-bit floats cannot be widened to on CUDA (only f16, bf16, f32).
pub fn widen(tensor: &Tensor, dtype: DType) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if tensor.dtype() == DType::F8E4M3 && dtype != DType::F8E4M3 && tensor.device().is_cuda() {
        if cuda::widen_together_applies(std::slice::from_ref(tensor), dtype) {
            return Ok(cuda::widen_together(std::slice::from_ref(tensor), dtype)?.remove(0));
        }
        return tensor.apply_op1_no_bwd(&cuda::Cast(dtype));
    }
    tensor.to_dtype(dtype)
}

/// `tensors`, each kept in 8 bits, widened to `dtype` together: on CUDA into one buffer, in a
/// launch for up to 96 of them; elsewhere one by one as [`widen`] does.
///
/// # Errors
/// A device error, or a dtype 8-bit floats cannot be widened to on CUDA (only f16, bf16, f32).
pub fn widen_all(tensors: &[Tensor], dtype: DType) -> Result<Vec<Tensor>> {
    #[cfg(feature = "cuda")]
    if cuda::widen_together_applies(tensors, dtype) {
        return cuda::widen_together(tensors, dtype);
    }
    tensors.iter().map(|tensor| widen(tensor, dtype)).collect()
}

/// `tensor` rounded to e4m3 (to nearest, ties to even), values beyond ±448 clamped to ±448: the
/// input of a product taken in 8 bits, as ComfyUI's `fp8_e4m3fn_fast` rounds it.
///
/// # Errors
/// A device error, or a dtype CUDA cannot round from (only f16, bf16, f32).
pub fn to_e4m3(tensor: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if tensor.dtype() != DType::F8E4M3 && tensor.device().is_cuda() {
        // The kernels convert with saturation to the largest finite value: the clamp.
        if cuda::round_applies(tensor)? {
            return tensor.apply_op1_no_bwd(&cuda::Round);
        }
        return tensor.apply_op1_no_bwd(&cuda::Cast(DType::F8E4M3));
    }
    tensor.clamp(-E4M3_MAX, E4M3_MAX)?.to_dtype(DType::F8E4M3)
}

#[cfg(feature = "cuda")]
mod cuda;

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn tensors_widened_together_keep_their_order_shapes_and_values() {
        // The largest value, the smallest subnormal and the smallest normal one, and a matrix.
        let values = [vec![448f32, -0.001_953_125, 0.5], vec![1.125, -3.0, 96.0, 0.015_625]];
        let shapes = [vec![3], vec![2, 2]];
        let kept: Vec<Tensor> = values
            .iter()
            .zip(&shapes)
            .map(|(v, shape)| {
                Tensor::from_slice(v, shape.as_slice(), &Device::Cpu)
                    .and_then(|t| t.to_dtype(DType::F8E4M3))
                    .unwrap()
            })
            .collect();
        for dtype in [DType::F16, DType::BF16, DType::F32] {
            let wide = widen_all(&kept, dtype).unwrap();
            assert_eq!(wide.len(), 2);
            for ((tensor, expected), shape) in wide.iter().zip(&values).zip(&shapes) {
                assert_eq!((tensor.dims(), tensor.dtype()), (shape.as_slice(), dtype));
                let back = tensor.to_dtype(DType::F32).unwrap().flatten_all().unwrap();
                assert_eq!(&back.to_vec1::<f32>().unwrap(), expected, "{dtype:?}");
            }
        }
    }
}
