//! The CONDITIONING value and the text encoders that make it.

use crate::clip::{ClipConfig, ClipOutput, ClipTextEncoder, ClipTokenizer, END_OF_TEXT};
use crate::device::model_dtype;
use crate::ip_adapter::IpAdapterLayers;
use crate::region::RegionMask;
use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use swapgraph_model::{record_params, ModelHandle, OnDevice, TensorSource, WeightPatches};
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
    /// The ControlNets steering sampling, in the order they were applied: their residuals
    /// are summed, as ComfyUI sums a chain of ControlNets.
    pub controls: Vec<Arc<ControlHint>>,
    /// Image tokens the UNet's cross-attention layers attend to (IP-Adapter).
    pub image_prompt: Option<Arc<ImagePrompt>>,
    /// Where and when it applies within a list of conditionings.
    pub placement: Placement,
}

/// Where and when one conditioning of a list applies, as ComfyUI's `area`, `strength`, `mask`
/// and timestep range set it; everywhere and always by default.
#[derive(Clone, Debug)]
pub struct Placement {
    /// The part of the image it applies to.
    pub area: Option<Area>,
    /// Its weight against the other conditionings where they overlap.
    pub strength: f64,
    /// Per-pixel weights.
    pub mask: Option<PlacementMask>,
    /// The fractions of the schedule it applies from and to.
    pub percent: Option<(f64, f64)>,
}

impl Default for Placement {
    fn default() -> Self {
        Self {
            area: None,
            strength: 1.0,
            mask: None,
            percent: None,
        }
    }
}

impl Placement {
    /// Whether it applies everywhere, always, at full weight: what sampling without a list of
    /// conditionings assumes.
    pub fn is_everywhere(&self) -> bool {
        self.area.is_none() && self.mask.is_none() && self.percent.is_none() && self.strength == 1.0
    }
}

/// A rectangle of the image, in pixels or as fractions of its sides.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Area {
    /// Width, height, x and y in pixels (ComfyUI counts them in whole latent pixels of 8).
    Pixels { width: u64, height: u64, x: u64, y: u64 },
    /// Width, height, x and y as fractions of the image's sides.
    Fraction { width: f64, height: f64, x: f64, y: f64 },
}

/// Per-pixel weights of a conditioning.
#[derive(Clone, Debug)]
pub struct PlacementMask {
    /// `[batch, height, width]`, any size: resampled to the latents' when sampling.
    pub values: Tensor,
    /// Its scale.
    pub strength: f64,
    /// Whether the conditioning's area becomes the mask's bounding box (its UNet pass then
    /// covers only that part of the image).
    pub area_to_bounds: bool,
}

impl PlacementMask {
    /// A mask's `values` (`[height, width]` or `[batch, height, width]`) as a placement mask.
    ///
    /// # Errors
    /// A tensor error.
    pub fn new(values: &Tensor, strength: f64, area_to_bounds: bool) -> candle_core::Result<Self> {
        let values = match values.rank() {
            2 => values.unsqueeze(0)?,
            _ => values.clone(),
        };
        Ok(Self {
            values,
            strength,
            area_to_bounds,
        })
    }
}

/// The CONDITIONING value: one conditioning, or several combined, each applied where and when
/// its placement says; the sampler weighs them where they overlap.
#[derive(Clone)]
pub struct ConditioningList(pub Vec<Conditioning>);

impl ConditioningList {
    /// A list of one.
    pub fn one(conditioning: Conditioning) -> Self {
        Self(vec![conditioning])
    }

    /// Each conditioning changed by `change`.
    ///
    /// # Errors
    /// The first error `change` returns.
    pub fn map<E>(
        &self,
        mut change: impl FnMut(Conditioning) -> std::result::Result<Conditioning, E>,
    ) -> std::result::Result<Self, E> {
        self.0
            .iter()
            .cloned()
            .map(&mut change)
            .collect::<std::result::Result<_, _>>()
            .map(Self)
    }

    /// The only conditioning, when there is one that applies everywhere and always.
    pub fn single(&self) -> Option<&Conditioning> {
        match self.0.as_slice() {
            [only] if only.placement.is_everywhere() => Some(only),
            _ => None,
        }
    }
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
            controls: Vec::new(),
            image_prompt: None,
            placement: Placement::default(),
        }
    }

    /// The same conditioning with `hint` attached after the ControlNets it carries already.
    pub fn with_control(mut self, hint: Arc<ControlHint>) -> Self {
        self.controls.push(hint);
        self
    }

    /// The same conditioning with `prompt` attached. One that already carries image tokens is
    /// refused: replacing them would drop the earlier ones without a word.
    ///
    /// # Errors
    /// A conditioning that carries image tokens already.
    pub fn with_image_prompt(self, prompt: Arc<ImagePrompt>) -> std::result::Result<Self, String> {
        if self.image_prompt.is_some() {
            return Err(
                "the conditioning carries image tokens already (an earlier InstantID or IP-Adapter); applying a \
                 second one to it is not supported"
                    .into(),
            );
        }
        Ok(Self {
            image_prompt: Some(prompt),
            ..self
        })
    }
}

