//! `ApplyInstantID` and `ApplyInstantIDAdvanced`: the reference face's tokens go to the UNet's
//! cross-attention (IP-Adapter) and, with its keypoint image, to IdentityNet (a ControlNet
//! attached to both conditionings), as ComfyUI_InstantID does.

use super::faces::{keypoint_image, Analyzer};
use super::{tensor_error, FACEANALYSIS, INSTANTID};
use crate::face::{largest_face, RgbImage};
use crate::weights::InstantIdModel;
use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;
use swapgraph_model::{candle_device, Image, Mask, ModelHandle};
use swapgraph_node_api::{
    Args, Choice, Handle, NodeDescriptor, NodeError, NodeType, Params, Rehearsal, RunContext, SocketType, Value,
};
use swapgraph_sdxl::conditioning::{ConditioningList, ControlHint, ImagePrompt, PlacementMask};
use swapgraph_sdxl::controlnet::CONTROL_NET;
use swapgraph_sdxl::region::RegionMask;

/// How the embeddings of several reference images become one set of tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Choice)]
enum Combine {
    /// The mean embedding.
    Average,
    /// The mean after scaling each embedding dimension by its norm across images.
    #[choice(name = "norm average")]
    NormAverage,
    /// Every image's tokens, one after another.
    Concat,
}

/// Both variants of the node; `advanced` separates the two weights and adds noise and
/// combination controls.
pub struct ApplyInstantId {
    descriptor: NodeDescriptor,
    advanced: bool,
}

/// `ApplyInstantID`'s params: one weight for both paths.
#[derive(Params)]
struct SimpleParams {
    /// Strength of both the face tokens and IdentityNet.
    #[param(default = 0.8, min = 0.0, max = 5.0)]
    weight: f64,
    /// Where in the schedule it starts (0 = first step).
    #[param(default = 0.0, min = 0.0, max = 1.0)]
    start_at: f64,
    /// Where in the schedule it ends (1 = last step).
    #[param(default = 1.0, min = 0.0, max = 1.0)]
    end_at: f64,
}

/// `ApplyInstantIDAdvanced`'s params, which the simple node's become.
#[derive(Params)]
struct AdvancedParams {
    /// Strength of the face tokens in the UNet's cross-attention.
    #[param(default = 0.8, min = 0.0, max = 3.0)]
    ip_weight: f64,
    /// Strength of IdentityNet.
    #[param(default = 0.8, min = 0.0, max = 10.0)]
    cn_strength: f64,
    /// Where in the schedule it starts (0 = first step).
    #[param(default = 0.0, min = 0.0, max = 1.0)]
    start_at: f64,
    /// Where in the schedule it ends (1 = last step).
    #[param(default = 1.0, min = 0.0, max = 1.0)]
    end_at: f64,
    /// Uniform noise of this size replaces the zero embedding on the negative side (seeded by the face).
    #[param(default = 0.0, min = 0.0, max = 1.0)]
    noise: f64,
    /// How several reference images combine: mean embedding, mean of norm-scaled embeddings, or all tokens.
    #[param(default = Combine::Average)]
    combine_embeds: Combine,
}

impl From<SimpleParams> for AdvancedParams {
    fn from(simple: SimpleParams) -> Self {
        Self {
            ip_weight: simple.weight,
            cn_strength: simple.weight,
            start_at: simple.start_at,
            end_at: simple.end_at,
            noise: 0.0,
            combine_embeds: Combine::Average,
        }
    }
}

impl ApplyInstantId {
    fn base(name: &'static str, description: &'static str) -> NodeDescriptor {
        NodeDescriptor::new(name, "InstantID", description)
        .uses_device()
            .input("instantid", INSTANTID, "InstantID's adapter.")
            .input("insightface", FACEANALYSIS, "The face analyzer.")
            .input(
                "control_net",
                CONTROL_NET,
                "IdentityNet, InstantID's ControlNet.",
            )
            .input("image", SocketType::IMAGE, "Reference photo(s) of the face.")
            .input("model", SocketType::MODEL, "The model to sample with.")
            .input("positive", SocketType::CONDITIONING, "The positive conditioning.")
            .input("negative", SocketType::CONDITIONING, "The negative conditioning.")
            .optional_input(
                "image_kps",
                SocketType::IMAGE,
                "An image whose face gives the keypoints (pose) instead of the reference's.",
            )
            .optional_input(
                "mask",
                SocketType::MASK,
                "Where the face goes: the face tokens and IdentityNet act only inside the mask (stretched to the image), \
                 and, as ComfyUI_InstantID does, the mask weighs the positive conditioning: combine it with an \
                 unmasked one (ConditioningCombine) for the rest of the image.",
            )
    }

