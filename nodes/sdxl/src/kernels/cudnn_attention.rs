//! Attention through cuDNN's fused scaled-dot-product operation (the graph API's
//! `OPERATION_SDPA_FWD`, cuDNN 9.13 and later): the flash kernels cuDNN ships for each
//! architecture, on Hopper with warpgroup (`wgmma`) products, which PyTorch's SDPA runs too.
//! Reads and writes the token layout `[batch, tokens, heads * 64]` through strides. A plan is
//! made once per shape; a shape cuDNN offers no engine for is remembered and left to
//! swapgraph's own kernel.

use super::cudnn::{self, Handle};
use super::cudnn_graph::{attribute, check, kind, value, Descriptor, HEUR_MODES};
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{DevicePtr, DevicePtrMut};
use candle_core::cuda_backend::{CudaDevice, DeviceId, WrapErr};
use candle_core::{CpuStorage, CudaStorage, CustomOp3, Layout, Result, Shape, Tensor};
use half::f16;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Mutex, OnceLock, PoisonError};

/// The first cuDNN with the fused operation.
const MINIMUM_VERSION: usize = 91300;
/// Set to `off` to run attention through swapgraph's own kernel instead.
pub const SWITCH: &str = "SWAPGRAPH_CUDNN_ATTENTION";
/// Head width the callers check for.
const HEAD_DIM: usize = 64;

const UID_Q: i64 = 1;
const UID_K: i64 = 2;
const UID_V: i64 = 3;
const UID_O: i64 = 4;
const UID_SCALE: i64 = 5;

/// `softmax(q k^T / 8) v` per head of token-layout f16 `q`, `k`, `v` (packed, 64-wide heads,
/// as `attention` checks) through cuDNN; `None` where cuDNN is missing, older than 9.13,
/// switched off, or has no engine for the shape.
///
/// # Errors
/// A cuDNN failure while running a plan it made.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize) -> Result<Option<Tensor>> {
    let Some(api) = cudnn::api() else {
        return Ok(None);
    };
    // SAFETY: a plain query without arguments.
    let version = unsafe { (api.version)() };
    if version < MINIMUM_VERSION || std::env::var(SWITCH).is_ok_and(|v| v.eq_ignore_ascii_case("off")) {
        return Ok(None);
    }
    let candle_core::Device::Cuda(device) = q.device() else {
        return Ok(None);
    };
    let (batch, queries, _) = q.dims3()?;
    let shape = Geometry {
        batch,
        heads,
        queries,
        keys: k.dim(1)?,
    };
    if !has_plan(device, shape)? {
        return Ok(None);
    }
    q.apply_op3_no_bwd(k, v, &FusedAttention { shape }).map(Some)
}

/// What identifies an attention to cuDNN.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Geometry {
    batch: usize,
    heads: usize,
    queries: usize,
    keys: usize,
}

/// An execution plan and the descriptors it was made from.
struct Plan {
    plan: Descriptor,
    workspace: usize,
    _made_from: Vec<Descriptor>,
}

/// A device's handle and its plans (`None`: no engine for that shape).
struct DeviceState {
    handle: Handle,
    plans: HashMap<Geometry, Option<Plan>>,
}

// SAFETY: the handle and descriptors are used under the mutex around the states only.
unsafe impl Send for DeviceState {}

fn states() -> &'static Mutex<HashMap<DeviceId, DeviceState>> {
    static STATES: OnceLock<Mutex<HashMap<DeviceId, DeviceState>>> = OnceLock::new();
    STATES.get_or_init(Default::default)
}

/// Runs `work` with `device`'s state, made on first use, and the plan for `shape`.
fn with_plan<R>(
    device: &CudaDevice,
    shape: Geometry,
    work: impl FnOnce(Handle, Option<&Plan>) -> Result<R>,
) -> Result<R> {
    let api = cudnn::api().ok_or_else(|| candle_core::Error::Msg("cuDNN is not loaded".into()))?;
    device.cuda_stream().context().bind_to_thread().w()?;
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
    let plan = state
        .plans
        .entry(shape)
        .or_insert_with(|| match make_plan(handle, shape) {
            Ok(plan) => Some(plan),
            Err(reason) => {
                tracing::info!("cuDNN's fused attention takes no {shape:?} ({reason}); swapgraph's kernel runs it");
                None
            }
        });
    work(handle, plan.as_ref())
}

