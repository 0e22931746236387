//! Kernel sources compiled once per device architecture: in memory for the rest of the process,
//! and on disk for the next one, so that a run pays NVRTC's compilation only the first time a
//! card, driver and build meet.

use candle_core::cuda_backend::cudarc::{driver, nvrtc};
use candle_core::cuda_backend::CudaDevice;
use candle_core::Result;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
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
    let cached = cache_dir().map(|dir| dir.join(cache_file_name(module, source, &option)));
    let ptx: Arc<str> = match cached.as_deref().and_then(read_cached) {
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
            if let Some(path) = &cached {
                write_cached(path, &ptx);
            }
            ptx.into()
        }
    };
    compiled.insert(module.to_string(), Arc::clone(&ptx));
    Ok(ptx)
}

/// Where compiled kernels are kept between runs: `$XDG_CACHE_HOME/swapgraph/kernels`, else
/// `~/.cache/swapgraph/kernels`; none when neither variable is set.
fn cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache")))?;
    Some(base.join("swapgraph").join("kernels"))
}

/// A file name that changes whenever the PTX could: with the source, the options, NVRTC's
/// version or the driver's.
fn cache_file_name(module: &str, source: &str, option: &str) -> String {
    let mut key = Sha256::new();
    for part in [source, option, &nvrtc_version(), &driver_version()] {
        key.update(part.as_bytes());
        key.update([0]);
    }
    let digest = key.finalize();
    let hex: String = digest[..8].iter().map(|byte| format!("{byte:02x}")).collect();
    format!("{module}-{hex}.ptx")
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

/// The PTX kept at `path`, if it is there (a file reaches `path` only whole: see
/// [`write_cached`]).
fn read_cached(path: &Path) -> Option<String> {
    let ptx = std::fs::read_to_string(path).ok()?;
    tracing::debug!("kernels read from {}", path.display());
    (!ptx.is_empty()).then_some(ptx)
}

/// Keeps `ptx` at `path`, written beside it first and renamed into place so that a run started
/// meanwhile never reads half a file. A cache that cannot be written costs only the next run's
/// compilation, so it is reported and otherwise ignored.
fn write_cached(path: &Path, ptx: &str) {
    let written = (|| {
        let dir = path.parent().expect("a cache file sits in the cache folder");
        std::fs::create_dir_all(dir)?;
        let partial = dir.join(format!(
            ".{}.{}",
            std::process::id(),
            path.file_name().unwrap_or_default().to_string_lossy()
        ));
        std::fs::write(&partial, ptx)?;
        std::fs::rename(&partial, path)
    })();
    if let Err(e) = written {
        tracing::warn!("the compiled kernels could not be kept in {}: {e}", path.display());
    }
}
