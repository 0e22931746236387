//! The CONDITIONING value and the text encoders that make it.

use crate::clip::{ClipConfig, ClipOutput, ClipTextEncoder, ClipTokenizer, END_OF_TEXT};
use crate::device::model_dtype;
use crate::ip_adapter::IpAdapterLayers;
use crate::region::RegionMask;
use candle_core::{Device, Result, Tensor};
use std::sync::Arc;
use swapgraph_model::{record_params, ModelHandle, OnDevice, TensorSource};
use swapgraph_node_api::VramBudget;

/// SDXL's size conditioning: original size, crop offset and target size, as pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SizeIds {
    /// Original image width and height.
    pub original: (f64, f64),
    /// Crop offset from the left and top.
    pub crop: (f64, f64),
    /// Target width and height.
    pub target: (f64, f64),
}

impl SizeIds {
    /// Uncropped, original and target both `width` x `height`.
    pub fn square(width: f64, height: f64) -> Self {
        Self {
            original: (width, height),
            crop: (0.0, 0.0),
            target: (width, height),
        }
    }

    /// The six time ids in SDXL's order: height before width, each pair.
    pub fn tensor(&self, device: &Device) -> Result<Tensor> {
        let ids = [
            self.original.1,
            self.original.0,
            self.crop.1,
            self.crop.0,
            self.target.1,
            self.target.0,
        ];
        Tensor::new(&[ids.map(|v| v as f32)], device)
    }
}

/// Encoded text for the UNet: token embeddings of both encoders side by side, the pooled
/// embedding, and optionally explicit size ids (otherwise the latent's size is used); plus what
/// adapters attached (a ControlNet, image tokens), applied while sampling with it.
#[derive(Clone)]
pub struct Conditioning {
    /// `[1, 77 * windows, 2048]`.
    pub context: Tensor,
    /// `[1, 1280]`.
    pub pooled: Tensor,
    /// Size ids from `CLIPTextEncodeSDXL`; `None` means "the generated image's size".
    pub size: Option<SizeIds>,
    /// A ControlNet steering sampling.
    pub control: Option<Arc<ControlHint>>,
    /// Image tokens the UNet's cross-attention layers attend to (IP-Adapter).
    pub image_prompt: Option<Arc<ImagePrompt>>,
}

/// A ControlNet attached to a conditioning, as ComfyUI's apply nodes attach one.
pub struct ControlHint {
    /// The ControlNet (its network is a [`crate::controlnet::ControlNet`]).
    pub controlnet: ModelHandle,
    /// The hint image `[1, 3, h, w]`, values 0..1.
    pub hint: Tensor,
    /// Scale of the residuals.
    pub strength: f64,
    /// Fraction of the schedule where it starts (0) and ends (1).
    pub start_percent: f64,
    /// See `start_percent`.
    pub end_percent: f64,
    /// What the ControlNet attends to instead of the text (InstantID's face tokens).
    pub context: Option<Tensor>,
    /// Where its residuals act; everywhere when `None`.
    pub region: Option<RegionMask>,
}

/// Image tokens attached to a conditioning, with the adapter layers that project them.
pub struct ImagePrompt {
    /// Per-layer key/value projections.
    pub layers: Arc<IpAdapterLayers>,
    /// Tokens `[1, n, cross_attention_dim]`.
    pub tokens: Tensor,
    /// Weight of the image attention.
    pub weight: f64,
    /// Fraction of the schedule where it starts (0) and ends (1).
    pub start_percent: f64,
    /// See `start_percent`.
    pub end_percent: f64,
    /// Where the image attention acts; everywhere when `None`.
    pub region: Option<RegionMask>,
}

impl Conditioning {
    /// Text conditioning with nothing attached.
    pub fn text(context: Tensor, pooled: Tensor, size: Option<SizeIds>) -> Self {
        Self {
            context,
            pooled,
            size,
            control: None,
            image_prompt: None,
        }
    }
}

