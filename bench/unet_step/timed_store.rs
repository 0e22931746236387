//! Marks on the compute stream as each unit is asked for, so that a step's time splits by unit.

use candle_core::{DType, Device};
use std::time::Instant;
use swapgraph_model::WeightStore;

/// A point in the device's work: a CUDA event on the compute stream, or the host's clock on the
/// CPU, where compute is synchronous.
pub(crate) enum Mark {
    Host(Instant),
    #[cfg(feature = "cuda")]
    Cuda(candle_core::cuda_backend::cudarc::driver::CudaEvent),
}

impl Mark {
    pub(crate) fn now(device: &Device) -> Self {
        #[cfg(feature = "cuda")]
        if let Device::Cuda(cuda) = device {
            use candle_core::cuda_backend::cudarc::driver::sys::CUevent_flags;
            let stream = cuda.cuda_stream();
            let event = stream
                .context()
                .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
                .expect("a CUDA event");
            event.record(&stream).expect("an event recorded");
            return Self::Cuda(event);
        }
        let _ = device;
        Self::Host(Instant::now())
    }

    /// Milliseconds from `self` to `later`, once the device has passed both.
    pub(crate) fn until(&self, later: &Self) -> f64 {
        match (self, later) {
            (Self::Host(a), Self::Host(b)) => (*b - *a).as_secs_f64() * 1e3,
            #[cfg(feature = "cuda")]
            (Self::Cuda(a), Self::Cuda(b)) => f64::from(a.elapsed_ms(b).expect("event timing")),
            #[cfg(feature = "cuda")]
            _ => unreachable!("marks of one device"),
        }
    }
}

/// A store that marks the compute stream as each unit's weights are asked for, so a step's time
/// splits by unit: from one unit's mark to the next is that unit's compute (and, streamed, the
/// wait for its copy). Each mark also keeps the host's clock as it was queued.
pub(crate) struct TimedStore<'a> {
    inner: &'a dyn WeightStore,
    marks: std::sync::Mutex<Vec<(usize, Mark, Instant)>>,
}

/// One unit's share of a step.
pub(crate) struct UnitMark {
    pub(crate) unit: usize,
    /// From the unit's mark to the next one on the device.
    pub(crate) ms: f64,
    /// How far the host was ahead of the device as it queued the unit's mark: the time the mark
    /// waited on the stream. Near zero, the device had run out of queued work there and waited
    /// for the host.
    pub(crate) lead_ms: f64,
}

impl<'a> TimedStore<'a> {
    pub(crate) fn new(inner: &'a dyn WeightStore) -> Self {
        Self {
            inner,
            marks: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The marks queued since the last call.
    pub(crate) fn drain(&self) -> Vec<(usize, Mark, Instant)> {
        std::mem::take(&mut *self.marks.lock().expect("marks"))
    }
}

/// Each unit's time in a step between `start` and `end` (the device having passed `end`), and
/// the host's lead as it queued the unit. The run's first mark was queued with the device idle,
/// so it ran at once: a mark's lead is its time after that mark on the device less its time
/// after it on the host's clock. Work before the first unit counts to it.
pub(crate) fn unit_marks(
    marks: Vec<(usize, Mark, Instant)>,
    start: &Mark,
    end: &Mark,
    (run_start, run_queued): (&Mark, Instant),
) -> Vec<UnitMark> {
    let nexts = marks.iter().skip(1).map(|(_, mark, _)| mark).chain([end]);
    marks
        .iter()
        .zip(nexts)
        .enumerate()
        .map(|(i, ((unit, mark, at), next))| UnitMark {
            unit: *unit,
            ms: if i == 0 { start.until(next) } else { mark.until(next) },
            lead_ms: run_start.until(mark) - (*at - run_queued).as_secs_f64() * 1e3,
        })
        .collect()
}

impl WeightStore for TimedStore<'_> {
    fn units(&self) -> &[swapgraph_model::UnitSpec] {
        self.inner.units()
    }

    fn acquire(&self, unit: usize) -> candle_core::Result<swapgraph_model::UnitWeights> {
        let mark = Mark::now(self.inner.device());
        self.marks.lock().expect("marks").push((unit, mark, Instant::now()));
        self.inner.acquire(unit)
    }

    fn release(&self, unit: usize) {
        self.inner.release(unit);
    }

    fn device(&self) -> &Device {
        self.inner.device()
    }

    fn dtype(&self) -> DType {
        self.inner.dtype()
    }
}
