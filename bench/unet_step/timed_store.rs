//! Marks on the compute stream as each unit is asked for, so that a step's time splits by unit.

use candle_core::{DType, Device};
use std::time::Instant;
use swapgraph_model::WeightStore;
use swapgraph_sdxl::device_mark::DeviceMark;

/// A point in the device's work ([`DeviceMark`]), for a bench that stops at a device error.
pub(crate) struct Mark(DeviceMark);

impl Mark {
    pub(crate) fn now(device: &Device) -> Self {
        Self(DeviceMark::now(device).expect("a mark on the device"))
    }

    /// Milliseconds from `self` to `later`, once the device has passed both.
    pub(crate) fn until(&self, later: &Self) -> f64 {
        self.0.until(&later.0).expect("the time between two marks")
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
