//! Kernel sources compiled once per process and device architecture.

use candle_core::cuda_backend::cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};
use candle_core::cuda_backend::CudaDevice;
use candle_core::Result;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// A kernel source compiled for one device architecture: load its functions with
/// `CudaDevice::get_or_load_custom_func(name, &compiled.module, &compiled.ptx)`.
pub struct Compiled {
    /// The module's name, unique per source and architecture.
    pub module: String,
    /// The PTX.
    pub ptx: Arc<str>,
}

/// `source` (named `module`, unique per source file) compiled for `device`, from this process's
/// cache after the first time.
///
/// # Errors
/// A driver error, or a compile failure with NVRTC's log.
pub fn compiled(device: &CudaDevice, module: &str, source: &str) -> Result<Compiled> {
    let (major, minor) = compute_capability(device)?;
    let module = format!("{module}-sm{major}{minor}");
    let ptx = ptx_for(&module, source, major, minor)?;
    Ok(Compiled { module, ptx })
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
    if let Some(ptx) = compiled
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(module)
    {
        return Ok(Arc::clone(ptx));
    }
    let options = CompileOptions {
        options: vec![format!("--gpu-architecture=compute_{major}{minor}")],
        ..Default::default()
    };
    let ptx = compile_ptx_with_opts(source, options)
        .map_err(|e| candle_core::Error::Msg(format!("compiling the {module} kernels with NVRTC: {e}")))?
        .to_src()
        .into();
    compiled
        .lock()
        .expect("the PTX cache is never poisoned")
        .insert(module.to_string(), Arc::clone(&ptx));
    Ok(ptx)
}
