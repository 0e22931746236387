//! What a streaming schedule costs, before anything runs: the prefetch schedule
//! ([`Pipeline`]) replayed against each unit's compute time and a bus of one bandwidth.
//!
//! The replay follows the CUDA path's ordering exactly. The host runs ahead of the device, so
//! copies are issued as [`Pipeline::acquire`] hands them out, transfer by transfer
//! ([`crate::pipeline::Copy::transfers`]); each starts on the copy stream once the one before it
//! has finished and the units under it have finished computing; a streamed unit computes once its
//! own copy has landed and the unit before it has finished. Passes repeat, so the first ones fill
//! the ring and a later pass gives the steady state.
//!
//! Copies slow the compute beside them (on an H200 about a tenth for the deep blocks while the
//! bus is busy). Given each unit's compute time measured beside copies that never stop, the
//! replay also charges that: a unit takes its plain time plus the extra in proportion to how
//! much of it overlaps a copy, found by replaying again with the overlaps of the replay before
//! until the times settle. Without it, the replay is a bound for the schedule that is tighter
//! than [`crate::floor`]'s bound for any schedule.

use crate::floor::UnitCost;
use crate::pipeline::Pipeline;
use std::collections::HashMap;

/// Passes replayed before the one measured: the first fills the ring, the second wraps.
const WARM_PASSES: usize = 2;

/// Replays with the overlaps of the replay before; the times settle within a few.
const SETTLING_ROUNDS: usize = 6;

/// A model's units and the bus between host and device, for replaying schedules on them.
pub struct Replay<'a> {
    units: &'a [UnitCost],
    /// Each unit's pieces in bytes, as the CUDA path copies them; one piece per unit if not given.
    pieces: Option<&'a [Vec<u64>]>,
    /// Each unit's compute time while copies run throughout, if measured.
    beside_copies_ms: Option<&'a [f64]>,
    bytes_per_second: f64,
}

impl<'a> Replay<'a> {
    /// Units (in execution order) whose compute copies do not slow, over a bus of
    /// `bytes_per_second`.
    pub fn new(units: &'a [UnitCost], bytes_per_second: f64) -> Self {
        Self {
            units,
            pieces: None,
            beside_copies_ms: None,
            bytes_per_second,
        }
    }

    /// Copies each unit as `pieces` (bytes, one list per unit, in copy order), as the CUDA path
    /// copies a unit's tensors ([`crate::pipeline::tensor_pieces`]), so a piece waits only for the
    /// units under it.
    pub fn in_pieces(self, pieces: &'a [Vec<u64>]) -> Self {
        assert_eq!(pieces.len(), self.units.len(), "one list of pieces per unit");
        Self {
            pieces: Some(pieces),
            ..self
        }
    }

    /// Charges each unit up to `beside_copies_ms` (one per unit, measured while copies run
    /// throughout) in proportion to its overlap with copies.
    pub fn slowed_by_copies(self, beside_copies_ms: &'a [f64]) -> Self {
        assert_eq!(beside_copies_ms.len(), self.units.len(), "one time per unit");
        Self {
            beside_copies_ms: Some(beside_copies_ms),
            ..self
        }
    }

    /// The time of one steady-state pass when the units marked in `swapped` stream through a
    /// ring of `ring_bytes`, in milliseconds.
    pub fn pass_ms(&self, swapped: &[bool], ring_bytes: u64) -> f64 {
        let mut durations: Vec<f64> = self.units.iter().map(|u| u.compute_ms).collect();
        let Some(beside_copies) = self.beside_copies_ms else {
            return self.replay(swapped, ring_bytes, &durations).pass_ms;
        };
        let mut pass = self.replay(swapped, ring_bytes, &durations);
        for _ in 0..SETTLING_ROUNDS {
            for (index, &(start, end)) in pass.computing.iter().enumerate() {
                let plain = self.units[index].compute_ms;
                let extra = (beside_copies[index] - plain).max(0.0);
                durations[index] = plain + extra * overlap_fraction(start, end, &pass.copying);
            }
            pass = self.replay(swapped, ring_bytes, &durations);
        }
        pass.pass_ms
    }

