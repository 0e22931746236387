//! GroupNorm with its affine weight and bias, and optionally SiLU, in one kernel
//! (`group_norm.cu`) where candle takes seven launches and f32 copies of the activations.

use candle_core::{Result, Tensor};

/// `GroupNorm(x + shift)` over `groups` groups of the channels of `x` (`[b, c, h, w]`), with
/// `shift` (`[b, c]`, when given) added per channel, scaled by `weight` and shifted by `bias`
/// (`[c]`), then SiLU when `silu`; statistics in f32. `None` where the kernel does not apply
/// (not CUDA, not f16, `h * w` not a multiple of 8).
///
/// # Errors
/// A compile, load or launch failure of the kernel.
pub fn group_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    shift: Option<&Tensor>,
    groups: usize,
    eps: f64,
    silu: bool,
) -> Result<Option<Tensor>> {
    #[cfg(feature = "cuda")]
    if cuda::applies(x, weight, bias, shift, groups) {
        let op = cuda::GroupNorm {
            groups,
            eps,
            silu,
            shift: shift.cloned(),
        };
        return x.apply_op3_no_bwd(weight, bias, &op).map(Some);
    }
    let _ = (x, weight, bias, shift, groups, eps, silu);
    Ok(None)
}

#[cfg(feature = "cuda")]
mod cuda {
    use crate::kernels::cuda::{all_packed_f16, held_view, view};
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::WrapErr;
    use candle_core::{CpuStorage, CudaStorage, CustomOp3, Layout, Result, Shape, Tensor};
    use half::f16;
    use swapgraph_model::nvrtc;

    const SOURCE: &str = concat!(include_str!("half.cuh"), include_str!("group_norm.cu"));
    const THREADS: u32 = 1024;

    pub fn applies(x: &Tensor, weight: &Tensor, bias: &Tensor, shift: Option<&Tensor>, groups: usize) -> bool {
        let Ok((batch, channels, h, w)) = x.dims4() else {
            return false;
        };
        let tensors: Vec<&Tensor> = [Some(x), Some(weight), Some(bias), shift]
            .into_iter()
            .flatten()
            .collect();
        groups > 0
            && channels % groups == 0
            && (h * w) % 8 == 0
            && weight.dims() == [channels]
            && bias.dims() == [channels]
            && shift.is_none_or(|s| s.dims() == [batch, channels])
            && all_packed_f16(&tensors)
    }

    /// The candle op around the kernel, with the shift (if any) held by the op itself;
    /// `applies` is checked before it is used.
    pub struct GroupNorm {
        pub groups: usize,
        pub eps: f64,
        pub silu: bool,
        pub shift: Option<Tensor>,
    }

