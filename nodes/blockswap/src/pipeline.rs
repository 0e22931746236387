//! The prefetch schedule of the streaming path, apart from any device: where in the device's
//! transfer ring each swapped unit is copied, and when.
//!
//! Swapped units run in a fixed order every forward pass. A unit is copied as its pieces, its
//! tensors in the order they lie in host memory, laid end to end in a ring of device memory; a
//! piece that does not fit before the ring's end goes to its start, so the ring's end is not left
//! empty and small units pack together. Copies run as far ahead as the ring has room: a unit is
//! placed once every unit under it has been released by the compute stream, and each part of a
//! piece waits only for the unit under that part, so the bus fills the room of a finished unit
//! while the one after it still computes. The plan sizes the ring
//! ([`crate::SwapPlan::buffer_bytes`]).
//!
//! A unit asked for out of order (the first pass, or a pass cut short by cancellation) restarts
//! the schedule from it; copies already issued stay correct because every piece waits for the
//! units it overwrites and all copies run in order on one stream.

use candle_core::DType;
use std::collections::{HashMap, VecDeque};
use swapgraph_model::UnitSpec;

/// Tensor starts inside a packed unit and in the ring are aligned to this many bytes (what cuBLAS
/// and vector loads want).
pub const ALIGN_BYTES: usize = 256;

/// The pieces of `unit` in `dtype`: each tensor's elements, rounded up to [`ALIGN_BYTES`], in the
/// order they are packed in host memory.
pub fn tensor_pieces(unit: &UnitSpec, dtype: DType) -> Vec<usize> {
    let align = (ALIGN_BYTES / dtype.size_in_bytes()).max(1);
    unit.tensors
        .iter()
        .map(|(_, shape)| shape.elem_count().div_ceil(align) * align)
        .collect()
}

/// One piece of a copy: where in the ring it goes, and the placements it overwrites.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PieceCopy {
    /// Where in the ring the piece goes, in elements.
    pub start: usize,
    /// The placements under the piece, in ring order: each must be released before the part of
    /// the piece over it is copied.
    pub overwrites: Vec<Overwrite>,
}

/// A placement under a piece, and where in the ring the part of the piece over it begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Overwrite {
    /// The ring element, inside the piece, from which the piece lies over `placement`.
    pub from: usize,
    /// The placement overwritten.
    pub placement: usize,
}

/// A copy to issue: `unit`'s pieces into the ring, in order, each once the placements under it
/// are released.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Copy {
    /// The unit whose weights are copied.
    pub unit: usize,
    /// This copy's placement, which names its events.
    pub placement: usize,
    /// One per piece of the unit, in order.
    pub pieces: Vec<PieceCopy>,
}

impl Copy {
    /// The copy as transfers, given the unit's piece `sizes`. A transfer starts wherever a piece
    /// comes to a placement no earlier transfer waited for, so the part of a tensor over a unit
    /// that has finished is copied while the unit under the rest still computes; otherwise a
    /// stretch joins the transfer before it when it follows it in the ring. Each transfer lists
    /// only the placements no earlier transfer of the copy waited for.
    pub fn transfers(&self, sizes: &[usize]) -> Vec<Transfer> {
        let mut transfers: Vec<Transfer> = Vec::new();
        let mut waited: Vec<usize> = Vec::new();
        let mut offset = 0;
        for (piece, &size) in self.pieces.iter().zip(sizes) {
            // Where the piece's stretches begin in the ring, and what each newly waits for.
            let mut stretches: Vec<(usize, Vec<usize>)> = vec![(piece.start, Vec::new())];
            for overwrite in &piece.overwrites {
                if waited.contains(&overwrite.placement) {
                    continue;
                }
                waited.push(overwrite.placement);
                match stretches.last_mut() {
                    Some((from, waits)) if *from == overwrite.from => waits.push(overwrite.placement),
                    _ => stretches.push((overwrite.from, vec![overwrite.placement])),
                }
            }
            let end = piece.start + size;
            let ends = stretches.iter().skip(1).map(|(from, _)| *from).chain([end]);
            for ((from, waits), to) in stretches.iter().zip(ends) {
                let length = to - from;
                match transfers.last_mut() {
                    Some(last) if last.start + last.length == *from && waits.is_empty() => last.length += length,
                    _ => transfers.push(Transfer {
                        offset: offset + (from - piece.start),
                        start: *from,
                        length,
                        waits: waits.clone(),
                    }),
                }
            }
            offset += size;
        }
        transfers
    }
}

/// One host-to-device transfer of a copy: pieces, or parts of one, that lie end to end in host
/// memory and in the ring, after the placements it waits for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// Where it starts in the packed unit, in elements.
    pub offset: usize,
    /// Where it goes in the ring, in elements.
    pub start: usize,
    /// Elements it moves.
    pub length: usize,
    /// Placements whose release must precede it (and that no earlier transfer of the copy waited
    /// for).
    pub waits: Vec<usize>,
}

/// What a unit needs when it is about to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acquired {
    /// The unit's placement: its weights are in the ring at `starts` once that copy has landed.
    pub placement: usize,
    /// Where in the ring each of its pieces is, in elements.
    pub starts: Vec<usize>,
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

impl Occupant {
    fn overlaps(&self, start: usize, end: usize) -> bool {
        self.start < end && start < self.end
    }
}

/// A unit in flight: its position in `order`, its placement and where its pieces are.
#[derive(Debug)]
struct InFlight {
    position: usize,
    placement: usize,
    starts: Vec<usize>,
}