/// A text encoder whose master is `source`, built on a device when a prompt is encoded there and
/// dropped from it when another model needs the room.
///
/// # Errors
/// A configuration whose parameters cannot be listed.
fn encoder_on_demand(name: &str, source: Arc<TensorSource>, cfg: ClipConfig) -> Result<OnDevice<ClipTextEncoder>> {
    let params = record_params(|vb| ClipTextEncoder::new(vb, &cfg))?;
    let elements = params.iter().map(|(_, shape)| shape.elem_count() as u64).sum::<u64>();
    let bytes = move |device: &Device| elements * model_dtype(device).size_in_bytes() as u64;
    Ok(OnDevice::new(name, bytes, move |device: &Device| {
        // Read in parallel on the host first: reading is most of bringing an encoder over.
        let dtype = model_dtype(device);
        let tensors = source
            .load_all(&params, dtype)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        ClipTextEncoder::new(VarBuilder::from_tensors(tensors, dtype, device), &cfg)
    }))
}

/// The layer SDXL's conditioning takes its hidden states from, counted from the end: the
/// second-to-last, as SDXL was trained.
const SDXL_FROM_END: usize = 2;

/// SDXL's two text encoders with the CLIP tokenizer: the CLIP value. Each comes to the device
/// on its own while it encodes, so only the larger (bigG, 1.3 GiB in f16) must fit at once.
pub struct TextEncoders {
    /// The tokenizer both encoders share.
    pub tokenizer: Arc<ClipTokenizer>,
    /// CLIP ViT-L (shared with copies that stop at another layer).
    pub clip_l: Arc<OnDevice<ClipTextEncoder>>,
    /// OpenCLIP ViT-bigG with projection (shared likewise).
    pub clip_g: Arc<OnDevice<ClipTextEncoder>>,
    /// How many layers from the end the hidden states come from: 2 (the second-to-last), as
    /// SDXL was trained, unless `CLIPSetLastLayer` says otherwise.
    from_end: usize,
    /// Widths of an encoding: the context's (both encoders' hidden states side by side) and the
    /// pooled embedding's.
    widths: (usize, usize),
    /// The checkpoint's name, for logs.
    name: String,
    /// Where each encoder's weights are read from, with its configuration: CLIP-L, then bigG.
    masters: [(Arc<TensorSource>, ClipConfig); 2],
}

impl TextEncoders {
    /// Both encoders of checkpoint `name`, from their masters `l` and `g` (sources with their
    /// configurations).
    ///
    /// # Errors
    /// A configuration whose parameters cannot be listed.
    pub fn new(
        name: &str,
        tokenizer: ClipTokenizer,
        (source_l, cfg_l): (Arc<TensorSource>, ClipConfig),
        (source_g, cfg_g): (Arc<TensorSource>, ClipConfig),
    ) -> Result<Self> {
        Self::with_tokenizer(name, Arc::new(tokenizer), [(source_l, cfg_l), (source_g, cfg_g)])
    }

    fn with_tokenizer(
        name: &str,
        tokenizer: Arc<ClipTokenizer>,
        masters: [(Arc<TensorSource>, ClipConfig); 2],
    ) -> Result<Self> {
        let [(source_l, cfg_l), (source_g, cfg_g)] = masters.clone();
        Ok(Self {
            tokenizer,
            widths: (
                cfg_l.hidden_size + cfg_g.hidden_size,
                cfg_g.projection_dim.unwrap_or(cfg_g.hidden_size),
            ),
            clip_l: Arc::new(encoder_on_demand(&format!("CLIP ViT-L ({name})"), source_l, cfg_l)?),
            clip_g: Arc::new(encoder_on_demand(&format!("OpenCLIP bigG ({name})"), source_g, cfg_g)?),
            from_end: SDXL_FROM_END,
            name: name.to_string(),
            masters,
        })
    }

