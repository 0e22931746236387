//! Where a sampling run's time goes: the one-off work before and in its first step (weights to
//! the device, kernels compiled, algorithms chosen, the conditioning projected) and the steady
//! steps after it, logged so that one-off work can be told from the steps' own time.

use crate::sampling::StepShares;
use std::fmt;
use std::time::{Duration, Instant};

/// Times of one sampling run, taken with the device synchronised at each mark so that queued
/// work is counted where it ran.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SamplingTimes {
    /// Until the UNet's weights were ready on the device.
    pub unet_weights: Duration,
    /// Until the ControlNet's weights were ready too, after the UNet's.
    pub controlnet_weights: Option<Duration>,
    /// The first step, with the one-off work it carries.
    pub first_step: Option<Duration>,
    /// Every later step together, and how many there were.
    pub later_steps: (Duration, usize),
    /// How many steps were replays of a step recorded as a CUDA graph.
    pub replayed_steps: usize,
    /// The later steps' device time by part, where it was marked.
    pub shares: Option<StepShares>,
}

impl fmt::Display for SamplingTimes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        write!(f, "UNet weights ready in {:.0} ms", ms(self.unet_weights))?;
        if let Some(controlnet) = self.controlnet_weights {
            write!(f, ", ControlNet weights in {:.0} ms", ms(controlnet))?;
        }
        if let Some(first) = self.first_step {
            write!(
                f,
                ", first step {:.0} ms (with its one-off work: kernels, algorithm choice, the conditioning projected)",
                ms(first)
            )?;
        }
        let (later, count) = self.later_steps;
        if count > 0 {
            write!(
                f,
                "; then {:.1} ms per step over {count} steps",
                ms(later) / count as f64
            )?;
        }
        if let Some(shares) = self.shares {
            write!(f, " (")?;
            if let Some(controlnets) = shares.controlnets_ms {
                write!(f, "ControlNets {controlnets:.1} ms, ")?;
            }
            write!(f, "UNet {:.1} ms of each on the device)", shares.unet_ms)?;
        }
        if self.replayed_steps > 0 {
            write!(f, ", {} of them replayed from a CUDA graph", self.replayed_steps)?;
        }
        Ok(())
    }
}

/// Marks the first and last of a run's steps on a clock: the device is synchronised at those
/// two only, so the steps between run as they would unobserved.
pub struct StepClock {
    last: Instant,
    times: SamplingTimes,
}

impl StepClock {
    /// A clock started now, with the weights' times known.
    pub fn new(times: SamplingTimes) -> Self {
        Self {
            last: Instant::now(),
            times,
        }
    }

    /// Whether step `step` of `total` (counted from 1) is one the clock marks, so that the
    /// caller synchronises the device first.
    pub fn marks(step: usize, total: usize) -> bool {
        step == 1 || step == total
    }

    /// Marks the end of step `step` of `total`, one that [`StepClock::marks`].
    pub fn step_done(&mut self, step: usize, total: usize) {
        let now = Instant::now();
        let took = now - self.last;
        self.last = now;
        if step == 1 {
            self.times.first_step = Some(took);
        } else {
            self.times.later_steps = (took, total - 1);
        }
    }

    /// The times so far.
    pub fn times(&self) -> &SamplingTimes {
        &self.times
    }

    /// Counts `replayed` steps as replays of recorded graphs.
    pub fn replayed(&mut self, replayed: usize) {
        self.times.replayed_steps = replayed;
    }

    /// The later steps' device time by part.
    pub fn split(&mut self, shares: Option<StepShares>) {
        self.times.shares = shares;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_off_work_and_steady_steps_read_apart() {
        let times = SamplingTimes {
            unet_weights: Duration::from_millis(2500),
            controlnet_weights: Some(Duration::from_millis(900)),
            first_step: Some(Duration::from_millis(4000)),
            later_steps: (Duration::from_millis(1450), 29),
            replayed_steps: 28,
            shares: None,
        };
        assert_eq!(
            times.to_string(),
            "UNet weights ready in 2500 ms, ControlNet weights in 900 ms, first step 4000 ms \
             (with its one-off work: kernels, algorithm choice, the conditioning projected); then 50.0 ms per step over 29 steps, \
             28 of them replayed from a CUDA graph"
        );
        let split = SamplingTimes {
            replayed_steps: 0,
            shares: Some(StepShares {
                controlnets_ms: Some(14.94),
                unet_ms: 34.96,
            }),
            ..times
        };
        assert!(
            split.to_string().ends_with(
                "then 50.0 ms per step over 29 steps (ControlNets 14.9 ms, UNet 35.0 ms of each on the device)"
            ),
            "{split}"
        );
        let mut clock = StepClock::new(SamplingTimes::default());
        let marked: Vec<usize> = (1..=30).filter(|&step| StepClock::marks(step, 30)).collect();
        assert_eq!(marked, [1, 30]);
        for step in marked {
            clock.step_done(step, 30);
        }
        assert!(clock.times().first_step.is_some());
        assert_eq!(clock.times().later_steps.1, 29, "the steps after the first");
    }
}
