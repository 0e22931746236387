//! The streaming path's device operations, in the order they are issued, as plain data: which
//! copy waits for which release, and which compute waits for which copy. The CUDA streamer
//! carries them out with two streams and an event pair per placement; the tests check every
//! order they can produce against a model of those two streams, so the safety of the unsafe
//! copies is tested without a GPU.

use crate::pipeline::{Pipeline, Transfer};
use std::collections::{HashMap, HashSet};

/// One operation, on the copy stream or the compute stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamOp {
    /// The copy stream marks `placement` free: its copy was abandoned, and nothing computes on it.
    FreeOnCopy(usize),
    /// A copy of `unit` into `placement` starts: the placement's events are new.
    CopyStarts {
        /// The placement copied into.
        placement: usize,
        /// The unit copied.
        unit: usize,
    },
    /// The copy stream waits until `placement` is free.
    CopyWaitsFree(usize),
    /// A transfer of the unit of the copy that started last.
    Transfer(Transfer),
    /// The copy stream marks `placement` ready: its copy has landed.
    CopyReady(usize),
    /// The compute stream waits until `placement` is ready.
    ComputeWaitsReady(usize),
    /// The compute stream marks `placement` free: the unit computing on it was released.
    FreeOnCompute(usize),
}

/// A unit given to the compute stream: the operations that get its weights there, in order,
/// its placement and where its pieces start in the ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acquisition {
    /// The operations to issue, in order.
    pub ops: Vec<StreamOp>,
    /// The unit's placement.
    pub placement: usize,
    /// Where each of its pieces starts in the ring, in elements.
    pub starts: Vec<usize>,
}

/// The prefetch schedule ([`Pipeline`]) with the unit computing now and the placements whose
/// events exist, turned into [`StreamOp`]s.
#[derive(Debug)]
pub struct StreamSchedule {
    pipeline: Pipeline,
    /// Piece sizes of each swapped unit, in elements.
    pieces: HashMap<usize, Vec<usize>>,
    /// The unit computing and its placement.
    current: Option<(usize, usize)>,
    /// Placements whose events exist: copied, and not yet forgotten.
    evented: HashSet<usize>,
}

impl StreamSchedule {
    /// A schedule for `order` (the swapped units in execution order, made of `pieces` of so many
    /// elements each) with a ring of `capacity` elements, at least the largest unit.
    pub fn new(order: Vec<usize>, pieces: Vec<Vec<usize>>, capacity: usize) -> Self {
        let sizes = order.iter().copied().zip(pieces.iter().cloned()).collect();
        Self {
            pipeline: Pipeline::new(order, pieces, capacity),
            pieces: sizes,
            current: None,
            evented: HashSet::new(),
        }
    }

    /// Elements of device memory the ring needs.
    pub fn capacity(&self) -> usize {
        self.pipeline.capacity()
    }

    /// `unit` is about to compute: the operations that bring its weights (releasing a unit
    /// acquired and never released first, as after a failed pass); `None` when it is not swapped.
    pub fn acquire(&mut self, unit: usize) -> Option<Acquisition> {
        if !self.pieces.contains_key(&unit) {
            return None;
        }
        let mut ops = self
            .current
            .map_or_else(Vec::new, |(dangling, _)| self.release(dangling));
        let acquired = self.pipeline.acquire(unit)?;
        // Nothing computes on an abandoned copy; copies that overwrite it follow it on the copy
        // stream.
        ops.extend(
            acquired
                .abandoned
                .iter()
                .filter(|placement| self.evented.contains(placement))
                .map(|&placement| StreamOp::FreeOnCopy(placement)),
        );
        for copy in &acquired.copies {
            ops.push(StreamOp::CopyStarts {
                placement: copy.placement,
                unit: copy.unit,
            });
            for transfer in copy.transfers(&self.pieces[&copy.unit]) {
                ops.extend(
                    transfer
                        .waits
                        .iter()
                        .filter(|placement| self.evented.contains(placement))
                        .map(|&placement| StreamOp::CopyWaitsFree(placement)),
                );
                ops.push(StreamOp::Transfer(transfer));
            }
            ops.push(StreamOp::CopyReady(copy.placement));
            self.evented.insert(copy.placement);
        }
        ops.push(StreamOp::ComputeWaitsReady(acquired.placement));
        self.current = Some((unit, acquired.placement));
        let live: HashSet<usize> = self.pipeline.live_placements().collect();
        self.evented.retain(|placement| live.contains(placement));
        Some(Acquisition {
            ops,
            placement: acquired.placement,
            starts: acquired.starts,
        })
    }

    /// The compute stream has been given all the work on `unit`'s weights: the operation that
    /// lets later copies overwrite them once that work has run; none when `unit` is not the one
    /// computing.
    pub fn release(&mut self, unit: usize) -> Vec<StreamOp> {
        match self.current {
            Some((current, placement)) if current == unit => {
                self.pipeline.release(placement);
                self.current = None;
                vec![StreamOp::FreeOnCompute(placement)]
            }
            _ => Vec::new(),
        }
    }