    /// The same encoders (their weights shared, on the device or not), with hidden states taken
    /// `from_end` layers from the end (1: the last; ComfyUI's `stop_at_clip_layer` of -1).
    ///
    /// # Errors
    /// A `from_end` past either encoder's first layer, naming how many layers each has.
    pub fn stopping_at(&self, from_end: usize) -> std::result::Result<Self, String> {
        let layers = self.masters.iter().map(|(_, cfg)| cfg.layers).min().unwrap_or(0);
        if !(1..=layers).contains(&from_end) {
            return Err(format!(
                "the text encoders have {} and {} layers: hidden states can come from 1 to {layers} layers from \
                 the end, not {from_end}",
                self.masters[0].1.layers, self.masters[1].1.layers
            ));
        }
        Ok(Self {
            tokenizer: Arc::clone(&self.tokenizer),
            clip_l: Arc::clone(&self.clip_l),
            clip_g: Arc::clone(&self.clip_g),
            from_end,
            widths: self.widths,
            name: self.name.clone(),
            masters: self.masters.clone(),
        })
    }

    /// The configurations of CLIP-L and bigG.
    pub fn configs(&self) -> [&ClipConfig; 2] {
        [&self.masters[0].1, &self.masters[1].1]
    }

    /// The same encoders with low-rank changes merged into CLIP-L's (`l`) and bigG's (`g`)
    /// weights as they are read (a LoRA); these encoders stay as they are.
    ///
    /// # Errors
    /// A configuration whose parameters cannot be listed.
    pub fn patched(&self, l: &WeightPatches, g: &WeightPatches) -> Result<Self> {
        let [(source_l, cfg_l), (source_g, cfg_g)] = &self.masters;
        let patched = Self::with_tokenizer(
            &self.name,
            Arc::clone(&self.tokenizer),
            [
                (Arc::new(source_l.patched(l)), *cfg_l),
                (Arc::new(source_g.patched(g)), *cfg_g),
            ],
        )?;
        Ok(Self {
            from_end: self.from_end,
            ..patched
        })
    }

    /// Encodes `text_l` with CLIP-L and `text_g` with bigG on `device` (within the run's
    /// `budget`), in 77-token windows (ComfyUI's chunking for long prompts), concatenating the
    /// hidden states of both (the second-to-last layer's unless `stopping_at` said otherwise).
    ///
    /// Also returns where the time went, encoder by encoder.
    ///
    /// # Errors
    /// A tensor error, or an encoder not fitting on the device.
    pub fn encode(
        &self,
        device: &Device,
        budget: VramBudget,
        text_l: &str,
        text_g: &str,
    ) -> Result<(Conditioning, EncodeTimes)> {
        // CLIP-L pads with end-of-text, bigG with "!" (id 0), as SDXL's two tokenizers do.
        let mut windows_l = self.tokenizer.windows(text_l, END_OF_TEXT);
        let mut windows_g = self.tokenizer.windows(text_g, 0);
        // The shorter prompt's windows repeat its last window's padding: an empty window.
        let count = windows_l.len().max(windows_g.len());
        windows_l.resize(count, self.tokenizer.windows("", END_OF_TEXT)[0]);
        windows_g.resize(count, self.tokenizer.windows("", 0)[0]);
        // The encoder already on the device goes first: where only one fits at a time, the
        // last prompt's bigG is not sent away for CLIP-L and brought back after it.
        let ((outputs_l, clip_l), (outputs_g, clip_g)) = if self.clip_g.is_on(device) && !self.clip_l.is_on(device) {
            let g = self.run(&self.clip_g, device, budget, &windows_g)?;
            (self.run(&self.clip_l, device, budget, &windows_l)?, g)
        } else {
            let l = self.run(&self.clip_l, device, budget, &windows_l)?;
            (l, self.run(&self.clip_g, device, budget, &windows_g)?)
        };
        let contexts = outputs_l
            .iter()
            .zip(&outputs_g)
            .map(|(l, g)| Tensor::cat(&[&l.hidden, &g.hidden], 2))
            .collect::<Result<Vec<_>>>()?;
        let pooled = outputs_g
            .into_iter()
            .next()
            .ok_or_else(|| candle_core::Error::Msg("no text window".into()))?
            .pooled;
        let encoded = Conditioning::text(Tensor::cat(&contexts, 1)?, pooled, None);
        Ok((encoded, EncodeTimes { clip_l, clip_g }))
    }

