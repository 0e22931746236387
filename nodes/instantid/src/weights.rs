//! InstantID's adapter file: the Resampler that turns a face embedding into image tokens
//! (`image_proj`) and the UNet's image-token projections (`ip_adapter`).
//!
//! Read from InstantID's `ip-adapter.bin` (a PyTorch zip archive holding the two state dicts;
//! its pickle is interpreted for tensor locations only, never executed) or from safetensors with
//! `image_proj.` and `ip_adapter.` key prefixes.

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use swapgraph_model::{record_params, seeded_tensors};
use swapgraph_sdxl::ip_adapter::{IpAdapterLayers, Resampler, ResamplerConfig};
use swapgraph_sdxl::unet::UNetConfig;

/// Why an adapter file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// The file cannot be read as either format.
    #[error("cannot read InstantID weights {path}: {message}")]
    Unreadable {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// A part is missing or mis-shaped.
    #[error("InstantID weights {path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong, naming the tensor.
        message: String,
    },
}

/// An adapter as it travels between nodes: where it came from, and its weights.
#[derive(Debug)]
pub struct InstantIdModel {
    /// The file or built-in name, for messages.
    pub name: String,
    /// The weights, on the run's device.
    pub weights: InstantIdWeights,
}

/// The two parts of an InstantID adapter, loaded for one device.
#[derive(Debug)]
pub struct InstantIdWeights {
    /// Face embedding to image tokens.
    pub resampler: Resampler,
    /// Image tokens to each cross-attention layer's keys and values.
    pub layers: Arc<IpAdapterLayers>,
}

impl InstantIdWeights {
    /// Loads `path` (`.bin` or `.safetensors`) for a UNet shaped `unet`, with a Resampler shaped
    /// `resampler`, in `dtype` on `device`.
    ///
    /// # Errors
    /// [`WeightsError`] naming the file and the problem.
    pub fn load(
        path: &Path,
        resampler: &ResamplerConfig,
        unet: &UNetConfig,
        dtype: DType,
        device: &Device,
    ) -> Result<Self, WeightsError> {
        let shown = path.display().to_string();
        let unreadable = |message: String| WeightsError::Unreadable {
            path: shown.clone(),
            message,
        };
        let (image_proj, ip_adapter) = match path.extension().and_then(|e| e.to_str()) {
            Some("safetensors") => {
                let all = candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| unreadable(e.to_string()))?;
                (with_prefix(&all, "image_proj."), with_prefix(&all, "ip_adapter."))
            }
            _ => (
                read_pickled(path, "image_proj").map_err(|e| unreadable(e.to_string()))?,
                read_pickled(path, "ip_adapter").map_err(|e| unreadable(e.to_string()))?,
            ),
        };
        let invalid = |part: &str, e: candle_core::Error| WeightsError::Invalid {
            path: shown.clone(),
            message: format!("{part}: {e}"),
        };
        if image_proj.is_empty() || ip_adapter.is_empty() {
            return Err(WeightsError::Invalid {
                path: shown.clone(),
                message: "expected both image_proj and ip_adapter weights (an InstantID ip-adapter file)".into(),
            });
        }
        let resampler = Resampler::new(VarBuilder::from_tensors(image_proj, dtype, device), resampler)
            .map_err(|e| invalid("image_proj", e))?;
        let layers = IpAdapterLayers::new(VarBuilder::from_tensors(ip_adapter, dtype, device), unet)
            .map_err(|e| invalid("ip_adapter", e))?;
        Ok(Self {
            resampler,
            layers: Arc::new(layers),
        })
    }

    /// A built-in adapter with seeded weights: a Resampler of `resampler_cfg` and projections
    /// for every cross-attention layer of a UNet of `unet`.
    ///
    /// # Errors
    /// A tensor error (not expected).
    pub fn seeded(
        resampler_cfg: ResamplerConfig,
        unet: UNetConfig,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Self> {
        let (resampler_params, layer_params) = Self::params(&resampler_cfg, &unet)?;
        let resampler = Resampler::new(
            VarBuilder::from_tensors(seeded_tensors("image_proj", &resampler_params, dtype)?, dtype, device),
            &resampler_cfg,
        )?;
        let layers = IpAdapterLayers::new(
            VarBuilder::from_tensors(seeded_tensors("ip_adapter", &layer_params, dtype)?, dtype, device),
            &unet,
        )?;
        Ok(Self {
            resampler,
            layers: Arc::new(layers),
        })
    }
}

impl InstantIdWeights {
    /// Bytes the adapter's weights take on a device in `dtype`, for a Resampler shaped
    /// `resampler_cfg` and a UNet shaped `unet`, so that room can be made before they load.
    ///
    /// # Errors
    /// A configuration whose parameters cannot be listed.
    pub fn device_bytes(resampler_cfg: &ResamplerConfig, unet: &UNetConfig, dtype: DType) -> candle_core::Result<u64> {
        let (resampler_params, layer_params) = Self::params(resampler_cfg, unet)?;
        let elements: usize = resampler_params
            .iter()
            .chain(&layer_params)
            .map(|(_, shape)| shape.elem_count())
            .sum();
        Ok((elements * dtype.size_in_bytes()) as u64)
    }
}

impl InstantIdWeights {
    /// The names and shapes of the adapter's tensors, as an `ip-adapter` file keys them under
    /// `image_proj` (a Resampler shaped `resampler_cfg`) and `ip_adapter` (the projections of a
    /// UNet shaped `unet`).
    ///
    /// # Errors
    /// A configuration whose parameters cannot be listed.
    #[allow(clippy::type_complexity)]
    pub fn params(
        resampler_cfg: &ResamplerConfig,
        unet: &UNetConfig,
    ) -> candle_core::Result<(Vec<(String, Shape)>, Vec<(String, Shape)>)> {
        Ok((
            record_params(|vb| Resampler::new(vb, resampler_cfg))?,
            record_params(|vb| IpAdapterLayers::new(vb, unet))?,
        ))
    }
}

/// The built-in adapter's Resampler: the tiny one, taking real 512-value face embeddings.
pub fn tiny_resampler() -> ResamplerConfig {
    ResamplerConfig {
        embedding_dim: 512,
        ..ResamplerConfig::tiny()
    }
}

/// The tensors under `prefix`, with the prefix removed.
fn with_prefix(all: &HashMap<String, Tensor>, prefix: &str) -> HashMap<String, Tensor> {
    all.iter()
        .filter_map(|(k, v)| k.strip_prefix(prefix).map(|rest| (rest.to_string(), v.clone())))
        .collect()
}

/// One state dict of a PyTorch archive, its tensors read in parallel.
fn read_pickled(path: &Path, key: &str) -> candle_core::Result<HashMap<String, Tensor>> {
    let archive = candle_core::pickle::PthTensors::new(path, Some(key))?;
    let names: Vec<&String> = archive.tensor_infos().keys().collect();
    names
        .par_iter()
        .filter_map(|name| {
            archive
                .get(name)
                .transpose()
                .map(|tensor| Ok((name.to_string(), tensor?)))
        })
        .collect()
}
