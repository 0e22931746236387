//! InstantID's keypoint image, the hint IdentityNet reads: limbs from the eyes, mouth corners
//! to the nose as filled ellipses at 0.6 brightness, then a filled circle on each of the five
//! points, in the reference colours.

use crate::raster::{ellipse_polygon, Canvas};

/// Colours of the five keypoints: right eye, left eye, nose, right and left mouth corner.
const COLORS: [[u8; 3]; 5] = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [255, 0, 255]];

/// Limbs as (from, to) keypoint indices; each is drawn in its first point's colour.
const LIMBS: [(usize, usize); 4] = [(0, 2), (1, 2), (3, 2), (4, 2)];

/// Half-width of a limb in pixels.
const STICK_WIDTH: i64 = 4;

/// Radius of a keypoint's circle in pixels.
const POINT_RADIUS: i64 = 10;

/// The keypoint image of a face's five points `kps` (pixels) on a `width` x `height` canvas.
pub fn draw_keypoints(width: usize, height: usize, kps: &[[f32; 2]; 5]) -> Canvas {
    let mut canvas = Canvas::new(width, height);
    for (from, to) in LIMBS {
        let (a, b) = (kps[from].map(f64::from), kps[to].map(f64::from));
        let length = ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt();
        let angle = (a[1] - b[1]).atan2(a[0] - b[0]).to_degrees();
        // Python's int(): truncation toward zero.
        let center = (((a[0] + b[0]) / 2.0) as i64, ((a[1] + b[1]) / 2.0) as i64);
        let polygon = ellipse_polygon(center, ((length / 2.0) as i64, STICK_WIDTH), angle as i64);
        canvas.fill_convex_poly(&polygon, COLORS[from]);
    }
    canvas.map(|value| (f64::from(value) * 0.6) as u8);
    for (point, color) in kps.iter().zip(COLORS) {
        canvas.fill_circle((point[0] as i64, point[1] as i64), POINT_RADIUS, color);
    }
    canvas
}
