//! The linear layers' epilogues (`epilogue.cu`): bias plus residual, and GEGLU with the
//! projection's bias, each one pass over f16 memory instead of candle's two or three
//! broadcasting kernels and their intermediate tensors.

use candle_core::{Result, Tensor};

/// `y + bias`, plus `residual` when given, for `y` `[.., width]` and `bias` `[width]`; `None`
/// where the kernel does not apply (not CUDA, not f16, `width` not a multiple of 8).
///
/// # Errors
/// A compile, load or launch failure of the kernel.
pub fn bias_add(y: &Tensor, bias: &Tensor, residual: Option<&Tensor>) -> Result<Option<Tensor>> {
    #[cfg(feature = "cuda")]
    if cuda::bias_add_applies(y, bias, residual) {
        return match residual {
            Some(residual) => y.apply_op3_no_bwd(bias, residual, &cuda::BiasAdd),
            None => y.apply_op2_no_bwd(bias, &cuda::BiasAdd),
        }
        .map(Some);
    }
    let _ = (y, bias, residual);
    Ok(None)
}

/// GEGLU of a projection without its bias, `x` `[.., 2 * inner]`, with that `bias`
/// `[2 * inner]`: `(x_a + bias_a) * gelu(x_b + bias_b)` for the two halves of the last
/// dimension, as `[.., inner]`; `None` where the kernel does not apply (not CUDA, not f16,
/// `inner` not a multiple of 8).
///
/// # Errors
/// A compile, load or launch failure of the kernel.
pub fn geglu(x: &Tensor, bias: &Tensor) -> Result<Option<Tensor>> {
    #[cfg(feature = "cuda")]
    if cuda::geglu_applies(x, bias) {
        return x.apply_op2_no_bwd(bias, &cuda::Geglu).map(Some);
    }
    let _ = (x, bias);
    Ok(None)
}

#[cfg(feature = "cuda")]
mod cuda {
    use crate::kernels::cuda::{all_packed_f16, grid_stride, view};
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
    use candle_core::cuda_backend::WrapErr;
    use candle_core::{CpuStorage, CudaStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, D};
    use half::f16;
    use swapgraph_model::nvrtc;

    const SOURCE: &str = concat!(include_str!("half.cuh"), include_str!("epilogue.cu"));
    const MODULE: &str = "swapgraph-epilogue";

    pub fn bias_add_applies(y: &Tensor, bias: &Tensor, residual: Option<&Tensor>) -> bool {
        let Ok(width) = y.dim(D::Minus1) else {
            return false;
        };
        let same_shape = residual.is_none_or(|r| r.shape() == y.shape());
        let tensors: Vec<&Tensor> = [Some(y), Some(bias), residual].into_iter().flatten().collect();
        width % 8 == 0 && bias.dims() == [width] && same_shape && all_packed_f16(&tensors)
    }

    pub fn geglu_applies(x: &Tensor, bias: &Tensor) -> bool {
        let Ok(width) = x.dim(D::Minus1) else {
            return false;
        };
        width % 16 == 0 && bias.dims() == [width] && all_packed_f16(&[x, bias])
    }

    /// `y + bias (+ residual)`: the op with two arguments, or three with the residual.
    pub struct BiasAdd;

    impl BiasAdd {
        fn launch(
            &self,
            y: (&CudaStorage, &Layout),
            bias: (&CudaStorage, &Layout),
            residual: Option<(&CudaStorage, &Layout)>,
        ) -> Result<(CudaStorage, Shape)> {
            let device = y.0.device();
            let shape = y.1.shape().clone();
            let width = shape.dims().last().copied().unwrap_or(1);
            let rows = shape.elem_count() / width;
            let kernel = nvrtc::compiled(device, MODULE, SOURCE)?;
            let function = device.get_or_load_custom_func("bias_add_f16", &kernel.module, &kernel.ptx)?;
            let (y_view, bias_view) = (view(y.0, y.1)?, view(bias.0, bias.1)?);
            let residual_view = residual.map(|(s, l)| view(s, l)).transpose()?;
            // SAFETY: every element is written by the kernel below.
            let out = unsafe { device.alloc::<f16>(shape.elem_count())? };
            let (rows, width) = (rows as i64, width as i32);
            let null: u64 = 0;
            let mut launch = function.builder();
            launch.arg(&y_view).arg(&bias_view);
            match &residual_view {
                Some(residual) => launch.arg(residual),
                None => launch.arg(&null),
            };
            launch.arg(&out).arg(&rows).arg(&width);
            // SAFETY: the arguments match the kernel's signature and `bias_add_applies` checked
            // the shapes the kernel indexes by.
            unsafe { launch.launch(grid_stride(shape.elem_count() / 8)) }.w()?;
            Ok((CudaStorage::wrap_cuda_slice(out, device.clone()), shape))
        }
    }