fn has_plan(device: &CudaDevice, shape: Geometry) -> Result<bool> {
    with_plan(device, shape, |_, plan| Ok(plan.is_some()))
}

/// A tensor descriptor: `dims` and `strides` in elements, `[batch, heads, tokens, 64]` for the
/// operands.
fn tensor(uid: i64, data: i32, dims: [i64; 4], strides: [i64; 4], by_value: bool) -> Result<Descriptor> {
    let api = cudnn::api().ok_or_else(|| candle_core::Error::Msg("cuDNN is not loaded".into()))?;
    let t = Descriptor::new(api, kind::TENSOR)?;
    t.set(attribute::TENSOR_DATA_TYPE, value::DATA_TYPE, &[data])?;
    t.set(attribute::TENSOR_DIMENSIONS, value::INT64, &dims)?;
    t.set(attribute::TENSOR_STRIDES, value::INT64, &strides)?;
    t.set(attribute::TENSOR_UNIQUE_ID, value::INT64, &[uid])?;
    t.set(attribute::TENSOR_BYTE_ALIGNMENT, value::INT64, &[16i64])?;
    if by_value {
        t.set(attribute::TENSOR_IS_BY_VALUE, value::BOOLEAN, &[true])?;
    }
    t.finalize("describing a tensor")
}

/// The operation graph of one attention, and the first plan that cuDNN can make for it from
/// the engines its heuristics rank (the fast ranking first, then the fallback engines).
fn make_plan(handle: Handle, shape: Geometry) -> Result<Plan> {
    let api = cudnn::api().ok_or_else(|| candle_core::Error::Msg("cuDNN is not loaded".into()))?;
    let (b, h, sq, sk, d) = (
        shape.batch as i64,
        shape.heads as i64,
        shape.queries as i64,
        shape.keys as i64,
        HEAD_DIM as i64,
    );
    // Token layout: a token's heads side by side, each 64 wide.
    let token_strides = |tokens: i64| [tokens * h * d, d, h * d, 1];
    let q = tensor(UID_Q, cudnn::HALF, [b, h, sq, d], token_strides(sq), false)?;
    let k = tensor(UID_K, cudnn::HALF, [b, h, sk, d], token_strides(sk), false)?;
    let v = tensor(UID_V, cudnn::HALF, [b, h, sk, d], token_strides(sk), false)?;
    let o = tensor(UID_O, cudnn::HALF, [b, h, sq, d], token_strides(sq), false)?;
    let scale = tensor(UID_SCALE, cudnn::FLOAT, [1, 1, 1, 1], [1, 1, 1, 1], true)?;
    let operation = Descriptor::new(api, kind::OPERATION_SDPA_FWD)?;
    operation.set_descriptors(attribute::SDPA_FWD_Q, &[&q])?;
    operation.set_descriptors(attribute::SDPA_FWD_K, &[&k])?;
    operation.set_descriptors(attribute::SDPA_FWD_V, &[&v])?;
    operation.set_descriptors(attribute::SDPA_FWD_O, &[&o])?;
    operation.set_descriptors(attribute::SDPA_FWD_SCALE, &[&scale])?;
    let operation = operation.finalize("describing the attention")?;
    let graph = Descriptor::new(api, kind::OPERATION_GRAPH)?;
    graph.set_handle(attribute::OPERATIONGRAPH_HANDLE, handle)?;
    graph.set_descriptors(attribute::OPERATIONGRAPH_OPS, &[&operation])?;
    let graph = graph.finalize("making the operation graph")?;
    let mut refusals = Vec::new();
    for mode in HEUR_MODES {
        let heuristics = Descriptor::new(api, kind::ENGINEHEUR)?;
        heuristics.set_descriptors(attribute::ENGINEHEUR_OPERATION_GRAPH, &[&graph])?;
        heuristics.set(attribute::ENGINEHEUR_MODE, value::HEUR_MODE, &[mode])?;
        let heuristics = match heuristics.finalize("ranking engines") {
            Ok(heuristics) => heuristics,
            Err(refused) => {
                refusals.push(format!("mode {mode}: {refused}"));
                continue;
            }
        };
        for config in heuristics.engine_configs()? {
            let plan = Descriptor::new(api, kind::EXECUTION_PLAN)?;
            plan.set_handle(attribute::EXECUTION_PLAN_HANDLE, handle)?;
            plan.set_descriptors(attribute::EXECUTION_PLAN_ENGINE_CONFIG, &[&config])?;
            match plan.finalize("making an execution plan") {
                Ok(plan) => {
                    let workspace = usize::try_from(plan.get_i64(attribute::EXECUTION_PLAN_WORKSPACE_SIZE)?)
                        .map_err(|_| candle_core::Error::Msg("a negative workspace size".into()))?;
                    return Ok(Plan {
                        plan,
                        workspace,
                        _made_from: vec![config, heuristics, graph, operation, q, k, v, o, scale],
                    });
                }
                Err(refused) => refusals.push(format!("mode {mode}: {refused}")),
            }
        }
    }
    candle_core::bail!("no engine made a plan: {}", refusals.join("; "))
}

