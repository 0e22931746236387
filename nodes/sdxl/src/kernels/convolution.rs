//! 2-D convolution through cuDNN, with its bias and an optional residual added in one pass after
//! it (`convolution.cu`), where candle runs im2col, a matrix product, a broadcast bias add and a
//! separate residual add. cuDNN computes in f32 on f16 data (tensor cores, f32 accumulation,
//! PyTorch's setting); the algorithm is chosen by cuDNN's heuristics once per shape.

use candle_core::{Result, Tensor};

/// `conv2d(x, weight) + bias (+ residual)` for `x` `[n, c, h, w]`, `weight` `[k, c, kh, kw]`,
/// `bias` `[k]` and `residual` of the output's shape, with `padding` on every side and `stride`.
/// `None` where this path does not apply (not CUDA, not f16, cuDNN not found, an output whose
/// `height * width` is not a multiple of 8).
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
    if cuda::applies(x, weight, bias, residual, padding, stride) {
        let op = cuda::Convolution {
            padding,
            stride,
            residual: residual.cloned(),
        };
        return x.apply_op3_no_bwd(weight, bias, &op).map(Some);
    }
    let _ = (x, weight, bias, residual, padding, stride);
    Ok(None)
}

#[cfg(feature = "cuda")]
mod cuda {
    use crate::kernels::cuda::{all_packed_f16, grid_stride, held_view, view};
    use crate::kernels::cudnn;
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{DevicePtr, DevicePtrMut, PushKernelArg};
    use candle_core::cuda_backend::{CudaDevice, DeviceId, WrapErr};
    use candle_core::{CpuStorage, CudaStorage, CustomOp3, Layout, Result, Shape, Tensor};
    use half::f16;
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

    pub fn applies(
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        residual: Option<&Tensor>,
        padding: usize,
        stride: usize,
    ) -> bool {
        let (Ok((n, c, h, w)), Ok((k, wc, kh, kw))) = (x.dims4(), weight.dims4()) else {
            return false;
        };
        let (Some(oh), Some(ow)) = (output_size(h, kh, padding, stride), output_size(w, kw, padding, stride)) else {
            return false;
        };
        let tensors: Vec<&Tensor> = [Some(x), Some(weight), Some(bias), residual]
            .into_iter()
            .flatten()
            .collect();
        stride > 0
            && wc == c
            && bias.dims() == [k]
            && (oh * ow) % 8 == 0
            && residual.is_none_or(|r| r.dims() == [n, k, oh, ow])
            && all_packed_f16(&tensors)
            && cudnn::api().is_some()
    }

    /// What identifies a convolution to cuDNN.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    struct Geometry {
        input: [usize; 4],
        filter: [usize; 4],
        padding: usize,
        stride: usize,
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
            api.check(
                (api.set_tensor_4d)(plan.x, cudnn::NCHW, cudnn::HALF, n, c, h, w),
                "describing the input",
            )?;
            api.check(
                (api.set_filter_4d)(plan.w, cudnn::HALF, cudnn::NCHW, k, c, kh, kw),
                "describing the weights",
            )?;
            api.check(
                (api.set_tensor_4d)(plan.y, cudnn::NCHW, cudnn::HALF, n, k, oh, ow),
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
        // SAFETY: the descriptors match the buffers' shapes (`applies` and `Geometry`), the
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

    /// The candle op: `(x, weight, bias)`, with the residual (if any) read from the op itself.
    pub struct Convolution {
        pub padding: usize,
        pub stride: usize,
        pub residual: Option<Tensor>,
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
            let device = x.device().clone();
            let stream = device.cuda_stream();
            let (n, c, h, w) = x_layout.shape().dims4()?;
            let (k, _, kh, kw) = weight_layout.shape().dims4()?;
            let geometry = Geometry {
                input: [n, c, h, w],
                filter: [k, c, kh, kw],
                padding: self.padding,
                stride: self.stride,
            };
            let output = geometry.output();
            let shape = Shape::from(output.to_vec());
            let (x_view, weight_view, bias_view) = (
                view(x, x_layout)?,
                view(weight, weight_layout)?,
                view(bias, bias_layout)?,
            );
            // SAFETY: cuDNN writes every element.
            let mut out = unsafe { device.alloc::<f16>(shape.elem_count())? };
            {
                let (x_ptr, _x_guard) = x_view.device_ptr(&stream);
                let (w_ptr, _w_guard) = weight_view.device_ptr(&stream);
                let (out_ptr, _out_guard) = out.device_ptr_mut(&stream);
                run_cudnn(&device, geometry, x_ptr, w_ptr, out_ptr)?;
            }
            let residual = self.residual.as_ref().map(Tensor::storage_and_layout);
            let residual_view = residual
                .as_ref()
                .map(|(storage, layout)| held_view(storage, layout))
                .transpose()?;
            let kernel = nvrtc::compiled(&device, "swapgraph-convolution", SOURCE)?;
            let function = device.get_or_load_custom_func("channel_bias_add_f16", &kernel.module, &kernel.ptx)?;
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
            // SAFETY: the arguments match the kernel's signature; `applies` checked that the
            // output's planes are whole chunks of 8 and the residual has the output's shape.
            unsafe { launch.launch(grid_stride(shape.elem_count() / 8)) }.w()?;
            Ok((CudaStorage::wrap_cuda_slice(out, device), shape))
        }
    }
}

