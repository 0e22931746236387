//! 2-D convolution through cuDNN, with its bias and an optional residual added in one pass after
//! it (`convolution.cu`), where candle runs im2col, a matrix product, a broadcast bias add and a
//! separate residual add. cuDNN computes in f32 on f16 or bf16 data (tensor cores, f32
//! accumulation, PyTorch's setting); the algorithm is chosen by cuDNN's heuristics once per shape.
//!
//! Convolutions whose input and output widths are multiples of 8 run channels-last (see
//! [`super::layout`]): the input is made channels-last unless it is, the output comes back
//! channels-last, and cuDNN's tensor-core kernels read and write it as it is, with no layout
//! transforms around them. The others (the UNet's stem and head, whose latents have 4 channels)
//! run on packed `[n, c, h, w]` tensors.

use candle_core::{Result, Tensor};

/// `conv2d(x, weight) + bias (+ residual)` for `x` `[n, c, h, w]`, `weight` `[k, c, kh, kw]`,
/// `bias` `[k]` and `residual` of the output's shape, with `padding` on every side and `stride`.
/// `None` where this path does not apply (not CUDA, not f16 or bf16 throughout, cuDNN not found,
/// widths not multiples of 8 and an output whose `height * width` is not either).
///
/// # Errors
/// A cuDNN, compile, load or launch failure.
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    residual: Option<&Tensor>,
    padding: usize,
    stride: usize,
) -> Result<Option<Tensor>> {
    #[cfg(feature = "cuda")]
    if let Some(order) = cuda::order_for(x, weight, bias, residual, padding, stride) {
        return cuda::convolve(order, x, weight, bias, residual, padding, stride);
    }
    let _ = (x, weight, bias, residual, padding, stride);
    Ok(None)
}

/// `weight` (`[k, c, kh, kw]`) in the order [`conv2d`] reads it, for weights kept on the device
/// for good: the filter of a convolution that runs channels-last is reordered here once, where
/// [`conv2d`] would reorder it at every pass. Anything else (a 1x1 filter, which is the same
/// memory in either order, a filter that runs on planes, the CPU) comes back as it is.
///
/// # Errors
/// A kernel failure while reordering.
pub fn resident_filter(weight: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if cuda::filter_runs_channels_last(weight) {
        return super::layout::to_channels_last(weight);
    }
    Ok(weight.clone())
}

