//! Measured host-to-device copies: what `swapgraph doctor` reports, and the rates BlockSwap's
//! recommendations are computed from.

use candle_core::Device;

/// Copy figures of one device.
#[derive(Clone, Debug, PartialEq)]
pub struct TransferProbe {
    /// Host-to-device GB/s from page-locked memory, or why page-locked memory was refused.
    pub pinned_gb_s: Result<f64, String>,
    /// Host-to-device GB/s from ordinary (pageable) memory.
    pub pageable_gb_s: f64,
}

/// Times copies of `bytes` bytes to `device` (best of a few), from page-locked and from
/// pageable memory.
///
/// # Errors
/// A message when `device` is not a GPU or refuses the device buffer.
pub fn probe_transfers(device: &Device, bytes: usize) -> Result<TransferProbe, String> {
    imp::probe(device, bytes)
}

#[cfg(feature = "cuda")]
mod imp {
    use super::TransferProbe;
    use candle_core::cuda_backend::cudarc::driver::{sys, CudaSlice, CudaStream, HostSlice};
    use candle_core::Device;

    const REPEATS: usize = 5;

    pub fn probe(device: &Device, bytes: usize) -> Result<TransferProbe, String> {
        let Device::Cuda(cuda) = device else {
            return Err("host-to-device copies need a GPU".into());
        };
        let stream = cuda.cuda_stream();
        let mut target = stream.alloc_zeros::<u8>(bytes).map_err(|e| e.to_string())?;
        let pageable = vec![1u8; bytes];
        let pageable_gb_s = best_rate(&stream, &pageable, &mut target)?;
        // SAFETY: the buffer is filled before it is read.
        let pinned_gb_s = match unsafe { stream.context().alloc_pinned::<u8>(bytes) } {
            Ok(mut pinned) => {
                pinned.as_mut_slice().map_err(|e| e.to_string())?.fill(1);
                best_rate(&stream, &pinned, &mut target)
            }
            Err(e) => Err(format!("page-locked allocation of {bytes} bytes failed: {e}")),
        };
        Ok(TransferProbe {
            pinned_gb_s,
            pageable_gb_s,
        })
    }

    /// The best of a few timed copies, in GB/s.
    fn best_rate<H: HostSlice<u8> + ?Sized>(
        stream: &std::sync::Arc<CudaStream>,
        host: &H,
        target: &mut CudaSlice<u8>,
    ) -> Result<f64, String> {
        let timing = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
        let mut best = f64::MAX;
        for _ in 0..REPEATS {
            let start = stream.record_event(timing).map_err(|e| e.to_string())?;
            stream.memcpy_htod(host, target).map_err(|e| e.to_string())?;
            let end = stream.record_event(timing).map_err(|e| e.to_string())?;
            let ms = f64::from(start.elapsed_ms(&end).map_err(|e| e.to_string())?);
            best = best.min(ms);
        }
        Ok(host.len() as f64 / (best * 1e-3) / 1e9)
    }
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use super::TransferProbe;
    use candle_core::Device;

    pub fn probe(_device: &Device, _bytes: usize) -> Result<TransferProbe, String> {
        Err("host-to-device copies need a GPU and the CUDA build".into())
    }
}
