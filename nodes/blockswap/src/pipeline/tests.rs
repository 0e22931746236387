//! Tests of the prefetch schedule: placement in the ring, overwrites, transfers, restarts.

use super::*;

fn units(copies: &[Copy]) -> Vec<usize> {
    copies.iter().map(|c| c.unit).collect()
}

/// Every placement some piece of `copy` waits for, in order of first need.
fn waits(copy: &Copy) -> Vec<usize> {
    let mut placements: Vec<usize> = Vec::new();
    for overwrite in copy.pieces.iter().flat_map(|p| &p.overwrites) {
        if !placements.contains(&overwrite.placement) {
            placements.push(overwrite.placement);
        }
    }
    placements
}

/// The part of a piece from ring element `from` lies over `placement`.
fn over(from: usize, placement: usize) -> Overwrite {
    Overwrite { from, placement }
}

/// Each transfer as (offset, start, length, waits).
fn summary(transfers: Vec<Transfer>) -> Vec<(usize, usize, usize, Vec<usize>)> {
    transfers
        .into_iter()
        .map(|t| (t.offset, t.start, t.length, t.waits))
        .collect()
}

fn starts(copy: &Copy) -> Vec<usize> {
    copy.pieces.iter().map(|p| p.start).collect()
}

/// A schedule with a ring of room for `prefetch + 1` of the largest units.
fn with_prefetch(order: Vec<usize>, pieces: Vec<Vec<usize>>, prefetch: usize) -> Pipeline {
    let largest = pieces.iter().map(|p| p.iter().sum::<usize>()).max().unwrap_or(0);
    Pipeline::new(order, pieces, largest * (prefetch + 1))
}

/// Units of one piece each.
fn whole(sizes: &[usize]) -> Vec<Vec<usize>> {
    sizes.iter().map(|&size| vec![size]).collect()
}

/// Runs `passes` passes over `order`, checking that no piece lands outside the ring or on
/// weights still in flight or computing; returns every copy issued.
fn run(order: &[usize], pieces: &[Vec<usize>], prefetch: usize, passes: usize) -> Vec<Copy> {
    let mut pipeline = with_prefetch(order.to_vec(), pieces.to_vec(), prefetch);
    let mut held = Held::default();
    let mut issued = Vec::new();
    for &unit in order.iter().cycle().take(order.len() * passes) {
        let acquired = pipeline.acquire(unit).unwrap();
        for copy in &acquired.copies {
            held.copy(
                copy,
                &pieces[order.iter().position(|&u| u == copy.unit).unwrap()],
                pipeline.capacity(),
            );
        }
        assert!(held.0.contains_key(&acquired.placement), "unit {unit} was never copied");
        pipeline.release(acquired.placement);
        held.0.remove(&acquired.placement);
        issued.extend(acquired.copies);
    }
    issued
}

/// Ring ranges of weights copied and not yet released, by placement.
#[derive(Default)]
struct Held(HashMap<usize, Vec<(usize, usize)>>);

impl Held {
    fn copy(&mut self, copy: &Copy, sizes: &[usize], capacity: usize) {
        assert_eq!(copy.pieces.len(), sizes.len(), "one copy per piece");
        let ranges: Vec<(usize, usize)> = copy
            .pieces
            .iter()
            .zip(sizes)
            .map(|(p, &n)| (p.start, p.start + n))
            .collect();
        for (i, &(s, e)) in ranges.iter().enumerate() {
            assert!(e <= capacity, "a piece past the ring's end");
            for &(s2, e2) in &ranges[..i] {
                assert!(e2 <= s || e <= s2, "unit {} overlaps itself", copy.unit);
            }
            for (&other, theirs) in &self.0 {
                for &(s2, e2) in theirs {
                    assert!(
                        e2 <= s || e <= s2,
                        "unit {} at {s}..{e} overwrites placement {other}",
                        copy.unit
                    );
                }
            }
        }
        // The transfers move every element once, in host order, to its place in its piece.
        let ring_of: Vec<usize> = ranges.iter().flat_map(|&(s, e)| s..e).collect();
        let mut moved = 0;
        for transfer in copy.transfers(sizes) {
            assert_eq!(transfer.offset, moved, "transfers follow each other in host memory");
            for k in 0..transfer.length {
                assert_eq!(ring_of[transfer.offset + k], transfer.start + k);
            }
            moved += transfer.length;
        }
        assert_eq!(moved, ring_of.len());
        self.0.insert(copy.placement, ranges);
    }
}

