//! Linear layers through cuBLASLt, `x W^T + bias (+ residual)` as one matrix product: the bias
//! is added in the product's epilogue and the residual enters as its `C` matrix (`beta = 1`), so
//! no pass over the output follows the product. f16 data, f32 accumulation on tensor cores; the
//! algorithm comes from cuBLASLt's heuristics once per shape.

use candle_core::{Result, Tensor};

/// `x W^T + bias (+ residual)` for `x` `[.., in]`, `weight` `[out, in]`, `bias` `[out]` and
/// `residual` of the output's shape `[.., out]`. `None` where this path does not apply (not
/// CUDA, not f16, widths not multiples of 8, or `SWAPGRAPH_CUBLASLT=off`).
///
/// # Errors
/// A cuBLASLt failure, named with the step that failed.
pub fn linear(x: &Tensor, weight: &Tensor, bias: &Tensor, residual: Option<&Tensor>) -> Result<Option<Tensor>> {
    #[cfg(feature = "cuda")]
    if cuda::applies(x, weight, bias, residual) {
        let op = cuda::Gemm {
            residual: residual.cloned(),
        };
        return x.apply_op3_no_bwd(weight, bias, &op).map(Some);
    }
    let _ = (x, weight, bias, residual);
    Ok(None)
}

#[cfg(feature = "cuda")]
mod cuda {
    use crate::kernels::cuda::{all_packed_f16, held_view, view};
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::cublaslt::{result, sys};
    use candle_core::cuda_backend::cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut};
    use candle_core::cuda_backend::{CudaDevice, DeviceId, WrapErr};
    use candle_core::{CpuStorage, CudaStorage, CustomOp3, Layout, Result, Shape, Tensor, D};
    use half::f16;
    use std::collections::HashMap;
    use std::ffi::c_void;
    use std::sync::{Mutex, OnceLock, PoisonError};

    /// cuBLAS's `cublasOperation_t` for a transposed operand.
    const CUBLAS_OP_T: i32 = 1;

    /// Workspace for cuBLASLt's algorithms, NVIDIA's recommendation for Hopper.
    const WORKSPACE_BYTES: usize = 32 << 20;

    /// Whether `SWAPGRAPH_CUBLASLT=off` asks for candle's product and a separate bias pass.
    fn turned_off() -> bool {
        static OFF: OnceLock<bool> = OnceLock::new();
        *OFF.get_or_init(|| std::env::var("SWAPGRAPH_CUBLASLT").is_ok_and(|v| v.eq_ignore_ascii_case("off")))
    }

    pub fn applies(x: &Tensor, weight: &Tensor, bias: &Tensor, residual: Option<&Tensor>) -> bool {
        let (Ok(inputs), Ok((outputs, weight_inputs))) = (x.dim(D::Minus1), weight.dims2()) else {
            return false;
        };
        let mut output_dims = x.dims().to_vec();
        if let Some(last) = output_dims.last_mut() {
            *last = outputs;
        }
        let tensors: Vec<&Tensor> = [Some(x), Some(weight), Some(bias), residual]
            .into_iter()
            .flatten()
            .collect();
        !turned_off()
            && x.rank() >= 2
            && weight_inputs == inputs
            && inputs % 8 == 0
            && outputs % 8 == 0
            && bias.dims() == [outputs]
            && residual.is_none_or(|r| r.dims() == output_dims.as_slice())
            && all_packed_f16(&tensors)
    }

    /// What identifies a product to cuBLASLt: `rows x inputs` times `inputs x outputs`, whether
    /// a residual is read, and the alignment every pointer has.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    struct Geometry {
        rows: usize,
        inputs: usize,
        outputs: usize,
        residual: bool,
        alignment: u32,
    }

    /// The descriptors and algorithm of one geometry, made once.
    struct Plan {
        product: sys::cublasLtMatmulDesc_t,
        weight: sys::cublasLtMatrixLayout_t,
        x: sys::cublasLtMatrixLayout_t,
        out: sys::cublasLtMatrixLayout_t,
        algorithm: sys::cublasLtMatmulAlgo_t,
    }

    /// A device's cuBLASLt handle, its workspace and the plans made on it.
    struct DeviceState {
        handle: sys::cublasLtHandle_t,
        workspace: CudaSlice<u8>,
        plans: HashMap<Geometry, Plan>,
    }

    // SAFETY: cuBLASLt handles and descriptors may be used from any thread one at a time; every
    // use goes through the mutex around the states.
    unsafe impl Send for DeviceState {}

    fn states() -> &'static Mutex<HashMap<DeviceId, DeviceState>> {
        static STATES: OnceLock<Mutex<HashMap<DeviceId, DeviceState>>> = OnceLock::new();
        STATES.get_or_init(Default::default)
    }

    fn failed(step: &str, e: result::CublasError) -> candle_core::Error {
        candle_core::Error::Msg(format!(
            "cuBLASLt failed {step}: {e}; SWAPGRAPH_CUBLASLT=off runs linear layers without it"
        ))
    }

    /// Sets one attribute of a matmul descriptor from `value`.
    ///
    /// # Safety
    /// `desc` is live and `T` is the attribute's type.
    unsafe fn set_desc<T>(
        desc: sys::cublasLtMatmulDesc_t,
        attribute: sys::cublasLtMatmulDescAttributes_t,
        value: &T,
    ) -> Result<()> {
        // SAFETY: the caller's.
        unsafe { result::set_matmul_desc_attribute(desc, attribute, (value as *const T).cast(), size_of::<T>()) }
            .map_err(|e| failed("describing the product", e))
    }

    /// Column-major views of the row-major tensors: the output `[rows, outputs]` is
    /// `outputs x rows` with leading dimension `outputs`, `x` is `inputs x rows`, and the weight
    /// `[outputs, inputs]` is `inputs x outputs`, transposed by the product.
    fn new_plan(handle: sys::cublasLtHandle_t, geometry: &Geometry) -> Result<Plan> {
        let (rows, inputs, outputs) = (geometry.rows as u64, geometry.inputs as u64, geometry.outputs as u64);
        let half = sys::cudaDataType_t::CUDA_R_16F;
        let layout = |r: u64, c: u64| {
            result::create_matrix_layout(half, r, c, r as i64).map_err(|e| failed("describing a matrix", e))
        };
        let mut plan = Plan {
            product: std::ptr::null_mut(),
            weight: layout(inputs, outputs)?,
            x: std::ptr::null_mut(),
            out: std::ptr::null_mut(),
            // SAFETY: plain data, overwritten by the heuristic below.
            algorithm: unsafe { std::mem::zeroed() },
        };
        plan.x = layout(inputs, rows)?;
        plan.out = layout(outputs, rows)?;
        plan.product = result::create_matmul_desc(
            sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            sys::cudaDataType_t::CUDA_R_32F,
        )
        .map_err(|e| failed("describing the product", e))?;
        let attributes = sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSA;
        // SAFETY: the descriptor is live; the attributes take an i32 operation and a u32 epilogue.
        unsafe {
            set_desc(plan.product, attributes, &CUBLAS_OP_T)?;
            set_desc(
                plan.product,
                sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_EPILOGUE,
                &(sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BIAS as u32),
            )?;
        }
        let preference = result::create_matmul_pref().map_err(|e| failed("making a preference", e))?;
        let choose = || -> Result<sys::cublasLtMatmulHeuristicResult_t> {
            let workspace = WORKSPACE_BYTES as u64;
            let pref = |attribute, value: *const c_void, size| {
                // SAFETY: the preference is live; each value has the attribute's type.
                unsafe { result::set_matmul_pref_attribute(preference, attribute, value, size) }
                    .map_err(|e| failed("setting a preference", e))
            };
            use sys::cublasLtMatmulPreferenceAttributes_t as Pref;
            pref(
                Pref::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                (&raw const workspace).cast(),
                8,
            )?;
            for attribute in [
                Pref::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                Pref::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                Pref::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                Pref::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
            ] {
                pref(attribute, (&raw const geometry.alignment).cast(), 4)?;
            }
            // SAFETY: every descriptor is live and describes the buffers of this geometry.
            unsafe {
                result::get_matmul_algo_heuristic(
                    handle,
                    plan.product,
                    plan.weight,
                    plan.x,
                    plan.out,
                    plan.out,
                    preference,
                )
            }
            .map_err(|e| failed(&format!("finding an algorithm for {geometry:?}"), e))
        };
        let chosen = choose();
        // SAFETY: made above and used by nothing else.
        let _ = unsafe { result::destroy_matmul_pref(preference) };
        plan.algorithm = chosen?.algo;
        Ok(plan)
    }

    impl Drop for Plan {
        fn drop(&mut self) {
            // SAFETY: each descriptor was created by this plan (null ones are skipped) and is used
            // by nothing else.
            unsafe {
                for layout in [self.weight, self.x, self.out] {
                    if !layout.is_null() {
                        let _ = result::destroy_matrix_layout(layout);
                    }
                }
                if !self.product.is_null() {
                    let _ = result::destroy_matmul_desc(self.product);
                }
            }
        }
    }

    /// The largest power of two, up to 256, that divides every address.
    fn alignment(addresses: &[u64]) -> u32 {
        addresses
            .iter()
            .map(|&a| if a == 0 { 256 } else { 1u64 << a.trailing_zeros().min(8) })
            .min()
            .unwrap_or(256) as u32
    }

    /// Runs the product on `device`'s stream: `out = x W^T + bias (+ residual)`.
    fn run_cublaslt(device: &CudaDevice, geometry: Geometry, [x, weight, bias, residual, out]: [u64; 5]) -> Result<()> {
        let stream = device.cuda_stream();
        // cuBLASLt works on the calling thread's current context: make it this device's.
        stream.context().bind_to_thread().w()?;
        let mut states = states().lock().unwrap_or_else(PoisonError::into_inner);
        let state = match states.entry(device.id()) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => {
                let handle = result::create_handle().map_err(|e| failed("creating a handle", e))?;
                // SAFETY: workspace contents are cuBLASLt's own.
                let workspace = unsafe { device.alloc::<u8>(WORKSPACE_BYTES)? };
                entry.insert(DeviceState {
                    handle,
                    workspace,
                    plans: HashMap::new(),
                })
            }
        };
        let handle = state.handle;
        let plan = match state.plans.entry(geometry) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => entry.insert(new_plan(handle, &geometry)?),
        };
        let (workspace, _guard) = state.workspace.device_ptr_mut(&stream);
        let (alpha, beta) = (1f32, if geometry.residual { 1f32 } else { 0f32 });
        let c = if geometry.residual { residual } else { out };
        // SAFETY: the descriptors match the buffers' shapes (`applies` and `Geometry`), the
        // buffers live until the work on the stream that uses them is done (candle's stream
        // ordering), and the handle, plan and workspace are used under the mutex, on one stream.
        unsafe {
            set_desc(
                plan.product,
                sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                &bias,
            )?;
            result::matmul(
                handle,
                plan.product,
                (&raw const alpha).cast(),
                (&raw const beta).cast(),
                weight as *const c_void,
                plan.weight,
                x as *const c_void,
                plan.x,
                c as *const c_void,
                plan.out,
                out as *mut c_void,
                plan.out,
                &raw const plan.algorithm,
                workspace as *mut c_void,
                WORKSPACE_BYTES,
                stream.cu_stream() as _,
            )
        }
        .map_err(|e| failed("running a product", e))
    }

    /// The candle op: `(x, weight, bias)`, with the residual (if any) read from the op itself.
    pub struct Gemm {
        pub residual: Option<Tensor>,
    }

    impl CustomOp3 for Gemm {
        fn name(&self) -> &'static str {
            "cublaslt-linear-f16"
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
            candle_core::bail!("the cuBLASLt linear layer runs on CUDA devices only")
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
            let (outputs, inputs) = weight_layout.shape().dims2()?;
            let mut dims = x_layout.shape().dims().to_vec();
            let rows = x_layout.shape().elem_count() / inputs;
            if let Some(last) = dims.last_mut() {
                *last = outputs;
            }
            let shape = Shape::from(dims);
            let residual = self.residual.as_ref().map(Tensor::storage_and_layout);
            let residual_view = residual
                .as_ref()
                .map(|(storage, layout)| held_view(storage, layout))
                .transpose()?;
            let (x_view, weight_view, bias_view) = (
                view(x, x_layout)?,
                view(weight, weight_layout)?,
                view(bias, bias_layout)?,
            );
            // SAFETY: cuBLASLt writes every element.
            let mut out = unsafe { device.alloc::<f16>(shape.elem_count())? };
            {
                let (x_ptr, _x_guard) = x_view.device_ptr(&stream);
                let (weight_ptr, _weight_guard) = weight_view.device_ptr(&stream);
                let (bias_ptr, _bias_guard) = bias_view.device_ptr(&stream);
                let (residual_ptr, _residual_guard) = residual_view.as_ref().map(|r| r.device_ptr(&stream)).unzip();
                let (out_ptr, _out_guard) = out.device_ptr_mut(&stream);
                let residual_ptr = residual_ptr.unwrap_or(0);
                let geometry = Geometry {
                    rows,
                    inputs,
                    outputs,
                    residual: residual_view.is_some(),
                    alignment: alignment(&[x_ptr, weight_ptr, bias_ptr, residual_ptr, out_ptr]),
                };
                run_cublaslt(&device, geometry, [x_ptr, weight_ptr, bias_ptr, residual_ptr, out_ptr])?;
            }
            Ok((CudaStorage::wrap_cuda_slice(out, device), shape))
        }
    }

    #[cfg(test)]
    mod tests {
        use super::alignment;

        #[test]
        fn alignment_is_the_weakest_pointers() {
            assert_eq!(alignment(&[0x1000, 0x2000]), 256);
            assert_eq!(alignment(&[0x1000, 0x1010]), 16);
            assert_eq!(alignment(&[0x1000, 0, 0x1002]), 2);
        }
    }
}