#[cfg(feature = "cuda")]
mod cuda {
    use crate::kernels::cuda::{all_packed_16_bit, grid_stride, held_typed_view, typed_view, ThreeTensors};
    use crate::kernels::cudnn;
    use crate::kernels::layout::{image, packed_pixels, Order};
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{DevicePtr, DevicePtrMut, DeviceRepr, PushKernelArg};
    use candle_core::cuda_backend::{CudaDType, CudaDevice, DeviceId, WrapErr};
    use candle_core::{CpuStorage, CudaStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
    use half::{bf16, f16};
    use std::collections::HashMap;
    use std::ffi::c_void;
    use std::sync::{Mutex, OnceLock, PoisonError};
    use swapgraph_model::nvrtc;

    const SOURCE: &str = concat!(include_str!("half.cuh"), include_str!("convolution.cu"));

    /// The most workspace an algorithm may ask for; the heuristics' next choice is taken past it.
    const WORKSPACE_LIMIT: usize = 256 << 20;

    /// Output height and width of a convolution, `None` when the kernel does not fit.
    fn output_size(input: usize, kernel: usize, padding: usize, stride: usize) -> Option<usize> {
        (input + 2 * padding).checked_sub(kernel).map(|span| span / stride + 1)
    }

    /// Whether a convolution from `channels` to `filters` runs channels-last (see [`order_for`]).
    fn runs_channels_last(channels: usize, filters: usize) -> bool {
        channels % 8 == 0 && filters % 8 == 0
    }

    /// Whether `weight` is a 16-bit CUDA filter of more than one position that [`convolve`]
    /// would reorder channels-last at every pass.
    pub fn filter_runs_channels_last(weight: &Tensor) -> bool {
        let Ok((k, c, kh, kw)) = weight.dims4() else {
            return false;
        };
        kh * kw > 1
            && runs_channels_last(c, k)
            && matches!(weight.dtype(), DType::F16 | DType::BF16)
            && weight.device().is_cuda()
            && cudnn::api().is_some()
    }

    /// The order the convolution runs in, `None` where cuDNN does not take it.
    pub fn order_for(
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        residual: Option<&Tensor>,
        padding: usize,
        stride: usize,
    ) -> Option<Order> {
        let (Ok((n, c, h, w)), Ok((k, wc, kh, kw))) = (x.dims4(), weight.dims4()) else {
            return None;
        };
        let (oh, ow) = (
            output_size(h, kh, padding, stride)?,
            output_size(w, kw, padding, stride)?,
        );
        let dtype = x.dtype();
        let fits = stride > 0
            && wc == c
            && bias.dims() == [k]
            && residual.is_none_or(|r| r.dims() == [n, k, oh, ow])
            && matches!(dtype, DType::F16 | DType::BF16)
            && [Some(x), Some(weight), Some(bias), residual]
                .into_iter()
                .flatten()
                .all(|t| t.dtype() == dtype && t.device().is_cuda() && t.device().same_device(x.device()))
            && cudnn::api().is_some();
        match () {
            _ if !fits => None,
            _ if runs_channels_last(c, k) => Some(Order::ChannelsLast),
            _ if (oh * ow) % 8 == 0 => Some(Order::Planes),
            _ => None,
        }
    }

    /// Runs the convolution in `order` (from [`order_for`]); `None` where a tensor's memory
    /// starts off the 16-byte alignment the kernels read at.
    pub fn convolve(
        order: Order,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        residual: Option<&Tensor>,
        padding: usize,
        stride: usize,
    ) -> Result<Option<Tensor>> {
        let in_order = |t: &Tensor| match order {
            Order::ChannelsLast => packed_pixels(t),
            Order::Planes => t.contiguous(),
        };
        let (x, weight) = (in_order(x)?, in_order(weight)?);
        let residual = residual.map(in_order).transpose()?;
        let tensors: Vec<&Tensor> = [Some(&x), Some(&weight), Some(bias), residual.as_ref()]
            .into_iter()
            .flatten()
            .collect();
        if !all_packed_16_bit(&tensors) {
            return Ok(None);
        }
        let op = Convolution {
            order,
            padding,
            stride,
            residual,
        };
        let out = x.apply_op3_no_bwd(&weight, bias, &op)?;
        match order {
            Order::ChannelsLast => image(&out).map(Some),
            Order::Planes => Ok(Some(out)),
        }
    }

    /// What identifies a convolution to cuDNN.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    struct Geometry {
        /// `[n, c, h, w]`, whatever the order.
        input: [usize; 4],
        /// `[k, c, kh, kw]`, whatever the order.
        filter: [usize; 4],
        order: Order,
        padding: usize,
        stride: usize,
        /// `cudnn::HALF` or `cudnn::BFLOAT16`.
        data: i32,
    }

    impl Geometry {
        fn output(&self) -> [usize; 4] {
            let [n, _, h, w] = self.input;
            let [k, _, kh, kw] = self.filter;
            let size = |i, kernel| output_size(i, kernel, self.padding, self.stride).unwrap_or(0);
            [n, k, size(h, kh), size(w, kw)]
        }
    }

    /// The descriptors and algorithm of one geometry, made once.
    struct Plan {
        x: cudnn::TensorDescriptor,
        w: cudnn::FilterDescriptor,
        y: cudnn::TensorDescriptor,
        convolution: cudnn::ConvolutionDescriptor,
        algorithm: i32,
        workspace: usize,
    }

