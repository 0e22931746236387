//! LayerNorm with its affine weight and bias in one warp-per-row kernel (`layer_norm.cu`):
//! candle's kernel gives each row a whole block of scalar loads, which takes the transformer
//! blocks' 210 LayerNorms a step several times their memory traffic.

use candle_core::{Result, Tensor};

/// `LayerNorm(x)` over the last dimension of `x`, scaled by `weight` and shifted by `bias`
/// (both as wide as that dimension); statistics in f32. `None` where the kernel does not apply
/// (not CUDA, not f16, a width that is not a multiple of 8 or is over 2048).
///
/// # Errors
/// A compile, load or launch failure of the kernel.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Option<Tensor>> {
    #[cfg(feature = "cuda")]
    if cuda::applies(x, weight, bias) {
        return x.apply_op3_no_bwd(weight, bias, &cuda::LayerNorm { eps }).map(Some);
    }
    let _ = (x, weight, bias, eps);
    Ok(None)
}

#[cfg(feature = "cuda")]
mod cuda {
    use crate::kernels::cuda::{all_packed_f16, view};
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::WrapErr;
    use candle_core::{CpuStorage, CudaStorage, CustomOp3, Layout, Result, Shape, Tensor};
    use half::f16;
    use swapgraph_model::nvrtc;

    const SOURCE: &str = concat!(include_str!("half.cuh"), include_str!("layer_norm.cu"));
    /// Rows a block takes, one a warp.
    const WARPS: usize = 8;
    /// The widest row the kernel keeps in registers: 32 lanes of 8 chunks of 8 halves.
    const MAX_WIDTH: usize = 32 * 8 * 8;

    pub fn applies(x: &Tensor, weight: &Tensor, bias: &Tensor) -> bool {
        let Some(&width) = x.dims().last() else {
            return false;
        };
        width > 0
            && width % 8 == 0
            && width <= MAX_WIDTH
            && x.elem_count() / width <= i32::MAX as usize
            && weight.dims() == [width]
            && bias.dims() == [width]
            && all_packed_f16(&[x, weight, bias])
    }

    /// The candle op around the kernel; `applies` is checked before it is used.
    pub struct LayerNorm {
        pub eps: f64,
    }

    impl CustomOp3 for LayerNorm {
        fn name(&self) -> &'static str {
            "layer-norm-f16"
        }

        fn cpu_fwd(
            &self,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
        ) -> Result<(CpuStorage, Shape)> {
            candle_core::bail!("the LayerNorm kernel runs on CUDA devices only")
        }

        fn cuda_fwd(
            &self,
            x: &CudaStorage,
            x_layout: &Layout,
            weight: &CudaStorage,
            weight_layout: &Layout,
            bias: &CudaStorage,
            bias_layout: &Layout,
        ) -> Result<(CudaStorage, Shape)> {
            let device = x.device();
            let shape = x_layout.shape().clone();
            let Some(&width) = shape.dims().last() else {
                candle_core::bail!("the LayerNorm kernel needs a tensor of at least one dimension")
            };
            let rows = shape.elem_count() / width;
            let kernel = nvrtc::compiled(device, "swapgraph-layer-norm", SOURCE)?;
            let function = device.get_or_load_custom_func("layer_norm_f16", &kernel.module, &kernel.ptx)?;
            let (x_view, weight_view, bias_view) = (
                view(x, x_layout)?,
                view(weight, weight_layout)?,
                view(bias, bias_layout)?,
            );
            // SAFETY: every element is written by the kernel below.
            let out = unsafe { device.alloc::<f16>(shape.elem_count())? };
            let (rows_arg, width_arg, eps) = (rows as i32, width as i32, self.eps as f32);
            let mut launch = function.builder();
            launch
                .arg(&x_view)
                .arg(&weight_view)
                .arg(&bias_view)
                .arg(&out)
                .arg(&rows_arg)
                .arg(&width_arg)
                .arg(&eps);
            let config = LaunchConfig {
                grid_dim: (rows.div_ceil(WARPS) as u32, 1, 1),
                block_dim: ((WARPS * 32) as u32, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: the arguments match the kernel's signature and `applies` checked the
            // shapes the kernel indexes by.
            unsafe { launch.launch(config) }.w()?;
            Ok((CudaStorage::wrap_cuda_slice(out, device.clone()), shape))
        }
    }
}

/// Run by the CUDA build's tests on a machine with an NVIDIA GPU.
#[cfg(all(test, feature = "cuda"))]
mod tests {
    use super::layer_norm;
    use crate::kernels::cuda::{max_relative_error, random_pair, rounded_pair};
    use candle_core::{DType, Device, Module, Result, Tensor};

    #[test]
    fn layer_norm_matches_the_cpu_f32_reference() -> Result<()> {
        let gpu = Device::new_cuda(0)?;
        // SDXL's transformer widths at 1024x1024, the widest row the kernel takes, a narrow one,
        // and a row count that leaves the last block's warps partly idle.
        for shape in [[2, 4096, 640], [2, 1024, 1280], [3, 5, 2048], [1, 3, 16]] {
            // An offset and scale, as real activations have, test the two-pass statistics.
            let shifted = ((Tensor::randn(0f32, 1.0, &shape[..], &Device::Cpu)? * 3.0)? + 5.0)?;
            let (x, x_gpu) = rounded_pair(&shifted, &gpu)?;
            let (weight, weight_gpu) = random_pair(&shape[2..], &gpu)?;
            let (bias, bias_gpu) = random_pair(&shape[2..], &gpu)?;
            let reference = candle_nn::LayerNorm::new(weight, bias, 1e-5).forward(&x)?;
            let fused = layer_norm(&x_gpu, &weight_gpu, &bias_gpu, 1e-5)?.expect("the kernel applies");
            assert_eq!(fused.dims(), &shape[..]);
            assert!(max_relative_error(&fused, &reference)? < 1e-2, "{shape:?}");
        }
        Ok(())
    }

    #[test]
    fn other_dtypes_and_widths_take_the_generic_path() -> Result<()> {
        let gpu = Device::new_cuda(0)?;
        let (_, weight) = random_pair(&[16], &gpu)?;
        let f32_rows = Tensor::zeros((2, 16), DType::F32, &gpu)?;
        assert!(layer_norm(&f32_rows, &weight, &weight, 1e-5)?.is_none());
        let (_, narrow_weight) = random_pair(&[12], &gpu)?;
        let (_, narrow) = random_pair(&[2, 12], &gpu)?;
        assert!(
            layer_norm(&narrow, &narrow_weight, &narrow_weight, 1e-5)?.is_none(),
            "12 halves are not whole chunks of 8"
        );
        let (_, wide_weight) = random_pair(&[4096], &gpu)?;
        let (_, wide) = random_pair(&[2, 4096], &gpu)?;
        assert!(
            layer_norm(&wide, &wide_weight, &wide_weight, 1e-5)?.is_none(),
            "4096 halves do not fit a warp's registers"
        );
        let (_, rows) = random_pair(&[2, 16], &gpu)?;
        assert!(
            layer_norm(&rows, &narrow_weight, &narrow_weight, 1e-5)?.is_none(),
            "a weight of another width"
        );
        Ok(())
    }
}