/// Run by the CUDA build's tests on a machine with an NVIDIA GPU.
#[cfg(all(test, feature = "cuda"))]
mod tests {
    use super::linear;
    use crate::kernels::cuda::{max_relative_error, rounded_pair};
    use candle_core::{DType, Device, Result, Tensor};

    fn random(shape: &[usize], scale: f64, device: &Device) -> Result<(Tensor, Tensor)> {
        rounded_pair(&(Tensor::randn(0f32, 1.0, shape, &Device::Cpu)? * scale)?, device)
    }

    #[test]
    fn linear_layers_match_the_cpu_f32_reference() -> Result<()> {
        let gpu = Device::new_cuda(0)?;
        // (x, outputs): attention outputs and proj_in/out at the three widths, the feed-forward's
        // output, a token count that is not a multiple of the tiles, and one row.
        let cases = [
            (vec![2, 4096, 640], 640),
            (vec![2, 1024, 1280], 1280),
            (vec![2, 1024, 5120], 1280),
            (vec![2, 77, 2048], 640),
            (vec![1, 8], 16),
        ];
        for (x_shape, outputs) in cases {
            let inputs = *x_shape.last().unwrap();
            let (x, x_gpu) = random(&x_shape, 1.0, &gpu)?;
            let (w, w_gpu) = random(&[outputs, inputs], 1.0 / (inputs as f64).sqrt(), &gpu)?;
            let (b, b_gpu) = random(&[outputs], 1.0, &gpu)?;
            let expected = x.broadcast_matmul(&w.t()?)?.broadcast_add(&b)?;
            let case = format!("{x_shape:?} -> {outputs}");
            let fused = linear(&x_gpu, &w_gpu, &b_gpu, None)?.expect("cuBLASLt applies");
            assert_eq!(fused.dims(), expected.dims(), "{case}");
            assert!(max_relative_error(&fused, &expected)? < 1e-2, "{case}");
            let (residual, residual_gpu) = random(expected.dims(), 1.0, &gpu)?;
            let fused = linear(&x_gpu, &w_gpu, &b_gpu, Some(&residual_gpu))?.expect("cuBLASLt applies");
            assert!(
                max_relative_error(&fused, &(expected + residual)?)? < 1e-2,
                "{case} with a residual"
            );
        }
        // A view 16 bytes into its buffer: algorithms that need 256-byte alignment are not picked.
        let (buffer, buffer_gpu) = random(&[8 + 63 * 320], 1.0, &gpu)?;
        let x = buffer.narrow(0, 8, 63 * 320)?.reshape((63, 320))?;
        let x_gpu = buffer_gpu.narrow(0, 8, 63 * 320)?.reshape((63, 320))?;
        let (w, w_gpu) = random(&[320, 320], 1.0 / 320f64.sqrt(), &gpu)?;
        let (b, b_gpu) = random(&[320], 1.0, &gpu)?;
        let expected = x.matmul(&w.t()?)?.broadcast_add(&b)?;
        let fused = linear(&x_gpu, &w_gpu, &b_gpu, None)?.expect("cuBLASLt applies to a 16-byte aligned view");
        assert!(max_relative_error(&fused, &expected)? < 1e-2, "16-byte aligned view");
        Ok(())
    }

