//! ArcFace recognition as insightface runs it: a 112x112 face aligned to the template,
//! normalised to (x - 127.5) / 127.5 in RGB, to a 512-value embedding scaled to unit length.

use super::onnx::OnnxModel;
use super::{FaceError, RgbImage};
use std::path::Path;

/// Side of the aligned face ArcFace reads.
pub const INPUT_SIZE: usize = 112;

/// An ArcFace ONNX model (insightface's `glintr100.onnx`, `w600k_r50.onnx`).
pub struct ArcFace {
    model: OnnxModel,
}

impl ArcFace {
    /// Reads the model at `path`.
    ///
    /// # Errors
    /// [`FaceError::Unreadable`] naming the file.
    pub fn open(path: &Path) -> Result<Self, FaceError> {
        Ok(Self {
            model: OnnxModel::open(path)?,
        })
    }

    /// The embedding of an aligned 112x112 face, as the model gives it.
    ///
    /// # Errors
    /// [`FaceError::Unreadable`] when the model rejects the input.
    pub fn raw_embedding(&self, aligned: &RgbImage) -> Result<Vec<f32>, FaceError> {
        let plane = INPUT_SIZE * INPUT_SIZE;
        let mut input = vec![0.0; 3 * plane];
        for (i, pixel) in aligned.pixels.chunks(3).enumerate() {
            for (c, value) in pixel.iter().enumerate() {
                input[c * plane + i] = (value * 255.0 - 127.5) / 127.5;
            }
        }
        let mut outputs = self.model.run(&[1, 3, INPUT_SIZE, INPUT_SIZE], input)?;
        Ok(outputs.swap_remove(0).1)
    }

    /// The embedding scaled to unit length (insightface's `normed_embedding`).
    ///
    /// # Errors
    /// [`FaceError::Unreadable`] when the model rejects the input.
    pub fn embedding(&self, aligned: &RgbImage) -> Result<Vec<f32>, FaceError> {
        let mut embedding = self.raw_embedding(aligned)?;
        let norm = embedding.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        embedding.iter_mut().for_each(|v| *v /= norm);
        Ok(embedding)
    }
}