    fn replay(&self, swapped: &[bool], ring_bytes: u64, durations: &[f64]) -> ReplayedPass {
        let order: Vec<usize> = (0..self.units.len()).filter(|&i| swapped[i]).collect();
        let pieces: Vec<Vec<usize>> = (0..self.units.len())
            .map(|i| match self.pieces {
                Some(pieces) => pieces[i].iter().map(|&bytes| bytes as usize).collect(),
                None => vec![self.units[i].bytes as usize],
            })
            .collect();
        let mut pipeline = Pipeline::new(
            order.clone(),
            order.iter().map(|&i| pieces[i].clone()).collect(),
            ring_bytes as usize,
        );
        let mut device = Device::default();
        let mut pass_start = 0.0;
        let mut computing = vec![(0.0, 0.0); self.units.len()];
        for _ in 0..=WARM_PASSES {
            pass_start = device.compute_done;
            for (index, &duration) in durations.iter().enumerate() {
                let start = if swapped[index] {
                    let acquired = pipeline.acquire(index).expect("every swapped unit is in the schedule");
                    for copy in &acquired.copies {
                        for transfer in copy.transfers(&pieces[copy.unit]) {
                            let overwritten = transfer.waits.iter().map(|w| device.released[w]).fold(0.0, f64::max);
                            let start = device.copy_done.max(overwritten);
                            device.copy_done = start + transfer.length as f64 / self.bytes_per_second * 1e3;
                            device.copying.push((start, device.copy_done));
                        }
                        device.landed.insert(copy.placement, device.copy_done);
                    }
                    let start = device.compute_done.max(device.landed[&acquired.placement]);
                    device.released.insert(acquired.placement, start + duration);
                    pipeline.release(acquired.placement);
                    start
                } else {
                    device.compute_done
                };
                device.compute_done = start + duration;
                computing[index] = (start, device.compute_done);
            }
        }
        ReplayedPass {
            pass_ms: device.compute_done - pass_start,
            computing,
            copying: device.copying,
        }
    }
}

/// One replayed pass: its time, when each unit computed in it, and when the bus was busy.
struct ReplayedPass {
    pass_ms: f64,
    computing: Vec<(f64, f64)>,
    copying: Vec<(f64, f64)>,
}

/// The share of `start..end` that some copy in `copying` (in order, not overlapping) covers.
fn overlap_fraction(start: f64, end: f64, copying: &[(f64, f64)]) -> f64 {
    if end <= start {
        return 0.0;
    }
    let covered: f64 = copying
        .iter()
        .map(|&(from, to)| (to.min(end) - from.max(start)).max(0.0))
        .sum();
    covered / (end - start)
}

