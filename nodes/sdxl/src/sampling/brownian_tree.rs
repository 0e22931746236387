//! torchsde's `BrownianTree` as ComfyUI's SDE samplers draw their noise from it: one Brownian
//! motion over [t0, t1], each interval's increment made from its parent's by a Brownian bridge
//! with noise seeded by the interval's place in the dyadic tree (numpy's `SeedSequence` of the
//! seed and that place), times rounded to 1e-6. A seed gives the same increments whatever the
//! order of the queries.

use super::seed_sequence::SeedSequence;
use super::torch_noise::randn_values;
use std::collections::{HashMap, VecDeque};

/// torchsde's pool size for `BrownianTree`'s seed sequences.
const POOL_SIZE: usize = 24;
/// Increments kept for the next queries (torchsde's cache size).
const CACHE_SIZE: usize = 45;

/// One interval of the tree.
struct Interval {
    start: f64,
    end: f64,
    /// How its increment comes from its parent's (none for the whole span).
    bridge: Option<Bridge>,
    /// Where the interval sits in the tree: 2 x its parent's key, plus 1 on the right.
    spawn_key: u64,
    depth: u64,
    halves: Option<Halves>,
}

/// An interval split at its rounded midpoint.
#[derive(Clone, Copy)]
struct Halves {
    midway: f64,
    left: usize,
    right: usize,
}

/// A half's place in its parent: the parent's span and midpoint, which half, and the seed of
/// the noise that splits the parent's increment between its halves.
#[derive(Clone, Copy)]
struct Bridge {
    parent: usize,
    start: f64,
    midway: f64,
    end: f64,
    is_left: bool,
    noise_seed: u32,
}

/// A Brownian motion of `count` independent values over [t0, t1] for one seed.
pub struct BrownianTree {
    entropy: u64,
    count: usize,
    intervals: Vec<Interval>,
    top_increment: Vec<f32>,
    cache: HashMap<usize, Vec<f32>>,
    cached: VecDeque<usize>,
}

impl BrownianTree {
    /// `torchsde.BrownianTree(t0, zeros(count), t1, entropy=seed)`.
    pub fn new(t0: f64, t1: f64, count: usize, seed: u64) -> Self {
        let seeds = SeedSequence::new(seed, &[], POOL_SIZE).generate_state(3);
        let scale = (t1 - t0).sqrt() as f32;
        let top_increment = randn_values(u64::from(seeds[0]), count)
            .into_iter()
            .map(|v| v * scale)
            .collect();
        Self {
            entropy: seed,
            count,
            intervals: vec![Interval {
                start: round(t0),
                end: round(t1),
                bridge: None,
                spawn_key: 0,
                depth: 0,
                halves: None,
            }],
            top_increment,
            cache: HashMap::new(),
            cached: VecDeque::new(),
        }
    }

    /// The motion's increment from `ta` to `tb` (`ta <= tb`, clamped to the tree's span).
    pub fn increment(&mut self, ta: f64, tb: f64) -> Vec<f32> {
        let (start, end) = (self.intervals[0].start, self.intervals[0].end);
        let ta = round(ta.clamp(start, end));
        let tb = round(tb.clamp(start, end));
        if ta >= tb {
            return vec![0.0; self.count];
        }
        let mut pieces = Vec::new();
        self.locate(0, ta, tb, &mut pieces);
        let mut total = self.interval_increment(pieces[0]);
        for &piece in &pieces[1..] {
            for (t, v) in total.iter_mut().zip(self.interval_increment(piece)) {
                *t += v;
            }
        }
        total
    }

    /// ComfyUI's `BrownianTreeNoiseSampler(sigma, sigma_next)`: the increment between the two
    /// (sigmas as float32, as ComfyUI holds them), signed from `sigma` to `next`, over the square
    /// root of their distance: standard-normal values.
    pub fn noise(&mut self, sigma: f32, next: f32) -> Vec<f32> {
        let (low, high, sign) = if sigma < next {
            (sigma, next, 1.0)
        } else {
            (next, sigma, -1.0)
        };
        let scale = (next - sigma).abs().sqrt();
        self.increment(f64::from(low), f64::from(high))
            .into_iter()
            .map(|v| v * sign / scale)
            .collect()
    }

