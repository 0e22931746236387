//! The CONDITIONING value and the text encoders that make it.

use crate::clip::{ClipOutput, ClipTextEncoder, ClipTokenizer, END_OF_TEXT};
use candle_core::{Device, Result, Tensor};

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
/// embedding, and optionally explicit size ids (otherwise the latent's size is used).
#[derive(Clone, Debug)]
pub struct Conditioning {
    /// `[1, 77 * windows, 2048]`.
    pub context: Tensor,
    /// `[1, 1280]`.
    pub pooled: Tensor,
    /// Size ids from `CLIPTextEncodeSDXL`; `None` means "the generated image's size".
    pub size: Option<SizeIds>,
}

/// SDXL's two text encoders with the CLIP tokenizer: the CLIP value.
pub struct TextEncoders {
    /// The tokenizer both encoders share.
    pub tokenizer: ClipTokenizer,
    /// CLIP ViT-L.
    pub clip_l: ClipTextEncoder,
    /// OpenCLIP ViT-bigG with projection.
    pub clip_g: ClipTextEncoder,
    /// Where they run.
    pub device: Device,
}

impl TextEncoders {
    /// Encodes `text_l` with CLIP-L and `text_g` with bigG, in 77-token windows (ComfyUI's
    /// chunking for long prompts), concatenating the penultimate hidden states of both.
    ///
    /// # Errors
    /// A tensor error.
    pub fn encode(&self, text_l: &str, text_g: &str) -> Result<Conditioning> {
        // CLIP-L pads with end-of-text, bigG with "!" (id 0), as SDXL's two tokenizers do.
        let windows_l = self.tokenizer.windows(text_l, END_OF_TEXT);
        let windows_g = self.tokenizer.windows(text_g, 0);
        let count = windows_l.len().max(windows_g.len());
        let mut contexts = Vec::with_capacity(count);
        let mut pooled = None;
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
            let out_l = self.run(&self.clip_l, &l)?;
            let out_g = self.run(&self.clip_g, &g)?;
            contexts.push(Tensor::cat(&[&out_l.penultimate, &out_g.penultimate], 2)?);
            if pooled.is_none() {
                pooled = Some(out_g.pooled);
            }
        }
        let pooled = pooled.ok_or_else(|| candle_core::Error::Msg("no text window".into()))?;
        Ok(Conditioning {
            context: Tensor::cat(&contexts, 1)?,
            pooled,
            size: None,
        })
    }

    fn run(&self, encoder: &ClipTextEncoder, window: &[u32]) -> Result<ClipOutput> {
        encoder.forward(&Tensor::new(window, &self.device)?.unsqueeze(0)?)
    }
}
