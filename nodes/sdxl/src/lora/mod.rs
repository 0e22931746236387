//! LoRAs for SDXL: read from `.safetensors` files in the formats users have (kohya/A1111, with
//! the original UNet's names or diffusers', LyCORIS LoCon for convolutions, diffusers/PEFT),
//! matched to the UNet's and both text encoders' weights, and merged as a model reads its
//! weights, once, where they will live: nothing is added to a step, and the files' weights
//! stay untouched.

mod file;
mod targets;

pub use targets::{LoraPart, LoraTargets};

use std::path::Path;
use swapgraph_model::{LowRank, WeightPatches};

/// What a LoRA changes in each model, at the strengths asked for.
#[derive(Debug, Default)]
pub struct Lora {
    /// The UNet's changes.
    pub unet: WeightPatches,
    /// CLIP-L's.
    pub clip_l: WeightPatches,
    /// bigG's.
    pub clip_g: WeightPatches,
    /// The file's layers that match no weight of the given models, and its keys that are no
    /// factor of a layer: reported, not merged.
    pub unmatched: Vec<String>,
}

/// How strongly a LoRA changes the UNet and the text encoders (ComfyUI's `strength_model` and
/// `strength_clip`).
#[derive(Clone, Copy, Debug)]
pub struct Strengths {
    /// The UNet's.
    pub model: f64,
    /// Both text encoders'.
    pub clip: f64,
}

impl Lora {
    /// Reads the LoRA at `path` for the weights in `targets`.
    ///
    /// # Errors
    /// A message naming the file: unreadable, not safetensors, an adapter kind not merged, a
    /// LoRA for SD 1.x or 2.x, layers whose shapes are not those of the weights they name, or
    /// no layer that matches any weight.
    pub fn read(path: &Path, targets: &LoraTargets, strengths: Strengths) -> Result<Self, String> {
        let shown = path.display();
        let (layers, other) = file::read_layers(path)?;
        if layers.keys().any(|name| name.starts_with("lora_te_")) {
            return Err(format!(
                "{shown} is a LoRA for SD 1.x or 2.x (its text encoder's layers are lora_te_*; SDXL LoRAs have \
                 lora_te1_ and lora_te2_)"
            ));
        }
        let mut lora = Lora {
            unmatched: other,
            ..Lora::default()
        };
        let mut misfits = Vec::new();
        let mut matched = 0;
        for (name, factors) in layers {
            let (Some(up), Some(down)) = (factors.up, factors.down) else {
                continue; // the file's reader refuses a layer missing a factor
            };
            let Some(target) = targets.get(&name) else {
                lora.unmatched.push(name);
                continue;
            };
            matched += 1;
            let rank = down.dims()[0];
            let change = LowRank {
                scale: factors.alpha.map_or(1.0, |alpha| alpha / rank as f64),
                up,
                down,
            };
            let fits = change.up.dims().get(1) == Some(&rank)
                && change.up.dims().first() == target.shape.first()
                && change.weight_elements() == target.shape.iter().product::<usize>();
            if !fits {
                misfits.push(format!(
                    "\"{name}\" (up {:?}, down {:?}) for a weight of {:?}",
                    change.up.dims(),
                    change.down.dims(),
                    target.shape
                ));
                continue;
            }
            let (patches, strength) = match target.part {
                LoraPart::Unet => (&mut lora.unet, strengths.model),
                LoraPart::ClipL => (&mut lora.clip_l, strengths.clip),
                LoraPart::ClipG => (&mut lora.clip_g, strengths.clip),
            };
            if strength != 0.0 {
                patches.add(
                    target.key.clone(),
                    LowRank {
                        scale: change.scale * strength,
                        ..change
                    },
                );
            }
        }
        if !misfits.is_empty() {
            return Err(format!(
                "{shown} does not fit these models: {} of its layers have other shapes than the weights they name, \
                 e.g. {}; it is likely a LoRA for another model",
                misfits.len(),
                misfits[..misfits.len().min(2)].join("; ")
            ));
        }
        if matched == 0 {
            return Err(format!(
                "{shown}: none of its {} layers matches a weight of these SDXL models (e.g. {})",
                lora.unmatched.len(),
                lora.unmatched.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        Ok(lora)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unet::{UNet, UNetConfig};
    use candle_core::{DType, Device, Tensor};
    use std::collections::HashMap;

    /// A LoRA file of `layers` (name, up shape, down shape) and `extra` keys, written to `dir`.
    fn lora_file(dir: &Path, layers: &[(&str, &[usize], &[usize])], extra: &[&str]) -> std::path::PathBuf {
        let mut tensors = HashMap::new();
        for (name, up, down) in layers {
            tensors.insert(
                format!("{name}.lora_up.weight"),
                Tensor::ones(*up, DType::F16, &Device::Cpu).unwrap(),
            );
            tensors.insert(
                format!("{name}.lora_down.weight"),
                Tensor::ones(*down, DType::F16, &Device::Cpu).unwrap(),
            );
        }
        for key in extra {
            tensors.insert(key.to_string(), Tensor::ones(1, DType::F16, &Device::Cpu).unwrap());
        }
        let path = dir.join("lora.safetensors");
        candle_core::safetensors::save(&tensors, &path).unwrap();
        path
    }

    fn read(path: &Path) -> Result<Lora, String> {
        let unet = UNet::new(UNetConfig::tiny()).unwrap();
        let targets = LoraTargets::new(Some(&unet), None).unwrap();
        Lora::read(path, &targets, Strengths { model: 1.0, clip: 1.0 })
    }

    const TO_Q: &str = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q";

    #[test]
    fn loras_that_cannot_be_merged_are_refused_by_name_and_stray_keys_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let pickle = dir.path().join("lora.pt");
        std::fs::write(&pickle, b"not read").unwrap();
        assert!(read(&pickle).unwrap_err().contains("PyTorch pickle"));

        let sd15 = lora_file(
            dir.path(),
            &[("lora_te_text_model_encoder_layers_0_mlp_fc1", &[64, 4], &[4, 32])],
            &[],
        );
        assert!(read(&sd15).unwrap_err().contains("SD 1.x or 2.x"));

        let misfit = lora_file(dir.path(), &[(TO_Q, &[32, 4], &[4, 48])], &[]);
        let error = read(&misfit).unwrap_err();
        assert!(error.contains("does not fit") && error.contains(TO_Q), "{error}");

        let loha = lora_file(dir.path(), &[], &[&format!("{TO_Q}.hada_w1_a")]);
        assert!(read(&loha).unwrap_err().contains("LoHa"));

        let stray = lora_file(
            dir.path(),
            &[(TO_Q, &[32, 4], &[4, 32]), ("lora_unet_nowhere", &[4, 1], &[1, 4])],
            &["note"],
        );
        let lora = read(&stray).unwrap();
        assert_eq!(lora.unmatched, ["note", "lora_unet_nowhere"]);
        assert_eq!(lora.unet.len(), 1);

        let nothing = lora_file(dir.path(), &[("lora_unet_nowhere", &[4, 1], &[1, 4])], &[]);
        assert!(read(&nothing).unwrap_err().contains("none of its 1 layers matches"));
    }
}
