//! `LoraLoader` and `LoraLoaderModelOnly`: a LoRA merged into the UNet (and the text encoders)
//! as their weights are read, once, where they will live; the models they are given stay as
//! they were, so a changed strength or a LoRA taken away reads the original weights again.

use super::tensor_error;
use crate::conditioning::TextEncoders;
use crate::lora::{Lora, LoraTargets, Strengths};
use crate::unet::UNet;
use std::path::Path;
use std::sync::Arc;
use swapgraph_model::ModelHandle;
use swapgraph_node_api::{Args, Handle, NodeDescriptor, NodeError, NodeType, Params, RunContext, SocketType, Value};

/// The LoRA and how strongly it changes each model.
#[derive(Params)]
struct LoraFile {
    /// A .safetensors LoRA inside the models folder (--models-dir): kohya/A1111 (lora_unet_*, lora_te1_*, lora_te2_*, LoCon convolutions) or diffusers/PEFT (lora_A/lora_B).
    #[param(reads = Models)]
    lora_name: Arc<str>,
    /// How strongly it changes the UNet (0: not at all, negative: the opposite way).
    #[param(default = 1.0, min = -100.0, max = 100.0)]
    strength_model: f64,
}

/// How strongly a LoRA changes the text encoders.
#[derive(Params)]
struct ClipStrength {
    /// How strongly it changes both text encoders.
    #[param(default = 1.0, min = -100.0, max = 100.0)]
    strength_clip: f64,
}

/// Applies a LoRA to the UNet and both text encoders.
pub struct LoraLoader {
    descriptor: NodeDescriptor,
    model_only: bool,
}

impl LoraLoader {
    /// `LoraLoader`: the UNet and the text encoders.
    pub fn new() -> Self {
        let descriptor = NodeDescriptor::new(
            "LoraLoader",
            "loaders",
            "Applies an SDXL LoRA to the UNet and both text encoders, merged into their weights once as they are \
             read (with or without BlockSwap, nothing is added to a step). Chain several for several LoRAs.",
        )
        .input("model", SocketType::MODEL, "The UNet.")
        .input("clip", SocketType::CLIP, "Both text encoders.")
        .params::<LoraFile>()
        .params::<ClipStrength>()
        .output(SocketType::MODEL, "The UNet with the LoRA.")
        .output(SocketType::CLIP, "The text encoders with the LoRA.");
        Self {
            descriptor,
            model_only: false,
        }
    }

    /// `LoraLoaderModelOnly`: the UNet only.
    pub fn model_only() -> Self {
        let descriptor = NodeDescriptor::new(
            "LoraLoaderModelOnly",
            "loaders",
            "Applies an SDXL LoRA to the UNet only, merged into its weights once as they are read.",
        )
        .input("model", SocketType::MODEL, "The UNet.")
        .params::<LoraFile>()
        .output(SocketType::MODEL, "The UNet with the LoRA.");
        Self {
            descriptor,
            model_only: true,
        }
    }
}

/// Reads the LoRA at `path` for `model` and `clip`, logging the layers it leaves out.
fn read(
    path: &Path,
    model: &ModelHandle,
    clip: Option<&TextEncoders>,
    strengths: Strengths,
) -> Result<Lora, NodeError> {
    let unet = model.network.as_any().downcast_ref::<UNet>().ok_or_else(|| {
        NodeError::msg(format!(
            "a LoRA is applied to an SDXL UNet, and the model is a {}",
            model.network.kind()
        ))
    })?;
    let targets = LoraTargets::new(Some(unet), clip.map(TextEncoders::configs)).map_err(tensor_error)?;
    let lora = Lora::read(path, &targets, strengths).map_err(NodeError::msg)?;
    if !lora.unmatched.is_empty() {
        tracing::warn!(
            "{}: {} of its layers or keys match no weight of these models and were left out, e.g. {}",
            path.display(),
            lora.unmatched.len(),
            lora.unmatched.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
        );
    }
    Ok(lora)
}

impl NodeType for LoraLoader {
    fn descriptor(&self) -> &NodeDescriptor {
        &self.descriptor
    }

    fn run(&self, args: &Args, ctx: &RunContext) -> Result<Vec<Value>, NodeError> {
        let LoraFile {
            lora_name,
            strength_model,
        } = LoraFile::from_args(args)?;
        let path = ctx.files.model("lora_name", &lora_name)?;
        let model = args.handle::<ModelHandle>("model")?;
        let clip = match self.model_only {
            true => None,
            false => Some(args.handle::<TextEncoders>("clip")?),
        };
        let strengths = Strengths {
            model: strength_model,
            clip: match self.model_only {
                true => 0.0,
                false => ClipStrength::from_args(args)?.strength_clip,
            },
        };
        let lora = read(Path::new(&path), &model, clip.as_deref(), strengths)?;
        // A LoRA that changes nothing (strength 0) hands on the model itself, and its stores.
        let model = match lora.unet.is_empty() {
            true => model,
            false => Arc::new(model.with_source(Arc::new(model.source.patched(&lora.unet)))),
        };
        let mut outputs = vec![Value::Handle(Handle::new(SocketType::MODEL, model))];
        if let Some(clip) = clip {
            let clip = match lora.clip_l.is_empty() && lora.clip_g.is_empty() {
                true => clip,
                false => Arc::new(clip.patched(&lora.clip_l, &lora.clip_g).map_err(tensor_error)?),
            };
            outputs.push(Value::Handle(Handle::new(SocketType::CLIP, clip)));
        }
        Ok(outputs)
    }
}
