//! The CLIP text transformer (transformers' `CLIPTextModel` and `CLIPTextModelWithProjection`)
//! with the outputs SDXL reads: the hidden states of a layer near the end (the penultimate
//! unless told otherwise) and the projected pooled output at the end-of-text token.
//!
//! Reference: Radford et al., "Learning Transferable Visual Models From Natural Language
//! Supervision" (2021); transformers `models/clip/modeling_clip.py`.

use super::config::{Activation, ClipConfig};
use candle_core::{DType, Device, IndexOp, Module, Result, Tensor};
use candle_nn::{embedding, layer_norm, linear, linear_no_bias, Embedding, LayerNorm, Linear, VarBuilder};

/// Self-attention with biased q/k/v/out projections and a causal mask.
#[derive(Debug)]
struct ClipAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    heads: usize,
}

impl ClipAttention {
    fn new(vb: VarBuilder, cfg: &ClipConfig) -> Result<Self> {
        let d = cfg.hidden_size;
        Ok(Self {
            q_proj: linear(d, d, vb.pp("q_proj"))?,
            k_proj: linear(d, d, vb.pp("k_proj"))?,
            v_proj: linear(d, d, vb.pp("v_proj"))?,
            out_proj: linear(d, d, vb.pp("out_proj"))?,
            heads: cfg.heads,
        })
    }

    fn forward(&self, xs: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (b, n, width) = xs.dims3()?;
        let head_dim = width / self.heads;
        let split = |t: Tensor| t.reshape((b, n, self.heads, head_dim))?.transpose(1, 2)?.contiguous();
        let q = split((self.q_proj.forward(xs)? * (head_dim as f64).powf(-0.5))?)?;
        let k = split(self.k_proj.forward(xs)?)?;
        let v = split(self.v_proj.forward(xs)?)?;
        let scores = q.matmul(&k.t()?)?.broadcast_add(mask)?;
        let weights = candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?.to_dtype(xs.dtype())?;
        let out = weights.matmul(&v)?.transpose(1, 2)?.reshape((b, n, width))?;
        self.out_proj.forward(&out)
    }
}

/// `fc2(act(fc1(x)))`.
#[derive(Debug)]
struct ClipMlp {
    fc1: Linear,
    fc2: Linear,
    activation: Activation,
}

impl ClipMlp {
    fn new(vb: VarBuilder, cfg: &ClipConfig) -> Result<Self> {
        Ok(Self {
            fc1: linear(cfg.hidden_size, cfg.intermediate_size, vb.pp("fc1"))?,
            fc2: linear(cfg.intermediate_size, cfg.hidden_size, vb.pp("fc2"))?,
            activation: cfg.activation,
        })
    }
}

impl Module for ClipMlp {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let h = self.fc1.forward(xs)?;
        let h = match self.activation {
            Activation::QuickGelu => (&h * candle_nn::ops::sigmoid(&(&h * 1.702)?)?)?,
            Activation::Gelu => h.gelu_erf()?,
        };
        self.fc2.forward(&h)
    }
}

/// One pre-norm encoder layer.
#[derive(Debug)]
struct ClipEncoderLayer {
    layer_norm1: LayerNorm,
    self_attn: ClipAttention,
    layer_norm2: LayerNorm,
    mlp: ClipMlp,
}

impl ClipEncoderLayer {
    fn new(vb: VarBuilder, cfg: &ClipConfig) -> Result<Self> {
        Ok(Self {
            layer_norm1: layer_norm(cfg.hidden_size, 1e-5, vb.pp("layer_norm1"))?,
            self_attn: ClipAttention::new(vb.pp("self_attn"), cfg)?,
            layer_norm2: layer_norm(cfg.hidden_size, 1e-5, vb.pp("layer_norm2"))?,
            mlp: ClipMlp::new(vb.pp("mlp"), cfg)?,
        })
    }

    fn forward(&self, xs: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let xs = (self.self_attn.forward(&self.layer_norm1.forward(xs)?, mask)? + xs)?;
        self.mlp.forward(&self.layer_norm2.forward(&xs)?)? + xs
    }
}

/// What SDXL takes from a text encoder.
#[derive(Debug, Clone)]
pub struct ClipOutput {
    /// Hidden states after the layer the encoding stops at (SDXL's: the second-to-last),
    /// before the final norm, `[b, n, hidden]`.
    pub hidden: Tensor,
    /// The final-norm hidden state at the first end-of-text token, projected when the encoder
    /// has a projection: `[b, projection_dim or hidden]`.
    pub pooled: Tensor,
}