    /// `ApplyInstantID`: one weight for both paths.
    pub fn simple() -> Self {
        let descriptor = Self::base(
            "ApplyInstantID",
            "Conditions generation on the identity of the face in the reference image: its embedding steers the UNet's \
             cross-attention and, with its keypoints, IdentityNet.",
        )
        .params::<SimpleParams>();
        Self::finish(descriptor, false)
    }

    /// `ApplyInstantIDAdvanced`: separate weights, noise on the negative side, and how several
    /// reference images combine.
    pub fn advanced() -> Self {
        let descriptor = Self::base(
            "ApplyInstantIDAdvanced",
            "ApplyInstantID with separate strengths for the face tokens and IdentityNet, noise for the negative side, \
             and a choice of how several reference images combine.",
        )
        .params::<AdvancedParams>();
        Self::finish(descriptor, true)
    }

    fn finish(descriptor: NodeDescriptor, advanced: bool) -> Self {
        let descriptor = descriptor
            .output(
                SocketType::MODEL,
                "The model (unchanged; the conditionings carry InstantID).",
            )
            .named_output(
                "positive",
                SocketType::CONDITIONING,
                "The positive conditioning with InstantID.",
            )
            .named_output(
                "negative",
                SocketType::CONDITIONING,
                "The negative conditioning with InstantID.",
            );
        Self { descriptor, advanced }
    }
}

impl NodeType for ApplyInstantId {
    fn descriptor(&self) -> &NodeDescriptor {
        &self.descriptor
    }

    fn run(&self, args: &Args, ctx: &RunContext) -> Result<Vec<Value>, NodeError> {
        let params = self.params(args)?;
        let adapter = args.handle::<InstantIdModel>("instantid")?;
        let analyzer = args.handle::<Analyzer>("insightface")?;
        let image = args.handle::<Image>("image")?;
        let device = candle_device(ctx.device)?;

        let batch = image.pixels.dim(0).map_err(tensor_error)?;
        let mut faces = Vec::with_capacity(batch);
        for index in 0..batch {
            let reference = RgbImage::from_batch(&image.pixels, index).map_err(tensor_error)?;
            let what = format!(
                "{}.image (image {} of {batch}, {}x{})",
                ctx.node_id,
                index + 1,
                reference.width,
                reference.height
            );
            let face =
                largest_face(analyzer.0.as_ref(), &reference, &what).map_err(|e| NodeError::msg(e.to_string()))?;
            faces.push((reference, face));
        }
        let embeddings: Vec<Vec<f32>> = faces.iter().map(|(_, f)| f.embedding.clone()).collect();
        let tokens = tokens(&adapter, &embeddings, params.combine_embeds, params.noise, &device)?;

        let keypoints = match args.optional_handle::<Image>("image_kps")? {
            Some(pose) => {
                let pose = RgbImage::from_batch(&pose.pixels, 0).map_err(tensor_error)?;
                let face = largest_face(analyzer.0.as_ref(), &pose, &format!("{}.image_kps", ctx.node_id))
                    .map_err(|e| NodeError::msg(e.to_string()))?;
                keypoint_image(pose.width, pose.height, &face.kps, &device)?
            }
            None => {
                let (reference, face) = &faces[0];
                keypoint_image(reference.width, reference.height, &face.kps, &device)?
            }
        };
        attach(args, ctx, &params, &adapter, tokens, keypoints)
    }

    /// Stands in without analysing the face: zero tokens of the adapter's shape and a black
    /// keypoint image of the reference's (or the pose's) size, attached as the run attaches
    /// them, so that the sampler after it sees IdentityNet. The adapter is already on the
    /// device and the projection is small: the work needs no device memory worth stating.
    fn rehearse(&self, args: &Args, ctx: &RunContext) -> Result<Rehearsal, NodeError> {
        let params = self.params(args)?;
        let adapter = args.handle::<InstantIdModel>("instantid")?;
        let image = args.handle::<Image>("image")?;
        let rows = match params.combine_embeds {
            Combine::Concat => image.pixels.dim(0).map_err(tensor_error)?,
            Combine::Average | Combine::NormAverage => 1,
        };
        let (count, width) = adapter.weights.resampler.token_shape().map_err(tensor_error)?;
        let zeros = |shape: &[usize]| Tensor::zeros(shape, DType::F32, &Device::Cpu).map_err(tensor_error);
        let tokens = zeros(&[1, rows * count, width])?;
        let pose = args.optional_handle::<Image>("image_kps")?.unwrap_or(image);
        let (_, height, width, _) = pose.pixels.dims4().map_err(tensor_error)?;
        let keypoints = zeros(&[1, 3, height, width])?;
        Ok(Rehearsal::StoodIn {
            outputs: attach(args, ctx, &params, &adapter, (tokens.clone(), tokens), keypoints)?,
            need: None,
        })
    }
}

impl ApplyInstantId {
    /// The params, the simple node's as the advanced node's.
    fn params(&self, args: &Args) -> Result<AdvancedParams, NodeError> {
        Ok(if self.advanced {
            AdvancedParams::from_args(args)?
        } else {
            SimpleParams::from_args(args)?.into()
        })
    }
}

