//! Devices: one candle device per GPU for the whole process, and what its memory pool holds.
//!
//! Every node asks for its device by the run's [`DeviceSpec`]; they all get the same candle
//! device, so tensors pass between nodes without copies and all work is ordered on one compute
//! stream. Stores that copy on a second stream (BlockSwap) order their copies with explicit
//! events, so cudarc's per-use event tracking is turned off for the device.

use candle_core::{DType, Device};
use swapgraph_node_api::{DeviceSpec, NodeError};

/// The dtype models keep their weights in on `device`: f32 on the CPU, f16 on a GPU.
pub fn weight_dtype(device: &Device) -> DType {
    if device.is_cpu() {
        DType::F32
    } else {
        DType::F16
    }
}

/// The candle device for the run's device; the same one for every call with the same GPU.
///
/// # Errors
/// A message when the device cannot be opened (no CUDA in this build, no such GPU).
pub fn candle_device(spec: DeviceSpec) -> Result<Device, NodeError> {
    match spec {
        DeviceSpec::Cpu => Ok(Device::Cpu),
        DeviceSpec::Cuda(ordinal) => {
            gpu::shared_device(ordinal).map_err(|e| NodeError::msg(format!("cannot open device {spec}: {e}")))
        }
    }
}

/// How many GPUs this process can use, for `--device cuda:all`.
///
/// # Errors
/// A message when the build has no CUDA or the driver cannot be asked.
pub fn gpu_count() -> Result<usize, NodeError> {
    gpu::count().map_err(|e| NodeError::msg(format!("cannot count the GPUs: {e}")))
}

/// The share of free device memory kept free beyond weights and activations (the memory pool's
/// fragmentation, cuBLAS workspaces, the VAE decode that follows) when settings are recommended.
pub const HEADROOM_FRACTION: f64 = 0.10;

/// Device memory as the memory pools and the driver see it, in bytes. Steps recorded as CUDA
/// graphs allocate from a pool of their own, counted in here beside the one tensors outside
/// graphs allocate from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceMemory {
    /// Bytes held by live tensors and recorded graphs.
    pub allocated: u64,
    /// Bytes the pools have reserved from the device (allocated plus cached free blocks).
    pub reserved: u64,
    /// The most bytes live tensors held at once since the last [`reset_peak_memory`], plus the
    /// most recorded graphs held.
    pub peak_allocated: u64,
    /// Free bytes on the whole device (other processes included).
    pub free: u64,
    /// The device's total memory.
    pub total: u64,
}

/// Whether a device error's message is the device running out of memory.
pub fn is_out_of_memory(error: &str) -> bool {
    error.contains("CUDA_ERROR_OUT_OF_MEMORY") || error.contains("out of memory")
}

/// What `device`'s memory pool holds; `None` on the CPU.
pub fn device_memory(device: &Device) -> Option<DeviceMemory> {
    gpu::memory(device)
}

/// What a GPU is, for setup checks and reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The product name, e.g. "NVIDIA H100 80GB HBM3".
    pub name: String,
    /// The CUDA version the driver supports, e.g. "13.0".
    pub driver_cuda: String,
    /// The kernel driver's version line, where the platform tells (Linux).
    pub driver: Option<String>,
}

/// What `device` is; `None` on the CPU.
pub fn device_info(device: &Device) -> Option<DeviceInfo> {
    gpu::info(device)
}

/// Gives the memory pool's cached free blocks back to the driver, for an allocation that ran
/// out of memory with room in the pool that its free blocks, split by earlier allocations,
/// could not offer in one piece (what PyTorch's allocator does before it gives up), and the
/// memory of CUDA graphs no longer alive, for the work after them.
pub fn release_cached_memory(device: &Device) {
    gpu::release_cached(device);
}

/// Starts a new peak for [`DeviceMemory::peak_allocated`].
pub fn reset_peak_memory(device: &Device) {
    gpu::reset_peak(device);
}