    /// Whether `placement`'s events may still be waited on; the others can be dropped.
    pub fn is_evented(&self, placement: usize) -> bool {
        self.evented.contains(&placement)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which stream an operation runs on.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Stream {
        Copy,
        Compute,
    }

    /// A point in the two streams' partial order: how far each stream had run when it happened.
    type Clock = [usize; 2];

    fn index(stream: Stream) -> usize {
        match stream {
            Stream::Copy => 0,
            Stream::Compute => 1,
        }
    }

    fn happens_before(a: Clock, b: Clock) -> bool {
        a[0] <= b[0] && a[1] <= b[1]
    }

    /// The two streams as the CUDA driver runs them: each in issue order, an event wait making a
    /// stream wait for the last record of that event issued before the wait (a wait on an event
    /// never recorded waits for nothing). Checks, as operations arrive, that no transfer
    /// overwrites ring memory a unit still computes on or has yet to compute on, and that the
    /// compute stream reads a unit only after all of its transfers.
    #[derive(Default)]
    struct TwoStreams {
        clocks: [Clock; 2],
        /// Each placement's last recorded ready and free events.
        ready: HashMap<usize, Clock>,
        free: HashMap<usize, Clock>,
        /// Each placement's transfers: the ring ranges written and when.
        written: HashMap<usize, Vec<(usize, usize, Clock)>>,
        /// The placement whose copy started last.
        copying: Option<usize>,
        /// Placements whose copy landed and that will still be read, or are being read.
        awaited: HashSet<usize>,
        /// The placement the compute stream reads, and from when.
        computing: Option<(usize, Clock)>,
        /// Placements read and released: when their reads ended.
        read_until: HashMap<usize, Clock>,
        transfers: usize,
    }

    impl TwoStreams {
        fn tick(&mut self, stream: Stream) -> Clock {
            self.clocks[index(stream)][index(stream)] += 1;
            self.clocks[index(stream)]
        }

        fn wait(&mut self, stream: Stream, event: Option<Clock>) {
            if let Some(event) = event {
                let clock = &mut self.clocks[index(stream)];
                *clock = [clock[0].max(event[0]), clock[1].max(event[1])];
            }
        }

        fn overlaps(a: (usize, usize), b: (usize, usize)) -> bool {
            a.0 < b.1 && b.0 < a.1
        }

        fn run(&mut self, op: &StreamOp) {
            match op {
                StreamOp::FreeOnCopy(placement) => {
                    let at = self.tick(Stream::Copy);
                    self.free.insert(*placement, at);
                    self.awaited.remove(placement);
                }
                StreamOp::CopyStarts { placement, .. } => {
                    self.ready.remove(placement);
                    self.free.remove(placement);
                    self.copying = Some(*placement);
                }
                StreamOp::CopyWaitsFree(placement) => {
                    let event = self.free.get(placement).copied();
                    self.wait(Stream::Copy, event);
                }
                StreamOp::Transfer(transfer) => {
                    let at = self.tick(Stream::Copy);
                    let range = (transfer.start, transfer.start + transfer.length);
                    let target = self.copying.expect("a transfer belongs to a copy");
                    for (&placement, writes) in &self.written {
                        if placement == target || !writes.iter().any(|&(s, e, _)| Self::overlaps((s, e), range)) {
                            continue;
                        }
                        assert!(
                            !self.awaited.contains(&placement),
                            "a transfer into placement {target} overwrites placement {placement}, still to be read"
                        );
                        if let Some(&until) = self.read_until.get(&placement) {
                            assert!(
                                happens_before(until, at),
                                "a transfer into placement {target} overwrites placement {placement} before its \
                                 reads are done"
                            );
                        }
                    }
                    self.written.entry(target).or_default().push((range.0, range.1, at));
                    self.transfers += 1;
                }
                StreamOp::CopyReady(placement) => {
                    let at = self.tick(Stream::Copy);
                    self.ready.insert(*placement, at);
                    self.awaited.insert(*placement);
                }
                StreamOp::ComputeWaitsReady(placement) => {
                    let event = self.ready.get(placement).copied();
                    self.wait(Stream::Compute, event);
                    let at = self.tick(Stream::Compute);
                    for &(_, _, written) in self.written.get(placement).into_iter().flatten() {
                        assert!(
                            happens_before(written, at),
                            "placement {placement} is read before its transfers land"
                        );
                    }
                    self.computing = Some((*placement, at));
                }
                StreamOp::FreeOnCompute(placement) => {
                    let at = self.tick(Stream::Compute);
                    assert_eq!(
                        self.computing.map(|(p, _)| p),
                        Some(*placement),
                        "only the unit computing is released"
                    );
                    self.computing = None;
                    self.free.insert(*placement, at);
                    self.read_until.insert(*placement, at);
                    self.awaited.remove(placement);
                }
            }
            // Ring memory written by a placement nobody will read again is no longer its.
            let live: HashSet<usize> = (self.awaited.iter().copied())
                .chain(self.computing.map(|(p, _)| p))
                .chain(self.copying)
                .collect();
            self.written
                .retain(|placement, _| live.contains(placement) || self.read_until.contains_key(placement));
        }
    }

    /// Units of uneven sizes (in elements, one piece per tensor), as a model's blocks are.
    fn units() -> (Vec<usize>, Vec<Vec<usize>>) {
        let pieces = vec![
            vec![64, 64],
            vec![256, 128, 64],
            vec![32],
            vec![512, 64],
            vec![128, 128, 128],
            vec![96],
        ];
        ((0..pieces.len()).collect(), pieces)
    }

    /// Runs `passes` (each a list of units acquired, released unless the pass stops at them)
    /// through a schedule with a ring of `capacity`, every operation through the two streams.
    fn stream(capacity: usize, passes: &[Vec<usize>]) -> TwoStreams {
        let (order, pieces) = units();
        let mut schedule = StreamSchedule::new(order, pieces, capacity);
        let mut streams = TwoStreams::default();
        for pass in passes {
            for &unit in pass {
                let acquisition = schedule.acquire(unit).expect("a swapped unit");
                acquisition.ops.iter().for_each(|op| streams.run(op));
                schedule.release(unit).iter().for_each(|op| streams.run(op));
            }
        }
        streams
    }

    #[test]
    fn a_schedule_with_nothing_swapped_copies_nothing() {
        // What a store streaming only the context projections holds.
        let mut schedule = StreamSchedule::new(Vec::new(), Vec::new(), 0);
        assert_eq!(schedule.capacity(), 0);
        for unit in 0..3 {
            assert!(schedule.acquire(unit).is_none(), "unit {unit} is resident");
            assert!(schedule.release(unit).is_empty());
        }
    }

    #[test]
    fn full_passes_never_overwrite_weights_in_use_or_read_them_early() {
        let pass: Vec<usize> = (0..6).collect();
        for capacity in [640, 700, 900, 1500, 4000] {
            let streams = stream(capacity, &[pass.clone(), pass.clone(), pass.clone()]);
            assert!(streams.transfers >= 18, "{capacity}: every unit is copied every pass");
        }
    }

    #[test]
    fn passes_cut_short_and_restarted_stay_ordered() {
        let whole: Vec<usize> = (0..6).collect();
        let passes = [whole.clone(), vec![0, 1, 2], vec![3, 4], whole.clone(), vec![5], whole];
        for capacity in [640, 900, 1500] {
            stream(capacity, &passes);
        }
    }

    #[test]
    fn a_unit_acquired_and_never_released_is_released_by_the_next_acquisition() {
        let (order, pieces) = units();
        let mut schedule = StreamSchedule::new(order, pieces, 900);
        let mut streams = TwoStreams::default();
        for unit in [0, 1, 2] {
            // The pass fails inside each unit: nothing releases it.
            schedule
                .acquire(unit)
                .unwrap()
                .ops
                .iter()
                .for_each(|op| streams.run(op));
        }
        let next = schedule.acquire(0).unwrap();
        assert!(
            matches!(next.ops.first(), Some(StreamOp::FreeOnCompute(_))),
            "the dangling unit is released first: {:?}",
            next.ops
        );
        next.ops.iter().for_each(|op| streams.run(op));
    }

    #[test]
    fn the_model_catches_a_copy_that_skips_its_wait() {
        let (order, pieces) = units();
        let mut schedule = StreamSchedule::new(order, pieces, 640);
        let mut streams = TwoStreams::default();
        let pass: Vec<usize> = (0..6).collect();
        // Every wait before the first transfer that waits is left out.
        let (mut dropped, mut dropping) = (false, true);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for _ in 0..2 {
                for &unit in &pass {
                    for op in schedule.acquire(unit).unwrap().ops {
                        match op {
                            StreamOp::CopyWaitsFree(_) if dropping => {
                                dropped = true;
                                continue;
                            }
                            StreamOp::Transfer(_) if dropped => dropping = false,
                            _ => {}
                        }
                        streams.run(&op);
                    }
                    schedule.release(unit).iter().for_each(|op| streams.run(op));
                }
            }
        }));
        assert!(dropped, "a ring of 640 makes copies wait");
        assert!(
            caught.is_err(),
            "a transfer that did not wait overwrites weights still in use"
        );
    }

    #[test]
    fn units_not_swapped_have_no_operations_and_unknown_releases_do_nothing() {
        let mut schedule = StreamSchedule::new(vec![2, 4], vec![vec![8], vec![8]], 4);
        assert_eq!(schedule.capacity(), 8, "the ring holds at least the largest unit");
        assert_eq!(schedule.acquire(3), None);
        assert_eq!(schedule.release(4), Vec::<StreamOp>::new());
        let first = schedule.acquire(2).unwrap();
        assert!(schedule.is_evented(first.placement));
        assert_eq!(first.ops.last(), Some(&StreamOp::ComputeWaitsReady(first.placement)));
        assert_eq!(
            schedule.acquire(3),
            None,
            "a unit not swapped leaves the one computing alone"
        );
        assert_eq!(schedule.release(2), [StreamOp::FreeOnCompute(first.placement)]);
    }
}