/// The node's outputs: the model, and both conditionings with IdentityNet (its hint the
/// `keypoints` image) and the image `tokens` (positive, negative) attached.
fn attach(
    args: &Args,
    ctx: &RunContext,
    params: &AdvancedParams,
    adapter: &InstantIdModel,
    (positive_tokens, negative_tokens): (Tensor, Tensor),
    keypoints: Tensor,
) -> Result<Vec<Value>, NodeError> {
    let mask = args.optional_handle::<Mask>("mask")?;
    let mask_error = |e: String| NodeError::msg(format!("{}.mask: {e}", ctx.node_id));
    let region = match &mask {
        Some(mask) => Some(RegionMask::new(&mask.values).map_err(|e| mask_error(e.to_string()))?),
        None => None,
    };
    // As ComfyUI_InstantID does, the mask also places the positive conditioning: the sampler
    // weighs its prediction by it.
    let placement_mask = match &mask {
        Some(mask) => Some(PlacementMask::new(&mask.values, 1.0, false).map_err(|e| mask_error(e.to_string()))?),
        None => None,
    };
    let controlnet = (*args.handle::<ModelHandle>("control_net")?).clone();
    let side = |name: &str, tokens: &Tensor| -> Result<Value, NodeError> {
        let attached = args.handle::<ConditioningList>(name)?.map(|conditioning| {
            let hint = Arc::new(ControlHint {
                controlnet: controlnet.clone(),
                hint: keypoints.clone(),
                strength: params.cn_strength,
                start_percent: params.start_at,
                end_percent: params.end_at,
                context: Some(tokens.clone()),
                region: region.clone(),
            });
            let prompt = Arc::new(ImagePrompt {
                layers: Arc::clone(&adapter.weights.layers),
                tokens: tokens.clone(),
                weight: params.ip_weight,
                start_percent: params.start_at,
                end_percent: params.end_at,
                region: region.clone(),
            });
            let mut attached = conditioning
                .with_control(hint)
                .with_image_prompt(prompt)
                .map_err(|e| NodeError::msg(format!("{}.{name}: {e}", ctx.node_id)))?;
            if name == "positive" {
                if let Some(mask) = &placement_mask {
                    attached.placement.mask = Some(mask.clone());
                }
            }
            Ok(attached)
        })?;
        Ok(Value::Handle(Handle::new(SocketType::CONDITIONING, Arc::new(attached))))
    };
    let model = args.handle::<ModelHandle>("model")?;
    Ok(vec![
        Value::Handle(Handle::new(SocketType::MODEL, model)),
        side("positive", &positive_tokens)?,
        side("negative", &negative_tokens)?,
    ])
}

/// Image tokens of the face (positive) and of the zero or noise embedding (negative).
fn tokens(
    adapter: &InstantIdModel,
    embeddings: &[Vec<f32>],
    combine: Combine,
    noise: f64,
    device: &Device,
) -> Result<(Tensor, Tensor), NodeError> {
    let width = embeddings[0].len();
    let count = embeddings.len();
    let combined: Vec<Vec<f32>> = match (combine, count) {
        (_, 1) | (Combine::Concat, _) => embeddings.to_vec(),
        (Combine::Average, _) => vec![(0..width)
            .map(|i| embeddings.iter().map(|e| e[i]).sum::<f32>() / count as f32)
            .collect()],
        (Combine::NormAverage, _) => vec![(0..width)
            .map(|i| {
                let norm = embeddings.iter().map(|e| e[i] * e[i]).sum::<f32>().sqrt().max(1e-12);
                embeddings.iter().map(|e| e[i] / norm).sum::<f32>() / count as f32
            })
            .collect()],
    };
    let rows = combined.len();
    let flat: Vec<f32> = combined.iter().flatten().copied().collect();
    let negative: Vec<f32> = if noise > 0.0 {
        let seed = flat.iter().map(|v| f64::from(*v)).sum::<f64>() as i64;
        let mut rng = ChaCha8Rng::seed_from_u64(seed.rem_euclid(1_000_000_007) as u64);
        flat.iter().map(|_| (noise * rng.random::<f64>()) as f32).collect()
    } else {
        vec![0.0; flat.len()]
    };
    let project = |values: Vec<f32>| -> Result<Tensor, NodeError> {
        let embedding = Tensor::from_vec(values, (rows, 1, width), device).map_err(tensor_error)?;
        let tokens = adapter.weights.resampler.forward(&embedding).map_err(tensor_error)?;
        // Several images' tokens (concat) become one longer sequence.
        let (_, n, dim) = tokens.dims3().map_err(tensor_error)?;
        tokens.reshape((1, rows * n, dim)).map_err(tensor_error)
    };
    let positive = project(flat)?;
    let negative = project(negative)?;
    Ok((positive, negative))
}
