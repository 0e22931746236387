//! The fastest a forward pass can run when only part of its weights fit on the device: the
//! yardstick a budget's step time is measured against.
//!
//! Streaming can hide copies behind compute, but not beat either. With a budget of B bytes for
//! weights (resident and in flight), take any stretch of consecutive units of the pass (passes
//! repeat, so a stretch may wrap from one pass into the next). When the stretch starts, at most
//! B of its bytes are on the device; the rest must cross the bus before the stretch ends. So the
//! stretch lasts at least max(its compute, (its bytes - B) / bandwidth), and the rest of the pass
//! at least its own compute. The floor is the largest such sum over all stretches; with B at or
//! above every weight it is the compute alone, and for the whole pass it includes
//! (weights - B) / bandwidth.
//!
//! This is what makes small budgets slower than their copies alone suggest: in a UNet the
//! high-resolution blocks compute long on few weights, and while they run the bus can only fill
//! the room the budget leaves for the deep blocks' weights.

/// One unit's compute time on the device and the bytes of its weights.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UnitCost {
    /// Compute time per pass, with its weights already on the device.
    pub compute_ms: f64,
    /// Bytes of the unit's weights.
    pub bytes: u64,
}

/// The lower bound on a pass's time over `units` (in execution order) with `budget` bytes of
/// device memory for weights and host-to-device copies at `bytes_per_second`.
pub fn step_floor_ms(units: &[UnitCost], budget: u64, bytes_per_second: f64) -> f64 {
    let total: f64 = units.iter().map(|u| u.compute_ms).sum();
    let mut floor = total;
    for start in 0..units.len() {
        let (mut compute, mut bytes) = (0.0, 0);
        for unit in units.iter().cycle().skip(start).take(units.len()) {
            compute += unit.compute_ms;
            bytes += unit.bytes;
            let copy_ms = bytes.saturating_sub(budget) as f64 / bytes_per_second * 1e3;
            floor = floor.max(total - compute + compute.max(copy_ms));
        }
    }
    floor
}

#[cfg(test)]
mod tests {
    use super::*;

    const GB: f64 = 1e9;

    fn unit(compute_ms: f64, bytes: u64) -> UnitCost {
        UnitCost { compute_ms, bytes }
    }

    #[test]
    fn a_budget_holding_every_weight_leaves_the_compute() {
        let units = [unit(10.0, 1_000), unit(5.0, 3_000)];
        assert_eq!(step_floor_ms(&units, 4_000, GB), 15.0);
    }

    #[test]
    fn light_units_cannot_hide_copies_the_budget_has_no_room_for() {
        // 16 ms on almost no weights, then 34 ms on 5 GB with a 2 GB budget at 50 GB/s: the
        // 3 GB that do not fit take 60 ms, and only while the heavy units run.
        let units = [unit(8.0, 0), unit(34.0, 5_000_000_000), unit(8.0, 0)];
        let floor = step_floor_ms(&units, 2_000_000_000, 50.0 * GB);
        assert!((floor - 76.0).abs() < 1e-9, "{floor}");
        // Over the whole pass copies alone would allow 60 ms, compute alone 50 ms.
        assert!(floor > 60.0);
    }

    #[test]
    fn stretches_wrap_from_one_pass_into_the_next() {
        // The heavy stretch is the end of one pass and the start of the next.
        let units = [unit(17.0, 2_500_000_000), unit(16.0, 0), unit(17.0, 2_500_000_000)];
        let floor = step_floor_ms(&units, 2_000_000_000, 50.0 * GB);
        assert!((floor - 76.0).abs() < 1e-9, "{floor}");
    }
}
