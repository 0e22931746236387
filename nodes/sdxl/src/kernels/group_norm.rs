//! GroupNorm with its affine weight and bias, and optionally SiLU, in one kernel
//! (`group_norm.cu`) where candle takes seven launches and f32 copies of the activations; on a
//! channels-last image (see [`super::layout`]) in three launches spread over the device, the
//! output channels-last too.

use candle_core::{Result, Tensor};

/// `GroupNorm(x + shift)` over `groups` groups of the channels of `x` (`[b, c, h, w]`), with
/// `shift` (`[b, c]`, when given) added per channel, scaled by `weight` and shifted by `bias`
/// (`[c]`), then SiLU when `silu`; statistics in f32. The output is in the input's layout,
/// packed or channels-last. `None` where the kernel does not apply (not CUDA, not f16 or bf16
/// throughout; packed, `h * w` not a multiple of 8; channels-last, channels not a multiple of
/// 8, more than 32 groups or 2560 channels).
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
    if let Some(order) = cuda::order_for(x, weight, bias, shift, groups) {
        let op = cuda::GroupNorm {
            order,
            groups,
            eps,
            silu,
            shift: shift.cloned(),
        };
        return match order {
            super::layout::Order::ChannelsLast => {
                super::layout::image(&super::layout::pixels(x)?.apply_op3_no_bwd(weight, bias, &op)?)
            }
            super::layout::Order::Planes => x.apply_op3_no_bwd(weight, bias, &op),
        }
        .map(Some);
    }
    let _ = (x, weight, bias, shift, groups, eps, silu);
    Ok(None)
}

#[cfg(feature = "cuda")]
mod cuda {
    use crate::kernels::cuda::{all_packed_16_bit, held_typed_view, typed_view, ThreeTensors};
    use crate::kernels::layout::{is_channels_last, Order};
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::sys::CUdevice_attribute;
    use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::{CudaDType, WrapErr};
    use candle_core::{CpuStorage, CudaStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
    use half::{bf16, f16};
    use swapgraph_model::nvrtc;

    const SOURCE: &str = concat!(include_str!("half.cuh"), include_str!("group_norm.cu"));
    const THREADS: u32 = 1024;
    /// Threads of the channels-last kernels' blocks: `channels / 8` across (eight channels
    /// each), as many rows of pixels as fit.
    const PIXEL_THREADS: usize = 320;
    /// Threads the channels-last kernels aim to have running on each multiprocessor (all it
    /// holds).
    const PIXEL_THREADS_PER_MULTIPROCESSOR: usize = 2048;

    /// The order `x` is normalized in, `None` where no kernel takes it.
    pub fn order_for(
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        shift: Option<&Tensor>,
        groups: usize,
    ) -> Option<Order> {
        let (batch, channels, h, w) = x.dims4().ok()?;
        let held: Vec<&Tensor> = [Some(weight), Some(bias), shift].into_iter().flatten().collect();
        let fits = groups > 0
            && channels % groups == 0
            && weight.dims() == [channels]
            && bias.dims() == [channels]
            && shift.is_none_or(|s| s.dims() == [batch, channels])
            && all_packed_16_bit(&held)
            && x.dtype() == weight.dtype()
            && x.device().same_device(weight.device())
            && x.layout().start_offset() % 8 == 0;
        match () {
            _ if !fits => None,
            _ if is_channels_last(x) && channels % 8 == 0 && channels / 8 <= PIXEL_THREADS && groups <= 32 => {
                Some(Order::ChannelsLast)
            }
            _ if x.is_contiguous() && (h * w) % 8 == 0 => Some(Order::Planes),
            _ => None,
        }
    }

    /// The candle op around the kernel, with the shift (if any) held by the op itself;
    /// `applies` is checked before it is used.
    pub struct GroupNorm {
        pub order: Order,
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
            let args = (x, x_layout, weight, weight_layout, bias, bias_layout);
            match (x.dtype(), self.order) {
                (DType::F16, Order::Planes) => self.launch::<f16>("group_norm_f16", args),
                (DType::BF16, Order::Planes) => self.launch::<bf16>("group_norm_bf16", args),
                (DType::F16, Order::ChannelsLast) => self.launch_pixels::<f16>("f16", args),
                (DType::BF16, Order::ChannelsLast) => self.launch_pixels::<bf16>("bf16", args),
                other => candle_core::bail!("the fused GroupNorm kernel takes f16 or bf16, not {other:?}"),
            }
        }
    }

