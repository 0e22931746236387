//! A face given directly, skipping analysis: a JSON file with the identity embedding and the
//! five keypoints (and optionally the box), e.g. computed once with insightface.
//!
//! ```json
//! { "embedding": [0.01, -0.03, ...512 values...],
//!   "kps": [[190.3, 230.8], [320.6, 228.1], [256.2, 300.9], [205.7, 370.4], [310.2, 368.8]],
//!   "bbox": [150, 160, 360, 420] }
//! ```
//!
//! Keypoints are pixels of the reference image the file belongs to. The embedding is scaled to
//! unit length, as insightface's `normed_embedding`.

use super::{Face, FaceAnalyzer, FaceError, RgbImage};
use std::path::{Path, PathBuf};

/// A face read from a file; every image "contains" it.
pub struct FaceFile {
    path: PathBuf,
    face: Face,
}

impl FaceFile {
    /// Reads and checks `path`.
    ///
    /// # Errors
    /// [`FaceError::Unreadable`] naming the file and the field at fault.
    pub fn open(path: &Path) -> Result<Self, FaceError> {
        let shown = path.display();
        let bad = |message: String| FaceError::Unreadable(format!("face file {shown}: {message}"));
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
        let numbers = |value: &serde_json::Value, field: &str| -> Result<Vec<f32>, FaceError> {
            value
                .as_array()
                .ok_or_else(|| bad(format!("\"{field}\" must be a list of numbers")))?
                .iter()
                .map(|v| v.as_f64().map(|x| x as f32))
                .collect::<Option<Vec<f32>>>()
                .ok_or_else(|| bad(format!("\"{field}\" must hold only numbers")))
        };
        let mut embedding = numbers(
            json.get("embedding")
                .ok_or_else(|| bad("missing \"embedding\"".into()))?,
            "embedding",
        )?;
        if embedding.len() != super::tiny::EMBEDDING_DIM {
            return Err(bad(format!(
                "\"embedding\" has {} values; a face embedding has 512",
                embedding.len()
            )));
        }
        let norm = embedding.iter().map(|v| v * v).sum::<f32>().sqrt();
        if !norm.is_finite() || norm == 0.0 {
            return Err(bad("\"embedding\" is all zeros or not finite".into()));
        }
        embedding.iter_mut().for_each(|v| *v /= norm);
        let points = json
            .get("kps")
            .and_then(|k| k.as_array())
            .ok_or_else(|| bad("missing \"kps\": five [x, y] keypoints".into()))?;
        if points.len() != 5 {
            return Err(bad(format!(
                "\"kps\" has {} points; five are needed (eyes, nose, mouth corners)",
                points.len()
            )));
        }
        let mut kps = [[0.0; 2]; 5];
        for (i, point) in points.iter().enumerate() {
            let xy = numbers(point, "kps")?;
            kps[i] = <[f32; 2]>::try_from(xy).map_err(|_| bad(format!("\"kps\" point {i} is not [x, y]")))?;
        }
        let bbox = match json.get("bbox") {
            Some(value) => <[f32; 4]>::try_from(numbers(value, "bbox")?)
                .map_err(|_| bad("\"bbox\" must be [x1, y1, x2, y2]".into()))?,
            None => bounding_box(&kps),
        };
        Ok(Self {
            path: path.to_path_buf(),
            face: Face { bbox, kps, embedding },
        })
    }
}

/// A box around the keypoints with a margin, for files that give none.
fn bounding_box(kps: &[[f32; 2]; 5]) -> [f32; 4] {
    let (xs, ys): (Vec<f32>, Vec<f32>) = kps.iter().map(|p| (p[0], p[1])).unzip();
    let (x1, x2) = (
        xs.iter().copied().fold(f32::MAX, f32::min),
        xs.iter().copied().fold(f32::MIN, f32::max),
    );
    let (y1, y2) = (
        ys.iter().copied().fold(f32::MAX, f32::min),
        ys.iter().copied().fold(f32::MIN, f32::max),
    );
    let margin = 0.5 * (x2 - x1).max(y2 - y1);
    [x1 - margin, y1 - margin, x2 + margin, y2 + margin]
}

impl FaceAnalyzer for FaceFile {
    fn describe(&self) -> String {
        format!("the face in {}", self.path.display())
    }

    fn analyze(&self, _image: &RgbImage) -> Result<Vec<Face>, FaceError> {
        Ok(vec![self.face.clone()])
    }
}