/// Run by the CUDA build's tests on a machine with an NVIDIA GPU and cuDNN on the library path.
#[cfg(all(test, feature = "cuda"))]
mod tests {
    use super::conv2d;
    use crate::kernels::cuda::{max_relative_error, rounded_pair};
    use crate::kernels::cudnn;
    use candle_core::{DType, Device, Result, Tensor};

    /// Weights scaled by 1/sqrt(fan-in), as trained networks keep activations near 1.
    fn weights(shape: [usize; 4], device: &Device) -> Result<(Tensor, Tensor)> {
        let fan_in = (shape[1] * shape[2] * shape[3]) as f64;
        rounded_pair(
            &(Tensor::randn(0f32, 1.0, &shape, &Device::Cpu)? / fan_in.sqrt())?,
            device,
        )
    }

    fn random(shape: &[usize], device: &Device) -> Result<(Tensor, Tensor)> {
        rounded_pair(&Tensor::randn(0f32, 1.0, shape, &Device::Cpu)?, device)
    }

    #[test]
    fn convolutions_match_the_cpu_f32_reference() -> Result<()> {
        assert!(
            cudnn::api().is_some(),
            "this test needs libcudnn.so.9 on the library path"
        );
        let gpu = Device::new_cuda(0)?;
        // (input, output channels, kernel, padding, stride): SDXL's resnet convs at each level,
        // a residual-path 1x1, a downsampler, the stem, and a small odd one.
        let cases = [
            ([1, 320, 128, 128], 320, 3, 1, 1),
            ([2, 640, 64, 64], 640, 3, 1, 1),
            ([1, 2560, 32, 32], 1280, 3, 1, 1),
            ([2, 1920, 64, 64], 640, 1, 0, 1),
            ([2, 640, 64, 64], 640, 3, 1, 2),
            ([2, 4, 128, 128], 320, 3, 1, 1),
            ([1, 3, 6, 4], 5, 3, 1, 1),
        ];
        for (input, out_channels, kernel, padding, stride) in cases {
            let (x, x_gpu) = random(&input, &gpu)?;
            let (w, w_gpu) = weights([out_channels, input[1], kernel, kernel], &gpu)?;
            let (b, b_gpu) = random(&[out_channels], &gpu)?;
            let conv = x.conv2d(&w, padding, stride, 1, 1)?;
            let expected = conv.broadcast_add(&b.reshape((1, out_channels, 1, 1))?)?;
            let fused = conv2d(&x_gpu, &w_gpu, &b_gpu, None, padding, stride)?.expect("cuDNN applies");
            assert_eq!(fused.dims(), expected.dims());
            let case = format!("{input:?} -> {out_channels} k{kernel} p{padding} s{stride}");
            assert!(max_relative_error(&fused, &expected)? < 1e-2, "{case}");
            let (residual, residual_gpu) = random(expected.dims(), &gpu)?;
            let fused = conv2d(&x_gpu, &w_gpu, &b_gpu, Some(&residual_gpu), padding, stride)?.expect("cuDNN applies");
            assert!(
                max_relative_error(&fused, &(expected + residual)?)? < 1e-2,
                "{case} with a residual"
            );
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
        Ok(())
    }
}
