//! The few pieces of cuDNN's graph (backend) API the fused attention uses: owned descriptors,
//! their attributes, and the constants of `cudnn_graph.h` (cuDNN 9.13) they are set with.

use super::cudnn::{Api, BackendDescriptor, Handle};
use candle_core::Result;
use std::ffi::c_void;

/// `cudnnBackendDescriptorType_t`.
pub mod kind {
    pub const ENGINECFG: i32 = 3;
    pub const ENGINEHEUR: i32 = 4;
    pub const EXECUTION_PLAN: i32 = 5;
    pub const OPERATION_GRAPH: i32 = 15;
    pub const VARIANT_PACK: i32 = 16;
    pub const TENSOR: i32 = 17;
    /// The fused scaled-dot-product attention forward (cuDNN 9.13 and later).
    pub const OPERATION_SDPA_FWD: i32 = 41;
}

/// `cudnnBackendAttributeName_t`.
pub mod attribute {
    pub const ENGINEHEUR_MODE: i32 = 200;
    pub const ENGINEHEUR_OPERATION_GRAPH: i32 = 201;
    pub const ENGINEHEUR_RESULTS: i32 = 202;
    pub const EXECUTION_PLAN_HANDLE: i32 = 400;
    pub const EXECUTION_PLAN_ENGINE_CONFIG: i32 = 401;
    pub const EXECUTION_PLAN_WORKSPACE_SIZE: i32 = 402;
    pub const OPERATIONGRAPH_HANDLE: i32 = 800;
    pub const OPERATIONGRAPH_OPS: i32 = 801;
    pub const TENSOR_BYTE_ALIGNMENT: i32 = 900;
    pub const TENSOR_DATA_TYPE: i32 = 901;
    pub const TENSOR_DIMENSIONS: i32 = 902;
    pub const TENSOR_STRIDES: i32 = 903;
    pub const TENSOR_UNIQUE_ID: i32 = 906;
    pub const TENSOR_IS_BY_VALUE: i32 = 908;
    pub const VARIANT_PACK_UNIQUE_IDS: i32 = 1000;
    pub const VARIANT_PACK_DATA_POINTERS: i32 = 1001;
    pub const VARIANT_PACK_WORKSPACE: i32 = 1003;
    pub const SDPA_FWD_Q: i32 = 2800;
    pub const SDPA_FWD_K: i32 = 2801;
    pub const SDPA_FWD_V: i32 = 2802;
    pub const SDPA_FWD_O: i32 = 2803;
    pub const SDPA_FWD_SCALE: i32 = 2805;
}

/// `cudnnBackendAttributeType_t`.
pub mod value {
    pub const HANDLE: i32 = 0;
    pub const DATA_TYPE: i32 = 1;
    pub const BOOLEAN: i32 = 2;
    pub const INT64: i32 = 3;
    pub const VOID_PTR: i32 = 6;
    pub const HEUR_MODE: i32 = 8;
    pub const BACKEND_DESCRIPTOR: i32 = 15;
}

/// `cudnnBackendHeurMode_t`: the heuristics' fast ranking, then the engines that take any
/// graph they can run at all, in the order cuDNN's frontend tries them.
pub const HEUR_MODES: [i32; 2] = [HEUR_MODE_A, HEUR_MODE_FALLBACK];
const HEUR_MODE_A: i32 = 3;
const HEUR_MODE_FALLBACK: i32 = 2;

/// A graph-API descriptor, destroyed when dropped.
pub struct Descriptor {
    api: &'static Api,
    raw: BackendDescriptor,
}

// SAFETY: descriptors are used from one thread at a time, under the mutex of their owner.
unsafe impl Send for Descriptor {}

impl Descriptor {
    /// A new descriptor of `kind`.
    ///
    /// # Errors
    /// cuDNN's refusal.
    pub fn new(api: &'static Api, kind: i32) -> Result<Self> {
        let mut raw = std::ptr::null_mut();
        // SAFETY: cuDNN writes a new descriptor.
        check(
            api,
            unsafe { (api.backend_create)(kind, &mut raw) },
            "creating a descriptor",
        )?;
        Ok(Self { api, raw })
    }

    /// The raw descriptor, for other descriptors' attributes and for execution.
    pub fn raw(&self) -> BackendDescriptor {
        self.raw
    }

