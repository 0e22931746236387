//! The SDXL weights a LoRA may change, under every name LoRA files give them: kohya's (the
//! original UNet's names or diffusers', `_` for `.`, after `lora_unet_`, `lora_te1_`,
//! `lora_te2_`) and diffusers/PEFT's (the dotted name after `unet.`, `text_encoder.`,
//! `text_encoder_2.`).

use crate::checkpoint::single_file::unet_key;
use crate::clip::{ClipConfig, ClipTextEncoder};
use crate::unet::UNet;
use std::collections::HashMap;
use swapgraph_model::record_params;

/// Which model a LoRA layer changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoraPart {
    /// The UNet.
    Unet,
    /// CLIP ViT-L, the first text encoder.
    ClipL,
    /// OpenCLIP bigG, the second.
    ClipG,
}

/// A weight a LoRA layer may change.
#[derive(Clone, Debug)]
pub(super) struct Target {
    /// The model it belongs to.
    pub part: LoraPart,
    /// The model's own key of the weight.
    pub key: String,
    /// Its shape.
    pub shape: Vec<usize>,
}

/// Every weight of the given models a LoRA may change (matrices and convolution kernels), by
/// each name a LoRA file may give its layer.
#[derive(Default)]
pub struct LoraTargets {
    by_name: HashMap<String, Target>,
}

impl LoraTargets {
    /// The targets in `unet` and, when given, in the text encoders of configurations `clip`
    /// (CLIP-L, bigG).
    ///
    /// # Errors
    /// A text encoder configuration whose parameters cannot be listed.
    pub fn new(unet: Option<&UNet>, clip: Option<[&ClipConfig; 2]>) -> candle_core::Result<Self> {
        let mut targets = Self::default();
        if let Some(unet) = unet {
            for unit in unet.units() {
                for (name, shape) in &unit.tensors {
                    let key = unit.key(name);
                    let original = unet_key(&key, unet.config());
                    let target = Target {
                        part: LoraPart::Unet,
                        key: key.clone(),
                        shape: shape.dims().to_vec(),
                    };
                    let Some(layer) = key.strip_suffix(".weight").filter(|_| shape.rank() >= 2) else {
                        continue;
                    };
                    targets.add(format!("unet.{layer}"), &target);
                    targets.add(format!("lora_unet_{}", layer.replace('.', "_")), &target);
                    let original_layer = original
                        .as_deref()
                        .and_then(|o| o.strip_prefix("model.diffusion_model.")?.strip_suffix(".weight"));
                    if let Some(original_layer) = original_layer {
                        targets.add(format!("lora_unet_{}", original_layer.replace('.', "_")), &target);
                    }
                }
            }
        }
        if let Some([clip_l, clip_g]) = clip {
            for (part, cfg, kohya, diffusers) in [
                (LoraPart::ClipL, clip_l, "lora_te1_", "text_encoder."),
                (LoraPart::ClipG, clip_g, "lora_te2_", "text_encoder_2."),
            ] {
                for (key, shape) in record_params(|vb| ClipTextEncoder::new(vb, cfg))? {
                    let Some(layer) = key.strip_suffix(".weight").filter(|_| shape.rank() >= 2) else {
                        continue;
                    };
                    let target = Target {
                        part,
                        key: key.clone(),
                        shape: shape.dims().to_vec(),
                    };
                    targets.add(format!("{diffusers}{layer}"), &target);
                    targets.add(format!("{kohya}{}", layer.replace('.', "_")), &target);
                }
            }
        }
        Ok(targets)
    }

    fn add(&mut self, name: String, target: &Target) {
        self.by_name.insert(name, target.clone());
    }

    /// The weight a LoRA layer named `name` changes.
    pub(super) fn get(&self, name: &str) -> Option<&Target> {
        self.by_name.get(name)
    }
}
