//! The timeline of one forward pass where copies are synchronous, on the host clock: when each
//! unit's copy ran (compute waits for all of it there) and when its compute ran. Kept only with
//! `debug`, for the report.

use std::time::Instant;
use swapgraph_node_api::{PassTimeline, UnitSpan};

/// The pass being timed and the last one completed.
#[derive(Default)]
pub struct PassClock {
    started: Option<Instant>,
    current: Vec<(usize, UnitSpan)>,
    last: Vec<(usize, UnitSpan)>,
}

impl PassClock {
    /// A new pass starts now; the one before it, if any, becomes the last completed pass.
    pub fn begin_pass(&mut self) {
        if !self.current.is_empty() {
            self.last = std::mem::take(&mut self.current);
        }
        self.started = Some(Instant::now());
    }

    /// Milliseconds from the pass's start to `instant`.
    fn at(&self, instant: Instant) -> f64 {
        self.started.map_or(0.0, |started| {
            instant.saturating_duration_since(started).as_secs_f64() * 1e3
        })
    }

    fn span(&mut self, unit: usize, name: &str) -> &mut UnitSpan {
        let index = match self.current.iter().position(|(known, _)| *known == unit) {
            Some(index) => index,
            None => {
                let span = UnitSpan {
                    unit: name.to_string(),
                    ..UnitSpan::default()
                };
                self.current.push((unit, span));
                self.current.len() - 1
            }
        };
        &mut self.current[index].1
    }

    /// Unit `unit` (named `name`) was copied to the device from `from` to `to`; compute waited
    /// all that time.
    pub fn copied(&mut self, unit: usize, name: &str, from: Instant, to: Instant) {
        let copy = [self.at(from), self.at(to)];
        let span = self.span(unit, name);
        span.copy = Some(copy);
        span.wait = Some(copy);
    }

    /// Compute on unit `unit` starts now.
    pub fn computing(&mut self, unit: usize, name: &str) {
        let now = self.at(Instant::now());
        self.span(unit, name).compute = Some([now, now]);
    }

    /// Compute on unit `unit` is done now.
    pub fn released(&mut self, unit: usize) {
        let now = self.at(Instant::now());
        if let Some((_, span)) = self.current.iter_mut().find(|(known, _)| *known == unit) {
            if let Some(compute) = &mut span.compute {
                compute[1] = now;
            }
        }
    }

    /// The last completed pass, or the pass so far when none completed.
    pub fn timeline(&self) -> PassTimeline {
        let pass = if self.last.is_empty() {
            &self.current
        } else {
            &self.last
        };
        PassTimeline {
            units: pass.iter().map(|(_, span)| span.clone()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_lists_each_unit_once_with_its_copy_before_its_compute() {
        let mut clock = PassClock::default();
        for _pass in 0..2 {
            clock.begin_pass();
            for unit in 0..3 {
                let name = format!("unit{unit}");
                if unit != 1 {
                    let from = Instant::now();
                    std::thread::sleep(std::time::Duration::from_millis(2));
                    clock.copied(unit, &name, from, Instant::now());
                }
                clock.computing(unit, &name);
                std::thread::sleep(std::time::Duration::from_millis(1));
                clock.released(unit);
            }
        }
        clock.begin_pass();
        let timeline = clock.timeline();
        assert_eq!(timeline.units.len(), 3);
        assert!(timeline.units[1].copy.is_none(), "unit 1 stays on the device");
        for span in [&timeline.units[0], &timeline.units[2]] {
            let [copy_start, copy_end] = span.copy.unwrap();
            let [compute_start, compute_end] = span.compute.unwrap();
            assert!(
                copy_start <= copy_end && copy_end <= compute_start && compute_start < compute_end,
                "{span:?}"
            );
            assert!(copy_end - copy_start >= 2.0, "{span:?}");
        }
        assert!(timeline.units[2].copy.unwrap()[0] > timeline.units[0].compute.unwrap()[1]);
    }
}
