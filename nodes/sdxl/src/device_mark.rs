//! Points in a device's queued work, so that the time between two can be read once the device
//! has passed them without waiting for it at each: a CUDA event on the compute stream, or the
//! host's clock on the CPU, where compute runs as it is called.

use candle_core::{Device, Result};
use std::time::Instant;

/// A point in the device's work, queued where it is made.
pub enum DeviceMark {
    /// The host's clock (the CPU computes synchronously).
    Host(Instant),
    /// An event recorded on the device's compute stream.
    #[cfg(feature = "cuda")]
    Cuda(candle_core::cuda_backend::cudarc::driver::CudaEvent),
}

impl DeviceMark {
    /// A mark after the work queued on `device` so far.
    ///
    /// # Errors
    /// A CUDA error creating or recording the event.
    pub fn now(device: &Device) -> Result<Self> {
        #[cfg(feature = "cuda")]
        if let Device::Cuda(cuda) = device {
            use candle_core::cuda_backend::cudarc::driver::sys::CUevent_flags;
            use candle_core::cuda_backend::WrapErr;
            let stream = cuda.cuda_stream();
            let event = stream.context().new_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).w()?;
            event.record(&stream).w()?;
            return Ok(Self::Cuda(event));
        }
        let _ = device;
        Ok(Self::Host(Instant::now()))
    }

    /// Milliseconds from `self` to `later`, once the device has passed both.
    ///
    /// # Errors
    /// A CUDA error reading the events, or marks of different devices.
    pub fn until(&self, later: &Self) -> Result<f64> {
        match (self, later) {
            (Self::Host(a), Self::Host(b)) => Ok((*b - *a).as_secs_f64() * 1e3),
            #[cfg(feature = "cuda")]
            (Self::Cuda(a), Self::Cuda(b)) => {
                use candle_core::cuda_backend::WrapErr;
                Ok(f64::from(a.elapsed_ms(b).w()?))
            }
            #[cfg(feature = "cuda")]
            _ => candle_core::bail!("marks of two devices"),
        }
    }
}