    /// The intervals that make up [ta, tb] within interval `at`, in order, splitting as needed.
    fn locate(&mut self, at: usize, ta: f64, tb: f64, out: &mut Vec<usize>) {
        let (start, end) = (self.intervals[at].start, self.intervals[at].end);
        if ta == start && tb == end {
            out.push(at);
            return;
        }
        if self.intervals[at].halves.is_none() {
            self.split(at, if ta == start { tb } else { ta });
        }
        let Some(Halves { midway, left, right }) = self.intervals[at].halves else {
            return;
        };
        if tb <= midway {
            self.locate(left, ta, tb, out);
        } else if ta >= midway {
            self.locate(right, ta, tb, out);
        } else {
            self.locate(left, ta, midway, out);
            self.locate(right, midway, tb, out);
        }
    }

    /// Splits interval `at` at its rounded midpoint, then the half holding `target` the same
    /// way, until a midpoint is `target`.
    fn split(&mut self, at: usize, target: f64) {
        let interval = &self.intervals[at];
        let midway = round(0.5 * (interval.end + interval.start));
        let (start, end, key, depth) = (interval.start, interval.end, interval.spawn_key, interval.depth);
        let noise_seed = SeedSequence::new(self.entropy, &[key, depth], POOL_SIZE).generate_state(4)[0];
        let child = |from: f64, to: f64, is_left: bool| Interval {
            start: from,
            end: round(to),
            bridge: Some(Bridge {
                parent: at,
                start,
                midway,
                end,
                is_left,
                noise_seed,
            }),
            spawn_key: 2 * key + u64::from(!is_left),
            depth: depth + 1,
            halves: None,
        };
        let left = self.intervals.len();
        self.intervals.push(child(start, midway, true));
        self.intervals.push(child(midway, end, false));
        self.intervals[at].halves = Some(Halves {
            midway,
            left,
            right: left + 1,
        });
        if target > midway {
            self.split(left + 1, target);
        } else if target < midway {
            self.split(left, target);
        }
    }

    /// Interval `at`'s increment: its parent's, bridged.
    fn interval_increment(&mut self, at: usize) -> Vec<f32> {
        let Some(bridge) = self.intervals[at].bridge else {
            return self.top_increment.clone();
        };
        if let Some(known) = self.cache.get(&at) {
            return known.clone();
        }
        let whole = self.interval_increment(bridge.parent);
        let h_reciprocal = 1.0 / (bridge.end - bridge.start);
        let left_diff = bridge.midway - bridge.start;
        let right_diff = bridge.end - bridge.midway;
        let deviation = (left_diff * right_diff * h_reciprocal).sqrt() as f32;
        let (left_scale, h_scale) = (left_diff as f32, h_reciprocal as f32);
        let noise = randn_values(u64::from(bridge.noise_seed), self.count);
        let increment: Vec<f32> = whole
            .iter()
            .zip(noise)
            .map(|(&w, n)| {
                let left = w * left_scale * h_scale + deviation * n;
                if bridge.is_left {
                    left
                } else {
                    w - left
                }
            })
            .collect();
        if self.cached.len() == CACHE_SIZE {
            if let Some(oldest) = self.cached.pop_front() {
                self.cache.remove(&oldest);
            }
        }
        self.cached.push_back(at);
        self.cache.insert(at, increment.clone());
        increment
    }
}

/// `round(x, 6)`, as torchsde quantises times for a tolerance of 1e-6.
fn round(x: f64) -> f64 {
    format!("{x:.6}").parse().unwrap_or(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_add_up_to_the_whole_and_queries_in_any_order_agree() {
        let mut tree = BrownianTree::new(0.03, 14.6, 64, 7);
        let whole = tree.increment(0.03, 14.6);
        let (a, b) = (tree.increment(0.03, 3.0), tree.increment(3.0, 14.6));
        for ((w, a), b) in whole.iter().zip(&a).zip(&b) {
            assert!((w - (a + b)).abs() < 1e-5, "{w} against {a} + {b}");
        }
        let mut other = BrownianTree::new(0.03, 14.6, 64, 7);
        let later = other.increment(3.0, 14.6);
        assert_eq!(later, b, "the same interval, asked for first");
        assert_ne!(BrownianTree::new(0.03, 14.6, 64, 8).increment(3.0, 14.6), b);
    }
}
