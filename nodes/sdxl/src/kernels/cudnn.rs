//! cuDNN, loaded at run time (`libcudnn.so.9`, as PyTorch's wheels ship it) rather than linked:
//! a CUDA build starts without it, and convolutions fall back to candle's im2col where it is
//! missing. Only the handful of entry points the convolutions use are bound.

use libloading::Library;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::OnceLock;

/// Opaque cuDNN handles and descriptors.
pub type Handle = *mut c_void;
/// A tensor descriptor.
pub type TensorDescriptor = *mut c_void;
/// A filter (weight) descriptor.
pub type FilterDescriptor = *mut c_void;
/// A convolution descriptor.
pub type ConvolutionDescriptor = *mut c_void;

/// `cudnnTensorFormat_t::CUDNN_TENSOR_NCHW`.
pub const NCHW: c_int = 0;
/// `cudnnTensorFormat_t::CUDNN_TENSOR_NHWC`: channels last (filters `[k, kh, kw, c]`).
pub const NHWC: c_int = 1;
/// `cudnnDataType_t::CUDNN_DATA_FLOAT`.
pub const FLOAT: c_int = 0;
/// `cudnnDataType_t::CUDNN_DATA_HALF`.
pub const HALF: c_int = 2;
/// `cudnnDataType_t::CUDNN_DATA_BFLOAT16`.
pub const BFLOAT16: c_int = 9;
/// `cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION`: what deep-learning frameworks call
/// convolution.
pub const CROSS_CORRELATION: c_int = 1;
/// `cudnnMathType_t::CUDNN_TENSOR_OP_MATH`: tensor cores allowed.
pub const TENSOR_OP_MATH: c_int = 1;

/// `cudnnConvolutionFwdAlgoPerf_t`: one algorithm the heuristics offer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct AlgorithmPerformance {
    /// `cudnnConvolutionFwdAlgo_t`.
    pub algorithm: c_int,
    /// Zero when the algorithm can run this convolution.
    pub status: c_int,
    /// Estimated or measured milliseconds.
    pub time: f32,
    /// Workspace bytes it needs.
    pub memory: usize,
    /// Whether it is deterministic.
    pub determinism: c_int,
    /// The math type it would use.
    pub math_type: c_int,
    reserved: [c_int; 3],
}

type Status = c_int;

