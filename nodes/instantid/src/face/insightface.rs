//! insightface's face analysis over a model folder (antelopev2, buffalo_l): SCRFD detection,
//! retried at smaller input sizes when nothing is found (640 down to 320 in steps of 64, as
//! ComfyUI_InstantID does), then each face aligned to ArcFace's template and embedded.

use super::align::{similarity, warp, ARCFACE_TEMPLATE};
use super::arcface::{ArcFace, INPUT_SIZE};
use super::scrfd::Scrfd;
use super::{Face, FaceAnalyzer, FaceError, RgbImage};
use std::path::{Path, PathBuf};

/// Detection input sizes tried in turn.
pub const DETECTION_SIZES: [usize; 6] = [640, 576, 512, 448, 384, 320];

/// Detector and recognizer file names of insightface's packs, in the order they are looked for.
const DETECTORS: [&str; 2] = ["scrfd_10g_bnkps.onnx", "det_10g.onnx"];
const RECOGNIZERS: [&str; 2] = ["glintr100.onnx", "w600k_r50.onnx"];

/// SCRFD plus ArcFace from one folder.
pub struct InsightFace {
    folder: PathBuf,
    detector: Scrfd,
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
        Ok(Self {
            folder: folder.to_path_buf(),
            detector: Scrfd::open(&find(&DETECTORS, "detector")?)?,
            recognizer: ArcFace::open(&find(&RECOGNIZERS, "recognition model")?)?,
        })
    }

    /// Opens a detector and a recognizer given by path (tests, custom packs).
    ///
    /// # Errors
    /// [`FaceError::Unreadable`] naming the file.
    pub fn from_files(detector: &Path, recognizer: &Path) -> Result<Self, FaceError> {
        Ok(Self {
            folder: detector.parent().unwrap_or(Path::new(".")).to_path_buf(),
            detector: Scrfd::open(detector)?,
            recognizer: ArcFace::open(recognizer)?,
        })
    }
}

impl FaceAnalyzer for InsightFace {
    fn describe(&self) -> String {
        let sizes: Vec<String> = DETECTION_SIZES.iter().map(|s| format!("{s}x{s}")).collect();
        format!(
            "insightface models in {}, detection at {}",
            self.folder.display(),
            sizes.join(", ")
        )
    }

    fn analyze(&self, image: &RgbImage) -> Result<Vec<Face>, FaceError> {
        for size in DETECTION_SIZES {
            let detections = self.detector.detect(image, size)?;
            if detections.is_empty() {
                continue;
            }
            return detections
                .into_iter()
                .map(|detection| {
                    let aligned = warp(image, &similarity(&detection.kps, &ARCFACE_TEMPLATE), INPUT_SIZE);
                    Ok(Face {
                        bbox: detection.bbox,
                        kps: detection.kps,
                        embedding: self.recognizer.embedding(&aligned)?,
                    })
                })
                .collect();
        }
        Ok(Vec::new())
    }
}
