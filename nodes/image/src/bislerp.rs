//! ComfyUI's `bislerp` for latents: resampled along the width, then the height, each new
//! sample's channel vector slerped between the two nearest source samples (their lengths
//! interpolated linearly), with the coordinates and ratios PyTorch's bilinear interpolation of
//! the sample indices gives, in f32 as ComfyUI computes them.

/// `planes` (`batch` x `channels` x `height` x `width`, in that order) resampled to
/// `new_height` x `new_width`.
pub fn resize(
    samples: &[f32],
    (batch, channels): (usize, usize),
    (height, width): (usize, usize),
    (new_height, new_width): (usize, usize),
) -> Vec<f32> {
    let along_width = Axis::new(width, new_width);
    let along_height = Axis::new(height, new_height);
    let mut wide = vec![0f32; batch * channels * height * new_width];
    let at = |b: usize, c: usize, y: usize, x: usize, h: usize, w: usize| ((b * channels + c) * h + y) * w + x;
    let (mut first, mut second) = (vec![0f32; channels], vec![0f32; channels]);
    for b in 0..batch {
        for y in 0..height {
            for (x, &(one, two, ratio)) in along_width.samples.iter().enumerate() {
                for c in 0..channels {
                    first[c] = samples[at(b, c, y, one, height, width)];
                    second[c] = samples[at(b, c, y, two, height, width)];
                }
                for (c, value) in slerp(&first, &second, ratio).into_iter().enumerate() {
                    wide[at(b, c, y, x, height, new_width)] = value;
                }
            }
        }
    }
    let mut out = vec![0f32; batch * channels * new_height * new_width];
    for b in 0..batch {
        for (y, &(one, two, ratio)) in along_height.samples.iter().enumerate() {
            for x in 0..new_width {
                for c in 0..channels {
                    first[c] = wide[at(b, c, one, x, height, new_width)];
                    second[c] = wide[at(b, c, two, x, height, new_width)];
                }
                for (c, value) in slerp(&first, &second, ratio).into_iter().enumerate() {
                    out[at(b, c, y, x, new_height, new_width)] = value;
                }
            }
        }
    }
    out
}

/// For each new sample along an axis: the two source samples it lies between and how far.
struct Axis {
    samples: Vec<(usize, usize, f32)>,
}

impl Axis {
    /// ComfyUI's `generate_bilinear_data`: the indices 0..old, and 1..old with the last
    /// repeated, each resampled bilinearly (half-pixel centres) to `new` samples.
    fn new(old: usize, new: usize) -> Self {
        let lower = |v: usize| v as f32;
        let upper = |v: usize| (v + 1).min(old - 1) as f32;
        let scale = old as f32 / new as f32;
        let samples = (0..new)
            .map(|j| {
                let source = (scale * (j as f32 + 0.5) - 0.5).max(0.0);
                let low = source as usize;
                let step = usize::from(low < old - 1);
                let t = source - low as f32;
                let interpolate = |value: &dyn Fn(usize) -> f32| value(low) * (1.0 - t) + value(low + step) * t;
                let one = interpolate(&lower);
                let two = interpolate(&upper);
                (one as usize, two as usize, one - one.floor())
            })
            .collect();
        Self { samples }
    }
}

/// ComfyUI's slerp of two channel vectors at `ratio`, with its edge cases: nearly the same
/// direction keeps the first, nearly opposite ones are interpolated linearly.
fn slerp(first: &[f32], second: &[f32], ratio: f32) -> Vec<f32> {
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let (n1, n2) = (norm(first), norm(second));
    let unit = |v: &[f32], n: f32| -> Vec<f32> { v.iter().map(|x| if n == 0.0 { 0.0 } else { x / n }).collect() };
    let (u1, u2) = (unit(first, n1), unit(second, n2));
    let dot: f32 = u1.iter().zip(&u2).map(|(a, b)| a * b).sum();
    if dot > 1.0 - 1e-5 {
        return first.to_vec();
    }
    if dot < 1e-5 - 1.0 {
        return first
            .iter()
            .zip(second)
            .map(|(a, b)| a * (1.0 - ratio) + b * ratio)
            .collect();
    }
    let omega = dot.acos();
    let so = omega.sin();
    let (w1, w2) = (((1.0 - ratio) * omega).sin() / so, (ratio * omega).sin() / so);
    let length = n1 * (1.0 - ratio) + n2 * ratio;
    u1.iter().zip(&u2).map(|(a, b)| (w1 * a + w2 * b) * length).collect()
}
