//! Where a denoising step's device time goes: the ControlNets' passes and the UNet's (its image
//! tokens' attention inside it), each between two marks on the device's queue, so that the
//! steps run as they would unobserved and the split is read once sampling has finished. What
//! the step takes beside them is the sampler's own work (guidance, the solver's update).

use crate::device_mark::DeviceMark;
use candle_core::{Device, Result};
use std::cell::RefCell;

/// A part of a denoising step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepPart {
    /// Every ControlNet's pass, their residuals summed.
    ControlNets,
    /// The UNet's pass.
    UNet,
}

/// Device time per step by part, over the steps after the first.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepShares {
    /// The ControlNets' passes, where any acted.
    pub controlnets_ms: Option<f64>,
    /// The UNet's pass.
    pub unet_ms: f64,
}

/// The marks around each part of a run's steps.
pub struct StepSplit {
    device: Device,
    /// Off, nothing is marked: a step recorded as a CUDA graph cannot hold marks read later.
    on: bool,
    spans: RefCell<Vec<(StepPart, DeviceMark, DeviceMark)>>,
    /// How many spans the first step made (its one-off work is left out of the shares).
    first_step_spans: RefCell<Option<usize>>,
}

impl StepSplit {
    /// A split of the steps on `device`, marking them only when `on`.
    pub fn new(device: &Device, on: bool) -> Self {
        Self {
            device: device.clone(),
            on,
            spans: RefCell::new(Vec::new()),
            first_step_spans: RefCell::new(None),
        }
    }

    /// `work`, as part `part` of the step under way.
    ///
    /// # Errors
    /// `work`'s error, or a device error placing a mark.
    pub fn time<T>(&self, part: StepPart, work: impl FnOnce() -> Result<T>) -> Result<T> {
        if !self.on {
            return work();
        }
        let start = DeviceMark::now(&self.device)?;
        let done = work()?;
        let end = DeviceMark::now(&self.device)?;
        self.spans.borrow_mut().push((part, start, end));
        Ok(done)
    }

    /// Marks the end of the first step: the spans so far are its own.
    pub fn first_step_done(&self) {
        self.first_step_spans.replace(Some(self.spans.borrow().len()));
    }

    /// Each part's device time per step over the `later_steps` after the first, once the device
    /// has finished them; `None` when nothing was marked after the first step.
    ///
    /// # Errors
    /// A device error reading the marks.
    pub fn shares(&self, later_steps: usize) -> Result<Option<StepShares>> {
        let spans = self.spans.borrow();
        let first = self.first_step_spans.borrow().unwrap_or(0);
        let later = spans.get(first..).unwrap_or_default();
        if later.is_empty() || later_steps == 0 {
            return Ok(None);
        }
        let total = |wanted: StepPart| -> Result<Option<f64>> {
            let mut sum = None;
            for (_, start, end) in later.iter().filter(|(part, ..)| *part == wanted) {
                *sum.get_or_insert(0.0) += start.until(end)?;
            }
            Ok(sum.map(|ms: f64| ms / later_steps as f64))
        };
        Ok(Some(StepShares {
            controlnets_ms: total(StepPart::ControlNets)?,
            unet_ms: total(StepPart::UNet)?.unwrap_or_default(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_part_is_timed_per_step_after_the_first() -> Result<()> {
        let split = StepSplit::new(&Device::Cpu, true);
        let pause = |ms: u64| {
            move || {
                std::thread::sleep(std::time::Duration::from_millis(ms));
                Ok(())
            }
        };
        // The first step's one-off work, left out.
        split.time(StepPart::UNet, pause(60))?;
        split.first_step_done();
        for _ in 0..2 {
            split.time(StepPart::ControlNets, pause(10))?;
            split.time(StepPart::UNet, pause(20))?;
        }
        let shares = split.shares(2)?.expect("later steps were marked");
        let controlnets = shares.controlnets_ms.expect("the ControlNets acted");
        assert!((10.0..30.0).contains(&controlnets), "{controlnets} ms");
        assert!((20.0..50.0).contains(&shares.unet_ms), "{} ms", shares.unet_ms);
        Ok(())
    }

    #[test]
    fn a_split_that_is_off_marks_nothing_and_without_controlnets_has_no_share_for_them() -> Result<()> {
        let off = StepSplit::new(&Device::Cpu, false);
        assert_eq!(off.time(StepPart::UNet, || Ok(7))?, 7);
        off.first_step_done();
        off.time(StepPart::UNet, || Ok(()))?;
        assert_eq!(off.shares(1)?, None);

        let unet_only = StepSplit::new(&Device::Cpu, true);
        unet_only.first_step_done();
        unet_only.time(StepPart::UNet, || Ok(()))?;
        assert_eq!(unet_only.shares(1)?.map(|s| s.controlnets_ms), Some(None));
        Ok(())
    }
}