/// CLIP ViT-L and OpenCLIP bigG, on one device together.
pub struct EncoderPair {
    /// CLIP ViT-L.
    pub clip_l: ClipTextEncoder,
    /// OpenCLIP ViT-bigG with projection.
    pub clip_g: ClipTextEncoder,
}

impl EncoderPair {
    /// Both encoders, their masters in `l` and `g` (sources with their configurations), built on
    /// a device when a prompt is encoded there and dropped from it when another model needs the
    /// room.
    ///
    /// # Errors
    /// A configuration whose parameters cannot be listed.
    pub fn on_demand(
        name: &str,
        (source_l, cfg_l): (Arc<TensorSource>, ClipConfig),
        (source_g, cfg_g): (Arc<TensorSource>, ClipConfig),
    ) -> Result<OnDevice<Self>> {
        let parameters = |cfg: ClipConfig| -> Result<usize> {
            let params = record_params(|vb| ClipTextEncoder::new(vb, &cfg))?;
            Ok(params.iter().map(|(_, shape)| shape.elem_count()).sum())
        };
        let bytes = (parameters(cfg_l)? + parameters(cfg_g)?) as u64 * 2;
        Ok(OnDevice::new(
            format!("text encoders ({name})"),
            bytes,
            move |device: &Device| {
                let dtype = model_dtype(device);
                Ok(Self {
                    clip_l: ClipTextEncoder::new(source_l.var_builder(dtype, device), &cfg_l)?,
                    clip_g: ClipTextEncoder::new(source_g.var_builder(dtype, device), &cfg_g)?,
                })
            },
        ))
    }
}

/// SDXL's two text encoders with the CLIP tokenizer: the CLIP value.
pub struct TextEncoders {
    /// The tokenizer both encoders share.
    pub tokenizer: ClipTokenizer,
    /// Both encoders, on a device while they encode.
    pub encoders: OnDevice<EncoderPair>,
}

impl TextEncoders {
    /// Encodes `text_l` with CLIP-L and `text_g` with bigG on `device` (within the run's
    /// `budget`), in 77-token windows (ComfyUI's chunking for long prompts), concatenating the
    /// penultimate hidden states of both.
    ///
    /// # Errors
    /// A tensor error, or the encoders not fitting on the device.
    pub fn encode(&self, device: &Device, budget: VramBudget, text_l: &str, text_g: &str) -> Result<Conditioning> {
        let encoders = self.encoders.get(device, budget)?;
        // CLIP-L pads with end-of-text, bigG with "!" (id 0), as SDXL's two tokenizers do.
        let windows_l = self.tokenizer.windows(text_l, END_OF_TEXT);
        let windows_g = self.tokenizer.windows(text_g, 0);
        let count = windows_l.len().max(windows_g.len());
        let mut contexts = Vec::with_capacity(count);
        let mut pooled = None;
        let run = |encoder: &ClipTextEncoder, window: &[u32]| -> Result<ClipOutput> {
            encoder.forward(&Tensor::new(window, device)?.unsqueeze(0)?)
        };
        for i in 0..count {
            // The shorter prompt's windows repeat its last window's padding: an empty window.
            let l = windows_l
                .get(i)
                .copied()
                .unwrap_or_else(|| self.tokenizer.windows("", END_OF_TEXT)[0]);
            let g = windows_g
                .get(i)
                .copied()
                .unwrap_or_else(|| self.tokenizer.windows("", 0)[0]);
            let out_l = run(&encoders.clip_l, &l)?;
            let out_g = run(&encoders.clip_g, &g)?;
            contexts.push(Tensor::cat(&[&out_l.penultimate, &out_g.penultimate], 2)?);
            if pooled.is_none() {
                pooled = Some(out_g.pooled);
            }
        }
        let pooled = pooled.ok_or_else(|| candle_core::Error::Msg("no text window".into()))?;
        Ok(Conditioning::text(Tensor::cat(&contexts, 1)?, pooled, None))
    }
}
