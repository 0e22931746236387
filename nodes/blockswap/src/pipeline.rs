//! The prefetch schedule of the streaming path, apart from any device: which swapped unit is
//! copied into which device slot, and when.
//!
//! Swapped units run in a fixed order every forward pass. With `prefetch` = P there are P + 1
//! slots: the unit computing holds one, the next P swapped units (wrapping into the next pass)
//! are in flight in the others. A unit asked for out of order (the first pass, or a pass cut
//! short by cancellation) restarts the schedule from it; copies already issued stay correct
//! because every copy into a slot waits for the slot's last user to finish.

use std::collections::{HashMap, VecDeque};

/// A copy to issue: `unit` into device slot `slot`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Copy {
    /// The unit whose weights are copied.
    pub unit: usize,
    /// The device slot they go into.
    pub slot: usize,
}

/// What a unit needs when it is about to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acquired {
    /// The slot holding the unit's weights (once its copy has landed).
    pub slot: usize,
    /// Copies to issue now, in order; the unit's own copy first when it was not in flight.
    pub copies: Vec<Copy>,
}

/// The schedule's state.
#[derive(Debug)]
pub struct Pipeline {
    /// Swapped units in execution order.
    order: Vec<usize>,
    /// Position of each swapped unit in `order`.
    position: HashMap<usize, usize>,
    /// Copies issued and not yet acquired, oldest first: (position in `order`, slot).
    in_flight: VecDeque<(usize, usize)>,
    slots: usize,
    /// The slot the next copy goes into.
    next_slot: usize,
}

impl Pipeline {
    /// A schedule for `order` (the swapped units in execution order) with `prefetch` units in
    /// flight ahead of the one computing.
    pub fn new(order: Vec<usize>, prefetch: usize) -> Self {
        let position = order.iter().enumerate().map(|(p, &unit)| (unit, p)).collect();
        let slots = prefetch.min(order.len().saturating_sub(1)) + 1;
        Self {
            order,
            position,
            in_flight: VecDeque::new(),
            slots,
            next_slot: 0,
        }
    }

    /// Device slots the schedule uses: prefetch + 1, fewer when fewer units are swapped.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// `unit` is about to run: where its weights are, and which copies to issue now.
    /// `None` when `unit` is not swapped.
    pub fn acquire(&mut self, unit: usize) -> Option<Acquired> {
        let position = *self.position.get(&unit)?;
        let mut copies = Vec::new();
        let slot = match self.in_flight.front() {
            Some(&(p, slot)) if p == position => {
                self.in_flight.pop_front();
                slot
            }
            _ => {
                self.in_flight.clear();
                let slot = self.take_slot();
                copies.push(Copy { unit, slot });
                slot
            }
        };
        let mut last = self.in_flight.back().map_or(position, |&(p, _)| p);
        while self.in_flight.len() + 1 < self.slots {
            last = (last + 1) % self.order.len();
            let slot = self.take_slot();
            self.in_flight.push_back((last, slot));
            copies.push(Copy {
                unit: self.order[last],
                slot,
            });
        }
        Some(Acquired { slot, copies })
    }

    fn take_slot(&mut self) -> usize {
        let slot = self.next_slot;
        self.next_slot = (self.next_slot + 1) % self.slots;
        slot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copies(acquired: &Acquired) -> Vec<(usize, usize)> {
        acquired.copies.iter().map(|c| (c.unit, c.slot)).collect()
    }

    #[test]
    fn resident_units_need_nothing() {
        let mut pipeline = Pipeline::new(vec![2, 5, 7], 1);
        assert_eq!(pipeline.acquire(3), None);
    }

    #[test]
    fn the_first_unit_is_copied_with_the_next_ones_behind_it() {
        let mut pipeline = Pipeline::new(vec![2, 5, 7, 9], 2);
        let first = pipeline.acquire(2).unwrap();
        assert_eq!(first.slot, 0);
        assert_eq!(copies(&first), vec![(2, 0), (5, 1), (7, 2)]);
        let second = pipeline.acquire(5).unwrap();
        assert_eq!(second.slot, 1);
        assert_eq!(
            copies(&second),
            vec![(9, 0)],
            "the next copy reuses the slot the first unit left"
        );
    }

    #[test]
    fn prefetch_wraps_into_the_next_pass() {
        let mut pipeline = Pipeline::new(vec![1, 2, 3], 1);
        let mut issued = Vec::new();
        for unit in [1, 2, 3, 1, 2, 3] {
            let acquired = pipeline.acquire(unit).unwrap();
            issued.extend(copies(&acquired));
        }
        assert_eq!(issued, vec![(1, 0), (2, 1), (3, 0), (1, 1), (2, 0), (3, 1), (1, 0)]);
    }

    #[test]
    fn no_copy_overwrites_a_unit_still_waiting_or_computing() {
        for prefetch in 0..5 {
            let order = vec![0, 3, 4, 8, 9, 11];
            let mut pipeline = Pipeline::new(order.clone(), prefetch);
            // Slots holding copies not yet acquired, with their units.
            let mut waiting: HashMap<usize, usize> = HashMap::new();
            for unit in order.iter().cycle().take(40).copied() {
                let acquired = pipeline.acquire(unit).unwrap();
                if let Some(own) = acquired.copies.iter().find(|c| c.unit == unit) {
                    assert_eq!(own.slot, acquired.slot);
                } else {
                    assert_eq!(
                        waiting.remove(&acquired.slot),
                        Some(unit),
                        "prefetch {prefetch}: unit {unit} not where it was copied"
                    );
                }
                for copy in acquired.copies.iter().filter(|c| c.unit != unit) {
                    assert_ne!(
                        copy.slot, acquired.slot,
                        "prefetch {prefetch}: copy into the computing unit's slot"
                    );
                    assert!(
                        !waiting.contains_key(&copy.slot),
                        "prefetch {prefetch}: copy over a waiting unit"
                    );
                    waiting.insert(copy.slot, copy.unit);
                }
                assert!(waiting.len() <= prefetch);
            }
            assert!(pipeline.slots() <= prefetch + 1);
        }
    }

    #[test]
    fn an_out_of_order_unit_restarts_the_schedule() {
        let mut pipeline = Pipeline::new(vec![1, 2, 3, 4], 1);
        pipeline.acquire(1).unwrap();
        pipeline.acquire(2).unwrap();
        // A cancelled pass: the next pass starts over at unit 1, which is not in flight.
        let restarted = pipeline.acquire(1).unwrap();
        assert_eq!(copies(&restarted), vec![(1, restarted.slot), (2, 1 - restarted.slot)]);
    }

    #[test]
    fn prefetch_is_capped_by_the_swapped_units() {
        let mut pipeline = Pipeline::new(vec![4], 8);
        assert_eq!(pipeline.slots(), 1);
        let first = pipeline.acquire(4).unwrap();
        assert_eq!(copies(&first), vec![(4, 0)]);
        let again = pipeline.acquire(4).unwrap();
        assert_eq!(
            copies(&again),
            vec![(4, 0)],
            "one slot: each pass copies the unit again"
        );
    }
}