/// Where the device's two streams have got to, in milliseconds from the start.
#[derive(Default)]
struct Device {
    /// The compute stream has finished everything enqueued on it.
    compute_done: f64,
    /// The copy stream has finished everything enqueued on it.
    copy_done: f64,
    /// When each placement's copy lands.
    landed: HashMap<usize, f64>,
    /// When the unit computing on each placement finishes, so a copy may overwrite it.
    released: HashMap<usize, f64>,
    /// When the copy stream was busy.
    copying: Vec<(f64, f64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const GB: f64 = 1e9;

    fn unit(compute_ms: f64, bytes: u64) -> UnitCost {
        UnitCost { compute_ms, bytes }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn resident_units_take_their_compute() {
        let units = [unit(2.0, 1_000), unit(3.0, 1_000)];
        assert_eq!(Replay::new(&units, GB).pass_ms(&[false, false], 0), 5.0);
    }

    #[test]
    fn copies_hidden_behind_compute_cost_nothing() {
        // 1 ms copies behind 4 ms units, two in the ring.
        let units = [unit(4.0, 1_000_000); 4];
        let pass = Replay::new(&units, GB).pass_ms(&[true; 4], 2_000_000);
        assert!(close(pass, 16.0), "{pass}");
    }

    #[test]
    fn a_saturated_bus_sets_the_pace() {
        // 5 ms copies behind 1 ms units: each pass moves 20 ms of weights.
        let units = [unit(1.0, 5_000_000); 4];
        let pass = Replay::new(&units, GB).pass_ms(&[true; 4], 10_000_000);
        assert!(close(pass, 20.0), "{pass}");
    }

    #[test]
    fn a_small_ring_leaves_the_bus_idle_behind_long_resident_compute() {
        // A long resident unit, then three streamed ones whose copies (4 ms each) it could
        // hide if the ring held them all.
        let units = [
            unit(12.0, 0),
            unit(1.0, 4_000_000),
            unit(1.0, 4_000_000),
            unit(1.0, 4_000_000),
        ];
        let swapped = [false, true, true, true];
        let replay = Replay::new(&units, GB);
        let large = replay.pass_ms(&swapped, 12_000_000);
        assert!(close(large, 15.0), "{large}");
        // Room for one: the first copy hides behind the resident unit, and each of the others
        // waits for the unit before it to finish: 12 + 1 + 4 + 1 + 4 + 1.
        let small = replay.pass_ms(&swapped, 4_000_000);
        assert!(close(small, 23.0), "{small}");
    }

    #[test]
    fn copies_slow_only_the_compute_they_overlap() {
        // The streamed unit's 2 ms copy runs while the 10 ms resident unit computes, which
        // takes 2 ms more beside copies throughout: x = 10 + 2 * 2 / x, so x = 5 + sqrt(29).
        // The streamed unit computes with the bus idle and keeps its 1 ms.
        let units = [unit(10.0, 0), unit(1.0, 2_000_000)];
        let swapped = [false, true];
        let plain = Replay::new(&units, GB).pass_ms(&swapped, 2_000_000);
        let slowed = Replay::new(&units, GB)
            .slowed_by_copies(&[12.0, 5.0])
            .pass_ms(&swapped, 2_000_000);
        assert!(close(plain, 11.0), "{plain}");
        let expected = 5.0 + 29f64.sqrt() + 1.0;
        assert!((slowed - expected).abs() < 1e-3, "{slowed} against {expected}");
    }

    #[test]
    fn a_piece_waits_only_for_the_unit_under_it() {
        // A ring of 2 MB; unit 0 (1 MB, 3 ms) and unit 1 (2 MB, 1 ms) alternate. Copied whole,
        // unit 1 fills the ring and every copy waits for the unit before it to finish:
        // 1 + 3 + 2 + 1 ms, nothing overlapping. In two 1 MB pieces, the piece over the room unit
        // 0 does not hold copies while unit 0 computes: unit 0's copy (1 ms, after unit 1), its
        // compute (3 ms, beside the first piece of the next unit 1), the second piece (1 ms),
        // unit 1's compute (1 ms).
        let units = [unit(3.0, 1_000_000), unit(1.0, 2_000_000)];
        let swapped = [true, true];
        let whole = Replay::new(&units, GB).pass_ms(&swapped, 2_000_000);
        assert!(close(whole, 7.0), "{whole}");
        let pieces = [vec![1_000_000], vec![1_000_000, 1_000_000]];
        let in_pieces = Replay::new(&units, GB).in_pieces(&pieces).pass_ms(&swapped, 2_000_000);
        assert!(close(in_pieces, 6.0), "{in_pieces}");
    }

    #[test]
    fn never_beats_the_floor_of_any_schedule() {
        let units: Vec<UnitCost> = (0..12)
            .map(|i| unit(0.5 + (i % 4) as f64, 1_000_000 * (1 + (i * 7 % 5) as u64)))
            .collect();
        let swapped: Vec<bool> = (0..12).map(|i| i % 3 != 0).collect();
        let resident: u64 = units
            .iter()
            .zip(&swapped)
            .filter(|(_, s)| !**s)
            .map(|(u, _)| u.bytes)
            .sum();
        // The same units copied in two or three pieces.
        let pieces: Vec<Vec<u64>> = units
            .iter()
            .enumerate()
            .map(|(i, u)| {
                let parts = 2 + i as u64 % 2;
                let mut pieces = vec![u.bytes / parts; parts as usize];
                pieces[0] += u.bytes % parts;
                pieces
            })
            .collect();
        for ring in [5_000_000, 8_000_000, 20_000_000] {
            let floor = crate::floor::step_floor_ms(&units, resident + ring, GB);
            let whole = Replay::new(&units, GB).pass_ms(&swapped, ring);
            let in_pieces = Replay::new(&units, GB).in_pieces(&pieces).pass_ms(&swapped, ring);
            for pass in [whole, in_pieces] {
                assert!(pass >= floor - 1e-9, "ring {ring}: {pass} under the floor {floor}");
            }
        }
    }
}
