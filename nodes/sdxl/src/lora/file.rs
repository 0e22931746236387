//! A LoRA file's layers: each changed layer's up and down factors and alpha, under the layer's
//! name in the file, whichever of the common formats wrote it.

use candle_core::{DType, Device, Shape, Tensor};
use std::collections::BTreeMap;
use std::path::Path;
use swapgraph_model::TensorSource;

/// One changed layer as the file stores it.
#[derive(Default)]
pub(super) struct Factors {
    /// `[out, rank, ...]`.
    pub up: Option<Tensor>,
    /// `[rank, in, ...]`.
    pub down: Option<Tensor>,
    /// Scales the product by `alpha / rank`; absent: by 1.
    pub alpha: Option<f64>,
}

/// Which factor a key holds, by its ending: kohya's and LyCORIS's (`lora_down`, `lora_up`,
/// `alpha`), diffusers/PEFT's (`lora_A`, `lora_B`) and diffusers' older one (`lora.down`).
const FACTORS: [(&str, Factor); 7] = [
    (".lora_down.weight", Factor::Down),
    (".lora_up.weight", Factor::Up),
    (".alpha", Factor::Alpha),
    (".lora_A.weight", Factor::Down),
    (".lora_B.weight", Factor::Up),
    (".lora.down.weight", Factor::Down),
    (".lora.up.weight", Factor::Up),
];

/// Endings of kinds of adapters that are not plain low-rank factors, and their names.
const OTHER_KINDS: [(&str, &str); 6] = [
    (".lora_mid.weight", "LoCon with a Tucker middle factor (lora_mid)"),
    (".hada_w1_a", "LyCORIS LoHa (hada_*)"),
    (".lokr_w1", "LyCORIS LoKr (lokr_*)"),
    (".lokr_w1_a", "LyCORIS LoKr (lokr_*)"),
    (".dora_scale", "DoRA (dora_scale)"),
    (".diff", "a full weight difference (diff)"),
];

#[derive(Clone, Copy)]
enum Factor {
    Up,
    Down,
    Alpha,
}

/// The layers of the LoRA at `path`, by name, and the keys that are no factor of any layer.
///
/// # Errors
/// A file that is not a safetensors file (a pickle is refused by name), an adapter kind this
/// code does not merge, a layer missing a factor, or a tensor that cannot be read.
pub(super) fn read_layers(path: &Path) -> Result<(BTreeMap<String, Factors>, Vec<String>), String> {
    let shown = path.display();
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    if matches!(extension.as_str(), "pt" | "pth" | "ckpt" | "bin") {
        return Err(format!(
            "{shown} is a PyTorch pickle; LoRAs are read from .safetensors files only (pickles can run code)"
        ));
    }
    let source = TensorSource::open(&[path]).map_err(|e| e.to_string())?;
    let mut layers: BTreeMap<String, Factors> = BTreeMap::new();
    let mut other = Vec::new();
    for key in source.keys() {
        if let Some((_, kind)) = OTHER_KINDS.iter().find(|(ending, _)| key.ends_with(ending)) {
            return Err(format!(
                "{shown} is {kind} (e.g. \"{key}\"); only plain low-rank LoRAs and LoCon are merged"
            ));
        }
        let Some((ending, factor)) = FACTORS.iter().find(|(ending, _)| key.ends_with(ending)) else {
            other.push(key);
            continue;
        };
        let name = key[..key.len() - ending.len()].to_string();
        let dims = source.stored_shape(&key).unwrap_or_default();
        let tensor = source
            .load(&key, &Shape::from(dims), DType::F32, &Device::Cpu)
            .map_err(|e| e.to_string())?;
        let layer = layers.entry(name).or_default();
        match factor {
            Factor::Up => layer.up = Some(tensor),
            Factor::Down => layer.down = Some(tensor),
            Factor::Alpha => {
                let value = tensor
                    .flatten_all()
                    .and_then(|t| t.to_vec1::<f32>())
                    .map_err(|e| e.to_string())?;
                let [alpha] = value[..] else {
                    return Err(format!(
                        "{shown}: \"{key}\" holds {} values, an alpha is one",
                        value.len()
                    ));
                };
                layer.alpha = Some(f64::from(alpha));
            }
        }
    }
    for (name, layer) in &layers {
        if layer.up.is_none() || layer.down.is_none() {
            let missing = if layer.up.is_none() { "up" } else { "down" };
            return Err(format!("{shown}: layer \"{name}\" has no {missing} factor"));
        }
    }
    other.sort();
    Ok((layers, other))
}