/// The candle op: `(q, k, v)` in token layout.
struct FusedAttention {
    shape: Geometry,
}

impl CustomOp3 for FusedAttention {
    fn name(&self) -> &'static str {
        "cudnn-sdpa-f16"
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
        candle_core::bail!("cuDNN's fused attention runs on CUDA devices only")
    }

    fn cuda_fwd(
        &self,
        q: &CudaStorage,
        q_layout: &Layout,
        k: &CudaStorage,
        k_layout: &Layout,
        v: &CudaStorage,
        v_layout: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let api = cudnn::api().ok_or_else(|| candle_core::Error::Msg("cuDNN is not loaded".into()))?;
        let device = q.device().clone();
        let stream = device.cuda_stream();
        let out_shape = q_layout.shape().clone();
        let (q, k, v) = (
            super::cuda::view(q, q_layout)?,
            super::cuda::view(k, k_layout)?,
            super::cuda::view(v, v_layout)?,
        );
        // SAFETY: cuDNN writes every element.
        let mut out = unsafe { device.alloc::<f16>(out_shape.elem_count())? };
        with_plan(&device, self.shape, |handle, plan| {
            let plan = plan.ok_or_else(|| candle_core::Error::Msg("no cuDNN plan for the attention".into()))?;
            // SAFETY: workspace contents are cuDNN's own.
            let mut workspace = unsafe { device.alloc::<u8>(plan.workspace.max(1))? };
            let (q_ptr, _q_guard) = q.device_ptr(&stream);
            let (k_ptr, _k_guard) = k.device_ptr(&stream);
            let (v_ptr, _v_guard) = v.device_ptr(&stream);
            let (o_ptr, _o_guard) = out.device_ptr_mut(&stream);
            let (workspace_ptr, _workspace_guard) = workspace.device_ptr_mut(&stream);
            let scale = 1f32 / (HEAD_DIM as f32).sqrt();
            let pointers: [*mut c_void; 5] = [
                q_ptr as *mut c_void,
                k_ptr as *mut c_void,
                v_ptr as *mut c_void,
                o_ptr as *mut c_void,
                (&raw const scale).cast_mut().cast::<c_void>(),
            ];
            let pack = Descriptor::new(api, kind::VARIANT_PACK)?;
            pack.set(
                attribute::VARIANT_PACK_UNIQUE_IDS,
                value::INT64,
                &[UID_Q, UID_K, UID_V, UID_O, UID_SCALE],
            )?;
            pack.set(attribute::VARIANT_PACK_DATA_POINTERS, value::VOID_PTR, &pointers)?;
            pack.set(
                attribute::VARIANT_PACK_WORKSPACE,
                value::VOID_PTR,
                &[workspace_ptr as *mut c_void],
            )?;
            let pack = pack.finalize("naming the attention's buffers")?;
            // SAFETY: the descriptors match the buffers (the plan was made for this shape), the
            // buffers live until the work on the stream is done (candle's stream ordering), the
            // scale is read during the call, and the handle is used under the states' mutex.
            unsafe {
                api.check(
                    (api.set_stream)(handle, stream.cu_stream() as *mut c_void),
                    "binding the stream",
                )?;
                check(
                    api,
                    (api.backend_execute)(handle, plan.plan.raw(), pack.raw()),
                    "running the fused attention",
                )
            }
        })?;
        Ok((CudaStorage::wrap_cuda_slice(out, device), out_shape))
    }
}