/// The schedule's state.
#[derive(Debug)]
pub struct Pipeline {
    /// Swapped units in execution order.
    order: Vec<usize>,
    /// Elements of each piece of each swapped unit, by position in `order`.
    pieces: Vec<Vec<usize>>,
    /// Position of each swapped unit in `order`.
    position: HashMap<usize, usize>,
    /// Elements of the ring.
    capacity: usize,
    /// Copies issued and not yet acquired, oldest first.
    in_flight: VecDeque<InFlight>,
    /// Who wrote which part of the ring.
    occupants: Vec<Occupant>,
    /// Where the next piece goes if it fits before the ring's end.
    next_start: usize,
    next_placement: usize,
}

impl Pipeline {
    /// A schedule for `order` (the swapped units in execution order, made of `pieces` of so many
    /// elements each) with a ring of `capacity` elements, at least the largest unit.
    pub fn new(order: Vec<usize>, pieces: Vec<Vec<usize>>, capacity: usize) -> Self {
        let position = order.iter().enumerate().map(|(p, &unit)| (unit, p)).collect();
        let largest = pieces.iter().map(|p| p.iter().sum()).max().unwrap_or(0);
        Self {
            order,
            pieces,
            position,
            capacity: capacity.max(largest),
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
        let (placement, starts) = match self.in_flight.front() {
            Some(next) if next.position == position => {
                let next = self.in_flight.pop_front()?;
                (next.placement, next.starts)
            }
            _ => {
                abandoned.extend(self.in_flight.drain(..).map(|f| f.placement));
                for occupant in &mut self.occupants {
                    occupant.released = true;
                }
                let copy = self
                    .place(position)
                    .expect("a ring with every unit released has room for any unit");
                let placed = (copy.placement, copy.pieces.iter().map(|p| p.start).collect());
                copies.push(copy);
                placed
            }
        };
        let mut last = self.in_flight.back().map_or(position, |f| f.position);
        while self.in_flight.len() + 1 < self.order.len() {
            let next = (last + 1) % self.order.len();
            let Some(copy) = self.place(next) else {
                break;
            };
            self.in_flight.push_back(InFlight {
                position: next,
                placement: copy.placement,
                starts: copy.pieces.iter().map(|p| p.start).collect(),
            });
            copies.push(copy);
            last = next;
        }
        Some(Acquired {
            placement,
            starts,
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

    /// Places the unit at `position` ([`Self::lay_out`]); `None` while a unit it would overwrite
    /// is not released.
    fn place(&mut self, position: usize) -> Option<Copy> {
        let ranges: Vec<(usize, usize)> = self
            .lay_out(position)
            .into_iter()
            .zip(&self.pieces[position])
            .map(|(start, &size)| (start, start + size))
            .collect();
        let held = |o: &Occupant| !o.released && ranges.iter().any(|&(start, end)| o.overlaps(start, end));
        if self.occupants.iter().any(held) {
            return None;
        }
        let pieces = ranges
            .iter()
            .map(|&(start, end)| PieceCopy {
                start,
                overwrites: self.placements_under(start, end),
            })
            .collect();
        let placement = self.next_placement;
        self.next_placement += 1;
        for &(start, end) in &ranges {
            self.vacate(start, end);
        }
        for (start, end) in contiguous_runs(&ranges) {
            self.occupants.push(Occupant {
                start,
                end,
                placement,
                released: false,
            });
        }
        if let Some(&(_, end)) = ranges.last() {
            self.next_start = end;
        }
        Some(Copy {
            unit: self.order[position],
            placement,
            pieces,
        })
    }

    /// Where the pieces of the unit at `position` go: end to end from where the last copy ended,
    /// a piece that does not fit before the ring's end going to its start; all from the ring's
    /// start when wrapping would lay the unit over its own first piece.
    fn lay_out(&self, position: usize) -> Vec<usize> {
        let sizes = &self.pieces[position];
        let from = |mut at: usize| -> Vec<usize> {
            sizes
                .iter()
                .map(|&size| {
                    if at + size > self.capacity {
                        at = 0;
                    }
                    let start = at;
                    at += size;
                    start
                })
                .collect()
        };
        let starts = from(self.next_start);
        let first = starts.first().copied().unwrap_or(0);
        let over_itself = starts
            .iter()
            .zip(sizes)
            .any(|(&start, &size)| start < first && start + size > first);
        if over_itself {
            from(0)
        } else {
            starts
        }
    }

    /// The placements holding any of `start..end`, in ring order, each from where it begins
    /// inside that range.
    fn placements_under(&self, start: usize, end: usize) -> Vec<Overwrite> {
        let mut under: Vec<Overwrite> = self
            .occupants
            .iter()
            .filter(|o| o.overlaps(start, end))
            .map(|o| Overwrite {
                from: o.start.max(start),
                placement: o.placement,
            })
            .collect();
        under.sort_unstable_by_key(|o| (o.from, o.placement));
        under
    }

    /// Forgets who held `start..end`, keeping the parts of occupants outside it.
    fn vacate(&mut self, start: usize, end: usize) {
        let mut remaining = Vec::with_capacity(self.occupants.len() + 2);
        for occupant in self.occupants.drain(..) {
            if !occupant.overlaps(start, end) {
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
        self.occupants = remaining;
    }
}

/// `ranges` (in order, not overlapping) with neighbours that touch joined.
fn contiguous_runs(ranges: &[(usize, usize)]) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::with_capacity(ranges.len());
    for &(start, end) in ranges {
        match runs.last_mut() {
            Some(last) if last.1 == start => last.1 = end,
            _ => runs.push((start, end)),
        }
    }
    runs
}

#[cfg(test)]
mod tests;