    /// A stand-in for encoding `text_l` and `text_g`: zeros of the encoding's shape on the
    /// host.
    ///
    /// # Errors
    /// A tensor error.
    pub fn stand_in(&self, text_l: &str, text_g: &str) -> Result<Conditioning> {
        let windows = [(text_l, END_OF_TEXT), (text_g, 0)]
            .map(|(text, padding)| self.tokenizer.windows(text, padding).len())
            .into_iter()
            .max()
            .unwrap_or(1);
        let (context, pooled) = self.widths;
        Ok(Conditioning::text(
            Tensor::zeros((1, 77 * windows, context), DType::F32, &Device::Cpu)?,
            Tensor::zeros((1, pooled), DType::F32, &Device::Cpu)?,
            None,
        ))
    }

    /// Bytes encoding takes on `device`: the larger encoder's weights, as the two come to the
    /// device one at a time (a 77-token window's activations are a few MiB beside them).
    pub fn device_bytes(&self, device: &Device) -> u64 {
        self.clip_l.bytes(device).max(self.clip_g.bytes(device))
    }

    /// `encoder`'s outputs for each window, the encoder on the device only meanwhile, and the
    /// time it took.
    fn run(
        &self,
        encoder: &OnDevice<ClipTextEncoder>,
        device: &Device,
        budget: VramBudget,
        windows: &[[u32; 77]],
    ) -> Result<(Vec<ClipOutput>, EncoderTimes)> {
        let started = Instant::now();
        let encoder = encoder.get(device, budget)?;
        device.synchronize()?;
        let weights_ready = started.elapsed();
        let outputs = windows
            .iter()
            .map(|window| encoder.forward(&Tensor::new(window, device)?.unsqueeze(0)?, self.from_end))
            .collect::<Result<Vec<_>>>()?;
        device.synchronize()?;
        let times = EncoderTimes {
            weights_ready,
            encoding: started.elapsed() - weights_ready,
        };
        Ok((outputs, times))
    }
}

/// Where encoding a prompt's time went, encoder by encoder, the device synchronised at each
/// mark so that queued work counts where it ran: what `run` logs for each text encoding.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EncodeTimes {
    /// CLIP-L's.
    pub clip_l: EncoderTimes,
    /// bigG's.
    pub clip_g: EncoderTimes,
}

/// One text encoder's times.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EncoderTimes {
    /// Until its weights were on the device (nothing when they already were).
    pub weights_ready: Duration,
    /// Running it over the prompt's 77-token windows.
    pub encoding: Duration,
}

impl fmt::Display for EncodeTimes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        for (name, times, separator) in [("CLIP-L", self.clip_l, "; "), ("bigG", self.clip_g, "")] {
            write!(
                f,
                "{name} weights ready in {:.0} ms, encoded in {:.1} ms{separator}",
                ms(times.weights_ready),
                ms(times.encoding)
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::checkpoint::{load, TINY_SDXL};
    use candle_core::Device;
    use swapgraph_node_api::VramBudget;

    #[test]
    fn encode_times_name_each_encoder() {
        use super::{EncodeTimes, EncoderTimes};
        use std::time::Duration;
        let times = EncodeTimes {
            clip_l: EncoderTimes {
                weights_ready: Duration::from_millis(120),
                encoding: Duration::from_micros(3_140),
            },
            clip_g: EncoderTimes {
                weights_ready: Duration::ZERO,
                encoding: Duration::from_micros(9_860),
            },
        };
        assert_eq!(
            times.to_string(),
            "CLIP-L weights ready in 120 ms, encoded in 3.1 ms; bigG weights ready in 0 ms, encoded in 9.9 ms"
        );
    }

    /// A rehearsal's stand-in for an encoding must have the encoding's shapes, or the nodes after
    /// it would rehearse on something the run never gives them.
    #[test]
    fn a_stand_in_has_the_shapes_of_the_encoding() {
        let clip = load(TINY_SDXL, &Device::Cpu, VramBudget::Auto).unwrap().clip;
        let long = "a portrait photo of an astronaut, ".repeat(12);
        for (text_l, text_g) in [("a cat", "a cat"), (long.as_str(), "short"), ("", "")] {
            let (encoded, _) = clip.encode(&Device::Cpu, VramBudget::Auto, text_l, text_g).unwrap();
            let stand_in = clip.stand_in(text_l, text_g).unwrap();
            assert_eq!(stand_in.context.dims(), encoded.context.dims(), "{text_l:?}");
            assert_eq!(stand_in.pooled.dims(), encoded.pooled.dims(), "{text_l:?}");
        }
        assert_eq!(
            clip.device_bytes(&Device::Cpu),
            clip.clip_g.bytes(&Device::Cpu),
            "bigG is the larger"
        );
    }
}