    /// A device's cuDNN handle and the plans made on it.
    struct DeviceState {
        handle: cudnn::Handle,
        plans: HashMap<Geometry, Plan>,
    }

    // SAFETY: cuDNN handles and descriptors may be used from any thread one at a time; every use
    // goes through the mutex around the states.
    unsafe impl Send for DeviceState {}

    fn states() -> &'static Mutex<HashMap<DeviceId, DeviceState>> {
        static STATES: OnceLock<Mutex<HashMap<DeviceId, DeviceState>>> = OnceLock::new();
        STATES.get_or_init(Default::default)
    }

    fn as_int(value: usize) -> Result<i32> {
        i32::try_from(value).map_err(|_| candle_core::Error::Msg(format!("{value} is too large for cuDNN")))
    }

    fn as_ints(values: [usize; 4]) -> Result<[i32; 4]> {
        Ok([
            as_int(values[0])?,
            as_int(values[1])?,
            as_int(values[2])?,
            as_int(values[3])?,
        ])
    }

    fn new_plan(api: &cudnn::Api, handle: cudnn::Handle, geometry: &Geometry) -> Result<Plan> {
        let [n, c, h, w] = as_ints(geometry.input)?;
        let [k, _, kh, kw] = as_ints(geometry.filter)?;
        let [_, _, oh, ow] = as_ints(geometry.output())?;
        let (padding, stride) = (as_int(geometry.padding)?, as_int(geometry.stride)?);
        let mut plan = Plan {
            x: std::ptr::null_mut(),
            w: std::ptr::null_mut(),
            y: std::ptr::null_mut(),
            convolution: std::ptr::null_mut(),
            algorithm: 0,
            workspace: 0,
        };
        // SAFETY: each descriptor is created before it is set; `Plan::drop` destroys those made
        // if a later call fails.
        unsafe {
            api.check((api.create_tensor)(&mut plan.x), "creating a tensor descriptor")?;
            api.check((api.create_tensor)(&mut plan.y), "creating a tensor descriptor")?;
            api.check((api.create_filter)(&mut plan.w), "creating a filter descriptor")?;
            api.check(
                (api.create_convolution)(&mut plan.convolution),
                "creating a convolution descriptor",
            )?;
            let (mode, compute) = (cudnn::CROSS_CORRELATION, cudnn::FLOAT);
            let format = match geometry.order {
                Order::ChannelsLast => cudnn::NHWC,
                Order::Planes => cudnn::NCHW,
            };
            api.check(
                (api.set_tensor_4d)(plan.x, format, geometry.data, n, c, h, w),
                "describing the input",
            )?;
            api.check(
                (api.set_filter_4d)(plan.w, geometry.data, format, k, c, kh, kw),
                "describing the weights",
            )?;
            api.check(
                (api.set_tensor_4d)(plan.y, format, geometry.data, n, k, oh, ow),
                "describing the output",
            )?;
            api.check(
                (api.set_convolution_2d)(plan.convolution, padding, padding, stride, stride, 1, 1, mode, compute),
                "describing the convolution",
            )?;
            api.check(
                (api.set_math_type)(plan.convolution, cudnn::TENSOR_OP_MATH),
                "allowing tensor cores",
            )?;
            let mut ranked = [cudnn::AlgorithmPerformance::default(); 8];
            let mut returned = 0;
            api.check(
                (api.forward_algorithms)(
                    handle,
                    plan.x,
                    plan.w,
                    plan.convolution,
                    plan.y,
                    ranked.len() as i32,
                    &mut returned,
                    ranked.as_mut_ptr(),
                ),
                "ranking convolution algorithms",
            )?;
            let usable = ranked[..returned.clamp(0, ranked.len() as i32) as usize]
                .iter()
                .find(|p| p.status == 0 && p.memory <= WORKSPACE_LIMIT)
                .ok_or_else(|| {
                    candle_core::Error::Msg(format!("cuDNN offers no algorithm for the convolution {geometry:?}"))
                })?;
            plan.algorithm = usable.algorithm;
            // The ranking's figure is an estimate; the size query is what the algorithm will use.
            api.check(
                (api.workspace_size)(
                    handle,
                    plan.x,
                    plan.w,
                    plan.convolution,
                    plan.y,
                    plan.algorithm,
                    &mut plan.workspace,
                ),
                "sizing the convolution's workspace",
            )?;
        }
        Ok(plan)
    }

    impl Drop for Plan {
        fn drop(&mut self) {
            if let Some(api) = cudnn::api() {
                // SAFETY: each descriptor was created by this plan (null ones are skipped) and is
                // used by nothing else.
                unsafe {
                    if !self.x.is_null() {
                        (api.destroy_tensor)(self.x);
                    }
                    if !self.y.is_null() {
                        (api.destroy_tensor)(self.y);
                    }
                    if !self.w.is_null() {
                        (api.destroy_filter)(self.w);
                    }
                    if !self.convolution.is_null() {
                        (api.destroy_convolution)(self.convolution);
                    }
                }
            }
        }
    }

    /// Runs the convolution on `device`'s stream into `out`.
    fn run_cudnn(device: &CudaDevice, geometry: Geometry, x: u64, w: u64, out: u64) -> Result<()> {
        let api = cudnn::api().ok_or_else(|| candle_core::Error::Msg("cuDNN is not loaded".into()))?;
        let stream = device.cuda_stream();
        // cuDNN works on the calling thread's current context: make it this device's.
        stream.context().bind_to_thread().w()?;
        let mut states = states().lock().unwrap_or_else(PoisonError::into_inner);
        let state = match states.entry(device.id()) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => {
                let mut handle = std::ptr::null_mut();
                // SAFETY: cuDNN writes a new handle.
                api.check(unsafe { (api.create)(&mut handle) }, "creating a handle")?;
                entry.insert(DeviceState {
                    handle,
                    plans: HashMap::new(),
                })
            }
        };
        let handle = state.handle;
        let plan = match state.plans.entry(geometry) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => entry.insert(new_plan(api, handle, &geometry)?),
        };
        // SAFETY: workspace contents are cuDNN's own.
        let mut workspace = unsafe { device.alloc::<u8>(plan.workspace.max(1))? };
        let (workspace_ptr, _guard) = workspace.device_ptr_mut(&stream);
        let (alpha, beta) = (1f32, 0f32);
        // SAFETY: the descriptors match the buffers' shapes (`order_for` and `Geometry`), the
        // buffers live until the work on the stream that uses them is done (candle's stream
        // ordering), and the handle is used under the mutex.
        unsafe {
            api.check(
                (api.set_stream)(handle, stream.cu_stream() as *mut c_void),
                "binding the stream",
            )?;
            api.check(
                (api.forward)(
                    handle,
                    (&raw const alpha).cast(),
                    plan.x,
                    x as *const c_void,
                    plan.w,
                    w as *const c_void,
                    plan.convolution,
                    plan.algorithm,
                    workspace_ptr as *mut c_void,
                    plan.workspace,
                    (&raw const beta).cast(),
                    plan.y,
                    out as *mut c_void,
                ),
                "running a convolution",
            )
        }
    }

    /// The candle op: `(x, weight, bias)` packed in `order` (channels-last: images `[n, h, w, c]`
    /// and filters `[k, kh, kw, c]`), with the residual (if any, in the output's order) held by
    /// the op itself.
    struct Convolution {
        order: Order,
        padding: usize,
        stride: usize,
        residual: Option<Tensor>,
    }

    impl CustomOp3 for Convolution {
        fn name(&self) -> &'static str {
            "cudnn-conv2d-f16"
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
            candle_core::bail!("the cuDNN convolution runs on CUDA devices only")
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
            let epilogue = match self.order {
                Order::ChannelsLast => "pixel_bias_add",
                Order::Planes => "channel_bias_add",
            };
            match x.dtype() {
                DType::F16 => self.run::<f16>(cudnn::HALF, &format!("{epilogue}_f16"), args),
                DType::BF16 => self.run::<bf16>(cudnn::BFLOAT16, &format!("{epilogue}_bf16"), args),
                other => candle_core::bail!("the cuDNN convolution takes f16 or bf16, not {other:?}"),
            }
        }
    }

    impl Convolution {
        /// Runs the convolution on elements of type `T` (cuDNN's `data` type), then `epilogue`,
        /// the bias and residual kernel's entry point for them.
        fn run<T: CudaDType + DeviceRepr>(
            &self,
            data: i32,
            epilogue: &str,
            (x, x_layout, weight, weight_layout, bias, bias_layout): ThreeTensors,
        ) -> Result<(CudaStorage, Shape)> {
            let device = x.device().clone();
            let stream = device.cuda_stream();
            let ([n, c, h, w], [k, _, kh, kw]) = match self.order {
                Order::ChannelsLast => {
                    let ((n, h, w, c), (k, kh, kw, wc)) = (x_layout.shape().dims4()?, weight_layout.shape().dims4()?);
                    ([n, c, h, w], [k, wc, kh, kw])
                }
                Order::Planes => (x_layout.shape().dims4()?.into(), weight_layout.shape().dims4()?.into()),
            };
            let geometry = Geometry {
                input: [n, c, h, w],
                filter: [k, c, kh, kw],
                order: self.order,
                padding: self.padding,
                stride: self.stride,
                data,
            };
            let output = geometry.output();
            let [_, _, oh, ow] = output;
            let shape = Shape::from(match self.order {
                Order::ChannelsLast => vec![n, oh, ow, k],
                Order::Planes => output.to_vec(),
            });
            let (x_view, weight_view, bias_view) = (
                typed_view::<T>(x, x_layout)?,
                typed_view::<T>(weight, weight_layout)?,
                typed_view::<T>(bias, bias_layout)?,
            );
            // SAFETY: cuDNN writes every element.
            let mut out = unsafe { device.alloc::<T>(shape.elem_count())? };
            {
                let (x_ptr, _x_guard) = x_view.device_ptr(&stream);
                let (w_ptr, _w_guard) = weight_view.device_ptr(&stream);
                let (out_ptr, _out_guard) = out.device_ptr_mut(&stream);
                run_cudnn(&device, geometry, x_ptr, w_ptr, out_ptr)?;
            }
            let residual = self.residual.as_ref().map(Tensor::storage_and_layout);
            let residual_view = residual
                .as_ref()
                .map(|(storage, layout)| held_typed_view::<T>(storage, layout))
                .transpose()?;
            let kernel = nvrtc::compiled(&device, "swapgraph-convolution", SOURCE)?;
            let function = device.get_or_load_custom_func(epilogue, &kernel.module, &kernel.ptx)?;
            let elements = shape.elem_count() as i64;
            let (hw, channels) = ((output[2] * output[3]) as i32, k as i32);
            let null: u64 = 0;
            let mut launch = function.builder();
            launch.arg(&out).arg(&bias_view);
            match &residual_view {
                Some(residual) => launch.arg(residual),
                None => launch.arg(&null),
            };
            launch.arg(&elements).arg(&hw).arg(&channels);
            // SAFETY: the arguments match the kernel's signature; `order_for` checked that the
            // output's pixels (channels-last) or planes are whole chunks of 8 and that the
            // residual has the output's shape.
            unsafe { launch.launch(grid_stride(shape.elem_count() / 8)) }.w()?;
            Ok((CudaStorage::wrap_cuda_slice(out, device), shape))
        }
    }
}