#[test]
fn every_piece_starts_on_the_alignment() {
    use candle_core::Shape;
    use swapgraph_model::UnitGroup;
    let unit = UnitSpec {
        name: "mid_block.resnets.0".into(),
        group: UnitGroup::in_block("mid_block", "mid", 2),
        tensors: vec![
            ("norm.bias".into(), Shape::from((1,))),
            ("conv.bias".into(), Shape::from((128,))),
            ("conv.weight".into(), Shape::from((129,))),
        ],
    };
    // 256 bytes: 128 f16 elements, 64 f32 elements.
    assert_eq!(tensor_pieces(&unit, DType::F16), vec![128, 128, 256]);
    assert_eq!(tensor_pieces(&unit, DType::F32), vec![64, 128, 192]);
}

#[test]
fn resident_units_need_nothing() {
    let mut pipeline = with_prefetch(vec![2, 5, 7], whole(&[4, 4, 4]), 1);
    assert_eq!(pipeline.acquire(3), None);
}

#[test]
fn equal_units_behave_as_fixed_slots() {
    let mut pipeline = with_prefetch(vec![2, 5, 7, 9], whole(&[8, 8, 8, 8]), 2);
    let first = pipeline.acquire(2).unwrap();
    assert_eq!(units(&first.copies), vec![2, 5, 7]);
    assert_eq!(
        first.copies.iter().map(|c| c.pieces[0].start).collect::<Vec<_>>(),
        vec![0, 8, 16]
    );
    pipeline.release(first.placement);
    let second = pipeline.acquire(5).unwrap();
    assert_eq!(second.starts, vec![8]);
    assert_eq!(units(&second.copies), vec![9]);
    assert_eq!(
        starts(&second.copies[0]),
        vec![0],
        "the next copy reuses the room the first unit left"
    );
    assert_eq!(waits(&second.copies[0]), vec![first.placement]);
}

#[test]
fn small_units_pack_and_run_further_ahead() {
    // Room for two of the largest (8): the three small units after it fit at once.
    let mut pipeline = with_prefetch(vec![0, 1, 2, 3, 4], whole(&[8, 2, 2, 2, 8]), 1);
    let first = pipeline.acquire(0).unwrap();
    assert_eq!(units(&first.copies), vec![0, 1, 2, 3]);
    pipeline.release(first.placement);
    let second = pipeline.acquire(1).unwrap();
    assert_eq!(units(&second.copies), vec![4], "unit 4 takes the room unit 0 left");
    assert_eq!(starts(&second.copies[0]), vec![0]);
    assert_eq!(waits(&second.copies[0]), vec![first.placement]);
}

#[test]
fn a_piece_past_the_ring_end_goes_to_its_start_and_waits_only_for_what_is_under_it() {
    // Ring of 10. Unit 2's first piece fits at 8..9; its second (3) goes to 0..3, over unit 0.
    let mut pipeline = Pipeline::new(vec![0, 1, 2], vec![vec![4], vec![4], vec![1, 3]], 10);
    let first = pipeline.acquire(0).unwrap();
    assert_eq!(
        units(&first.copies),
        vec![0, 1],
        "unit 2 waits until unit 0 is released"
    );
    pipeline.release(first.placement);
    let second = pipeline.acquire(1).unwrap();
    let copy = &second.copies[0];
    assert_eq!((copy.unit, starts(copy)), (2, vec![8, 0]));
    assert_eq!(copy.pieces[0].overwrites, vec![], "the ring's end held nothing");
    assert_eq!(copy.pieces[1].overwrites, vec![over(0, first.placement)]);
}

#[test]
fn pieces_that_follow_each_other_and_wait_for_nothing_new_go_as_one_transfer() {
    let piece = |start, overwrites| PieceCopy { start, overwrites };
    let copy = Copy {
        unit: 3,
        placement: 9,
        pieces: vec![
            piece(6, vec![over(6, 1)]),
            piece(8, vec![over(8, 1)]),
            piece(9, vec![over(9, 1), over(9, 2)]),
            piece(0, vec![]),
            piece(2, vec![over(2, 4)]),
        ],
    };
    assert_eq!(
        summary(copy.transfers(&[2, 1, 1, 2, 3])),
        vec![
            (0, 6, 3, vec![1]),
            (3, 9, 1, vec![2]),
            (4, 0, 2, vec![]),
            (6, 2, 3, vec![4])
        ],
        "split where a piece waits for a new placement and where the ring wraps"
    );
}

#[test]
fn a_piece_over_several_placements_is_copied_a_placement_at_a_time() {
    // One piece of 10 at 4..14: free room, then placements 1 (from 6) and 2 (from 9). The
    // part over placement 1 need not wait for placement 2, nor the free room for either.
    let copy = Copy {
        unit: 0,
        placement: 5,
        pieces: vec![
            PieceCopy {
                start: 4,
                overwrites: vec![over(6, 1), over(9, 2)],
            },
            PieceCopy {
                start: 14,
                overwrites: vec![over(14, 2), over(15, 3)],
            },
        ],
    };
    assert_eq!(
        summary(copy.transfers(&[10, 3])),
        vec![
            (0, 4, 2, vec![]),
            (2, 6, 3, vec![1]),
            (5, 9, 6, vec![2]),
            (11, 15, 2, vec![3])
        ]
    );
}

