//! The prefetch schedule of the streaming path, apart from any device: where in the device's
//! transfer ring each swapped unit is copied, and when.
//!
//! Swapped units run in a fixed order every forward pass. Their copies are laid end to end in a
//! ring of device memory, wrapping to its start when a unit does not fit before its end, so small
//! units pack together and the copies run as far ahead as the ring has room: a copy may go where
//! every unit it overwrites has been released by the compute stream. With `prefetch` = P the ring
//! holds P + 1 of the largest units, the room P + 1 fixed slots would take. A unit asked for out
//! of order (the first pass, or a pass cut short by cancellation) restarts the schedule from it;
//! copies already issued stay correct because every copy waits for the units it overwrites and
//! all copies run in order on one stream.

use std::collections::{HashMap, VecDeque};

/// A copy to issue: `unit` into the ring at `start`, once the placements in `waits` (the
/// units it overwrites) are released.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Copy {
    /// The unit whose weights are copied.
    pub unit: usize,
    /// This copy's placement, which names its events.
    pub placement: usize,
    /// Where in the ring it goes, in elements.
    pub start: usize,
    /// Placements whose release must precede the copy.
    pub waits: Vec<usize>,
}

/// What a unit needs when it is about to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acquired {
    /// The unit's placement: its weights are in the ring at `start` once that copy has landed.
    pub placement: usize,
    /// Where in the ring its weights are, in elements.
    pub start: usize,
    /// Copies to issue now, in order; the unit's own copy first when it was not in flight.
    pub copies: Vec<Copy>,
    /// Placements copied ahead and then skipped by a restart: nothing will compute on them.
    pub abandoned: Vec<usize>,
}

/// A stretch of the ring and the placement that last wrote it.
#[derive(Clone, Copy, Debug)]
struct Occupant {
    start: usize,
    end: usize,
    placement: usize,
    released: bool,
}

/// The schedule's state.
#[derive(Debug)]
pub struct Pipeline {
    /// Swapped units in execution order.
    order: Vec<usize>,
    /// Elements of each swapped unit, by position in `order`.
    sizes: Vec<usize>,
    /// Position of each swapped unit in `order`.
    position: HashMap<usize, usize>,
    /// Elements of the ring.
    capacity: usize,
    /// Copies issued and not yet acquired, oldest first: (position in `order`, placement, start).
    in_flight: VecDeque<(usize, usize, usize)>,
    /// Who wrote which part of the ring.
    occupants: Vec<Occupant>,
    /// Where the next copy goes if it fits before the ring's end.
    next_start: usize,
    next_placement: usize,
}

impl Pipeline {
    /// A schedule for `order` (the swapped units in execution order, `sizes` elements each) with
    /// a ring of room for `prefetch + 1` of the largest.
    pub fn new(order: Vec<usize>, sizes: Vec<usize>, prefetch: usize) -> Self {
        let capacity = sizes.iter().copied().max().unwrap_or(0) * (prefetch + 1);
        Self::with_capacity(order, sizes, capacity)
    }

    /// A schedule for `order` (`sizes` elements each) with a ring of `capacity` elements, at
    /// least the largest unit.
    pub fn with_capacity(order: Vec<usize>, sizes: Vec<usize>, capacity: usize) -> Self {
        let position = order.iter().enumerate().map(|(p, &unit)| (unit, p)).collect();
        let capacity = capacity.max(sizes.iter().copied().max().unwrap_or(0));
        Self {
            order,
            sizes,
            position,
            capacity,
            in_flight: VecDeque::new(),
            occupants: Vec::new(),
            next_start: 0,
            next_placement: 0,
        }
    }

    /// Elements of device memory the ring needs.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// `unit` is about to run: where its weights are, and which copies to issue now.
    /// `None` when `unit` is not swapped.
    pub fn acquire(&mut self, unit: usize) -> Option<Acquired> {
        let position = *self.position.get(&unit)?;
        let mut copies = Vec::new();
        let mut abandoned = Vec::new();
        let (placement, start) = match self.in_flight.front() {
            Some(&(p, placement, start)) if p == position => {
                self.in_flight.pop_front();
                (placement, start)
            }
            _ => {
                abandoned.extend(self.in_flight.drain(..).map(|(_, placement, _)| placement));
                for occupant in &mut self.occupants {
                    occupant.released = true;
                }
                let copy = self
                    .place(position)
                    .expect("a ring with every unit released has room for any unit");
                let placed = (copy.placement, copy.start);
                copies.push(copy);
                placed
            }
        };
        let mut last = self.in_flight.back().map_or(position, |&(p, _, _)| p);
        while self.in_flight.len() + 1 < self.order.len() {
            let next = (last + 1) % self.order.len();
            let Some(copy) = self.place(next) else {
                break;
            };
            self.in_flight.push_back((next, copy.placement, copy.start));
            copies.push(copy);
            last = next;
        }
        Some(Acquired {
            placement,
            start,
            copies,
            abandoned,
        })
    }

