//! `noise`: host-to-device copies unrelated to the steps, keeping the bus busy beside them.

#[cfg(feature = "cuda")]
use candle_core::Device;
#[cfg(feature = "cuda")]
use std::sync::Arc;
#[cfg(feature = "cuda")]
use std::time::Instant;

/// What moves the bytes of `noise`.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Copier {
    /// `cuMemcpyHtoDAsync`: the copy engine, as BlockSwap's streaming does.
    CopyEngine,
    /// `cuMemHostRegister` on host memory the kernel backs with 2 MiB pages (transparent huge
    /// pages): the same copies from memory of fewer, larger pages.
    HugePages,
    /// A kernel reading page-locked host memory and writing device memory with evict-first
    /// (`.cs`) loads and stores, so that the copied lines leave the L2 cache first.
    Kernel,
}

/// Host-to-device copies of [`noise_bytes`] from page-locked memory, two queued on a stream of
/// their own (each queued again [`noise_gap`] after it finishes), until dropped; the host sleeps
/// between polls, so no thread spins in the driver beside the steps.
#[cfg(feature = "cuda")]
pub(crate) struct BusLoad {
    stop: Arc<std::sync::atomic::AtomicBool>,
    copies: Arc<std::sync::atomic::AtomicU64>,
    started: Instant,
    bytes: usize,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Bytes of each `noise` copy: `NOISE_MIB` MiB, default 256.
#[cfg(feature = "cuda")]
pub(crate) fn noise_bytes() -> usize {
    std::env::var("NOISE_MIB").map_or(256, |m| m.parse().expect("NOISE_MIB: a size in MiB")) << 20
}

/// A pause before each `noise` copy is queued again, `NOISE_GAP_US` microseconds (default none):
/// a lower copy rate in the same pattern.
#[cfg(feature = "cuda")]
pub(crate) fn noise_gap() -> std::time::Duration {
    std::time::Duration::from_micros(
        std::env::var("NOISE_GAP_US").map_or(0, |g| g.parse().expect("NOISE_GAP_US: microseconds")),
    )
}

#[cfg(feature = "cuda")]
pub(crate) const STREAM_COPY: &str = r#"
extern "C" __global__ void stream_copy(const uint4* src, uint4* dst, unsigned long long n) {
    unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        unsigned int x, y, z, w;
        asm volatile("ld.global.cs.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(x), "=r"(y), "=r"(z), "=r"(w) : "l"(src + i));
        asm volatile("st.global.cs.v4.u32 [%0], {%1,%2,%3,%4};" :: "l"(dst + i), "r"(x), "r"(y), "r"(z), "r"(w) : "memory");
    }
}
"#;

#[cfg(feature = "cuda")]
impl BusLoad {
    pub(crate) fn start(device: &Device, copier: Copier) -> Self {
        use candle_core::cuda_backend::cudarc::driver::{result, CudaEvent, DevicePtr, LaunchConfig, PushKernelArg};
        let Device::Cuda(cuda) = device else {
            panic!("noise needs a CUDA device")
        };
        let context = cuda.cuda_stream().context().clone();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let copies = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (stopped, done) = (stop.clone(), copies.clone());
        let (bytes, gap) = (noise_bytes(), noise_gap());
        let blocks: u32 = std::env::var("NOISE_SM_BLOCKS").map_or(16, |b| b.parse().expect("NOISE_SM_BLOCKS: a count"));
        let thread = std::thread::spawn(move || {
            let stream = context.new_stream().expect("a copy stream");
            // SAFETY: the buffers' contents are never read; they only give the copies a size.
            let pinned = (copier != Copier::HugePages)
                .then(|| unsafe { context.alloc_pinned::<u8>(bytes) }.expect("page-locked memory"));
            let registered = (copier == Copier::HugePages).then(|| {
                context.bind_to_thread().expect("the context");
                HugePages::register(bytes)
            });
            let target = unsafe { stream.alloc::<u8>(bytes) }.expect("device memory");
            let host = match (&pinned, &registered) {
                (Some(pinned), _) => pinned.as_slice().expect("page-locked memory"),
                (None, Some(registered)) => registered.as_slice(),
                (None, None) => unreachable!("one host buffer is made"),
            };
            let (address, _guard) = target.device_ptr(&stream);
            let kernel = (copier == Copier::Kernel).then(|| {
                let ptx = candle_core::cuda_backend::cudarc::nvrtc::compile_ptx(STREAM_COPY).expect("the copy kernel");
                let module = context.load_module(ptx).expect("the copy kernel");
                module.load_function("stream_copy").expect("the copy kernel")
            });
            let copy = |event: &CudaEvent| {
                match &kernel {
                    // SAFETY: both buffers outlive the copies (the stream is synchronised below).
                    None => unsafe { result::memcpy_htod_async(address, host, stream.cu_stream()) }.expect("a copy"),
                    Some(function) => {
                        let (source, vectors) = (host.as_ptr() as u64, (bytes / 16) as u64);
                        let config = LaunchConfig {
                            grid_dim: (blocks, 1, 1),
                            block_dim: (512, 1, 1),
                            shared_mem_bytes: 0,
                        };
                        let mut launch = stream.launch_builder(function);
                        launch.arg(&source).arg(&address).arg(&vectors);
                        // SAFETY: page-locked memory is mapped at its host address; both
                        // buffers hold `vectors` 16-byte vectors.
                        unsafe { launch.launch(config) }.expect("a copy kernel");
                    }
                }
                event.record(&stream).expect("an event recorded");
            };
            let queued = [(); 2].map(|()| context.new_event(None).expect("an event"));
            queued.iter().for_each(copy);
            for turn in [0, 1].into_iter().cycle() {
                while !queued[turn].try_is_complete().expect("an event query") {
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if stopped.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                std::thread::sleep(gap);
                copy(&queued[turn]);
            }
            stream.synchronize().expect("the copies to finish");
        });
        Self {
            stop,
            copies,
            started: Instant::now(),
            bytes,
            thread: Some(thread),
        }
    }

    /// The copies' rate so far, in GB/s.
    pub(crate) fn gb_s(&self) -> f64 {
        let bytes = self.copies.load(std::sync::atomic::Ordering::Relaxed) as f64 * self.bytes as f64;
        bytes / self.started.elapsed().as_secs_f64() / 1e9
    }
}

/// Host memory on 2 MiB pages where the kernel grants them, page-locked and mapped for the
/// device with `cuMemHostRegister`; unregistered and freed when dropped.
#[cfg(feature = "cuda")]
pub(crate) struct HugePages {
    pointer: *mut u8,
    layout: std::alloc::Layout,
}

#[cfg(feature = "cuda")]
impl HugePages {
    const PAGE: usize = 2 << 20;