    impl CustomOp3 for GroupNorm {
        fn name(&self) -> &'static str {
            "group-norm-f16"
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
            candle_core::bail!("the fused GroupNorm kernel runs on CUDA devices only")
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
            let (batch, channels, h, w) = shape.dims4()?;
            let kernel = nvrtc::compiled(device, "swapgraph-group-norm", SOURCE)?;
            let function = device.get_or_load_custom_func("group_norm_f16", &kernel.module, &kernel.ptx)?;
            let (x_view, weight_view, bias_view) = (
                view(x, x_layout)?,
                view(weight, weight_layout)?,
                view(bias, bias_layout)?,
            );
            let shift = self.shift.as_ref().map(Tensor::storage_and_layout);
            let shift_view = shift
                .as_ref()
                .map(|(storage, layout)| held_view(storage, layout))
                .transpose()?;
            // SAFETY: every element is written by the kernel below.
            let out = unsafe { device.alloc::<f16>(shape.elem_count())? };
            let groups = self.groups as i32;
            let channels_per_group = (channels / self.groups) as i32;
            let hw = (h * w) as i32;
            let (eps, silu) = (self.eps as f32, i32::from(self.silu));
            let mut launch = function.builder();
            let null: u64 = 0;
            launch.arg(&x_view).arg(&weight_view).arg(&bias_view);
            match &shift_view {
                Some(shift) => launch.arg(shift),
                None => launch.arg(&null),
            };
            launch.arg(&out);
            launch
                .arg(&groups)
                .arg(&channels_per_group)
                .arg(&hw)
                .arg(&eps)
                .arg(&silu);
            let config = LaunchConfig {
                grid_dim: ((batch * self.groups) as u32, 1, 1),
                block_dim: (THREADS, 1, 1),
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
    use super::group_norm;
    use crate::kernels::cuda::{max_relative_error, random_pair, rounded_pair};
    use candle_core::{Device, Module, Result, Tensor};

    #[test]
    fn group_norm_and_silu_match_the_cpu_f32_reference() -> Result<()> {
        let gpu = Device::new_cuda(0)?;
        // SDXL's largest and smallest resnet inputs at 1024x1024, and a small odd one.
        for (shape, groups) in [([2, 320, 128, 128], 32), ([2, 1280, 32, 32], 32), ([1, 6, 4, 2], 3)] {
            // An offset and scale, as real activations have, test the two-pass statistics.
            let shifted = ((Tensor::randn(0f32, 1.0, &shape[..], &Device::Cpu)? * 3.0)? + 5.0)?;
            let (x, x_gpu) = rounded_pair(&shifted, &gpu)?;
            let (weight, weight_gpu) = random_pair(&shape[1..2], &gpu)?;
            let (bias, bias_gpu) = random_pair(&shape[1..2], &gpu)?;
            let reference =
                candle_nn::GroupNorm::new(weight.clone(), bias.clone(), shape[1], groups, 1e-5)?.forward(&x)?;
            let fused =
                group_norm(&x_gpu, &weight_gpu, &bias_gpu, None, groups, 1e-5, false)?.expect("the kernel applies");
            assert!(max_relative_error(&fused, &reference)? < 1e-2, "{shape:?}");
            let fused =
                group_norm(&x_gpu, &weight_gpu, &bias_gpu, None, groups, 1e-5, true)?.expect("the kernel applies");
            assert!(
                max_relative_error(&fused, &reference.silu()?)? < 1e-2,
                "{shape:?} with SiLU"
            );
            // A per-channel shift, as the resnets' time embedding, added before the statistics.
            let (shift, shift_gpu) = random_pair(&shape[..2], &gpu)?;
            let (b, c) = (shape[0], shape[1]);
            let shifted_input = x.broadcast_add(&(&shift * 4.0)?.reshape((b, c, 1, 1))?)?;
            let reference = candle_nn::GroupNorm::new(weight.clone(), bias.clone(), c, groups, 1e-5)?
                .forward(&shifted_input)?
                .silu()?;
            let shift_gpu = (shift_gpu * 4.0)?;
            let fused = group_norm(&x_gpu, &weight_gpu, &bias_gpu, Some(&shift_gpu), groups, 1e-5, true)?
                .expect("the kernel applies");
            assert!(
                max_relative_error(&fused, &reference)? < 1e-2,
                "{shape:?} shifted, with SiLU"
            );
        }
        Ok(())
    }

    #[test]
    fn other_dtypes_and_grids_take_the_generic_path() -> Result<()> {
        let gpu = Device::new_cuda(0)?;
        let (_, weight) = random_pair(&[4], &gpu)?;
        let f32_image = Tensor::zeros((1, 4, 4, 4), candle_core::DType::F32, &gpu)?;
        assert!(group_norm(&f32_image, &weight, &weight, None, 2, 1e-5, true)?.is_none());
        let (_, odd_grid) = random_pair(&[1, 4, 3, 3], &gpu)?;
        assert!(
            group_norm(&odd_grid, &weight, &weight, None, 2, 1e-5, true)?.is_none(),
            "9 pixels are not whole chunks of 8"
        );
        assert!(
            group_norm(&odd_grid, &weight, &weight, None, 3, 1e-5, true)?.is_none(),
            "3 groups do not divide 4 channels"
        );
        let (_, image) = random_pair(&[2, 4, 4, 4], &gpu)?;
        let (_, one_shift) = random_pair(&[1, 4], &gpu)?;
        assert!(
            group_norm(&image, &weight, &weight, Some(&one_shift), 2, 1e-5, true)?.is_none(),
            "a shift for one image of two"
        );
        Ok(())
    }
}
