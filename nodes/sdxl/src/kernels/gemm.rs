//! Linear layers through cuBLASLt, `x W^T + bias (+ residual)` as one matrix product: the bias
//! is added in the product's epilogue and the residual enters as its `C` matrix (`beta = 1`), so
//! no pass over the output follows the product. f16 data, or 8-bit (e4m3) inputs and weights
//! with the weight's scale as `alpha`, f32 accumulation on tensor cores, f16 out; the algorithm
//! comes from cuBLASLt's heuristics once per shape (or is timed among their first few, see
//! `cuda::tuning`).

use candle_core::{Device, Result, Tensor};

/// `x W^T + bias (+ residual)` for `x` `[.., in]`, `weight` `[out, in]`, `bias` `[out]` and
/// `residual` of the output's shape `[.., out]`. `None` where this path does not apply (not
/// CUDA, not f16, widths not multiples of 8, or `SWAPGRAPH_CUBLASLT=off`).
///
/// # Errors
/// A cuBLASLt failure, named with the step that failed.
pub fn linear(x: &Tensor, weight: &Tensor, bias: &Tensor, residual: Option<&Tensor>) -> Result<Option<Tensor>> {
    #[cfg(feature = "cuda")]
    if cuda::applies(x, weight, Some(bias), residual) {
        let op = cuda::Gemm {
            bias: Some(bias.clone()),
            residual: residual.cloned(),
            alpha: 1.0,
        };
        return x.apply_op2_no_bwd(weight, &op).map(Some);
    }
    let _ = (x, weight, bias, residual);
    Ok(None)
}

/// `scale * x W^T (+ bias) (+ residual)` in f16 for `x` `[.., in]` and `weight` `[out, in]`
/// both in e4m3, on 8-bit tensor cores. `None` where this path does not apply (not a CUDA
/// card with 8-bit tensor cores, widths not multiples of 16, or `SWAPGRAPH_CUBLASLT=off`).
///
/// # Errors
/// A cuBLASLt failure, named with the step that failed.
pub fn linear_e4m3(
    x: &Tensor,
    weight: &Tensor,
    scale: f32,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
) -> Result<Option<Tensor>> {
    #[cfg(feature = "cuda")]
    if cuda::applies(x, weight, bias, residual) {
        let op = cuda::Gemm {
            bias: bias.cloned(),
            residual: residual.cloned(),
            alpha: scale,
        };
        return x.apply_op2_no_bwd(weight, &op).map(Some);
    }
    let _ = (x, weight, scale, bias, residual);
    Ok(None)
}