    /// The compute stream has been given all the work on `placement`'s weights: later copies may
    /// overwrite them (after that work, by the release event).
    pub fn release(&mut self, placement: usize) {
        for occupant in self.occupants.iter_mut().filter(|o| o.placement == placement) {
            occupant.released = true;
        }
    }

    /// Placements whose events may still be waited on: those in flight, computing, or holding
    /// part of the ring.
    pub fn live_placements(&self) -> impl Iterator<Item = usize> + '_ {
        self.occupants.iter().map(|o| o.placement)
    }

    /// Places the unit at `position` after the last copy, or at the ring's start when it does not
    /// fit before the end; `None` while a unit it would overwrite is not released.
    fn place(&mut self, position: usize) -> Option<Copy> {
        let size = self.sizes[position];
        let start = if self.next_start + size <= self.capacity {
            self.next_start
        } else {
            0
        };
        let end = start + size;
        let overlaps = |o: &Occupant| o.start < end && start < o.end;
        if self.occupants.iter().filter(|o| overlaps(o)).any(|o| !o.released) {
            return None;
        }
        let mut waits: Vec<usize> = self
            .occupants
            .iter()
            .filter(|o| overlaps(o))
            .map(|o| o.placement)
            .collect();
        waits.sort_unstable();
        waits.dedup();
        let mut remaining = Vec::with_capacity(self.occupants.len() + 2);
        for occupant in self.occupants.drain(..) {
            if !overlaps(&occupant) {
                remaining.push(occupant);
                continue;
            }
            if occupant.start < start {
                remaining.push(Occupant { end: start, ..occupant });
            }
            if occupant.end > end {
                remaining.push(Occupant { start: end, ..occupant });
            }
        }
        let placement = self.next_placement;
        self.next_placement += 1;
        remaining.push(Occupant {
            start,
            end,
            placement,
            released: false,
        });
        self.occupants = remaining;
        self.next_start = end;
        Some(Copy {
            unit: self.order[position],
            placement,
            start,
            waits,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units(copies: &[Copy]) -> Vec<usize> {
        copies.iter().map(|c| c.unit).collect()
    }

    /// Runs `passes` passes over `order`, checking that no copy lands on weights still in flight
    /// or computing; returns every copy issued.
    fn run(order: &[usize], sizes: &[usize], prefetch: usize, passes: usize) -> Vec<Copy> {
        let mut pipeline = Pipeline::new(order.to_vec(), sizes.to_vec(), prefetch);
        // Ring ranges of weights copied and not yet released: placement -> (start, end).
        let mut held: HashMap<usize, (usize, usize)> = HashMap::new();
        let size_of = |unit: usize| sizes[order.iter().position(|&u| u == unit).unwrap()];
        let mut issued = Vec::new();
        for &unit in order.iter().cycle().take(order.len() * passes) {
            let acquired = pipeline.acquire(unit).unwrap();
            for copy in &acquired.copies {
                let end = copy.start + size_of(copy.unit);
                assert!(end <= pipeline.capacity(), "copy past the ring's end");
                for (&other, &(s, e)) in &held {
                    assert!(
                        e <= copy.start || end <= s,
                        "unit {} at {}..{end} overwrites placement {other} at {s}..{e}",
                        copy.unit,
                        copy.start
                    );
                }
                held.insert(copy.placement, (copy.start, end));
            }
            assert!(held.contains_key(&acquired.placement), "unit {unit} was never copied");
            pipeline.release(acquired.placement);
            held.remove(&acquired.placement);
            issued.extend(acquired.copies);
        }
        issued
    }

    #[test]
    fn resident_units_need_nothing() {
        let mut pipeline = Pipeline::new(vec![2, 5, 7], vec![4, 4, 4], 1);
        assert_eq!(pipeline.acquire(3), None);
    }

    #[test]
    fn equal_units_behave_as_fixed_slots() {
        let mut pipeline = Pipeline::new(vec![2, 5, 7, 9], vec![8, 8, 8, 8], 2);
        let first = pipeline.acquire(2).unwrap();
        assert_eq!(units(&first.copies), vec![2, 5, 7]);
        assert_eq!(first.copies.iter().map(|c| c.start).collect::<Vec<_>>(), vec![0, 8, 16]);
        pipeline.release(first.placement);
        let second = pipeline.acquire(5).unwrap();
        assert_eq!(second.start, 8);
        assert_eq!(units(&second.copies), vec![9]);
        assert_eq!(
            second.copies[0].start, 0,
            "the next copy reuses the room the first unit left"
        );
        assert_eq!(second.copies[0].waits, vec![first.placement]);
    }

    #[test]
    fn small_units_pack_and_run_further_ahead() {
        // Room for two of the largest (8): the three small units after it fit at once.
        let order = vec![0, 1, 2, 3, 4];
        let mut pipeline = Pipeline::new(order, vec![8, 2, 2, 2, 8], 1);
        let first = pipeline.acquire(0).unwrap();
        assert_eq!(units(&first.copies), vec![0, 1, 2, 3]);
        pipeline.release(first.placement);
        let second = pipeline.acquire(1).unwrap();
        assert_eq!(units(&second.copies), vec![4], "unit 4 takes the room unit 0 left");
        assert_eq!(second.copies[0].start, 0);
        assert_eq!(second.copies[0].waits, vec![first.placement]);
    }

    #[test]
    fn no_copy_overwrites_weights_in_flight_or_computing() {
        let order = vec![0, 3, 4, 8, 9, 11, 12];
        let sizes = vec![5, 1, 8, 3, 3, 7, 2];
        for prefetch in 0..5 {
            let issued = run(&order, &sizes, prefetch, 6);
            assert!(issued.len() >= order.len() * 6, "every use copied");
        }
    }

    #[test]
    fn passes_cut_short_never_let_a_copy_overwrite_weights_in_use() {
        let order: Vec<usize> = (0..9).collect();
        let sizes = vec![3, 9, 1, 4, 4, 2, 8, 1, 6];
        let size_of = |unit: usize| sizes[unit];
        for prefetch in 0..4 {
            let mut pipeline = Pipeline::new(order.clone(), sizes.clone(), prefetch);
            let mut held: HashMap<usize, (usize, usize)> = HashMap::new();
            // A fixed pseudo-random walk: each pass stops after 1 to 9 units and the next starts
            // over at the first unit, as after a cancelled sampler step.
            let mut seed = 7u64 + prefetch as u64;
            for _ in 0..40 {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let length = 1 + (seed >> 33) as usize % order.len();
                for &unit in &order[..length] {
                    let acquired = pipeline.acquire(unit).unwrap();
                    for placement in &acquired.abandoned {
                        held.remove(placement);
                    }
                    for copy in &acquired.copies {
                        let end = copy.start + size_of(copy.unit);
                        assert!(end <= pipeline.capacity());
                        for &(s, e) in held.values() {
                            assert!(
                                e <= copy.start || end <= s,
                                "prefetch {prefetch}: a copy over weights in use"
                            );
                        }
                        held.insert(copy.placement, (copy.start, end));
                    }
                    assert!(held.contains_key(&acquired.placement), "unit {unit} was never copied");
                    pipeline.release(acquired.placement);
                    held.remove(&acquired.placement);
                }
            }
        }
    }

    #[test]
    fn prefetch_wraps_into_the_next_pass() {
        let issued = run(&[1, 2, 3], &[4, 4, 4], 1, 2);
        assert_eq!(units(&issued), vec![1, 2, 3, 1, 2, 3, 1]);
    }

    #[test]
    fn an_out_of_order_unit_restarts_the_schedule() {
        let mut pipeline = Pipeline::new(vec![1, 2, 3, 4], vec![4, 4, 4, 4], 1);
        let first = pipeline.acquire(1).unwrap();
        pipeline.release(first.placement);
        let second = pipeline.acquire(2).unwrap();
        pipeline.release(second.placement);
        // A cancelled pass: the next pass starts over at unit 1, while unit 3 was in flight.
        let restarted = pipeline.acquire(1).unwrap();
        assert_eq!(units(&restarted.copies), vec![1, 2]);
        assert_eq!(restarted.abandoned.len(), 1);
        assert_eq!(restarted.copies[0].placement, restarted.placement);
    }

    #[test]
    fn one_swapped_unit_is_copied_every_pass() {
        let mut pipeline = Pipeline::new(vec![4], vec![6], 8);
        for _ in 0..3 {
            let acquired = pipeline.acquire(4).unwrap();
            assert_eq!(units(&acquired.copies), vec![4]);
            pipeline.release(acquired.placement);
        }
    }
}
