//! Widening weights kept in 8-bit floats to the dtype a layer computes in, as the layer is
//! built. On CUDA this launches candle's own cast kernels by the names they are compiled under
//! (candle's `to_dtype` asks for them under another spelling, `f8e4m3`, and finds none);
//! elsewhere it is `to_dtype`.

use candle_core::{DType, Result, Tensor};

/// `tensor` in `dtype`: an 8-bit float tensor widened, anything else converted as candle does.
///
/// # Errors
/// A device error, or a dtype 8-bit floats cannot be widened to on CUDA (only f16, bf16, f32).
pub(crate) fn widen(tensor: &Tensor, dtype: DType) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if tensor.dtype() == DType::F8E4M3 && dtype != DType::F8E4M3 && tensor.device().is_cuda() {
        return tensor.apply_op1_no_bwd(&cuda::Widen(dtype));
    }
    tensor.to_dtype(dtype)
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::{kernels, CudaDType, SlicePtrOrNull, WrapErr};
    use candle_core::{CpuStorage, CudaDevice, CudaStorage, CustomOp1, DType, Layout, Result, Shape};

    /// Widens an 8-bit float (e4m3) tensor to the dtype it holds.
    pub(super) struct Widen(pub(super) DType);

    /// Launches candle's kernel `cast_f8_e4m3_{target}` over `storage` as laid out by `layout`,
    /// into a new buffer of `T`.
    fn cast<T: CudaDType + DeviceRepr>(
        device: &CudaDevice,
        storage: &CudaStorage,
        layout: &Layout,
        target: &str,
    ) -> Result<CudaStorage> {
        let elements = layout.shape().elem_count();
        let input = storage
            .as_cuda_slice::<float8::F8E4M3>()?
            .slice(layout.start_offset()..);
        let info = SlicePtrOrNull::<usize>::params_from_layout(device, layout)?;
        let function = device.get_or_load_func(&format!("cast_f8_e4m3_{target}"), &kernels::CAST)?;
        // SAFETY: the kernel writes every element.
        let output = unsafe { device.alloc::<T>(elements)? };
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

    impl CustomOp1 for Widen {
        fn name(&self) -> &'static str {
            "widen-f8e4m3"
        }

        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
            candle_core::bail!("8-bit weights are widened with to_dtype on the CPU")
        }

        fn cuda_fwd(&self, storage: &CudaStorage, layout: &Layout) -> Result<(CudaStorage, Shape)> {
            let device = storage.device();
            let widened = match self.0 {
                DType::F16 => cast::<half::f16>(device, storage, layout, "f16")?,
                DType::BF16 => cast::<half::bf16>(device, storage, layout, "bf16")?,
                DType::F32 => cast::<f32>(device, storage, layout, "f32")?,
                other => candle_core::bail!("8-bit weights widen to f16, bf16 or f32, not {other:?}"),
            };
            Ok((widened, layout.shape().clone()))
        }
    }
}
