//! What the kernels' candle ops share: which tensors they take and how they launch.

use candle_core::cuda_backend::cudarc::driver::CudaView;
use candle_core::cuda_backend::CudaDType;
use candle_core::{CudaStorage, DType, Device, Layout, Result, Storage, Tensor};
use half::f16;

/// Whether `t` is an f16 tensor on a CUDA device, contiguous from a 16-byte aligned start: what
/// kernels reading eight halves at a time need.
pub fn packed_f16(t: &Tensor) -> bool {
    let layout = t.layout();
    matches!(t.device(), Device::Cuda(_))
        && t.dtype() == DType::F16
        && layout.is_contiguous()
        && layout.start_offset() % 8 == 0
}

/// Whether all of `tensors` are [`packed_f16`] on the device of the first.
pub fn all_packed_f16(tensors: &[&Tensor]) -> bool {
    tensors
        .iter()
        .all(|t| packed_f16(t) && t.device().same_device(tensors[0].device()))
}

/// Whether all of `tensors` are f16, or all bf16, on the CUDA device of the first, contiguous
/// from 16-byte aligned starts: what kernels written for both 16-bit formats take.
pub fn all_packed_16_bit(tensors: &[&Tensor]) -> bool {
    let dtype = tensors[0].dtype();
    matches!(dtype, DType::F16 | DType::BF16)
        && tensors.iter().all(|t| {
            let layout = t.layout();
            matches!(t.device(), Device::Cuda(_))
                && t.dtype() == dtype
                && layout.is_contiguous()
                && layout.start_offset() % 8 == 0
                && t.device().same_device(tensors[0].device())
        })
}

/// The storage and layout of each of a three-tensor op's arguments, as `CustomOp3::cuda_fwd`
/// receives them.
pub type ThreeTensors<'a> = (
    &'a CudaStorage,
    &'a Layout,
    &'a CudaStorage,
    &'a Layout,
    &'a CudaStorage,
    &'a Layout,
);

/// The elements of a storage of dtype `T` from its layout's start.
///
/// # Errors
/// A storage of another dtype.
pub fn typed_view<'a, T: CudaDType>(storage: &'a CudaStorage, layout: &Layout) -> Result<CudaView<'a, T>> {
    Ok(storage.as_cuda_slice::<T>()?.slice(layout.start_offset()..))
}

/// [`typed_view`] of a tensor an op holds beside its arguments, from its `storage_and_layout()`.
///
/// # Errors
/// A tensor that is not on a CUDA device, or of another dtype.
pub fn held_typed_view<'a, T: CudaDType>(storage: &'a Storage, layout: &Layout) -> Result<CudaView<'a, T>> {
    match storage {
        Storage::Cuda(storage) => typed_view(storage, layout),
        _ => candle_core::bail!("a tensor a kernel holds is not on the CUDA device"),
    }
}

/// The f16 elements of a storage from its layout's start.
///
/// # Errors
/// A storage of another dtype.
pub fn view<'a>(storage: &'a CudaStorage, layout: &Layout) -> Result<CudaView<'a, f16>> {
    typed_view(storage, layout)
}

/// The f16 elements of a tensor an op holds beside its arguments (a residual, a shift), from
/// its `storage_and_layout()`.
///
/// # Errors
/// A tensor that is not on a CUDA device, or not f16.
pub fn held_view<'a>(storage: &'a Storage, layout: &Layout) -> Result<CudaView<'a, f16>> {
    held_typed_view(storage, layout)
}

pub use swapgraph_model::nvrtc::grid_stride;

/// The largest error of a kernel's output (any device, any dtype) against an f32 reference on
/// the CPU, relative to the reference's magnitude where that exceeds 1: `|out - ref| / max(1, |ref|)`.
#[cfg(test)]
pub fn max_relative_error(output: &Tensor, reference: &Tensor) -> Result<f32> {
    let output = output.to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
    let scale = reference.abs()?.maximum(1f32)?;
    ((output - reference)?.abs()? / scale)?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f32>()
}

/// The largest error of a kernel's output against an f32 reference on the CPU, relative to the
/// reference's largest value: for outputs whose every element sums thousands of large products,
/// where an element near zero carries the absolute error of the large ones.
#[cfg(test)]
pub fn error_of_largest_value(output: &Tensor, reference: &Tensor) -> Result<f32> {
    let output = output.to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
    let largest = reference.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
    let worst = (output - reference)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
    Ok(worst / largest.max(f32::MIN_POSITIVE))
}

/// `values` rounded through f16, as f32 on the CPU (for the reference) and as f16 on `device`
/// (for the kernel), so that both see exactly the same inputs.
#[cfg(test)]
pub fn rounded_pair(values: &Tensor, device: &Device) -> Result<(Tensor, Tensor)> {
    rounded_pair_in(DType::F16, values, device)
}

/// [`rounded_pair`] through `dtype` (f16 or bf16) instead.
#[cfg(test)]
pub fn rounded_pair_in(dtype: DType, values: &Tensor, device: &Device) -> Result<(Tensor, Tensor)> {
    let rounded = values.to_dtype(dtype)?;
    Ok((rounded.to_dtype(DType::F32)?, rounded.to_device(device)?))
}

/// Standard normal values of `shape`, as [`rounded_pair`].
#[cfg(test)]
pub fn random_pair(shape: &[usize], device: &Device) -> Result<(Tensor, Tensor)> {
    rounded_pair(&Tensor::randn(0f32, 1.0, shape, &Device::Cpu)?, device)
}