/// The bound entry points. The library stays loaded for the life of the process.
#[allow(clippy::type_complexity)]
pub struct Api {
    _library: Library,
    /// `cudnnGetErrorString`.
    error_string: unsafe extern "C" fn(Status) -> *const c_char,
    /// `cudnnGetVersion`.
    pub version: unsafe extern "C" fn() -> usize,
    /// `cudnnCreate`.
    pub create: unsafe extern "C" fn(*mut Handle) -> Status,
    /// `cudnnSetStream`.
    pub set_stream: unsafe extern "C" fn(Handle, *mut c_void) -> Status,
    /// `cudnnCreateTensorDescriptor`.
    pub create_tensor: unsafe extern "C" fn(*mut TensorDescriptor) -> Status,
    /// `cudnnSetTensor4dDescriptor(desc, format, dtype, n, c, h, w)`.
    pub set_tensor_4d: unsafe extern "C" fn(TensorDescriptor, c_int, c_int, c_int, c_int, c_int, c_int) -> Status,
    /// `cudnnDestroyTensorDescriptor`.
    pub destroy_tensor: unsafe extern "C" fn(TensorDescriptor) -> Status,
    /// `cudnnCreateFilterDescriptor`.
    pub create_filter: unsafe extern "C" fn(*mut FilterDescriptor) -> Status,
    /// `cudnnSetFilter4dDescriptor(desc, dtype, format, k, c, h, w)`.
    pub set_filter_4d: unsafe extern "C" fn(FilterDescriptor, c_int, c_int, c_int, c_int, c_int, c_int) -> Status,
    /// `cudnnDestroyFilterDescriptor`.
    pub destroy_filter: unsafe extern "C" fn(FilterDescriptor) -> Status,
    /// `cudnnCreateConvolutionDescriptor`.
    pub create_convolution: unsafe extern "C" fn(*mut ConvolutionDescriptor) -> Status,
    /// `cudnnSetConvolution2dDescriptor(desc, pad_h, pad_w, stride_h, stride_w, dilation_h,
    /// dilation_w, mode, compute_type)`.
    pub set_convolution_2d:
        unsafe extern "C" fn(ConvolutionDescriptor, c_int, c_int, c_int, c_int, c_int, c_int, c_int, c_int) -> Status,
    /// `cudnnSetConvolutionMathType`.
    pub set_math_type: unsafe extern "C" fn(ConvolutionDescriptor, c_int) -> Status,
    /// `cudnnDestroyConvolutionDescriptor`.
    pub destroy_convolution: unsafe extern "C" fn(ConvolutionDescriptor) -> Status,
    /// `cudnnGetConvolutionForwardAlgorithm_v7`: the heuristics' ranking, no trial runs.
    pub forward_algorithms: unsafe extern "C" fn(
        Handle,
        TensorDescriptor,
        FilterDescriptor,
        ConvolutionDescriptor,
        TensorDescriptor,
        c_int,
        *mut c_int,
        *mut AlgorithmPerformance,
    ) -> Status,
    /// `cudnnGetConvolutionForwardWorkspaceSize(handle, x_desc, w_desc, conv_desc, y_desc,
    /// algorithm, bytes)`.
    pub workspace_size: unsafe extern "C" fn(
        Handle,
        TensorDescriptor,
        FilterDescriptor,
        ConvolutionDescriptor,
        TensorDescriptor,
        c_int,
        *mut usize,
    ) -> Status,
    /// `cudnnConvolutionForward(handle, alpha, x_desc, x, w_desc, w, conv_desc, algorithm,
    /// workspace, workspace_bytes, beta, y_desc, y)`.
    pub forward: unsafe extern "C" fn(
        Handle,
        *const c_void,
        TensorDescriptor,
        *const c_void,
        FilterDescriptor,
        *const c_void,
        ConvolutionDescriptor,
        c_int,
        *mut c_void,
        usize,
        *const c_void,
        TensorDescriptor,
        *mut c_void,
    ) -> Status,
    /// `cudnnBackendCreateDescriptor(type, descriptor)`: the graph API's descriptors.
    pub backend_create: unsafe extern "C" fn(c_int, *mut BackendDescriptor) -> Status,
    /// `cudnnBackendDestroyDescriptor`.
    pub backend_destroy: unsafe extern "C" fn(BackendDescriptor) -> Status,
    /// `cudnnBackendSetAttribute(descriptor, name, type, count, values)`.
    pub backend_set: unsafe extern "C" fn(BackendDescriptor, c_int, c_int, i64, *const c_void) -> Status,
    /// `cudnnBackendGetAttribute(descriptor, name, type, requested, count, values)`.
    pub backend_get: unsafe extern "C" fn(BackendDescriptor, c_int, c_int, i64, *mut i64, *mut c_void) -> Status,
    /// `cudnnBackendFinalize`.
    pub backend_finalize: unsafe extern "C" fn(BackendDescriptor) -> Status,
    /// `cudnnBackendExecute(handle, plan, variant_pack)`.
    pub backend_execute: unsafe extern "C" fn(Handle, BackendDescriptor, BackendDescriptor) -> Status,
    /// `cudnnGetLastErrorString(message, capacity)`: what the last failure on this thread was.
    pub last_error: unsafe extern "C" fn(*mut c_char, usize),
}

/// A graph-API descriptor.
pub type BackendDescriptor = *mut c_void;

/// The library names tried, newest first.
const LIBRARY_NAMES: [&str; 2] = ["libcudnn.so.9", "libcudnn.so"];

/// cuDNN 8.0 introduced the `_v7` heuristics query without the older one; 9 is what the bindings
/// were written against.
const MINIMUM_VERSION: usize = 8000;

/// Set to `off` to keep cuDNN out (convolutions then run as im2col and a matrix product), to
/// compare the two or to rule cuDNN out when tracking a problem down.
pub const SWITCH: &str = "SWAPGRAPH_CUDNN";

/// The process's cuDNN, loaded on first use; `None` (logged once) when no usable library is on
/// the loader's path or [`SWITCH`] is `off`.
pub fn api() -> Option<&'static Api> {
    static API: OnceLock<Option<Api>> = OnceLock::new();
    API.get_or_init(|| match load() {
        Ok(api) => {
            // SAFETY: a plain query without arguments.
            let version = unsafe { (api.version)() };
            tracing::info!("cuDNN {version} loaded: convolutions run through it");
            Some(api)
        }
        Err(reason) => {
            tracing::info!("cuDNN not used ({reason}); convolutions run as im2col and a matrix product");
            None
        }
    })
    .as_ref()
}

