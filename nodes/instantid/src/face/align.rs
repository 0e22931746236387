//! Five-point face alignment: the similarity transform taking a face's keypoints onto
//! ArcFace's 112x112 template (Umeyama's least squares, as insightface's `estimate_norm`), and
//! the bilinear warp that crops the aligned face.

use super::RgbImage;

/// ArcFace's keypoint template for a 112x112 crop.
pub const ARCFACE_TEMPLATE: [[f32; 2]; 5] = [
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
];

/// A 2x3 affine matrix `[[a, b, tx], [c, d, ty]]` mapping source to destination pixels.
pub type Affine = [[f64; 3]; 2];

/// The similarity transform (rotation, uniform scale, translation) that best maps `from` onto
/// `to` in the least-squares sense (Umeyama 1991, without reflection).
pub fn similarity(from: &[[f32; 2]; 5], to: &[[f32; 2]; 5]) -> Affine {
    let n = from.len() as f64;
    let mean = |points: &[[f32; 2]; 5]| {
        let (sx, sy) = points
            .iter()
            .fold((0.0, 0.0), |(x, y), p| (x + f64::from(p[0]), y + f64::from(p[1])));
        (sx / n, sy / n)
    };
    let (fx, fy) = mean(from);
    let (tx, ty) = mean(to);
    // Covariance of the centred points and the source variance.
    let (mut a, mut b, mut variance) = (0.0, 0.0, 0.0);
    for (p, q) in from.iter().zip(to) {
        let (px, py) = (f64::from(p[0]) - fx, f64::from(p[1]) - fy);
        let (qx, qy) = (f64::from(q[0]) - tx, f64::from(q[1]) - ty);
        a += px * qx + py * qy;
        b += px * qy - py * qx;
        variance += px * px + py * py;
    }
    // For similarities the optimal rotation angle is atan2(b, a) and scale |(a, b)| / variance.
    let norm = (a * a + b * b).sqrt();
    let scale = if variance > 0.0 { norm / variance } else { 1.0 };
    let (cos, sin) = if norm > 0.0 { (a / norm, b / norm) } else { (1.0, 0.0) };
    let (m00, m01, m10, m11) = (scale * cos, -scale * sin, scale * sin, scale * cos);
    [
        [m00, m01, tx - (m00 * fx + m01 * fy)],
        [m10, m11, ty - (m10 * fx + m11 * fy)],
    ]
}

/// The `size` x `size` crop of `image` under `transform` (source to crop), bilinear, black
/// outside the image.
pub fn warp(image: &RgbImage, transform: &Affine, size: usize) -> RgbImage {
    let [[a, b, tx], [c, d, ty]] = *transform;
    let det = a * d - b * c;
    let (ia, ib, ic, id) = (d / det, -b / det, -c / det, a / det);
    let mut pixels = Vec::with_capacity(size * size * 3);
    for y in 0..size {
        for x in 0..size {
            let (u, v) = (x as f64 - tx, y as f64 - ty);
            let (sx, sy) = (ia * u + ib * v, ic * u + id * v);
            let (x0, y0) = (sx.floor(), sy.floor());
            let (wx, wy) = ((sx - x0) as f32, (sy - y0) as f32);
            let (x0, y0) = (x0 as i64, y0 as i64);
            for channel in 0..3 {
                let top = image.at(x0, y0, channel) * (1.0 - wx) + image.at(x0 + 1, y0, channel) * wx;
                let bottom = image.at(x0, y0 + 1, channel) * (1.0 - wx) + image.at(x0 + 1, y0 + 1, channel) * wx;
                pixels.push(top * (1.0 - wy) + bottom * wy);
            }
        }
    }
    RgbImage {
        width: size,
        height: size,
        pixels,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_a_known_similarity() {
        // Rotate by 30 degrees, scale 2.5, shift (40, -7).
        let (scale, angle) = (2.5f64, 30f64.to_radians());
        let moved = ARCFACE_TEMPLATE.map(|[x, y]| {
            let (x, y) = (f64::from(x), f64::from(y));
            [
                (scale * (angle.cos() * x - angle.sin() * y) + 40.0) as f32,
                (scale * (angle.sin() * x + angle.cos() * y) - 7.0) as f32,
            ]
        });
        let back = similarity(&moved, &ARCFACE_TEMPLATE);
        for (p, q) in moved.iter().zip(ARCFACE_TEMPLATE) {
            let x = back[0][0] * f64::from(p[0]) + back[0][1] * f64::from(p[1]) + back[0][2];
            let y = back[1][0] * f64::from(p[0]) + back[1][1] * f64::from(p[1]) + back[1][2];
            assert!((x - f64::from(q[0])).abs() < 1e-3 && (y - f64::from(q[1])).abs() < 1e-3);
        }
    }

    #[test]
    fn the_identity_warp_copies_the_image() {
        let image = RgbImage {
            width: 4,
            height: 4,
            pixels: (0..48).map(|i| i as f32 / 48.0).collect(),
        };
        let copy = warp(&image, &[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], 4);
        assert_eq!(copy, image);
    }
}