    pub(crate) fn register(bytes: usize) -> Self {
        use candle_core::cuda_backend::cudarc::driver::sys;
        let layout =
            std::alloc::Layout::from_size_align(bytes.next_multiple_of(Self::PAGE), Self::PAGE).expect("a layout");
        // SAFETY: the layout has a non-zero size; the memory is written before it is registered.
        let pointer = unsafe { std::alloc::alloc(layout) };
        assert!(!pointer.is_null(), "host memory for the copies");
        unsafe {
            libc::madvise(pointer.cast(), layout.size(), libc::MADV_HUGEPAGE);
            std::ptr::write_bytes(pointer, 0, layout.size());
            let registered = sys::cuMemHostRegister_v2(pointer.cast(), layout.size(), 0);
            assert_eq!(registered, sys::CUresult::CUDA_SUCCESS, "cuMemHostRegister");
        }
        let huge = std::fs::read_to_string("/proc/self/smaps_rollup")
            .ok()
            .and_then(|s| s.lines().find(|l| l.starts_with("AnonHugePages")).map(str::to_string));
        eprintln!(
            "noise-huge: {bytes} bytes registered; process {}",
            huge.unwrap_or_default()
        );
        Self { pointer, layout }
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        // SAFETY: the allocation holds `layout.size()` initialised bytes until dropped.
        unsafe { std::slice::from_raw_parts(self.pointer, self.layout.size()) }
    }
}

#[cfg(feature = "cuda")]
impl Drop for HugePages {
    fn drop(&mut self) {
        // SAFETY: registered and allocated in `register` with this layout; no copy is in flight
        // (the stream is synchronised before the buffer goes).
        unsafe {
            candle_core::cuda_backend::cudarc::driver::sys::cuMemHostUnregister(self.pointer.cast());
            std::alloc::dealloc(self.pointer, self.layout);
        }
    }
}

#[cfg(feature = "cuda")]
impl Drop for BusLoad {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the copy thread");
        }
    }
}