    #[test]
    fn linear_layers_decline_what_they_cannot_take() -> Result<()> {
        let gpu = Device::new_cuda(0)?;
        let (_, x) = random(&[2, 16, 64], 1.0, &gpu)?;
        let (_, w) = random(&[32, 64], 1.0, &gpu)?;
        let (_, b) = random(&[32], 1.0, &gpu)?;
        assert!(linear(&x.to_dtype(DType::F32)?, &w, &b, None)?.is_none(), "f32 input");
        let (_, odd) = random(&[2, 16, 60], 1.0, &gpu)?;
        let (_, odd_w) = random(&[32, 60], 1.0, &gpu)?;
        assert!(linear(&odd, &odd_w, &b, None)?.is_none(), "60 inputs");
        let (_, wrong_bias) = random(&[16], 1.0, &gpu)?;
        assert!(
            linear(&x, &w, &wrong_bias, None)?.is_none(),
            "a bias of the wrong width"
        );
        let (_, wrong_residual) = random(&[2, 16, 16], 1.0, &gpu)?;
        assert!(
            linear(&x, &w, &b, Some(&wrong_residual))?.is_none(),
            "a residual of the wrong shape"
        );
        let (_, columns) = random(&[2, 64, 16], 1.0, &gpu)?;
        assert!(
            linear(&columns.transpose(1, 2)?, &w, &b, None)?.is_none(),
            "a transposed input"
        );
        Ok(())
    }
}
