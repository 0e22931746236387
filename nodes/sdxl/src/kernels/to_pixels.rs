//! Packed `[n, c, h, w]` to packed `[n, h, w, c]` in one kernel (`to_pixels.cu`): images into
//! channels-last order, and filters into the `[k, kh, kw, c]` order cuDNN's channels-last
//! convolutions take, every step for each one. Each thread writes eight channels of a pixel at
//! once, where candle's generic strided copy works out every element's source through a loop
//! of divisions.

use candle_core::{Result, Tensor};

/// `x` (`[n, c, h, w]`) as a packed `[n, h, w, c]` tensor. `None` where the kernel does not
/// apply (not CUDA, not f16 or bf16, not packed, `c` not a multiple of 8).
///
/// # Errors
/// A compile, load or launch failure of the kernel.
pub fn to_pixels(x: &Tensor) -> Result<Option<Tensor>> {
    #[cfg(feature = "cuda")]
    if cuda::applies(x) {
        return x.apply_op1_no_bwd(&cuda::ToPixels).map(Some);
    }
    let _ = x;
    Ok(None)
}

#[cfg(feature = "cuda")]
mod cuda {
    use crate::kernels::cuda::{all_packed_16_bit, grid_stride, typed_view};
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, PushKernelArg};
    use candle_core::cuda_backend::{CudaDType, WrapErr};
    use candle_core::{CpuStorage, CudaStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
    use half::{bf16, f16};
    use swapgraph_model::nvrtc;

    const SOURCE: &str = concat!(include_str!("half.cuh"), include_str!("to_pixels.cu"));
    /// The most positions a plane for which one thread takes a plane's every position.
    const FEW_POSITIONS: usize = 16;

    pub fn applies(x: &Tensor) -> bool {
        let Ok((_, c, h, w)) = x.dims4() else {
            return false;
        };
        c % 8 == 0 && c * h * w <= i32::MAX as usize && all_packed_16_bit(&[x])
    }

    /// The candle op around the kernel; `applies` is checked before it is used.
    pub struct ToPixels;

    impl CustomOp1 for ToPixels {
        fn name(&self) -> &'static str {
            "planes-to-pixels"
        }

        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
            candle_core::bail!("the planes-to-pixels kernel runs on CUDA devices only")
        }

        fn cuda_fwd(&self, x: &CudaStorage, layout: &Layout) -> Result<(CudaStorage, Shape)> {
            match x.dtype() {
                DType::F16 => launch::<f16>(x, layout),
                DType::BF16 => launch::<bf16>(x, layout),
                other => candle_core::bail!("the planes-to-pixels kernel takes f16 or bf16, not {other:?}"),
            }
        }
    }

    /// Launches the kernel on elements of type `T`.
    fn launch<T: CudaDType + DeviceRepr>(x: &CudaStorage, layout: &Layout) -> Result<(CudaStorage, Shape)> {
        let device = x.device();
        let (n, c, h, w) = layout.shape().dims4()?;
        let shape = Shape::from((n, h, w, c));
        let kernel = nvrtc::compiled(device, "swapgraph-to-pixels", SOURCE)?;
        // Filters have a handful of positions a plane: a thread takes them all.
        let few = h * w <= FEW_POSITIONS;
        let entry = if few {
            "few_planes_to_pixels"
        } else {
            "planes_to_pixels"
        };
        let function = device.get_or_load_custom_func(entry, &kernel.module, &kernel.ptx)?;
        let input = typed_view::<T>(x, layout)?;
        // SAFETY: every element is written by the kernel below.
        let out = unsafe { device.alloc::<T>(shape.elem_count())? };
        // Eight channels a thread: of one pixel, or of every position of one plane.
        let threads = if few { n * c / 8 } else { shape.elem_count() / 8 };
        let chunks = threads as i64;
        let (channels, positions) = (c as i32, (h * w) as i32);
        let mut launch = function.builder();
        launch.arg(&input).arg(&out).arg(&chunks).arg(&channels).arg(&positions);
        // SAFETY: the arguments match the kernel's signature; `applies` checked that the
        // channels are whole chunks of 8 and the input is packed.
        unsafe { launch.launch(grid_stride(threads)) }.w()?;
        Ok((CudaStorage::wrap_cuda_slice(out, device.clone()), shape))
    }
}

/// Run by the CUDA build's tests on a machine with an NVIDIA GPU.
#[cfg(all(test, feature = "cuda"))]
mod tests {
    use super::to_pixels;
    use candle_core::{DType, Device, Result, Tensor};

    #[test]
    fn planes_become_pixels_bit_for_bit() -> Result<()> {
        let gpu = Device::new_cuda(0)?;
        // Images, a 3x3 filter, a 1x1 one and a plane of 4x4 (the most one thread takes), in
        // both 16-bit formats.
        for (shape, dtype) in [
            ([2, 320, 16, 24], DType::F16),
            ([640, 320, 3, 3], DType::F16),
            ([8, 16, 1, 1], DType::BF16),
            ([3, 24, 4, 4], DType::F16),
            ([1, 128, 64, 64], DType::BF16),
        ] {
            let values = Tensor::randn(0f32, 1.0, &shape, &Device::Cpu)?.to_dtype(dtype)?;
            let expected = values.permute((0, 2, 3, 1))?.contiguous()?.to_dtype(DType::F32)?;
            let moved = to_pixels(&values.to_device(&gpu)?)?.expect("the kernel applies");
            assert_eq!(moved.dims(), expected.dims());
            let moved = moved.to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
            assert_eq!(
                moved.flatten_all()?.to_vec1::<f32>()?,
                expected.flatten_all()?.to_vec1::<f32>()?,
                "{shape:?} in {dtype:?}"
            );
        }
        let odd = Tensor::zeros((1, 4, 8, 8), DType::F16, &gpu)?;
        assert!(to_pixels(&odd)?.is_none(), "4 channels are not a chunk of 8");
        Ok(())
    }
}