#[cfg(feature = "cuda")]
mod gpu {
    use super::DeviceMemory;
    use candle_core::cuda_backend::cudarc::driver::{result, sys, CudaContext};
    use candle_core::Device;
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock, PoisonError};

    static DEVICES: OnceLock<Mutex<HashMap<usize, Device>>> = OnceLock::new();

    pub fn count() -> Result<usize, String> {
        let count = CudaContext::device_count().map_err(|e| e.to_string())?;
        Ok(usize::try_from(count).unwrap_or(0))
    }

    pub fn shared_device(ordinal: usize) -> candle_core::Result<Device> {
        let mut devices = DEVICES
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(device) = devices.get(&ordinal) {
            return Ok(device.clone());
        }
        let device = Device::new_cuda_with_stream(ordinal)?;
        let cuda = device.as_cuda_device()?;
        // SAFETY: every tensor of this device is used on its one compute stream; the only other
        // stream (BlockSwap's copy stream) writes buffers it owns and orders them with events.
        unsafe { cuda.disable_event_tracking() };
        keep_freed_memory(cuda.cuda_stream().context());
        devices.insert(ordinal, device.clone());
        Ok(device)
    }

    /// Freed blocks stay in the pool instead of going back to the driver at every
    /// synchronisation, as PyTorch's caching allocator does; allocation in the hot loop is then
    /// a pool lookup.
    fn keep_freed_memory(context: &std::sync::Arc<CudaContext>) {
        if let Some(pool) = default_pool(context) {
            let mut threshold = u64::MAX;
            // SAFETY: the attribute takes a u64, and `pool` is the device's default pool.
            let _ = unsafe {
                sys::cuMemPoolSetAttribute(
                    pool,
                    sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                    (&raw mut threshold).cast(),
                )
            };
        }
    }

    fn default_pool(context: &std::sync::Arc<CudaContext>) -> Option<sys::CUmemoryPool> {
        context.bind_to_thread().ok()?;
        let mut pool = std::ptr::null_mut();
        // SAFETY: `pool` is a valid out pointer and the device handle comes from the context.
        unsafe { sys::cuDeviceGetDefaultMemPool(&raw mut pool, context.cu_device()) }
            .result()
            .ok()?;
        Some(pool)
    }

    fn pool_attribute(pool: sys::CUmemoryPool, attribute: sys::CUmemPool_attribute) -> u64 {
        let mut value = 0u64;
        // SAFETY: the memory attributes read here are u64 values.
        let _ = unsafe { sys::cuMemPoolGetAttribute(pool, attribute, (&raw mut value).cast()) };
        value
    }

    /// A memory attribute of the pool CUDA graphs allocate from on `context`'s device (0 where
    /// the driver cannot tell).
    fn graph_attribute(context: &std::sync::Arc<CudaContext>, attribute: sys::CUgraphMem_attribute) -> u64 {
        let mut value = 0u64;
        // SAFETY: the graph memory attributes read here are u64 values.
        let _ = unsafe { sys::cuDeviceGetGraphMemAttribute(context.cu_device(), attribute, (&raw mut value).cast()) };
        value
    }

    pub fn memory(device: &Device) -> Option<DeviceMemory> {
        let Device::Cuda(cuda) = device else { return None };
        let stream = cuda.cuda_stream();
        let context = stream.context();
        let pool = default_pool(context)?;
        stream.synchronize().ok()?;
        let (free, total) = result::mem_get_info().ok()?;
        use sys::CUgraphMem_attribute as G;
        use sys::CUmemPool_attribute as A;
        let graphs = |attribute| graph_attribute(context, attribute);
        Some(DeviceMemory {
            allocated: pool_attribute(pool, A::CU_MEMPOOL_ATTR_USED_MEM_CURRENT)
                + graphs(G::CU_GRAPH_MEM_ATTR_USED_MEM_CURRENT),
            reserved: pool_attribute(pool, A::CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT)
                + graphs(G::CU_GRAPH_MEM_ATTR_RESERVED_MEM_CURRENT),
            peak_allocated: pool_attribute(pool, A::CU_MEMPOOL_ATTR_USED_MEM_HIGH)
                + graphs(G::CU_GRAPH_MEM_ATTR_USED_MEM_HIGH),
            free: free as u64,
            total: total as u64,
        })
    }

    pub fn info(device: &Device) -> Option<super::DeviceInfo> {
        let Device::Cuda(cuda) = device else { return None };
        let stream = cuda.cuda_stream();
        let context = stream.context();
        let mut version = 0i32;
        context.bind_to_thread().ok()?;
        // SAFETY: `version` is a valid out pointer.
        unsafe { sys::cuDriverGetVersion(&raw mut version) }.result().ok()?;
        let driver = std::fs::read_to_string("/proc/driver/nvidia/version")
            .ok()
            .and_then(|text| text.lines().next().map(|line| line.trim().to_string()));
        Some(super::DeviceInfo {
            name: context.name().ok()?,
            driver_cuda: format!("{}.{}", version / 1000, (version % 1000) / 10),
            driver,
        })
    }

    pub fn release_cached(device: &Device) {
        let Device::Cuda(cuda) = device else { return };
        let stream = cuda.cuda_stream();
        if let Some(pool) = default_pool(stream.context()) {
            let _ = stream.synchronize();
            // SAFETY: `pool` is the device's default pool; trimming keeps every block in use.
            let _ = unsafe { sys::cuMemPoolTrimTo(pool, 0) };
            // SAFETY: trimming frees only the memory of graphs that are gone or never launched.
            let _ = unsafe { sys::cuDeviceGraphMemTrim(stream.context().cu_device()) };
        }
    }

    pub fn reset_peak(device: &Device) {
        let Device::Cuda(cuda) = device else { return };
        let stream = cuda.cuda_stream();
        if let Some(pool) = default_pool(stream.context()) {
            let _ = stream.synchronize();
            let mut zero = 0u64;
            // SAFETY: resetting the high-water mark takes a u64 zero.
            let _ = unsafe {
                sys::cuMemPoolSetAttribute(
                    pool,
                    sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
                    (&raw mut zero).cast(),
                )
            };
            // SAFETY: as above, for the graphs' pool.
            let _ = unsafe {
                sys::cuDeviceSetGraphMemAttribute(
                    stream.context().cu_device(),
                    sys::CUgraphMem_attribute::CU_GRAPH_MEM_ATTR_USED_MEM_HIGH,
                    (&raw mut zero).cast(),
                )
            };
        }
    }
}

#[cfg(not(feature = "cuda"))]
mod gpu {
    use super::DeviceMemory;
    use candle_core::Device;

    pub fn shared_device(ordinal: usize) -> candle_core::Result<Device> {
        Device::new_cuda(ordinal)
    }

    pub fn memory(_device: &Device) -> Option<DeviceMemory> {
        None
    }

    pub fn info(_device: &Device) -> Option<super::DeviceInfo> {
        None
    }

    pub fn release_cached(_device: &Device) {}

    pub fn reset_peak(_device: &Device) {}

    pub fn count() -> Result<usize, String> {
        Err("this build of swapgraph runs on the CPU only; build with --features cuda".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_the_drivers_out_of_memory() {
        assert!(is_out_of_memory(
            "DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")"
        ));
        assert!(is_out_of_memory("CUDA_ERROR_OUT_OF_MEMORY"));
        assert!(!is_out_of_memory("shape mismatch in matmul"));
    }
}