/// Run by the CUDA build's tests on a machine with an NVIDIA GPU and cuDNN on the library path.
#[cfg(all(test, feature = "cuda"))]
mod tests {
    use super::{conv2d, resident_filter};
    use crate::kernels::cuda::{error_of_largest_value, max_relative_error, rounded_pair_in};
    use crate::kernels::cudnn;
    use crate::kernels::layout::{is_channels_last, to_channels_last};
    use candle_core::{DType, Device, Result, Tensor};

    /// Weights scaled by 1/sqrt(fan-in), as trained networks keep activations near 1.
    fn weights_in(dtype: DType, shape: [usize; 4], device: &Device) -> Result<(Tensor, Tensor)> {
        let fan_in = (shape[1] * shape[2] * shape[3]) as f64;
        rounded_pair_in(
            dtype,
            &(Tensor::randn(0f32, 1.0, &shape, &Device::Cpu)? / fan_in.sqrt())?,
            device,
        )
    }

    fn random_in(dtype: DType, shape: &[usize], device: &Device) -> Result<(Tensor, Tensor)> {
        rounded_pair_in(dtype, &Tensor::randn(0f32, 1.0, shape, &Device::Cpu)?, device)
    }

    fn weights(shape: [usize; 4], device: &Device) -> Result<(Tensor, Tensor)> {
        weights_in(DType::F16, shape, device)
    }

