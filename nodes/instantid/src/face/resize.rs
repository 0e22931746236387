//! OpenCV's `INTER_AREA` resize, which MTCNN's reference processing uses: each output pixel the
//! area-weighted mean of the input pixels it covers when shrinking, OpenCV's sharpened linear
//! weights when enlarging. Separable, so computed per axis.

use super::RgbImage;

/// Input indices and weights for each output index of one axis.
fn axis_weights(source: usize, target: usize) -> Vec<Vec<(usize, f64)>> {
    let scale = source as f64 / target as f64;
    (0..target)
        .map(|d| {
            if scale >= 1.0 {
                let (start, end) = (d as f64 * scale, (d + 1) as f64 * scale);
                let mut weights = Vec::new();
                let mut i = start.floor() as usize;
                while (i as f64) < end && i < source {
                    let overlap = (end.min((i + 1) as f64) - start.max(i as f64)).max(0.0);
                    if overlap > 0.0 {
                        weights.push((i, overlap / scale));
                    }
                    i += 1;
                }
                weights
            } else {
                let sx = (d as f64 * scale).floor() as i64;
                let mut f = (d + 1) as f64 - (sx + 1) as f64 / scale;
                f = if f <= 0.0 { 0.0 } else { f - f.floor() };
                let clamp = |i: i64| i.clamp(0, source as i64 - 1) as usize;
                vec![(clamp(sx), 1.0 - f), (clamp(sx + 1), f)]
            }
        })
        .collect()
}

/// `image` resized to `width` x `height`; `round` rounds to whole 0..255 steps as an 8-bit
/// resize does.
pub fn resize_area(image: &RgbImage, width: usize, height: usize, round: bool) -> RgbImage {
    let (columns, rows) = (axis_weights(image.width, width), axis_weights(image.height, height));
    let mut pixels = Vec::with_capacity(width * height * 3);
    for row in &rows {
        for column in &columns {
            for c in 0..3 {
                let mut sum = 0.0;
                for &(y, wy) in row {
                    for &(x, wx) in column {
                        sum += wy * wx * f64::from(image.pixels[(y * image.width + x) * 3 + c]);
                    }
                }
                let value = sum as f32;
                pixels.push(if round { (value * 255.0).round() / 255.0 } else { value });
            }
        }
    }
    RgbImage { width, height, pixels }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halving_averages_two_by_two_blocks() {
        let image = RgbImage {
            width: 2,
            height: 2,
            pixels: vec![0.0, 0.0, 0.0, 0.2, 0.2, 0.2, 0.4, 0.4, 0.4, 0.6, 0.6, 0.6],
        };
        let small = resize_area(&image, 1, 1, false);
        assert!((small.pixels[0] - 0.3).abs() < 1e-6);
    }
}