/// A CLIP text encoder.
#[derive(Debug)]
pub struct ClipTextEncoder {
    token_embedding: Embedding,
    position_embedding: Embedding,
    layers: Vec<ClipEncoderLayer>,
    final_layer_norm: LayerNorm,
    text_projection: Option<Linear>,
    cfg: ClipConfig,
}

impl ClipTextEncoder {
    /// Loads `text_model.*` (and `text_projection` when configured) from `vb`.
    ///
    /// # Errors
    /// A missing or mis-shaped weight.
    pub fn new(vb: VarBuilder, cfg: &ClipConfig) -> Result<Self> {
        let model = vb.pp("text_model");
        let embeddings = model.pp("embeddings");
        let layers = (0..cfg.layers)
            .map(|i| ClipEncoderLayer::new(model.pp(format!("encoder.layers.{i}")), cfg))
            .collect::<Result<Vec<_>>>()?;
        let text_projection = match cfg.projection_dim {
            Some(dim) => Some(linear_no_bias(cfg.hidden_size, dim, vb.pp("text_projection"))?),
            None => None,
        };
        Ok(Self {
            token_embedding: embedding(cfg.vocab_size, cfg.hidden_size, embeddings.pp("token_embedding"))?,
            position_embedding: embedding(cfg.max_positions, cfg.hidden_size, embeddings.pp("position_embedding"))?,
            layers,
            final_layer_norm: layer_norm(cfg.hidden_size, 1e-5, model.pp("final_layer_norm"))?,
            text_projection,
            cfg: *cfg,
        })
    }

    /// Encodes token ids `[b, n]` (n at most 77), with the hidden states of the layer
    /// `from_end` layers from the end (1: the last, 2: the second-to-last, SDXL's).
    ///
    /// # Errors
    /// A tensor error on too long sequences or ids outside the vocabulary, or a `from_end`
    /// outside 1 to the number of layers.
    pub fn forward(&self, ids: &Tensor, from_end: usize) -> Result<ClipOutput> {
        let layers = self.layers.len();
        if !(1..=layers).contains(&from_end) {
            candle_core::bail!("the text encoder has {layers} layers: it cannot stop {from_end} from the end");
        }
        let (b, n) = ids.dims2()?;
        let positions = Tensor::arange(0u32, n as u32, ids.device())?;
        let mut xs = self
            .token_embedding
            .forward(ids)?
            .broadcast_add(&self.position_embedding.forward(&positions)?)?;
        let mask = causal_mask(n, ids.device())?.to_dtype(xs.dtype())?;
        let mut hidden = xs.clone();
        for (index, layer) in self.layers.iter().enumerate() {
            xs = layer.forward(&xs, &mask)?;
            if index + from_end == layers {
                hidden = xs.clone();
            }
        }
        let last = self.final_layer_norm.forward(&xs)?;
        let eos = first_position_of(ids, self.cfg.eos_token_id)?;
        let pooled = (0..b).map(|i| last.i((i, eos[i]))).collect::<Result<Vec<_>>>()?;
        let mut pooled = Tensor::stack(&pooled, 0)?;
        if let Some(projection) = &self.text_projection {
            pooled = projection.forward(&pooled)?;
        }
        Ok(ClipOutput { hidden, pooled })
    }
}

/// `-inf` above the diagonal, 0 elsewhere: `[1, 1, n, n]`.
fn causal_mask(n: usize, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..n)
        .flat_map(|i| (0..n).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(mask, (1, 1, n, n), device)
}

/// For each row, the first position holding `token` (the last position when absent).
fn first_position_of(ids: &Tensor, token: u32) -> Result<Vec<usize>> {
    let rows = ids.to_dtype(DType::U32)?.to_vec2::<u32>()?;
    Ok(rows
        .iter()
        .map(|row| row.iter().position(|&t| t == token).unwrap_or(row.len() - 1))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooled_position_is_the_first_end_of_text() {
        let ids = Tensor::new(&[[49406u32, 5, 49407, 49407], [49406, 1, 2, 3]], &Device::Cpu).unwrap();
        assert_eq!(first_position_of(&ids, 49407).unwrap(), [2, 3]);
        let mask = causal_mask(3, &Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(mask[1], f32::NEG_INFINITY);
        assert_eq!(mask[3], 0.0);
    }
}