    fn random(shape: &[usize], device: &Device) -> Result<(Tensor, Tensor)> {
        random_in(DType::F16, shape, device)
    }

    #[test]
    fn convolutions_match_the_cpu_f32_reference() -> Result<()> {
        assert!(
            cudnn::api().is_some(),
            "this test needs libcudnn.so.9 on the library path"
        );
        let gpu = Device::new_cuda(0)?;
        // (input, output channels, kernel, padding, stride): SDXL's resnet convs at each level,
        // a residual-path 1x1, a downsampler, the stem, the head, and a small odd one.
        let cases = [
            ([1, 320, 128, 128], 320, 3, 1, 1),
            ([2, 640, 64, 64], 640, 3, 1, 1),
            ([1, 2560, 32, 32], 1280, 3, 1, 1),
            ([2, 1920, 64, 64], 640, 1, 0, 1),
            ([2, 640, 64, 64], 640, 3, 1, 2),
            ([2, 4, 128, 128], 320, 3, 1, 1),
            ([2, 320, 16, 16], 4, 3, 1, 1),
            ([1, 3, 6, 4], 5, 3, 1, 1),
        ];
        // f16 as the UNet runs, bf16 as the VAE does on the same cards.
        for ((input, out_channels, kernel, padding, stride), dtype) in cases
            .into_iter()
            .flat_map(|case| [(case, DType::F16), (case, DType::BF16)])
        {
            let (x, x_gpu) = random_in(dtype, &input, &gpu)?;
            let (w, w_gpu) = weights_in(dtype, [out_channels, input[1], kernel, kernel], &gpu)?;
            let (b, b_gpu) = random_in(dtype, &[out_channels], &gpu)?;
            let conv = x.conv2d(&w, padding, stride, 1, 1)?;
            let expected = conv.broadcast_add(&b.reshape((1, out_channels, 1, 1))?)?;
            let (residual, residual_gpu) = random_in(dtype, expected.dims(), &gpu)?;
            let with_residual = (&expected + residual)?;
            // cuDNN rounds the product to the output's dtype before the bias and residual are
            // added and rounded again. f16 holds 11 bits, so both roundings stay far inside 1%
            // of each element; bf16 holds 8, and two roundings of outputs up to about 8 can
            // come to 0.03 on an element near zero: its error is held to the largest output.
            let error = |fused: &Tensor, reference: &Tensor| match dtype {
                DType::BF16 => error_of_largest_value(fused, reference),
                _ => max_relative_error(fused, reference),
            };
            // Widths that are multiples of 8 run channels-last whatever the input's layout.
            let channels_last = input[1] % 8 == 0 && out_channels % 8 == 0;
            for (layout, x_gpu, residual_gpu) in [
                ("packed", x_gpu.clone(), residual_gpu.clone()),
                (
                    "channels-last",
                    to_channels_last(&x_gpu)?,
                    to_channels_last(&residual_gpu)?,
                ),
            ] {
                let case = format!("{input:?} {layout} -> {out_channels} k{kernel} p{padding} s{stride} in {dtype:?}");
                let fused = conv2d(&x_gpu, &w_gpu, &b_gpu, None, padding, stride)?.expect("cuDNN applies");
                assert_eq!(fused.dims(), expected.dims(), "{case}");
                assert_eq!(fused.dtype(), dtype, "{case}");
                assert_eq!(is_channels_last(&fused), channels_last, "{case}");
                let without = error(&fused, &expected)?;
                assert!(without < 1e-2, "{case}: error {without}");
                // A filter kept reordered gives cuDNN the same memory as one reordered per pass.
                let kept = resident_filter(&w_gpu)?;
                assert_eq!(is_channels_last(&kept), channels_last && kernel > 1, "{case}");
                let from_kept = conv2d(&x_gpu, &kept, &b_gpu, None, padding, stride)?.expect("cuDNN applies");
                assert_eq!(
                    from_kept.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?,
                    fused.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?,
                    "{case}: the kept filter"
                );
                let fused =
                    conv2d(&x_gpu, &w_gpu, &b_gpu, Some(&residual_gpu), padding, stride)?.expect("cuDNN applies");
                let with = error(&fused, &with_residual)?;
                assert!(with < 1e-2, "{case} with a residual: error {with}");
            }
        }
        Ok(())
    }

