//! IP-Adapter Plus's Resampler (a Perceiver): a fixed set of learned queries attends to the
//! projected image (or face) embedding through a few attention/feed-forward layers and becomes
//! the image tokens the UNet's cross-attention layers read.
//!
//! Weight names are the original IP-Adapter ones, as in InstantID's `ip-adapter.bin`
//! (`latents`, `proj_in`, `layers.N.0.{norm1,norm2,to_q,to_kv,to_out}`, `layers.N.1.{0,1,3}`,
//! `proj_out`, `norm_out`). Reference: diffusers' `IPAdapterPlusImageProjection`.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{layer_norm, linear, linear_no_bias, LayerNorm, Linear, VarBuilder};

/// Sizes of a Resampler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResamplerConfig {
    /// Width of the input embedding (512 for an ArcFace face embedding).
    pub embedding_dim: usize,
    /// Width inside the layers.
    pub dim: usize,
    /// Attention/feed-forward layers.
    pub depth: usize,
    /// Channels per head.
    pub dim_head: usize,
    /// Attention heads.
    pub heads: usize,
    /// Learned queries, i.e. image tokens out.
    pub num_queries: usize,
    /// Width of the tokens out (the UNet's cross-attention width).
    pub output_dim: usize,
    /// Feed-forward expansion.
    pub ff_mult: usize,
}

impl ResamplerConfig {
    /// InstantID's image projection for SDXL: 512 -> 16 tokens of 2048.
    pub const fn instantid() -> Self {
        Self {
            embedding_dim: 512,
            dim: 1280,
            depth: 4,
            dim_head: 64,
            heads: 20,
            num_queries: 16,
            output_dim: 2048,
            ff_mult: 4,
        }
    }

    /// The built-in tiny projection, matching the tiny UNet's cross-attention width.
    pub const fn tiny() -> Self {
        Self {
            embedding_dim: 12,
            dim: 32,
            depth: 2,
            dim_head: 8,
            heads: 4,
            num_queries: 4,
            output_dim: 64,
            ff_mult: 4,
        }
    }
}

/// Queries attend to the input and to themselves.
#[derive(Debug)]
struct PerceiverAttention {
    norm_input: LayerNorm,
    norm_latents: LayerNorm,
    to_q: Linear,
    to_kv: Linear,
    to_out: Linear,
    heads: usize,
    dim_head: usize,
}

impl PerceiverAttention {
    fn new(vb: VarBuilder, cfg: &ResamplerConfig) -> Result<Self> {
        let inner = cfg.dim_head * cfg.heads;
        Ok(Self {
            norm_input: layer_norm(cfg.dim, 1e-5, vb.pp("norm1"))?,
            norm_latents: layer_norm(cfg.dim, 1e-5, vb.pp("norm2"))?,
            to_q: linear_no_bias(cfg.dim, inner, vb.pp("to_q"))?,
            to_kv: linear_no_bias(cfg.dim, inner * 2, vb.pp("to_kv"))?,
            to_out: linear_no_bias(inner, cfg.dim, vb.pp("to_out"))?,
            heads: cfg.heads,
            dim_head: cfg.dim_head,
        })
    }

    fn forward(&self, x: &Tensor, latents: &Tensor) -> Result<Tensor> {
        let x = self.norm_input.forward(x)?;
        let latents = self.norm_latents.forward(latents)?;
        let q = self.to_q.forward(&latents)?;
        let kv = self.to_kv.forward(&Tensor::cat(&[&x, &latents], 1)?)?;
        let kv = kv.chunk(2, D::Minus1)?;
        let heads = |t: &Tensor| -> Result<Tensor> {
            let (b, n, _) = t.dims3()?;
            t.reshape((b, n, self.heads, self.dim_head))?
                .transpose(1, 2)?
                .contiguous()
        };
        let (q, k, v) = (heads(&q)?, heads(&kv[0])?, heads(&kv[1])?);
        let scale = 1.0 / (self.dim_head as f64).sqrt();
        let scores = (q.matmul(&k.t()?)? * scale)?;
        let weights = candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?.to_dtype(q.dtype())?;
        let out = weights.matmul(&v)?;
        let (b, _, n, _) = out.dims4()?;
        self.to_out
            .forward(&out.transpose(1, 2)?.reshape((b, n, self.heads * self.dim_head))?)
    }
}

/// LayerNorm, Linear, GELU, Linear, no biases.
#[derive(Debug)]
struct FeedForward {
    norm: LayerNorm,
    up: Linear,
    down: Linear,
}

impl FeedForward {
    fn new(vb: VarBuilder, cfg: &ResamplerConfig) -> Result<Self> {
        let inner = cfg.dim * cfg.ff_mult;
        Ok(Self {
            norm: layer_norm(cfg.dim, 1e-5, vb.pp("0"))?,
            up: linear_no_bias(cfg.dim, inner, vb.pp("1"))?,
            down: linear_no_bias(inner, cfg.dim, vb.pp("3"))?,
        })
    }
}

impl Module for FeedForward {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.down
            .forward(&self.up.forward(&self.norm.forward(xs)?)?.gelu_erf()?)
    }
}

/// The Resampler: embedding in, `num_queries` tokens out.
#[derive(Debug)]
pub struct Resampler {
    latents: Tensor,
    proj_in: Linear,
    layers: Vec<(PerceiverAttention, FeedForward)>,
    proj_out: Linear,
    norm_out: LayerNorm,
}

impl Resampler {
    /// Loads a Resampler of shape `cfg` from `vb` (the `image_proj` weights).
    ///
    /// # Errors
    /// A missing or mis-shaped weight.
    pub fn new(vb: VarBuilder, cfg: &ResamplerConfig) -> Result<Self> {
        let layers = (0..cfg.depth)
            .map(|i| {
                let layer = vb.pp(format!("layers.{i}"));
                Ok((
                    PerceiverAttention::new(layer.pp("0"), cfg)?,
                    FeedForward::new(layer.pp("1"), cfg)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            latents: vb.get((1, cfg.num_queries, cfg.dim), "latents")?,
            proj_in: linear(cfg.embedding_dim, cfg.dim, vb.pp("proj_in"))?,
            layers,
            proj_out: linear(cfg.dim, cfg.output_dim, vb.pp("proj_out"))?,
            norm_out: layer_norm(cfg.output_dim, 1e-5, vb.pp("norm_out"))?,
        })
    }

    /// The shape of one embedding's tokens: `(num_queries, output_dim)`.
    ///
    /// # Errors
    /// Weights of a shape no Resampler has.
    pub fn token_shape(&self) -> Result<(usize, usize)> {
        Ok((self.latents.dim(1)?, self.proj_out.weight().dim(0)?))
    }

    /// Image tokens `[b, num_queries, output_dim]` from embeddings `[b, n, embedding_dim]`.
    ///
    /// # Errors
    /// A tensor error on a mis-shaped embedding.
    pub fn forward(&self, embedding: &Tensor) -> Result<Tensor> {
        let batch = embedding.dim(0)?;
        let x = self.proj_in.forward(&embedding.to_dtype(self.latents.dtype())?)?;
        let mut latents = self.latents.repeat((batch, 1, 1))?;
        for (attention, feed_forward) in &self.layers {
            latents = (attention.forward(&x, &latents)? + &latents)?;
            latents = (feed_forward.forward(&latents)? + &latents)?;
        }
        self.norm_out.forward(&self.proj_out.forward(&latents)?)
    }
}
