//! ComfyUI's `lanczos` for images, which it takes from Pillow (`Image.resize(size, LANCZOS)`):
//! each image quantised to 8 bits, resampled along its width and then its height with a
//! windowed sinc of 3 lobes (widened by the scale when reducing), the weights in Pillow's
//! 22-bit fixed point, 8-bit values between the two passes, and the result divided back by 255.
//! Checked against Pillow 12, which always takes the width first; Pillow 13 takes the height
//! first for some sizes, which moves some pixels by a few levels.

/// Bits after the binary point of Pillow's fixed-point weights for 8-bit images.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// The filter's reach in source samples on each side at a scale of 1.
const SUPPORT: f64 = 3.0;

/// `planes` (`batch` x `channels` x `height` x `width`, values 0..1) resampled to
/// `new_height` x `new_width`.
pub fn resize(
    planes: &[f32],
    (batch, channels): (usize, usize),
    (height, width): (usize, usize),
    (new_height, new_width): (usize, usize),
) -> Vec<f32> {
    // ComfyUI: `np.clip(255. * image, 0, 255).astype(np.uint8)`, in f32.
    let mut values: Vec<u8> = planes.iter().map(|v| (255.0 * v).clamp(0.0, 255.0) as u8).collect();
    let count = batch * channels;
    let mut width_now = width;
    if new_width != width {
        let taps = Taps::new(width, new_width);
        values = values.chunks(width).flat_map(|row| taps.apply(|x| row[x])).collect();
        width_now = new_width;
    }
    if new_height != height {
        let taps = Taps::new(height, new_height);
        let mut resized = vec![0u8; count * new_height * width_now];
        for (plane, target) in values
            .chunks(height * width_now)
            .zip(resized.chunks_mut(new_height * width_now))
        {
            for x in 0..width_now {
                for (y, value) in taps.apply(|y| plane[y * width_now + x]).into_iter().enumerate() {
                    target[y * width_now + x] = value;
                }
            }
        }
        values = resized;
    }
    values.into_iter().map(|v| f32::from(v) / 255.0).collect()
}

/// One axis's weights: for each output sample, the first source sample it reads and the
/// fixed-point weights of the samples from there.
struct Taps {
    samples: Vec<(usize, Vec<i32>)>,
}

impl Taps {
    /// Pillow's `precompute_coeffs` and `normalize_coeffs_8bpc` from `input` samples to `output`.
    fn new(input: usize, output: usize) -> Self {
        let scale = input as f64 / output as f64;
        let filter_scale = scale.max(1.0);
        let support = SUPPORT * filter_scale;
        let samples = (0..output)
            .map(|out| {
                let centre = (out as f64 + 0.5) * scale;
                // C's truncating casts, as Pillow rounds the bounds.
                let first = ((centre - support + 0.5) as i64).max(0) as usize;
                let end = ((centre + support + 0.5) as i64).min(input as i64) as usize;
                let weights: Vec<f64> = (first..end)
                    .map(|x| lanczos((x as f64 - centre + 0.5) / filter_scale))
                    .collect();
                let total: f64 = weights.iter().sum();
                let fixed = weights
                    .iter()
                    .map(|w| {
                        let w = if total != 0.0 { w / total } else { *w };
                        let scaled = w * f64::from(1u32 << PRECISION_BITS);
                        // Rounded half away from zero, then truncated, as Pillow does.
                        (if scaled < 0.0 { scaled - 0.5 } else { scaled + 0.5 }) as i32
                    })
                    .collect();
                (first, fixed)
            })
            .collect();
        Self { samples }
    }

    /// The output samples from source sample `at(i)`, rounded and clipped to 8 bits.
    fn apply(&self, at: impl Fn(usize) -> u8) -> Vec<u8> {
        self.samples
            .iter()
            .map(|(first, weights)| {
                let sum = weights
                    .iter()
                    .enumerate()
                    .fold(1i32 << (PRECISION_BITS - 1), |sum, (i, w)| {
                        sum + i32::from(at(first + i)) * w
                    });
                (sum >> PRECISION_BITS).clamp(0, 255) as u8
            })
            .collect()
    }
}

/// Pillow's truncated sinc: `sinc(x) * sinc(x / 3)` within 3 samples, 0 beyond.
fn lanczos(x: f64) -> f64 {
    let sinc = |x: f64| {
        if x == 0.0 {
            1.0
        } else {
            let x = x * std::f64::consts::PI;
            x.sin() / x
        }
    };
    if (-SUPPORT..SUPPORT).contains(&x) {
        sinc(x) * sinc(x / SUPPORT)
    } else {
        0.0
    }
}
