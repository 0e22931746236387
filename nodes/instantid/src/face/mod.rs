//! Faces in a reference image: where they are, their five keypoints and their identity
//! embedding, from a [`FaceAnalyzer`].
//!
//! Analyzers: insightface's models run with tract ([`insightface`]: SCRFD detection and ArcFace
//! recognition), the built-in tiny one ([`tiny`]) so workflows run anywhere, and a face given
//! directly as a file ([`file`]), which skips analysis.

pub mod align;
pub mod arcface;
pub mod file;
pub mod insightface;
pub mod mtcnn;
pub mod onnx;
pub mod resize;
pub mod scrfd;
pub mod tiny;

use candle_core::Tensor;

/// One face found in an image.
#[derive(Clone, Debug, PartialEq)]
pub struct Face {
    /// Box `[x1, y1, x2, y2]` in pixels.
    pub bbox: [f32; 4],
    /// Right eye, left eye, nose, right and left mouth corner, in pixels.
    pub kps: [[f32; 2]; 5],
    /// The identity embedding, unit length (512 values for ArcFace).
    pub embedding: Vec<f32>,
}

impl Face {
    /// The box's area, which picks the face to use when there are several.
    pub fn area(&self) -> f32 {
        (self.bbox[2] - self.bbox[0]).max(0.0) * (self.bbox[3] - self.bbox[1]).max(0.0)
    }
}

/// An RGB image on the host, values 0..1, row-major and interleaved.
#[derive(Clone, Debug, PartialEq)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `width * height * 3` values.
    pub pixels: Vec<f32>,
}

impl RgbImage {
    /// Image `index` of an IMAGE batch `[b, h, w, 3]`.
    ///
    /// # Errors
    /// A tensor error for a mis-shaped batch.
    pub fn from_batch(batch: &Tensor, index: usize) -> candle_core::Result<Self> {
        let (_, height, width, _) = batch.dims4()?;
        let pixels = batch
            .narrow(0, index, 1)?
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1()?;
        Ok(Self { width, height, pixels })
    }

    /// The value of channel `c` at (`x`, `y`); 0 outside the image.
    pub fn at(&self, x: i64, y: i64, c: usize) -> f32 {
        if x < 0 || y < 0 || x as usize >= self.width || y as usize >= self.height {
            return 0.0;
        }
        self.pixels[(y as usize * self.width + x as usize) * 3 + c]
    }
}

/// Why faces could not be found.
#[derive(Debug, thiserror::Error)]
pub enum FaceError {
    /// A model or face file could not be read.
    #[error("{0}")]
    Unreadable(String),
    /// Nothing was found.
    #[error("no face found in {image} ({tried})")]
    NoFace {
        /// Which image.
        image: String,
        /// What was tried (detection sizes, or the analyzer).
        tried: String,
    },
}

/// Finds faces in images.
pub trait FaceAnalyzer: Send + Sync {
    /// What the analyzer is, for messages.
    fn describe(&self) -> String;

    /// Every face in `image`, with keypoints and embedding.
    ///
    /// # Errors
    /// [`FaceError`] when the analyzer cannot run.
    fn analyze(&self, image: &RgbImage) -> Result<Vec<Face>, FaceError>;
}

/// The largest face of `image`, named `what` in messages; several faces are logged.
///
/// # Errors
/// [`FaceError::NoFace`] naming the image and what was tried.
pub fn largest_face(analyzer: &dyn FaceAnalyzer, image: &RgbImage, what: &str) -> Result<Face, FaceError> {
    let mut faces = analyzer.analyze(image)?;
    faces.sort_by(|a, b| b.area().total_cmp(&a.area()));
    if faces.len() > 1 {
        tracing::info!(
            "{what}: {} faces found; using the largest ({:.0} x {:.0} px at {:.0}, {:.0})",
            faces.len(),
            faces[0].bbox[2] - faces[0].bbox[0],
            faces[0].bbox[3] - faces[0].bbox[1],
            faces[0].bbox[0],
            faces[0].bbox[1]
        );
    }
    faces.into_iter().next().ok_or_else(|| FaceError::NoFace {
        image: what.to_string(),
        tried: analyzer.describe(),
    })
}