    #[test]
    fn convolutions_decline_what_they_cannot_take() -> Result<()> {
        let gpu = Device::new_cuda(0)?;
        let (_, x) = random(&[1, 4, 8, 8], &gpu)?;
        let (_, w) = weights([8, 4, 3, 3], &gpu)?;
        let (_, b) = random(&[8], &gpu)?;
        assert!(
            conv2d(&x.to_dtype(DType::F32)?, &w, &b, None, 1, 1)?.is_none(),
            "f32 input"
        );
        assert!(
            conv2d(&x.to_dtype(DType::BF16)?, &w, &b, None, 1, 1)?.is_none(),
            "bf16 input beside f16 weights"
        );
        let (_, odd) = random(&[1, 4, 5, 5], &gpu)?;
        assert!(conv2d(&odd, &w, &b, None, 1, 1)?.is_none(), "25 output positions");
        let (_, wrong_bias) = random(&[4], &gpu)?;
        assert!(
            conv2d(&x, &w, &wrong_bias, None, 1, 1)?.is_none(),
            "a bias of the wrong width"
        );
        let (_, wrong_residual) = random(&[1, 8, 4, 4], &gpu)?;
        assert!(
            conv2d(&x, &w, &b, Some(&wrong_residual), 1, 1)?.is_none(),
            "a residual of the wrong shape"
        );
        // Weights kept on the device that no convolution reads channels-last stay as loaded.
        let (_, matrix) = random(&[8, 16], &gpu)?;
        let (_, one_by_one) = weights([16, 8, 1, 1], &gpu)?;
        let (_, f32_filter) = weights([16, 8, 3, 3], &gpu)?;
        let f32_filter = f32_filter.to_dtype(DType::F32)?;
        for (kept, what) in [
            (&matrix, "a linear layer's matrix"),
            (&w, "a filter from 4 channels (the stem's)"),
            (&one_by_one, "a 1x1 filter"),
            (&f32_filter, "an f32 filter"),
        ] {
            let laid_out = resident_filter(kept)?;
            assert!(
                laid_out.is_contiguous() && laid_out.dims() == kept.dims(),
                "{what} is kept as loaded"
            );
        }
        Ok(())
    }
}