    impl GroupNorm {
        /// Launches `function`, the kernel's entry point for elements of type `T`.
        fn launch<T: CudaDType + DeviceRepr>(
            &self,
            function: &str,
            (x, x_layout, weight, weight_layout, bias, bias_layout): ThreeTensors,
        ) -> Result<(CudaStorage, Shape)> {
            let device = x.device();
            let shape = x_layout.shape().clone();
            let (batch, channels, h, w) = shape.dims4()?;
            let kernel = nvrtc::compiled(device, "swapgraph-group-norm", SOURCE)?;
            let function = device.get_or_load_custom_func(function, &kernel.module, &kernel.ptx)?;
            let (x_view, weight_view, bias_view) = (
                typed_view::<T>(x, x_layout)?,
                typed_view::<T>(weight, weight_layout)?,
                typed_view::<T>(bias, bias_layout)?,
            );
            let shift = self.shift.as_ref().map(Tensor::storage_and_layout);
            let shift_view = shift
                .as_ref()
                .map(|(storage, layout)| held_typed_view::<T>(storage, layout))
                .transpose()?;
            // SAFETY: every element is written by the kernel below.
            let out = unsafe { device.alloc::<T>(shape.elem_count())? };
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

        /// The channels-last kernels on `x` (`[b, h, w, c]`), their entry points ending in
        /// `suffix` for elements of type `T`: partial sums a chunk of pixels per block, the
        /// groups' statistics, then the normalized image.
        fn launch_pixels<T: CudaDType + DeviceRepr>(
            &self,
            suffix: &str,
            (x, x_layout, weight, weight_layout, bias, bias_layout): ThreeTensors,
        ) -> Result<(CudaStorage, Shape)> {
            let device = x.device();
            let shape = x_layout.shape().clone();
            let (batch, h, w, channels) = shape.dims4()?;
            let hw = h * w;
            let kernel = nvrtc::compiled(device, "swapgraph-group-norm", SOURCE)?;
            let load = |name: &str| device.get_or_load_custom_func(name, &kernel.module, &kernel.ptx);
            // Eight channels a thread across, rows of pixels down.
            let (across, rows) = (channels / 8, (PIXEL_THREADS / (channels / 8)).max(1));
            // Enough chunks of pixels to fill the device, each a block, each row a pixel or more.
            let multiprocessors = device
                .cuda_stream()
                .context()
                .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
                .w()? as usize;
            let in_flight = multiprocessors * PIXEL_THREADS_PER_MULTIPROCESSOR;
            let chunks = in_flight.div_ceil(batch * across * rows).clamp(1, hw);
            let pixels_per_chunk = hw.div_ceil(chunks).max(rows);
            let chunks = hw.div_ceil(pixels_per_chunk);
            let (x_view, weight_view, bias_view) = (
                typed_view::<T>(x, x_layout)?,
                typed_view::<T>(weight, weight_layout)?,
                typed_view::<T>(bias, bias_layout)?,
            );
            let shift = self.shift.as_ref().map(Tensor::storage_and_layout);
            let shift_view = shift
                .as_ref()
                .map(|(storage, layout)| held_typed_view::<T>(storage, layout))
                .transpose()?;
            // SAFETY: every element of each is written by the kernel that fills it.
            let (partials, stats, out) = unsafe {
                (
                    device.alloc::<f32>(batch * chunks * self.groups * 2)?,
                    device.alloc::<f32>(batch * self.groups * 2)?,
                    device.alloc::<T>(shape.elem_count())?,
                )
            };
            let (hw_arg, channels_arg, groups_arg) = (hw as i32, channels as i32, self.groups as i32);
            let (per_chunk_arg, chunks_arg) = (pixels_per_chunk as i32, chunks as i32);
            let count = (hw * channels / self.groups) as i64;
            let (eps, silu) = (self.eps as f32, i32::from(self.silu));
            let null: u64 = 0;
            let grid = LaunchConfig {
                grid_dim: (chunks as u32, batch as u32, 1),
                block_dim: (across as u32, rows as u32, 1),
                // Each row's (sum, sum of squares) per channel.
                shared_mem_bytes: (rows * channels * 2 * std::mem::size_of::<f32>()) as u32,
            };
            let partials_function = load(&format!("group_norm_pixels_partials_{suffix}"))?;
            let mut launch = partials_function.builder();
            launch.arg(&x_view);
            match &shift_view {
                Some(shift) => launch.arg(shift),
                None => launch.arg(&null),
            };
            launch
                .arg(&partials)
                .arg(&hw_arg)
                .arg(&channels_arg)
                .arg(&groups_arg)
                .arg(&per_chunk_arg);
            // SAFETY: the arguments match the kernel's signature; `order_for` checked the
            // channel counts it indexes by and the shared memory holds two sums per channel
            // and row.
            unsafe { launch.launch(grid) }.w()?;
            let stats_function = load("group_norm_pixels_stats")?;
            let mut launch = stats_function.builder();
            launch
                .arg(&partials)
                .arg(&stats)
                .arg(&chunks_arg)
                .arg(&groups_arg)
                .arg(&count)
                .arg(&eps);
            let per_image = LaunchConfig {
                grid_dim: (batch as u32, 1, 1),
                block_dim: (32 * self.groups as u32, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: as above; a warp per group, at most 32 groups (`order_for`).
            unsafe { launch.launch(per_image) }.w()?;
            let normalize = load(&format!("group_norm_pixels_{suffix}"))?;
            let mut launch = normalize.builder();
            launch.arg(&x_view).arg(&weight_view).arg(&bias_view);
            match &shift_view {
                Some(shift) => launch.arg(shift),
                None => launch.arg(&null),
            };
            launch
                .arg(&stats)
                .arg(&out)
                .arg(&hw_arg)
                .arg(&channels_arg)
                .arg(&groups_arg)
                .arg(&per_chunk_arg)
                .arg(&silu);
            let grid = LaunchConfig {
                shared_mem_bytes: 0,
                ..grid
            };
            // SAFETY: as the first launch.
            unsafe { launch.launch(grid) }.w()?;
            Ok((CudaStorage::wrap_cuda_slice(out, device.clone()), shape))
        }
    }
}

/// Run by the CUDA build's tests on a machine with an NVIDIA GPU.
#[cfg(all(test, feature = "cuda"))]
mod tests {
    use super::group_norm;
    use crate::kernels::cuda::{max_relative_error, random_pair, rounded_pair_in};
    use crate::kernels::layout::{is_channels_last, to_channels_last};
    use candle_core::{DType, Device, Module, Result, Tensor};

    #[test]
    fn group_norm_and_silu_match_the_cpu_f32_reference() -> Result<()> {
        let gpu = Device::new_cuda(0)?;
        // SDXL's largest and smallest resnet inputs at 1024x1024 (groups of 10 and 40 channels),
        // and a small one whose groups of 4 share chunks of 8 channels, packed and
        // channels-last. f16 as the UNet runs, bf16 as the VAE does on the same cards (its
        // largest input too).
        let cases = [
            (([2, 320, 128, 128], 32), DType::F16),
            (([2, 1280, 32, 32], 32), DType::F16),
            (([1, 24, 4, 2], 6), DType::F16),
            (([1, 128, 1024, 1024], 32), DType::BF16),
            (([1, 512, 128, 128], 32), DType::BF16),
            (([1, 24, 4, 2], 6), DType::BF16),
        ];
        for ((shape, groups), dtype) in cases {
            let random =
                |shape: &[usize]| rounded_pair_in(dtype, &Tensor::randn(0f32, 1.0, shape, &Device::Cpu)?, &gpu);
            // An offset and scale, as real activations have, test the two-pass statistics.
            let shifted = ((Tensor::randn(0f32, 1.0, &shape[..], &Device::Cpu)? * 3.0)? + 5.0)?;
            let (x, x_gpu) = rounded_pair_in(dtype, &shifted, &gpu)?;
            let (weight, weight_gpu) = random(&shape[1..2])?;
            let (bias, bias_gpu) = random(&shape[1..2])?;
            let reference =
                candle_nn::GroupNorm::new(weight.clone(), bias.clone(), shape[1], groups, 1e-5)?.forward(&x)?;
            // A per-channel shift, as the resnets' time embedding, added before the statistics.
            let (shift, shift_gpu) = random(&shape[..2])?;
            let (b, c) = (shape[0], shape[1]);
            let shifted_input = x.broadcast_add(&(&shift * 4.0)?.reshape((b, c, 1, 1))?)?;
            let shifted_reference = candle_nn::GroupNorm::new(weight.clone(), bias.clone(), c, groups, 1e-5)?
                .forward(&shifted_input)?
                .silu()?;
            let shift_gpu = (shift_gpu * 4.0)?;
            for x_gpu in [x_gpu.clone(), to_channels_last(&x_gpu)?] {
                let layout = if is_channels_last(&x_gpu) {
                    "channels-last"
                } else {
                    "packed"
                };
                let case = format!("{shape:?} {layout} in {dtype:?}");
                let fused =
                    group_norm(&x_gpu, &weight_gpu, &bias_gpu, None, groups, 1e-5, false)?.expect("the kernel applies");
                assert_eq!(
                    is_channels_last(&fused),
                    is_channels_last(&x_gpu),
                    "{case}: the input's layout"
                );
                assert!(max_relative_error(&fused, &reference)? < 1e-2, "{case}");
                let fused =
                    group_norm(&x_gpu, &weight_gpu, &bias_gpu, None, groups, 1e-5, true)?.expect("the kernel applies");
                assert!(
                    max_relative_error(&fused, &reference.silu()?)? < 1e-2,
                    "{case} with SiLU"
                );
                let fused = group_norm(&x_gpu, &weight_gpu, &bias_gpu, Some(&shift_gpu), groups, 1e-5, true)?
                    .expect("the kernel applies");
                assert!(
                    max_relative_error(&fused, &shifted_reference)? < 1e-2,
                    "{case} shifted, with SiLU"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn other_dtypes_and_grids_take_the_generic_path() -> Result<()> {
        let gpu = Device::new_cuda(0)?;
        let (_, weight) = random_pair(&[4], &gpu)?;
        let (_, six) = random_pair(&[6], &gpu)?;
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
        let (_, planes) = random_pair(&[1, 6, 4, 4], &gpu)?;
        assert!(
            group_norm(&to_channels_last(&planes)?, &six, &six, None, 6, 1e-5, true)?.is_none(),
            "a channels-last image of 6 channels, not whole lanes of 8"
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