/// Whether linear layers on `device` take products in 8 bits: on CUDA cards with 8-bit tensor
/// cores (compute capability 8.9 and up), and on the CPU, where the same rounding is computed
/// in f32 as the reference. Elsewhere 8-bit weights are widened instead.
pub fn takes_e4m3_products(device: &Device) -> bool {
    match device {
        Device::Cpu => true,
        #[cfg(feature = "cuda")]
        Device::Cuda(device) => cuda::has_e4m3_tensor_cores(device),
        _ => false,
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    mod tuning;

    use crate::kernels::cuda::{held_view, packed_f16, view};
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::cublaslt::{result, sys};
    use candle_core::cuda_backend::cudarc::driver::{
        sys::CUdeviceptr, CudaSlice, CudaStream, CudaView, DevicePtr, DevicePtrMut, SyncOnDrop,
    };
    use candle_core::cuda_backend::{CudaDevice, DeviceId, WrapErr};
    use candle_core::{CpuStorage, CudaStorage, CustomOp2, DType, Device, Layout, Result, Shape, Tensor, D};
    use float8::F8E4M3;
    use half::f16;
    use std::collections::HashMap;
    use std::ffi::c_void;
    use std::mem::MaybeUninit;
    use std::sync::{Arc, Mutex, OnceLock, PoisonError};
    use swapgraph_model::nvrtc::compute_capability;

    /// cuBLAS's `cublasOperation_t` for a transposed operand.
    const CUBLAS_OP_T: i32 = 1;

    /// Workspace for cuBLASLt's algorithms, NVIDIA's recommendation for Hopper.
    const WORKSPACE_BYTES: usize = 32 << 20;

    /// Whether `SWAPGRAPH_CUBLASLT=off` asks for candle's product and a separate bias pass.
    fn turned_off() -> bool {
        static OFF: OnceLock<bool> = OnceLock::new();
        *OFF.get_or_init(|| std::env::var("SWAPGRAPH_CUBLASLT").is_ok_and(|v| v.eq_ignore_ascii_case("off")))
    }

    /// Whether `device` has tensor cores that multiply e4m3 (Ada, Hopper and later).
    pub fn has_e4m3_tensor_cores(device: &CudaDevice) -> bool {
        static KNOWN: OnceLock<Mutex<HashMap<DeviceId, bool>>> = OnceLock::new();
        let mut known = KNOWN
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *known.entry(device.id()).or_insert_with(|| {
            let capability = compute_capability(device).unwrap_or_default();
            let has = capability >= (8, 9);
            if !has {
                tracing::warn!(
                    "this card (compute capability {}.{}) has no 8-bit tensor cores: weights kept in 8 bits \
                         are widened before each product, as fp8_e4m3fn does",
                    capability.0,
                    capability.1
                );
            }
            has
        })
    }

    /// The data type both factors of a product are in.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    enum Operands {
        F16,
        E4M3,
    }

    impl Operands {
        fn of(dtype: DType) -> Option<Self> {
            match dtype {
                DType::F16 => Some(Self::F16),
                DType::F8E4M3 => Some(Self::E4M3),
                _ => None,
            }
        }

        /// The multiple every width must be of: 16 bytes.
        fn width_multiple(self) -> usize {
            match self {
                Self::F16 => 8,
                Self::E4M3 => 16,
            }
        }

        fn cuda_type(self) -> sys::cudaDataType_t {
            match self {
                Self::F16 => sys::cudaDataType_t::CUDA_R_16F,
                Self::E4M3 => sys::cudaDataType_t::CUDA_R_8F_E4M3,
            }
        }
    }

    /// Whether `t` is contiguous on a CUDA device in `dtype` from a 16-byte aligned start.
    fn packed(t: &Tensor, dtype: DType) -> bool {
        let layout = t.layout();
        matches!(t.device(), Device::Cuda(_))
            && t.dtype() == dtype
            && layout.is_contiguous()
            && (layout.start_offset() * dtype.size_in_bytes()) % 16 == 0
    }

    pub fn applies(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, residual: Option<&Tensor>) -> bool {
        let (Ok(inputs), Ok((outputs, weight_inputs))) = (x.dim(D::Minus1), weight.dims2()) else {
            return false;
        };
        let Some(operands) = Operands::of(x.dtype()) else {
            return false;
        };
        let mut output_dims = x.dims().to_vec();
        if let Some(last) = output_dims.last_mut() {
            *last = outputs;
        }
        let Device::Cuda(device) = x.device() else {
            return false;
        };
        let halves: Vec<&Tensor> = [bias, residual].into_iter().flatten().collect();
        !turned_off()
            && (operands == Operands::F16 || has_e4m3_tensor_cores(device))
            && x.rank() >= 2
            && weight_inputs == inputs
            && inputs % operands.width_multiple() == 0
            && outputs % operands.width_multiple() == 0
            && bias.is_none_or(|b| b.dims() == [outputs])
            && residual.is_none_or(|r| r.dims() == output_dims.as_slice())
            && packed(x, x.dtype())
            && packed(weight, x.dtype())
            && weight.device().same_device(x.device())
            && halves
                .iter()
                .all(|t| packed_f16(t) && t.device().same_device(x.device()))
    }

    /// What identifies a product to cuBLASLt: `rows x inputs` times `inputs x outputs` in
    /// `operands`, whether a bias is added and a residual read, and the alignment every pointer
    /// has.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    struct Geometry {
        rows: usize,
        inputs: usize,
        outputs: usize,
        operands: Operands,
        bias: bool,
        residual: bool,
        alignment: u32,
    }

    /// The device addresses of a product's buffers (0 for those it has not).
    #[derive(Clone, Copy)]
    struct Addresses {
        x: CUdeviceptr,
        weight: CUdeviceptr,
        bias: CUdeviceptr,
        residual: CUdeviceptr,
        out: CUdeviceptr,
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
    /// `[outputs, inputs]` is `inputs x outputs`, transposed by the product (the "TN" layout
    /// 8-bit products require). The plan takes the heuristics' first algorithm; the others they
    /// rank, up to [`tuning::CANDIDATES`], come back beside it to be timed.
    fn new_plan(handle: sys::cublasLtHandle_t, geometry: &Geometry) -> Result<(Plan, Vec<sys::cublasLtMatmulAlgo_t>)> {
        let (rows, inputs, outputs) = (geometry.rows as u64, geometry.inputs as u64, geometry.outputs as u64);
        let layout = |dtype, r: u64, c: u64| {
            result::create_matrix_layout(dtype, r, c, r as i64).map_err(|e| failed("describing a matrix", e))
        };
        let factors = geometry.operands.cuda_type();
        let mut plan = Plan {
            product: std::ptr::null_mut(),
            weight: layout(factors, inputs, outputs)?,
            x: std::ptr::null_mut(),
            out: std::ptr::null_mut(),
            // SAFETY: plain data, overwritten by the heuristic below.
            algorithm: unsafe { std::mem::zeroed() },
        };
        plan.x = layout(factors, inputs, rows)?;
        plan.out = layout(sys::cudaDataType_t::CUDA_R_16F, outputs, rows)?;
        plan.product = result::create_matmul_desc(
            sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            sys::cudaDataType_t::CUDA_R_32F,
        )
        .map_err(|e| failed("describing the product", e))?;
        let epilogue = if geometry.bias {
            sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BIAS
        } else {
            sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_DEFAULT
        };
        // SAFETY: the descriptor is live; the attributes take an i32 operation and a u32 epilogue.
        unsafe {
            set_desc(
                plan.product,
                sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSA,
                &CUBLAS_OP_T,
            )?;
            set_desc(
                plan.product,
                sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_EPILOGUE,
                &(epilogue as u32),
            )?;
        }
        let preference = result::create_matmul_pref().map_err(|e| failed("making a preference", e))?;
        let choose = || -> Result<Vec<sys::cublasLtMatmulAlgo_t>> {
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
            let mut ranked =
                [const { MaybeUninit::<sys::cublasLtMatmulHeuristicResult_t>::uninit() }; tuning::CANDIDATES];
            let mut found = 0;
            // SAFETY: every descriptor is live and describes the buffers of this geometry; the
            // heuristics write at most `CANDIDATES` results and say how many.
            unsafe {
                sys::cublasLtMatmulAlgoGetHeuristic(
                    handle,
                    plan.product,
                    plan.weight,
                    plan.x,
                    plan.out,
                    plan.out,
                    preference,
                    tuning::CANDIDATES as i32,
                    ranked.as_mut_ptr().cast(),
                    &raw mut found,
                )
            }
            .result()
            .map_err(|e| failed(&format!("finding an algorithm for {geometry:?}"), e))?;
            let found = usize::try_from(found).unwrap_or(0).min(tuning::CANDIDATES);
            if found == 0 {
                return Err(failed(
                    &format!("finding an algorithm for {geometry:?}"),
                    result::CublasError(sys::cublasStatus_t::CUBLAS_STATUS_NOT_SUPPORTED),
                ));
            }
            // SAFETY: the heuristics wrote the first `found` results.
            Ok(ranked[..found]
                .iter()
                .map(|r| unsafe { r.assume_init_ref() }.algo)
                .collect())
        };
        let chosen = choose();
        // SAFETY: made above and used by nothing else.
        let _ = unsafe { result::destroy_matmul_pref(preference) };
        let candidates = chosen?;
        plan.algorithm = candidates[0];
        Ok((plan, candidates))
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

    /// Runs the product on `device`'s stream: `out = alpha x W^T (+ bias) (+ residual)`, with
    /// its geometry's plan, made the first time the geometry comes (its algorithm the
    /// heuristics' first, or the fastest of their first few where `tuning` times them).
    fn run_cublaslt(device: &CudaDevice, geometry: Geometry, at: Addresses, alpha: f32) -> Result<()> {
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
        let DeviceState {
            handle,
            workspace,
            plans,
        } = state;
        let (workspace, _guard) = workspace.device_ptr_mut(&stream);
        let product = Product {
            handle: *handle,
            geometry,
            at,
            alpha,
            workspace,
            stream: &stream,
        };
        let plan = match plans.entry(geometry) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => {
                let (mut plan, candidates) = new_plan(*handle, &geometry)?;
                let fastest = tuning::fastest(&stream, &candidates, |algorithm| product.run(&plan, algorithm))?;
                if let Some(fastest) = fastest {
                    plan.algorithm = fastest;
                }
                entry.insert(plan)
            }
        };
        product.run(plan, &plan.algorithm)
    }

    /// One product's buffers, on the handle and workspace of its device.
    struct Product<'a> {
        handle: sys::cublasLtHandle_t,
        geometry: Geometry,
        at: Addresses,
        alpha: f32,
        workspace: CUdeviceptr,
        stream: &'a Arc<CudaStream>,
    }

    impl Product<'_> {
        /// Queues the product with `algorithm`, one of `plan`'s geometry's.
        fn run(&self, plan: &Plan, algorithm: &sys::cublasLtMatmulAlgo_t) -> Result<()> {
            let (geometry, at) = (&self.geometry, &self.at);
            let beta = if geometry.residual { 1f32 } else { 0f32 };
            let c = if geometry.residual { at.residual } else { at.out };
            // SAFETY: the descriptors match the buffers' shapes (`applies` and `Geometry`), the
            // buffers live until the work on the stream that uses them is done (candle's stream
            // ordering), and the handle, plan and workspace are used under the states' mutex, on
            // one stream.
            unsafe {
                if geometry.bias {
                    set_desc(
                        plan.product,
                        sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                        &at.bias,
                    )?;
                }
                result::matmul(
                    self.handle,
                    plan.product,
                    (&raw const self.alpha).cast(),
                    (&raw const beta).cast(),
                    at.weight as *const c_void,
                    plan.weight,
                    at.x as *const c_void,
                    plan.x,
                    c as *const c_void,
                    plan.out,
                    at.out as *mut c_void,
                    plan.out,
                    algorithm,
                    self.workspace as *mut c_void,
                    WORKSPACE_BYTES,
                    self.stream.cu_stream() as _,
                )
            }
            .map_err(|e| failed("running a product", e))
        }
    }

    /// A factor of a product, in the dtype it is stored in.
    enum Factor<'a> {
        F16(CudaView<'a, f16>),
        E4M3(CudaView<'a, F8E4M3>),
    }

    impl Factor<'_> {
        fn of<'a>(storage: &'a CudaStorage, layout: &Layout) -> Result<Factor<'a>> {
            Ok(match storage.dtype() {
                DType::F8E4M3 => Factor::E4M3(storage.as_cuda_slice::<F8E4M3>()?.slice(layout.start_offset()..)),
                _ => Factor::F16(view(storage, layout)?),
            })
        }

        fn device_ptr<'b>(&'b self, stream: &'b Arc<CudaStream>) -> (CUdeviceptr, SyncOnDrop<'b>) {
            match self {
                Self::F16(view) => view.device_ptr(stream),
                Self::E4M3(view) => view.device_ptr(stream),
            }
        }
    }

    /// The candle op: `(x, weight)` in f16 or both in e4m3, with `alpha`, the bias and the
    /// residual (if any) read from the op itself; the output in f16.
    pub struct Gemm {
        pub bias: Option<Tensor>,
        pub residual: Option<Tensor>,
        pub alpha: f32,
    }

    impl CustomOp2 for Gemm {
        fn name(&self) -> &'static str {
            "cublaslt-linear"
        }

        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
            candle_core::bail!("the cuBLASLt linear layer runs on CUDA devices only")
        }

        fn cuda_fwd(
            &self,
            x: &CudaStorage,
            x_layout: &Layout,
            weight: &CudaStorage,
            weight_layout: &Layout,
        ) -> Result<(CudaStorage, Shape)> {
            let device = x.device().clone();
            let stream = device.cuda_stream();
            let operands = Operands::of(x.dtype())
                .ok_or_else(|| candle_core::Error::Msg(format!("no cuBLASLt product of {:?}", x.dtype())))?;
            let (outputs, inputs) = weight_layout.shape().dims2()?;
            let mut dims = x_layout.shape().dims().to_vec();
            let rows = x_layout.shape().elem_count() / inputs;
            if let Some(last) = dims.last_mut() {
                *last = outputs;
            }
            let shape = Shape::from(dims);
            let (bias, residual) = (
                self.bias.as_ref().map(Tensor::storage_and_layout),
                self.residual.as_ref().map(Tensor::storage_and_layout),
            );
            let bias_view = bias.as_ref().map(|(s, l)| held_view(s, l)).transpose()?;
            let residual_view = residual.as_ref().map(|(s, l)| held_view(s, l)).transpose()?;
            let (x_factor, weight_factor) = (Factor::of(x, x_layout)?, Factor::of(weight, weight_layout)?);
            // SAFETY: cuBLASLt writes every element.
            let mut out = unsafe { device.alloc::<f16>(shape.elem_count())? };
            {
                let (x_ptr, _x_guard) = x_factor.device_ptr(&stream);
                let (weight_ptr, _weight_guard) = weight_factor.device_ptr(&stream);
                let (bias_ptr, _bias_guard) = bias_view.as_ref().map(|b| b.device_ptr(&stream)).unzip();
                let (residual_ptr, _residual_guard) = residual_view.as_ref().map(|r| r.device_ptr(&stream)).unzip();
                let (out_ptr, _out_guard) = out.device_ptr_mut(&stream);
                let at = Addresses {
                    x: x_ptr,
                    weight: weight_ptr,
                    bias: bias_ptr.unwrap_or(0),
                    residual: residual_ptr.unwrap_or(0),
                    out: out_ptr,
                };
                let geometry = Geometry {
                    rows,
                    inputs,
                    outputs,
                    operands,
                    bias: bias_view.is_some(),
                    residual: residual_view.is_some(),
                    alignment: alignment(&[at.x, at.weight, at.bias, at.residual, at.out]),
                };
                run_cublaslt(&device, geometry, at, self.alpha)?;
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
    use crate::kernels::cuda::{error_of_largest_value, max_relative_error, rounded_pair};
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
    fn eight_bit_products_match_the_cpu_reference() -> Result<()> {
        let gpu = Device::new_cuda(0)?;
        assert!(super::takes_e4m3_products(&gpu), "the card has 8-bit tensor cores");
        let scale = 0.003f32;
        // (x, outputs, bias, residual): the UNet's widths, the text's 77 tokens, one row.
        let cases = [
            (vec![2, 4096, 640], 640, true, true),
            (vec![2, 4096, 640], 640, true, false),
            (vec![2, 4096, 640], 640, false, true),
            (vec![2, 1024, 5120], 1280, true, false),
            (vec![2, 77, 2048], 640, false, false),
            (vec![2, 1024, 1280], 10240, true, false),
            (vec![2, 1280], 1280, true, false),
        ];
        // Every case's error, so that a failure shows which ones and by how much.
        let mut errors = Vec::new();
        for (x_shape, outputs, with_bias, with_residual) in cases {
            let case = format!("{x_shape:?} -> {outputs}, bias {with_bias}, residual {with_residual}");
            let inputs = *x_shape.last().unwrap();
            // A third of the inputs beyond e4m3's range: clamped to ±448 on both sides.
            let (x, x_gpu) = random(&x_shape, 450.0, &gpu)?;
            let weight = (Tensor::randn(0f32, 100.0, (outputs, inputs), &Device::Cpu)?).to_dtype(DType::F8E4M3)?;
            let (b, b_gpu) = random(&[outputs], 1.0, &gpu)?;
            let (r, r_gpu) = random(&[&x_shape[..x_shape.len() - 1], &[outputs]].concat(), 1.0, &gpu)?;
            let rounded = swapgraph_model::to_e4m3(&x)?.to_dtype(DType::F32)?;
            let rounded_on_gpu = swapgraph_model::to_e4m3(&x_gpu)?;
            let rounding = max_relative_error(&rounded_on_gpu, &rounded)?;
            let widened = (weight.to_dtype(DType::F32)? * f64::from(scale))?;
            let mut expected = rounded.broadcast_matmul(&widened.t()?)?;
            if with_bias {
                expected = expected.broadcast_add(&b)?;
            }
            if with_residual {
                expected = (expected + &r)?;
            }
            let out = super::linear_e4m3(
                &rounded_on_gpu,
                &weight.to_device(&gpu)?,
                scale,
                with_bias.then_some(&b_gpu),
                with_residual.then_some(&r_gpu),
            )?
            .expect("8-bit products apply");
            assert_eq!(out.dims(), expected.dims(), "{case}");
            errors.push((
                case,
                rounding,
                error_of_largest_value(&out, &expected)?,
                max_relative_error(&out, &expected)?,
            ));
        }
        // Each output sums hundreds of products of up to 448 x 448: the tensor cores' accumulator
        // rounds each partial sum to its own precision, so the error is held to the outputs' scale
        // (the elementwise figure, relative to each output, is reported beside it).
        assert!(
            errors
                .iter()
                .all(|(_, rounding, error, _)| *rounding == 0.0 && *error < 1e-2),
            "(case, inputs rounded on the GPU against the CPU, output error of the largest output, \
             largest elementwise error): {errors:#?}"
        );
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
