//! SCRFD face detection as insightface runs it: the image scaled into a square input (top-left,
//! zero padding), normalised to (x - 127.5) / 128 in RGB; per stride (8, 16, 32) two anchors per
//! cell decode scores, box distances and keypoint offsets; scores of at least 0.5 survive, then
//! non-maximum suppression at IoU 0.4.

use super::onnx::OnnxModel;
use super::{FaceError, RgbImage};
use std::path::Path;

const STRIDES: [usize; 3] = [8, 16, 32];
const ANCHORS: usize = 2;
const SCORE_THRESHOLD: f32 = 0.5;
const NMS_THRESHOLD: f32 = 0.4;

/// A detection: box `[x1, y1, x2, y2]`, score and keypoints, in the image's pixels.
#[derive(Clone, Debug, PartialEq)]
pub struct Detection {
    /// The box.
    pub bbox: [f32; 4],
    /// Confidence.
    pub score: f32,
    /// Five keypoints.
    pub kps: [[f32; 2]; 5],
}

/// An SCRFD ONNX model with keypoints (insightface's `scrfd_10g_bnkps.onnx`, `det_10g.onnx`).
pub struct Scrfd {
    model: OnnxModel,
}

impl Scrfd {
    /// Reads the model at `path`.
    ///
    /// # Errors
    /// [`FaceError::Unreadable`] naming the file.
    pub fn open(path: &Path) -> Result<Self, FaceError> {
        Ok(Self {
            model: OnnxModel::open(path)?,
        })
    }

    /// Faces in `image` detected at a `size` x `size` input, best first.
    ///
    /// # Errors
    /// [`FaceError::Unreadable`] when the model's outputs are not SCRFD's.
    pub fn detect(&self, image: &RgbImage, size: usize) -> Result<Vec<Detection>, FaceError> {
        let ratio = image.height as f32 / image.width as f32;
        let (width, height) = if ratio > 1.0 {
            (((size as f32) / ratio) as usize, size)
        } else {
            (size, ((size as f32) * ratio) as usize)
        };
        let scale = height as f32 / image.height as f32;
        let resized = resize_bilinear(image, width.max(1), height.max(1));
        let plane = size * size;
        let mut input = vec![(0.0 - 127.5) / 128.0; 3 * plane];
        for y in 0..resized.height {
            for x in 0..resized.width {
                for c in 0..3 {
                    let value = resized.pixels[(y * resized.width + x) * 3 + c];
                    input[c * plane + y * size + x] = (value * 255.0 - 127.5) / 128.0;
                }
            }
        }
        let outputs = self.model.run(&[1, 3, size, size], input)?;
        if outputs.len() != 9 {
            return Err(FaceError::Unreadable(format!(
                "the detector has {} outputs; SCRFD with keypoints has 9",
                outputs.len()
            )));
        }
        let mut detections = Vec::new();
        for (level, stride) in STRIDES.iter().enumerate() {
            let (scores, boxes, kps) = (&outputs[level].1, &outputs[level + 3].1, &outputs[level + 6].1);
            let columns = size / stride;
            for (index, &score) in scores.iter().enumerate() {
                if score < SCORE_THRESHOLD {
                    continue;
                }
                let cell = index / ANCHORS;
                let (cx, cy) = (((cell % columns) * stride) as f32, ((cell / columns) * stride) as f32);
                let stride = *stride as f32;
                let d = &boxes[index * 4..index * 4 + 4];
                let bbox = [
                    cx - d[0] * stride,
                    cy - d[1] * stride,
                    cx + d[2] * stride,
                    cy + d[3] * stride,
                ];
                let k = &kps[index * 10..index * 10 + 10];
                let points = std::array::from_fn(|p| [cx + k[2 * p] * stride, cy + k[2 * p + 1] * stride]);
                detections.push(Detection {
                    bbox: bbox.map(|v| v / scale),
                    score,
                    kps: points.map(|[x, y]: [f32; 2]| [x / scale, y / scale]),
                });
            }
        }
        Ok(suppress(detections))
    }
}

/// Keeps the best detection of each overlapping group (insightface's NMS, `+1` pixel areas).
fn suppress(mut detections: Vec<Detection>) -> Vec<Detection> {
    detections.sort_by(|a, b| b.score.total_cmp(&a.score));
    let area = |b: &[f32; 4]| (b[2] - b[0] + 1.0) * (b[3] - b[1] + 1.0);
    let mut kept: Vec<Detection> = Vec::new();
    let mut remaining = detections;
    while !remaining.is_empty() {
        let best = remaining.remove(0);
        remaining.retain(|other| {
            let (a, b) = (&best.bbox, &other.bbox);
            let w = (a[2].min(b[2]) - a[0].max(b[0]) + 1.0).max(0.0);
            let h = (a[3].min(b[3]) - a[1].max(b[1]) + 1.0).max(0.0);
            let inter = w * h;
            inter / (area(a) + area(b) - inter) <= NMS_THRESHOLD
        });
        kept.push(best);
    }
    kept
}

/// Bilinear resize with pixel centres aligned (OpenCV's `INTER_LINEAR` convention).
pub fn resize_bilinear(image: &RgbImage, width: usize, height: usize) -> RgbImage {
    if image.width == width && image.height == height {
        return image.clone();
    }
    let (sx, sy) = (image.width as f32 / width as f32, image.height as f32 / height as f32);
    let mut pixels = Vec::with_capacity(width * height * 3);
    for y in 0..height {
        let fy = ((y as f32 + 0.5) * sy - 0.5).max(0.0);
        let (y0, wy) = (fy.floor() as i64, fy - fy.floor());
        let y1 = (y0 + 1).min(image.height as i64 - 1);
        for x in 0..width {
            let fx = ((x as f32 + 0.5) * sx - 0.5).max(0.0);
            let (x0, wx) = (fx.floor() as i64, fx - fx.floor());
            let x1 = (x0 + 1).min(image.width as i64 - 1);
            for c in 0..3 {
                let top = image.at(x0, y0, c) * (1.0 - wx) + image.at(x1, y0, c) * wx;
                let bottom = image.at(x0, y1, c) * (1.0 - wx) + image.at(x1, y1, c) * wx;
                pixels.push(top * (1.0 - wy) + bottom * wy);
            }
        }
    }
    RgbImage { width, height, pixels }
}