    impl CustomOp2 for BiasAdd {
        fn name(&self) -> &'static str {
            "bias-add-f16"
        }

        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
            candle_core::bail!("the fused bias kernel runs on CUDA devices only")
        }

        fn cuda_fwd(&self, y: &CudaStorage, yl: &Layout, b: &CudaStorage, bl: &Layout) -> Result<(CudaStorage, Shape)> {
            self.launch((y, yl), (b, bl), None)
        }
    }

    impl CustomOp3 for BiasAdd {
        fn name(&self) -> &'static str {
            "bias-residual-add-f16"
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
            candle_core::bail!("the fused bias kernel runs on CUDA devices only")
        }

        fn cuda_fwd(
            &self,
            y: &CudaStorage,
            yl: &Layout,
            b: &CudaStorage,
            bl: &Layout,
            r: &CudaStorage,
            rl: &Layout,
        ) -> Result<(CudaStorage, Shape)> {
            self.launch((y, yl), (b, bl), Some((r, rl)))
        }
    }

    /// GEGLU with the projection's bias.
    pub struct Geglu;

    impl CustomOp2 for Geglu {
        fn name(&self) -> &'static str {
            "geglu-f16"
        }

        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
            candle_core::bail!("the fused GEGLU kernel runs on CUDA devices only")
        }

        fn cuda_fwd(&self, x: &CudaStorage, xl: &Layout, b: &CudaStorage, bl: &Layout) -> Result<(CudaStorage, Shape)> {
            let device = x.device();
            let mut dims = xl.shape().dims().to_vec();
            let inner = dims.last().copied().unwrap_or(0) / 2;
            let rows = xl.shape().elem_count() / (2 * inner);
            if let Some(last) = dims.last_mut() {
                *last = inner;
            }
            let kernel = nvrtc::compiled(device, MODULE, SOURCE)?;
            let function = device.get_or_load_custom_func("geglu_f16", &kernel.module, &kernel.ptx)?;
            let (x_view, bias_view) = (view(x, xl)?, view(b, bl)?);
            // SAFETY: every element is written by the kernel below.
            let out = unsafe { device.alloc::<f16>(rows * inner)? };
            let (rows_arg, inner_arg) = (rows as i64, inner as i32);
            let mut launch = function.builder();
            launch
                .arg(&x_view)
                .arg(&bias_view)
                .arg(&out)
                .arg(&rows_arg)
                .arg(&inner_arg);
            // SAFETY: the arguments match the kernel's signature and `geglu_applies` checked
            // the shapes the kernel indexes by.
            unsafe { launch.launch(grid_stride(rows * inner / 8)) }.w()?;
            Ok((CudaStorage::wrap_cuda_slice(out, device.clone()), Shape::from(dims)))
        }
    }
}

/// Run by the CUDA build's tests on a machine with an NVIDIA GPU.
#[cfg(all(test, feature = "cuda"))]
mod tests {
    use super::{bias_add, geglu};
    use crate::kernels::cuda::{max_relative_error, random_pair};
    use candle_core::{Device, Result, D};

    #[test]
    fn bias_and_residual_adds_match_the_cpu_f32_reference() -> Result<()> {
        let gpu = Device::new_cuda(0)?;
        for shape in [[2, 1024, 1280], [2, 4096, 640], [1, 3, 8]] {
            let (y, y_gpu) = random_pair(&shape, &gpu)?;
            let (bias, bias_gpu) = random_pair(&shape[2..], &gpu)?;
            let (residual, residual_gpu) = random_pair(&shape, &gpu)?;
            let with_bias = y.broadcast_add(&bias)?;
            let fused = bias_add(&y_gpu, &bias_gpu, None)?.expect("the kernel applies");
            assert!(max_relative_error(&fused, &with_bias)? < 2e-3, "{shape:?} bias");
            let fused = bias_add(&y_gpu, &bias_gpu, Some(&residual_gpu))?.expect("the kernel applies");
            assert!(
                max_relative_error(&fused, &(with_bias + residual)?)? < 2e-3,
                "{shape:?} bias and residual"
            );
        }
        let (_, odd_gpu) = random_pair(&[2, 3, 12], &gpu)?;
        assert!(
            bias_add(&odd_gpu, &odd_gpu.get(0)?.get(0)?, None)?.is_none(),
            "a width of 12 is not whole chunks of 8"
        );
        Ok(())
    }

    #[test]
    fn geglu_matches_the_cpu_f32_reference() -> Result<()> {
        let gpu = Device::new_cuda(0)?;
        for shape in [[2, 1024, 10240], [1, 5, 16]] {
            let (x, x_gpu) = random_pair(&shape, &gpu)?;
            let (bias, bias_gpu) = random_pair(&shape[2..], &gpu)?;
            let halves = x.broadcast_add(&bias)?.chunk(2, D::Minus1)?;
            let expected = (&halves[0] * halves[1].gelu_erf()?)?;
            let fused = geglu(&x_gpu, &bias_gpu)?.expect("the kernel applies");
            assert_eq!(fused.dims(), expected.dims());
            assert!(max_relative_error(&fused, &expected)? < 4e-3, "{shape:?}");
        }
        Ok(())
    }

    #[test]
    fn geglu_declines_halves_that_are_not_whole_chunks_of_8() -> Result<()> {
        let gpu = Device::new_cuda(0)?;
        let (_, x) = random_pair(&[1, 3, 24], &gpu)?;
        let (_, bias) = random_pair(&[24], &gpu)?;
        assert!(geglu(&x, &bias)?.is_none(), "halves of 12");
        let (_, short_bias) = random_pair(&[16], &gpu)?;
        let (_, x16) = random_pair(&[1, 3, 32], &gpu)?;
        assert!(geglu(&x16, &short_bias)?.is_none(), "a bias of the wrong width");
        Ok(())
    }
}