fn load() -> Result<Api, String> {
    if std::env::var(SWITCH).is_ok_and(|v| v.eq_ignore_ascii_case("off")) {
        return Err(format!("{SWITCH}=off"));
    }
    // SAFETY: loading cuDNN runs only its library initialisers.
    let library = LIBRARY_NAMES
        .iter()
        .find_map(|&name| unsafe { Library::new(name) }.ok())
        .ok_or_else(|| format!("none of {} found on the library path", LIBRARY_NAMES.join(", ")))?;
    // SAFETY: each symbol is bound to the signature cuDNN's headers declare for it.
    let api = unsafe {
        Api {
            error_string: symbol(&library, "cudnnGetErrorString")?,
            version: symbol(&library, "cudnnGetVersion")?,
            create: symbol(&library, "cudnnCreate")?,
            set_stream: symbol(&library, "cudnnSetStream")?,
            create_tensor: symbol(&library, "cudnnCreateTensorDescriptor")?,
            set_tensor_4d: symbol(&library, "cudnnSetTensor4dDescriptor")?,
            destroy_tensor: symbol(&library, "cudnnDestroyTensorDescriptor")?,
            create_filter: symbol(&library, "cudnnCreateFilterDescriptor")?,
            set_filter_4d: symbol(&library, "cudnnSetFilter4dDescriptor")?,
            destroy_filter: symbol(&library, "cudnnDestroyFilterDescriptor")?,
            create_convolution: symbol(&library, "cudnnCreateConvolutionDescriptor")?,
            set_convolution_2d: symbol(&library, "cudnnSetConvolution2dDescriptor")?,
            set_math_type: symbol(&library, "cudnnSetConvolutionMathType")?,
            destroy_convolution: symbol(&library, "cudnnDestroyConvolutionDescriptor")?,
            forward_algorithms: symbol(&library, "cudnnGetConvolutionForwardAlgorithm_v7")?,
            workspace_size: symbol(&library, "cudnnGetConvolutionForwardWorkspaceSize")?,
            forward: symbol(&library, "cudnnConvolutionForward")?,
            backend_create: symbol(&library, "cudnnBackendCreateDescriptor")?,
            backend_destroy: symbol(&library, "cudnnBackendDestroyDescriptor")?,
            backend_set: symbol(&library, "cudnnBackendSetAttribute")?,
            backend_get: symbol(&library, "cudnnBackendGetAttribute")?,
            backend_finalize: symbol(&library, "cudnnBackendFinalize")?,
            backend_execute: symbol(&library, "cudnnBackendExecute")?,
            last_error: symbol(&library, "cudnnGetLastErrorString")?,
            _library: library,
        }
    };
    // SAFETY: a plain query without arguments.
    let version = unsafe { (api.version)() };
    if version < MINIMUM_VERSION {
        return Err(format!("cuDNN {version} is older than {MINIMUM_VERSION}"));
    }
    Ok(api)
}

/// # Safety
/// `T` must be the function pointer type of `name`'s C declaration.
unsafe fn symbol<T: Copy>(library: &Library, name: &str) -> Result<T, String> {
    unsafe { library.get::<T>(name.as_bytes()) }
        .map(|s| *s)
        .map_err(|e| format!("{name} missing: {e}"))
}

impl Api {
    /// cuDNN's own account of the last failure on this thread.
    pub fn last_error_message(&self) -> String {
        let mut message = [0 as c_char; 512];
        // SAFETY: cuDNN writes at most `message.len()` bytes, NUL-terminated.
        unsafe { (self.last_error)(message.as_mut_ptr(), message.len()) };
        // SAFETY: NUL-terminated above (the buffer starts zeroed).
        unsafe { CStr::from_ptr(message.as_ptr()) }
            .to_string_lossy()
            .trim()
            .to_string()
    }

    /// `status` as a result, with cuDNN's name for a failure and what was being done.
    ///
    /// # Errors
    /// Any status other than success.
    pub fn check(&self, status: c_int, doing: &str) -> candle_core::Result<()> {
        if status == 0 {
            return Ok(());
        }
        // SAFETY: cuDNN returns a static, NUL-terminated string for every status.
        let name = unsafe { CStr::from_ptr((self.error_string)(status)) }.to_string_lossy();
        candle_core::bail!("cuDNN failed {doing}: {name} ({status}); {SWITCH}=off runs convolutions without cuDNN")
    }
}
