//! `builtin:tiny-face`: a stand-in face analyzer with seeded weights, so InstantID workflows run
//! on any machine without model downloads. Its "detector" reports one face filling the middle of
//! the image with keypoints where ArcFace's template puts them; its "recognizer" aligns that
//! face to 112x112 exactly as the real pipeline does, pools it to 8x8 and projects it to 512
//! values with a seeded matrix. Identities it gives are meaningless; the code path after it is
//! the real one.

use super::align::{similarity, warp, ARCFACE_TEMPLATE};
use super::{Face, FaceAnalyzer, FaceError, RgbImage};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// The name workflows use for the built-in tiny face analyzer.
pub const TINY_FACE: &str = "builtin:tiny-face";

/// Width of the embedding, as ArcFace's.
pub const EMBEDDING_DIM: usize = 512;

const POOLED: usize = 8;
const CROP: usize = 112;

/// The built-in tiny analyzer.
pub struct TinyFaceAnalyzer {
    /// `[EMBEDDING_DIM][POOLED * POOLED * 3]`, row-major.
    projection: Vec<f32>,
}

impl TinyFaceAnalyzer {
    /// The analyzer; the same weights every time.
    pub fn new() -> Self {
        let inputs = POOLED * POOLED * 3;
        let mut rng = ChaCha8Rng::seed_from_u64(0x7ace);
        let scale = 1.0 / (inputs as f32).sqrt();
        let projection = (0..EMBEDDING_DIM * inputs)
            .map(|_| scale * <StandardNormal as Distribution<f32>>::sample(&StandardNormal, &mut rng))
            .collect();
        Self { projection }
    }
}

impl Default for TinyFaceAnalyzer {
    fn default() -> Self {
        Self::new()
    }
}

impl FaceAnalyzer for TinyFaceAnalyzer {
    fn describe(&self) -> String {
        format!("{TINY_FACE} (one face in the middle of the image)")
    }

    fn analyze(&self, image: &RgbImage) -> Result<Vec<Face>, FaceError> {
        if image.width < 16 || image.height < 16 {
            return Ok(Vec::new());
        }
        // The middle square, 60% of the shorter side.
        let side = 0.6 * image.width.min(image.height) as f32;
        let (left, top) = ((image.width as f32 - side) / 2.0, (image.height as f32 - side) / 2.0);
        let kps = ARCFACE_TEMPLATE.map(|[x, y]| [left + x / CROP as f32 * side, top + y / CROP as f32 * side]);
        let aligned = warp(image, &similarity(&kps, &ARCFACE_TEMPLATE), CROP);
        let pooled = pool(&aligned);
        let mut embedding: Vec<f32> = self
            .projection
            .chunks(pooled.len())
            .map(|row| row.iter().zip(&pooled).map(|(w, x)| w * (x - 0.5)).sum())
            .collect();
        let norm = embedding.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        embedding.iter_mut().for_each(|v| *v /= norm);
        Ok(vec![Face {
            bbox: [left, top, left + side, top + side],
            kps,
            embedding,
        }])
    }
}

/// Average of each of `POOLED` x `POOLED` cells of a square crop, per channel.
fn pool(crop: &RgbImage) -> Vec<f32> {
    let cell = crop.width / POOLED;
    let mut out = vec![0.0; POOLED * POOLED * 3];
    for y in 0..POOLED * cell {
        for x in 0..POOLED * cell {
            for c in 0..3 {
                out[((y / cell) * POOLED + x / cell) * 3 + c] += crop.pixels[(y * crop.width + x) * 3 + c];
            }
        }
    }
    let count = (cell * cell) as f32;
    out.iter_mut().for_each(|v| *v /= count);
    out
}
