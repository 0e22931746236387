//! Kernel sources compiled once per device architecture: in memory for the rest of the process,
//! and on disk for the next one, so that a run pays NVRTC's compilation only the first time a
//! card, driver and build meet; and the launch shape their grid-stride loops share.

use crate::disk_cache::{CacheFile, DiskCache};
use candle_core::cuda_backend::cudarc::driver::LaunchConfig;
use candle_core::cuda_backend::cudarc::{driver, nvrtc};
use candle_core::cuda_backend::CudaDevice;
use candle_core::Result;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

/// A kernel source compiled for one device architecture: load its functions with
/// `CudaDevice::get_or_load_custom_func(name, &compiled.module, &compiled.ptx)`.
pub struct Compiled {
    /// The module's name, unique per source and architecture.
    pub module: String,
    /// The PTX.
    pub ptx: Arc<str>,
}

/// `source` (named `module`, unique per source file) compiled for `device`: from this process's
/// memory after the first time, else from the kernel cache on disk, else compiled (and kept
/// there).
///
/// # Errors
/// A driver error, or a compile failure with NVRTC's log.
pub fn compiled(device: &CudaDevice, module: &str, source: &str) -> Result<Compiled> {
    let (major, minor) = compute_capability(device)?;
    let module = format!("{module}-sm{major}{minor}");
    let ptx = ptx_for(&module, source, major, minor)?;
    Ok(Compiled { module, ptx })
}

/// A launch of 256-thread blocks for a grid-stride loop over `items` items, at most 65 536
/// blocks (the loop covers the rest).
pub fn grid_stride(items: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (items.div_ceil(256).clamp(1, 1 << 16) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The device's compute capability, `(major, minor)`.
///
/// # Errors
/// A driver error.
pub fn compute_capability(device: &CudaDevice) -> Result<(i32, i32)> {
    device
        .cuda_stream()
        .context()
        .compute_capability()
        .map_err(candle_core::Error::wrap)
}

fn ptx_for(module: &str, source: &str, major: i32, minor: i32) -> Result<Arc<str>> {
    static COMPILED: OnceLock<Mutex<HashMap<String, Arc<str>>>> = OnceLock::new();
    let compiled = COMPILED.get_or_init(Default::default);
    let mut compiled = compiled.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(ptx) = compiled.get(module) {
        return Ok(Arc::clone(ptx));
    }
    let option = format!("--gpu-architecture=compute_{major}{minor}");
    let key = [source, option.as_str(), &nvrtc_version(), &driver_version()];
    let cached = DiskCache::in_user_cache("kernels").map(|cache| cache.file(module, &key));
    let ptx: Arc<str> = match cached.as_ref().and_then(CacheFile::read) {
        Some(ptx) => ptx.into(),
        None => {
            let started = Instant::now();
            let options = nvrtc::CompileOptions {
                options: vec![option],
                ..Default::default()
            };
            let ptx = nvrtc::compile_ptx_with_opts(source, options)
                .map_err(|e| candle_core::Error::Msg(format!("compiling the {module} kernels with NVRTC: {e}")))?
                .to_src();
            tracing::info!(
                "compiled the {module} kernels with NVRTC in {:.0} ms",
                started.elapsed().as_secs_f64() * 1e3
            );
            if let Some(file) = &cached {
                file.write(&ptx);
            }
            ptx.into()
        }
    };
    compiled.insert(module.to_string(), Arc::clone(&ptx));
    Ok(ptx)
}

fn nvrtc_version() -> String {
    let (mut major, mut minor) = (0, 0);
    // SAFETY: nvrtcVersion only writes the two integers it is given.
    let status = unsafe { nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    format!("nvrtc {major}.{minor} ({status:?})")
}

fn driver_version() -> String {
    let mut version = 0;
    // SAFETY: cuDriverGetVersion only writes the integer it is given.
    let status = unsafe { driver::sys::cuDriverGetVersion(&mut version) };
    format!("driver {version} ({status:?})")
}