#[test]
fn a_piece_over_two_units_waits_for_each_only_where_it_lies_over_it() {
    // Ring of 12: units of 3, 3 and 6 fill it; unit 3, one piece of 6, then goes over the
    // first two once they are released.
    let mut pipeline = Pipeline::new(vec![0, 1, 2, 3], whole(&[3, 3, 6, 6]), 12);
    let first = pipeline.acquire(0).unwrap();
    assert_eq!(units(&first.copies), vec![0, 1, 2]);
    pipeline.release(first.placement);
    let second = pipeline.acquire(1).unwrap();
    assert!(
        second.copies.is_empty(),
        "unit 3 would overwrite unit 1, still computing"
    );
    pipeline.release(second.placement);
    let third = pipeline.acquire(2).unwrap();
    let copy = &third.copies[0];
    assert_eq!((copy.unit, starts(copy)), (3, vec![0]));
    assert_eq!(
        copy.pieces[0].overwrites,
        vec![over(0, first.placement), over(3, second.placement)]
    );
    assert_eq!(
        summary(copy.transfers(&[6])),
        vec![(0, 0, 3, vec![first.placement]), (3, 3, 3, vec![second.placement])]
    );
}

#[test]
fn a_unit_never_wraps_over_itself() {
    // Ring of 10 with unit 0 at 0..5: unit 1's pieces from 5 would be 5..7 and 0..6, over its
    // own first piece, so they go from the start.
    let mut pipeline = Pipeline::new(vec![0, 1], vec![vec![5], vec![2, 6]], 10);
    let first = pipeline.acquire(0).unwrap();
    assert_eq!(units(&first.copies), vec![0]);
    pipeline.release(first.placement);
    let second = pipeline.acquire(1).unwrap();
    assert_eq!(second.starts, vec![0, 2]);
    assert_eq!(waits(&second.copies[0]), vec![first.placement]);
}

#[test]
fn no_copy_overwrites_weights_in_flight_or_computing() {
    let order = vec![0, 3, 4, 8, 9, 11, 12];
    let pieces = vec![
        vec![2, 3],
        vec![1],
        vec![4, 4],
        vec![3],
        vec![1, 1, 1],
        vec![7],
        vec![2],
    ];
    for prefetch in 0..5 {
        let issued = run(&order, &pieces, prefetch, 6);
        assert!(issued.len() >= order.len() * 6, "every use copied");
    }
}

#[test]
fn passes_cut_short_never_let_a_copy_overwrite_weights_in_use() {
    let order: Vec<usize> = (0..9).collect();
    let pieces = vec![
        vec![3],
        vec![4, 5],
        vec![1],
        vec![2, 2],
        vec![4],
        vec![1, 1],
        vec![3, 5],
        vec![1],
        vec![6],
    ];
    for prefetch in 0..4 {
        let mut pipeline = with_prefetch(order.clone(), pieces.clone(), prefetch);
        let mut held = Held::default();
        // A fixed pseudo-random walk: each pass stops after 1 to 9 units and the next starts
        // over at the first unit, as after a cancelled sampler step.
        let mut seed = 7u64 + prefetch as u64;
        for _ in 0..40 {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let length = 1 + (seed >> 33) as usize % order.len();
            for &unit in &order[..length] {
                let acquired = pipeline.acquire(unit).unwrap();
                for placement in &acquired.abandoned {
                    held.0.remove(placement);
                }
                for copy in &acquired.copies {
                    held.copy(copy, &pieces[copy.unit], pipeline.capacity());
                }
                assert!(held.0.contains_key(&acquired.placement), "unit {unit} was never copied");
                pipeline.release(acquired.placement);
                held.0.remove(&acquired.placement);
            }
        }
    }
}

#[test]
fn prefetch_wraps_into_the_next_pass() {
    let issued = run(&[1, 2, 3], &whole(&[4, 4, 4]), 1, 2);
    assert_eq!(units(&issued), vec![1, 2, 3, 1, 2, 3, 1]);
}

#[test]
fn an_out_of_order_unit_restarts_the_schedule() {
    let mut pipeline = with_prefetch(vec![1, 2, 3, 4], whole(&[4, 4, 4, 4]), 1);
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
    let mut pipeline = with_prefetch(vec![4], whole(&[6]), 8);
    for _ in 0..3 {
        let acquired = pipeline.acquire(4).unwrap();
        assert_eq!(units(&acquired.copies), vec![4]);
        pipeline.release(acquired.placement);
    }
}
