//! The few OpenCV drawing primitives InstantID's keypoint image is made with, reproduced pixel
//! for pixel: `ellipse2Poly`, `fillConvexPoly` (8-connected, no sub-pixel shift) and the filled
//! `circle`, on an RGB canvas.
//!
//! Reference: OpenCV `modules/imgproc/src/drawing.cpp`.

/// An RGB image being drawn on, row-major.
pub struct Canvas {
    width: usize,
    height: usize,
    pixels: Vec<[u8; 3]>,
}

/// OpenCV's fixed-point shift for polygon edges.
const XY_SHIFT: i64 = 16;
const XY_ONE: i64 = 1 << XY_SHIFT;

impl Canvas {
    /// A black canvas.
    pub fn new(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            pixels: vec![[0; 3]; width * height],
        }
    }

    /// The pixels, row-major RGB.
    pub fn pixels(&self) -> &[[u8; 3]] {
        &self.pixels
    }

    /// Applies `f` to every channel value.
    pub fn map(&mut self, f: impl Fn(u8) -> u8) {
        for pixel in &mut self.pixels {
            *pixel = pixel.map(&f);
        }
    }

    fn put(&mut self, x: i64, y: i64, color: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            self.pixels[y as usize * self.width + x as usize] = color;
        }
    }

    fn hline(&mut self, y: i64, x1: i64, x2: i64, color: [u8; 3]) {
        if y < 0 || y as usize >= self.height {
            return;
        }
        let (x1, x2) = (x1.max(0), x2.min(self.width as i64 - 1));
        for x in x1..=x2 {
            self.put(x, y, color);
        }
    }

    /// An 8-connected Bresenham line, drawn left to right as `cv::Line` does.
    pub fn line(&mut self, mut p1: (i64, i64), mut p2: (i64, i64), color: [u8; 3]) {
        if p2.0 < p1.0 {
            std::mem::swap(&mut p1, &mut p2);
        }
        let mut dx = p2.0 - p1.0;
        let mut dy = p2.1 - p1.1;
        let (mut step_x, mut step_y) = (1, 1);
        if dy < 0 {
            dy = -dy;
            step_y = -1;
        }
        let vertical = dy > dx;
        if vertical {
            std::mem::swap(&mut dx, &mut dy);
            std::mem::swap(&mut step_x, &mut step_y);
        }
        // Along the major axis every step; along the minor one when the error says so.
        let mut err = dx - (dy + dy);
        let (plus_delta, minus_delta) = (dx + dx, -(dy + dy));
        let (mut x, mut y) = p1;
        for _ in 0..=dx {
            self.put(x, y, color);
            let minor = err < 0;
            err += minus_delta + if minor { plus_delta } else { 0 };
            if vertical {
                y += step_x;
                if minor {
                    x += step_y;
                }
            } else {
                x += step_x;
                if minor {
                    y += step_y;
                }
            }
        }
    }

    /// `cv::fillConvexPoly` with 8-connected edges and no shift: the outline, then scanlines
    /// between the left and right edges walked in 16.16 fixed point.
    pub fn fill_convex_poly(&mut self, points: &[(i64, i64)], color: [u8; 3]) {
        let n = points.len();
        if n == 0 {
            return;
        }
        let mut previous = points[n - 1];
        let (mut ymin, mut ymax) = (points[0].1, points[0].1);
        let (mut xmin, mut xmax) = (points[0].0, points[0].0);
        let mut imin = 0;
        for (i, &p) in points.iter().enumerate() {
            if p.1 < ymin {
                ymin = p.1;
                imin = i;
            }
            ymax = ymax.max(p.1);
            xmax = xmax.max(p.0);
            xmin = xmin.min(p.0);
            self.line(previous, p, color);
            previous = p;
        }
        let (width, height) = (self.width as i64, self.height as i64);
        if n < 3 || xmax < 0 || ymax < 0 || xmin >= width || ymin >= height {
            return;
        }
        let ymax = ymax.min(height - 1);
        #[derive(Clone, Copy)]
        struct Edge {
            idx: usize,
            di: usize,
            x: i64,
            dx: i64,
            ye: i64,
        }
        let start = Edge {
            idx: imin,
            di: 1,
            x: -XY_ONE,
            dx: 0,
            ye: ymin,
        };
        let mut edges = [start, Edge { di: n - 1, ..start }];
        // OpenCV counts edges down as it walks them; running out ends the fill.
        let mut remaining = n as i64;
        let mut y = ymin;
        loop {
            for edge in &mut edges {
                if y >= edge.ye {
                    let mut idx0 = edge.idx;
                    let mut idx = (idx0 + edge.di) % n;
                    while {
                        let more = remaining > 0;
                        remaining -= 1;
                        more
                    } {
                        let ty = points[idx].1;
                        if ty > y {
                            let xs = points[idx0].0 << XY_SHIFT;
                            let xe = points[idx].0 << XY_SHIFT;
                            edge.ye = ty;
                            // C's truncating division, as OpenCV's edge slopes use.
                            edge.dx = ((xe - xs) * 2 + (ty - y)) / (2 * (ty - y));
                            edge.x = xs;
                            edge.idx = idx;
                            break;
                        }
                        idx0 = idx;
                        idx = (idx + edge.di) % n;
                    }
                }
            }
            if remaining < 0 {
                break;
            }
            if y >= 0 {
                let (left, right) = if edges[0].x > edges[1].x { (1, 0) } else { (0, 1) };
                let x1 = (edges[left].x + XY_ONE / 2) >> XY_SHIFT;
                let x2 = (edges[right].x + XY_ONE / 2) >> XY_SHIFT;
                if x2 >= 0 && x1 < width {
                    self.hline(y, x1, x2, color);
                }
            }
            edges[0].x += edges[0].dx;
            edges[1].x += edges[1].dx;
            y += 1;
            if y > ymax {
                break;
            }
        }
    }

    /// `cv::circle` filled with an 8-connected outline: the midpoint circle, each octant pair as
    /// a horizontal line.
    pub fn fill_circle(&mut self, center: (i64, i64), radius: i64, color: [u8; 3]) {
        let (cx, cy) = center;
        let (mut err, mut dx, mut dy) = (0i64, radius, 0i64);
        let (mut plus, mut minus) = (1i64, (radius << 1) - 1);
        while dx >= dy {
            self.hline(cy - dy, cx - dx, cx + dx, color);
            self.hline(cy + dy, cx - dx, cx + dx, color);
            self.hline(cy - dx, cx - dy, cx + dy, color);
            self.hline(cy + dx, cx - dy, cx + dy, color);
            dy += 1;
            err += plus;
            plus += 2;
            let mask = if err <= 0 { 0 } else { -1 };
            err -= minus & mask;
            dx += mask;
            minus -= mask & 2;
        }
    }
}

/// `cv::ellipse2Poly` for a full ellipse in 1-degree steps, with OpenCV's single-precision sine
/// table and rounding, consecutive duplicates dropped.
pub fn ellipse_polygon(center: (i64, i64), axes: (i64, i64), angle: i64) -> Vec<(i64, i64)> {
    let angle = angle.rem_euclid(360);
    // OpenCV's table holds single-precision sines of whole degrees.
    let table = |degrees: i64| f64::from((degrees as f64).to_radians().sin() as f32);
    let (alpha, beta) = (table(450 - angle), table(angle));
    let mut points: Vec<(i64, i64)> = Vec::new();
    for i in 0..=360 {
        let x = axes.0 as f64 * table(450 - i);
        let y = axes.1 as f64 * table(i);
        let px = center.0 as f64 + x * alpha - y * beta;
        let py = center.1 as f64 + x * beta + y * alpha;
        let point = (round_half_even(px), round_half_even(py));
        if points.last() != Some(&point) {
            points.push(point);
        }
    }
    if points.len() == 1 {
        points.push(points[0]);
    }
    points
}

/// `cvRound`: to the nearest integer, ties to even.
fn round_half_even(value: f64) -> i64 {
    value.round_ties_even() as i64
}