    /// Sets attribute `name` to `values`, of cuDNN type `kind`.
    ///
    /// # Errors
    /// cuDNN's refusal, naming the attribute.
    pub fn set<T>(&self, name: i32, kind: i32, values: &[T]) -> Result<()> {
        // SAFETY: `values` holds `values.len()` elements of the C type `kind` names (the
        // callers pass i64, i32 enums, bools as u8, pointers and descriptors accordingly).
        let status = unsafe {
            (self.api.backend_set)(
                self.raw,
                name,
                kind,
                values.len() as i64,
                values.as_ptr().cast::<c_void>(),
            )
        };
        check(self.api, status, &format!("setting attribute {name}"))
    }

    /// Sets attribute `name` to other descriptors.
    ///
    /// # Errors
    /// cuDNN's refusal, naming the attribute.
    pub fn set_descriptors(&self, name: i32, descriptors: &[&Descriptor]) -> Result<()> {
        let raw: Vec<BackendDescriptor> = descriptors.iter().map(|d| d.raw).collect();
        self.set(name, value::BACKEND_DESCRIPTOR, &raw)
    }

    /// Sets attribute `name` to a cuDNN handle.
    ///
    /// # Errors
    /// cuDNN's refusal, naming the attribute.
    pub fn set_handle(&self, name: i32, handle: Handle) -> Result<()> {
        self.set(name, value::HANDLE, &[handle])
    }

    /// An i64 attribute.
    ///
    /// # Errors
    /// cuDNN's refusal, naming the attribute.
    pub fn get_i64(&self, name: i32) -> Result<i64> {
        let (mut value, mut count) = (0i64, 0i64);
        // SAFETY: room for one i64.
        let status = unsafe {
            (self.api.backend_get)(
                self.raw,
                name,
                value::INT64,
                1,
                &mut count,
                (&raw mut value).cast::<c_void>(),
            )
        };
        check(self.api, status, &format!("reading attribute {name}"))?;
        Ok(value)
    }

    /// The engine configurations the heuristics descriptor ranks, best first.
    ///
    /// # Errors
    /// cuDNN's refusal.
    pub fn engine_configs(&self) -> Result<Vec<Descriptor>> {
        let mut count = 0i64;
        // SAFETY: asking for no elements only reports how many there are.
        let status = unsafe {
            (self.api.backend_get)(
                self.raw,
                attribute::ENGINEHEUR_RESULTS,
                value::BACKEND_DESCRIPTOR,
                0,
                &mut count,
                std::ptr::null_mut(),
            )
        };
        check(self.api, status, "counting the heuristics' engines")?;
        let configs = (0..count.max(0))
            .map(|_| Descriptor::new(self.api, kind::ENGINECFG))
            .collect::<Result<Vec<_>>>()?;
        let mut raw: Vec<BackendDescriptor> = configs.iter().map(|c| c.raw).collect();
        let mut returned = 0i64;
        // SAFETY: `raw` holds `count` created engine-config descriptors for cuDNN to fill.
        let status = unsafe {
            (self.api.backend_get)(
                self.raw,
                attribute::ENGINEHEUR_RESULTS,
                value::BACKEND_DESCRIPTOR,
                raw.len() as i64,
                &mut returned,
                raw.as_mut_ptr().cast::<c_void>(),
            )
        };
        check(self.api, status, "reading the heuristics' engines")?;
        Ok(configs.into_iter().take(returned.max(0) as usize).collect())
    }

    /// Finalizes the descriptor: its attributes are then fixed.
    ///
    /// # Errors
    /// cuDNN's refusal, with its message.
    pub fn finalize(self, what: &str) -> Result<Self> {
        // SAFETY: a created descriptor.
        check(self.api, unsafe { (self.api.backend_finalize)(self.raw) }, what)?;
        Ok(self)
    }
}

impl Drop for Descriptor {
    fn drop(&mut self) {
        // SAFETY: created by this value and used by nothing else after it.
        unsafe { (self.api.backend_destroy)(self.raw) };
    }
}

/// `status` as a result, with cuDNN's own message for a failure.
///
/// # Errors
/// Any status other than success.
pub fn check(api: &Api, status: i32, doing: &str) -> Result<()> {
    if status == 0 {
        return Ok(());
    }
    let message = api.last_error_message();
    api.check(status, doing)
        .map_err(|e| candle_core::Error::Msg(format!("{e}{}{message}", if message.is_empty() { "" } else { ": " })))
}
