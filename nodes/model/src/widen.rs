//! Converting to and from 8-bit floats (e4m3): widening weights kept in 8 bits to the dtype a
//! layer computes in, and rounding a layer's inputs to 8 bits for products taken in 8 bits. On
//! CUDA this launches candle's own cast kernels by the names they are compiled under (candle's
//! `to_dtype` asks for them under another spelling, `f8e4m3`, and finds none); elsewhere it is
//! `to_dtype`.

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
        return tensor.apply_op1_no_bwd(&cuda::Cast(dtype));
    }
    tensor.to_dtype(dtype)
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
        return tensor.apply_op1_no_bwd(&cuda::Cast(DType::F8E4M3));
    }
    tensor.clamp(-E4M3_MAX, E4M3_MAX)?.to_dtype(DType::F8E4M3)
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::{kernels, CudaDType, SlicePtrOrNull, WrapErr};
    use candle_core::{CpuStorage, CudaDevice, CudaStorage, CustomOp1, DType, Layout, Result, Shape, WithDType};
    use float8::F8E4M3;
    use half::{bf16, f16};

    /// Converts a tensor to or from e4m3: to the dtype it holds.
    pub(super) struct Cast(pub(super) DType);

    /// The name candle's cast kernels give a dtype.
    fn kernel_name(dtype: DType) -> Result<&'static str> {
        Ok(match dtype {
            DType::F8E4M3 => "f8_e4m3",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F32 => "f32",
            other => candle_core::bail!("8-bit floats convert to and from f16, bf16 or f32, not {other:?}"),
        })
    }

    /// Launches candle's kernel `cast_{from}_{to}` over `storage` (of `I`) as laid out by
    /// `layout`, into a new buffer of `O`.
    fn cast<I: CudaDType + DeviceRepr + WithDType, O: CudaDType + DeviceRepr + WithDType>(
        device: &CudaDevice,
        storage: &CudaStorage,
        layout: &Layout,
    ) -> Result<CudaStorage> {
        let elements = layout.shape().elem_count();
        let input = storage.as_cuda_slice::<I>()?.slice(layout.start_offset()..);
        let info = SlicePtrOrNull::<usize>::params_from_layout(device, layout)?;
        let name = format!("cast_{}_{}", kernel_name(I::DTYPE)?, kernel_name(O::DTYPE)?);
        let function = device.get_or_load_func(&name, &kernels::CAST)?;
        // SAFETY: the kernel writes every element.
        let output = unsafe { device.alloc::<O>(elements)? };
        let dims = layout.dims().len();
        let mut launch = function.builder();
        launch.arg(&elements).arg(&dims);
        info.builder_arg(&mut launch);
        launch.arg(&input).arg(&output);
        // SAFETY: the arguments are those of candle's cast kernels (count, rank, dims and
        // strides or null when contiguous, input, output).
        unsafe { launch.launch(LaunchConfig::for_num_elems(elements as u32)) }.w()?;
        Ok(CudaStorage::wrap_cuda_slice(output, device.clone()))
    }

    impl CustomOp1 for Cast {
        fn name(&self) -> &'static str {
            "cast-f8e4m3"
        }

        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
            candle_core::bail!("8-bit floats are converted with to_dtype on the CPU")
        }

        fn cuda_fwd(&self, storage: &CudaStorage, layout: &Layout) -> Result<(CudaStorage, Shape)> {
            let device = storage.device();
            let converted = match (storage.dtype(), self.0) {
                (DType::F8E4M3, DType::F16) => cast::<F8E4M3, f16>(device, storage, layout)?,
                (DType::F8E4M3, DType::BF16) => cast::<F8E4M3, bf16>(device, storage, layout)?,
                (DType::F8E4M3, DType::F32) => cast::<F8E4M3, f32>(device, storage, layout)?,
                (DType::F16, DType::F8E4M3) => cast::<f16, F8E4M3>(device, storage, layout)?,
                (DType::BF16, DType::F8E4M3) => cast::<bf16, F8E4M3>(device, storage, layout)?,
                (DType::F32, DType::F8E4M3) => cast::<f32, F8E4M3>(device, storage, layout)?,
                (from, to) => candle_core::bail!("no 8-bit float conversion from {from:?} to {to:?}"),
            };
            Ok((converted, layout.shape().clone()))
        }
    }
}
