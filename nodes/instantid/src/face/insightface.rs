//! insightface's face analysis over a model folder (antelopev2, buffalo_l): SCRFD detection,
//! retried at smaller input sizes when nothing is found (640 down to 320 in steps of 64, as
//! ComfyUI_InstantID does), then each face aligned to ArcFace's template and embedded. A folder
//! holding MTCNN's `pnet.onnx`, `rnet.onnx` and `onet.onnx` detects with MTCNN instead.

use super::align::{similarity, warp, ARCFACE_TEMPLATE};
use super::arcface::{ArcFace, INPUT_SIZE};
use super::mtcnn::Mtcnn;
use super::scrfd::{Detection, Scrfd};
use super::{Face, FaceAnalyzer, FaceError, RgbImage};
use std::path::{Path, PathBuf};

/// Detection input sizes tried in turn.
pub const DETECTION_SIZES: [usize; 6] = [640, 576, 512, 448, 384, 320];

/// Detector and recognizer file names of insightface's packs, in the order they are looked for.
const DETECTORS: [&str; 2] = ["scrfd_10g_bnkps.onnx", "det_10g.onnx"];
const RECOGNIZERS: [&str; 2] = ["glintr100.onnx", "w600k_r50.onnx"];

/// Which detector a folder holds.
enum Detector {
    /// insightface's SCRFD, retried at smaller sizes.
    Scrfd(Box<Scrfd>),
    /// MTCNN's three networks (one pass over an image pyramid).
    Mtcnn(Box<Mtcnn>),
}

/// A detector plus ArcFace from one folder.
pub struct InsightFace {
    folder: PathBuf,
    detector: Detector,
    recognizer: ArcFace,
}

impl InsightFace {
    /// Opens the models of `folder` (e.g. `models/insightface/models/antelopev2`).
    ///
    /// # Errors
    /// [`FaceError::Unreadable`] naming the folder and the files it lacks.
    pub fn open(folder: &Path) -> Result<Self, FaceError> {
        let find = |names: &[&str], role: &str| {
            names
                .iter()
                .map(|name| folder.join(name))
                .find(|path| path.is_file())
                .ok_or_else(|| {
                    FaceError::Unreadable(format!(
                        "face models {}: no {role} (looked for {})",
                        folder.display(),
                        names.join(", ")
                    ))
                })
        };
        let detector = if folder.join("pnet.onnx").is_file() {
            Detector::Mtcnn(Box::new(Mtcnn::open(folder)?))
        } else {
            Detector::Scrfd(Box::new(Scrfd::open(&find(&DETECTORS, "detector")?)?))
        };
        Ok(Self {
            folder: folder.to_path_buf(),
            detector,
            recognizer: ArcFace::open(&find(&RECOGNIZERS, "recognition model")?)?,
        })
    }

    /// The first non-empty detection: SCRFD at each size in turn, or MTCNN's pyramid.
    fn detect(&self, image: &RgbImage) -> Result<Vec<Detection>, FaceError> {
        match &self.detector {
            Detector::Mtcnn(mtcnn) => mtcnn.detect(image),
            Detector::Scrfd(scrfd) => {
                for size in DETECTION_SIZES {
                    let detections = scrfd.detect(image, size)?;
                    if !detections.is_empty() {
                        return Ok(detections);
                    }
                }
                Ok(Vec::new())
            }
        }
    }

    /// Opens a detector and a recognizer given by path (tests, custom packs).
    ///
    /// # Errors
    /// [`FaceError::Unreadable`] naming the file.
    pub fn from_files(detector: &Path, recognizer: &Path) -> Result<Self, FaceError> {
        Ok(Self {
            folder: detector.parent().unwrap_or(Path::new(".")).to_path_buf(),
            detector: Detector::Scrfd(Box::new(Scrfd::open(detector)?)),
            recognizer: ArcFace::open(recognizer)?,
        })
    }
}

impl FaceAnalyzer for InsightFace {
    fn describe(&self) -> String {
        match self.detector {
            Detector::Scrfd(_) => {
                let sizes: Vec<String> = DETECTION_SIZES.iter().map(|s| format!("{s}x{s}")).collect();
                format!(
                    "face models in {}, SCRFD at {}",
                    self.folder.display(),
                    sizes.join(", ")
                )
            }
            Detector::Mtcnn(_) => format!(
                "face models in {}, MTCNN (faces of 20 px and up)",
                self.folder.display()
            ),
        }
    }

    fn analyze(&self, image: &RgbImage) -> Result<Vec<Face>, FaceError> {
        self.detect(image)?
            .into_iter()
            .map(|detection| {
                let aligned = warp(image, &similarity(&detection.kps, &ARCFACE_TEMPLATE), INPUT_SIZE);
                Ok(Face {
                    bbox: detection.bbox,
                    kps: detection.kps,
                    embedding: self.recognizer.embedding(&aligned)?,
                })
            })
            .collect()
    }
}
