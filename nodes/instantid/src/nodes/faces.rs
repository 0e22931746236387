//! `InstantIDFaceAnalysis` and `FaceKeypointsPreprocessor`: a face analyzer, and the keypoint
//! image of the largest face in an image.

use super::{tensor_error, FACEANALYSIS};
use crate::face::file::FaceFile;
use crate::face::insightface::InsightFace;
use crate::face::tiny::{TinyFaceAnalyzer, TINY_FACE};
use crate::face::{largest_face, FaceAnalyzer, RgbImage};
use crate::keypoints::draw_keypoints;
use candle_core::{Device, Tensor};
use std::path::Path;
use std::sync::Arc;
use swapgraph_model::{candle_device, Image};
use swapgraph_node_api::{
    Args, Choice, Handle, NodeDescriptor, NodeError, NodeType, Params, RunContext, SocketType, Value,
};

/// The FACEANALYSIS value: an analyzer behind a shared pointer.
pub struct Analyzer(pub Arc<dyn FaceAnalyzer>);

/// Chooses how faces are found.
pub struct InstantIdFaceAnalysis {
    descriptor: NodeDescriptor,
}

/// ComfyUI_InstantID's ONNX execution providers. swapgraph runs the face models on the host
/// whichever is named: the embedding and keypoints do not depend on it, so its workflows run as
/// exported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Choice)]
enum Provider {
    /// The CPU.
    #[choice(name = "CPU")]
    Cpu,
    /// NVIDIA's CUDA in ComfyUI; the host here.
    #[choice(name = "CUDA")]
    Cuda,
    /// AMD's ROCm in ComfyUI; the host here.
    #[choice(name = "ROCM")]
    Rocm,
    /// Apple's Core ML in ComfyUI; the host here.
    #[choice(name = "CoreML")]
    CoreMl,
}

/// The face models to load.
#[derive(Params)]
struct FaceModels {
    /// A folder of face models (insightface's antelopev2 or buffalo_l, or MTCNN's three networks with an ArcFace
    /// model) inside the models folder (--models-dir), builtin:tiny-face, or a face .json file there.
    #[param(default = TINY_FACE, reads = Models)]
    face_models: Arc<str>,
    /// ComfyUI_InstantID's execution provider (CPU, CUDA, ROCM, CoreML): accepted so its workflows run; the face models run on the host whichever is named, with the same results.
    #[param(default = Provider::Cpu)]
    provider: Provider,
}

impl InstantIdFaceAnalysis {
    /// The node type.
    pub fn new() -> Self {
        let descriptor = NodeDescriptor::new(
            "InstantIDFaceAnalysis",
            "InstantID",
            "Finds faces and their identity embeddings: insightface's models (a folder such as antelopev2 with SCRFD \
             and ArcFace ONNX files), builtin:tiny-face (a stand-in with random weights for the built-in models), or a \
             face file (.json with a 512-value embedding and five keypoints) that skips analysis.",
        )
        .params::<FaceModels>()
        .output(FACEANALYSIS, "The face analyzer.");
        Self { descriptor }
    }
}

impl NodeType for InstantIdFaceAnalysis {
    fn descriptor(&self) -> &NodeDescriptor {
        &self.descriptor
    }

    fn run(&self, args: &Args, ctx: &RunContext) -> Result<Vec<Value>, NodeError> {
        let params = FaceModels::from_args(args)?;
        if params.provider != Provider::Cpu {
            tracing::info!(
                "InstantIDFaceAnalysis: provider {} is ComfyUI_InstantID's; the face models run on the host",
                params.provider.name()
            );
        }
        let name = ctx.files.model("face_models", &params.face_models)?;
        let analyzer: Arc<dyn FaceAnalyzer> = if name == TINY_FACE {
            Arc::new(TinyFaceAnalyzer::new())
        } else if name.ends_with(".json") {
            Arc::new(FaceFile::open(Path::new(&name)).map_err(|e| NodeError::msg(e.to_string()))?)
        } else if Path::new(&name).is_dir() {
            Arc::new(InsightFace::open(Path::new(&name)).map_err(|e| NodeError::msg(e.to_string()))?)
        } else {
            return Err(NodeError::msg(format!(
                "face_models \"{name}\" not found: give a folder of insightface models (e.g. antelopev2), \
                 {TINY_FACE} or a face .json file (embedding and keypoints)"
            )));
        };
        Ok(vec![Value::Handle(Handle::new(
            FACEANALYSIS,
            Arc::new(Analyzer(analyzer)),
        ))])
    }
}

/// Draws the keypoint image of the largest face in an image.
pub struct FaceKeypointsPreprocessor {
    descriptor: NodeDescriptor,
}

impl FaceKeypointsPreprocessor {
    /// The node type.
    pub fn new() -> Self {
        let descriptor = NodeDescriptor::new(
            "FaceKeypointsPreprocessor",
            "InstantID",
            "Draws the keypoint image (eyes, nose, mouth corners) of the largest face in the first image, as IdentityNet reads it.",
        )
        .input("faceanalysis", FACEANALYSIS, "The face analyzer.")
        .input("image", SocketType::IMAGE, "The image with a face.")
        .output(SocketType::IMAGE, "The keypoint image, the size of the input.");
        Self { descriptor }
    }
}

impl NodeType for FaceKeypointsPreprocessor {
    fn descriptor(&self) -> &NodeDescriptor {
        &self.descriptor
    }

    fn run(&self, args: &Args, ctx: &RunContext) -> Result<Vec<Value>, NodeError> {
        let analyzer = args.handle::<Analyzer>("faceanalysis")?;
        let image = args.handle::<Image>("image")?;
        let reference = RgbImage::from_batch(&image.pixels, 0).map_err(tensor_error)?;
        let face = largest_face(analyzer.0.as_ref(), &reference, &format!("{}.image", ctx.node_id))
            .map_err(|e| NodeError::msg(e.to_string()))?;
        let device = candle_device(ctx.device)?;
        let pixels = keypoint_image(reference.width, reference.height, &face.kps, &device)?
            .permute((0, 2, 3, 1))
            .map_err(tensor_error)?;
        Ok(vec![Value::Handle(Handle::new(
            SocketType::IMAGE,
            Arc::new(Image { pixels }),
        ))])
    }
}

/// The keypoint image as a hint tensor `[1, 3, height, width]`, values 0..1.
///
/// # Errors
/// A tensor error.
pub fn keypoint_image(width: usize, height: usize, kps: &[[f32; 2]; 5], device: &Device) -> Result<Tensor, NodeError> {
    let canvas = draw_keypoints(width, height, kps);
    let values: Vec<f32> = canvas
        .pixels()
        .iter()
        .flatten()
        .map(|&v| f32::from(v) / 255.0)
        .collect();
    Tensor::from_vec(values, (1, height, width, 3), &Device::Cpu)
        .and_then(|t| t.permute((0, 3, 1, 2)))
        .and_then(|t| t.contiguous())
        .and_then(|t| t.to_device(device))
        .map_err(tensor_error)
}
