//! Attention and the transformer block of SDXL's `Transformer2DModel`: self-attention,
//! cross-attention on the text (plus optional extra image tokens, IP-Adapter style), and a GEGLU
//! feed-forward, each after a LayerNorm and with a residual.

use crate::blocks::Linear;
use crate::kernels;
use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{layer_norm, linear_no_bias, LayerNorm, VarBuilder};

/// Extra key/value tokens for a cross-attention layer: IP-Adapter's decoupled attention adds
/// `scale * attention(q, k_ip, v_ip)` to the text attention's output, weighted per query token
/// when a region limits where it acts.
#[derive(Clone, Debug)]
pub struct ExtraTokens {
    /// Keys of the extra tokens, already projected: `[b, n, inner]`.
    pub keys: Tensor,
    /// Values of the extra tokens, already projected: `[b, n, inner]`.
    pub values: Tensor,
    /// Weight of their contribution.
    pub scale: f64,
    /// Per-query-token weights `[1, n, 1]` (a region mask at this layer's grid), if any.
    pub token_weights: Option<Tensor>,
}

/// Multi-head attention with separate q/k/v projections (no bias) and an output projection.
#[derive(Debug)]
pub struct Attention {
    to_q: candle_nn::Linear,
    to_k: candle_nn::Linear,
    to_v: candle_nn::Linear,
    to_out: Linear,
    heads: usize,
    span: tracing::Span,
}

impl Attention {
    /// Loads `to_q`, `to_k`, `to_v` and `to_out.0` for `dim`-wide queries over `context_dim`-wide
    /// keys and values.
    ///
    /// # Errors
    /// A missing or mis-shaped weight.
    pub fn new(vb: VarBuilder, dim: usize, context_dim: usize, heads: usize) -> Result<Self> {
        Ok(Self {
            to_q: linear_no_bias(dim, dim, vb.pp("to_q"))?,
            to_k: linear_no_bias(context_dim, dim, vb.pp("to_k"))?,
            to_v: linear_no_bias(context_dim, dim, vb.pp("to_v"))?,
            to_out: Linear::new(dim, dim, vb.pp("to_out.0"))?,
            heads,
            span: tracing::span!(tracing::Level::TRACE, "attention"),
        })
    }

    /// Attends from `xs` (`[b, n, dim]`) to `context` (itself when `None`), adding `extra`
    /// tokens' attention when given, and returns `residual` plus the result.
    ///
    /// # Errors
    /// A tensor error on mismatched shapes.
    pub fn forward(
        &self,
        xs: &Tensor,
        context: Option<&Tensor>,
        extra: Option<&ExtraTokens>,
        residual: &Tensor,
    ) -> Result<Tensor> {
        let _enter = self.span.enter();
        let context = context.unwrap_or(xs);
        let q = self.to_q.forward(xs)?;
        let mut out = self.attend(&q, &self.to_k.forward(context)?, &self.to_v.forward(context)?)?;
        if let Some(extra) = extra {
            let mut image = (self.attend(&q, &extra.keys, &extra.values)? * extra.scale)?;
            if let Some(weights) = &extra.token_weights {
                image = image.broadcast_mul(&weights.to_dtype(image.dtype())?)?;
            }
            out = (out + image)?;
        }
        self.to_out.forward_add(&out, residual)
    }

    /// Attention of token-layout queries over keys and values (`[b, n, heads * d]` each), as
    /// `[b, n, heads * d]`: the fused kernel where it applies, else per head in query blocks.
    fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        if let Some(out) = kernels::attention(q, k, v, self.heads)? {
            return Ok(out);
        }
        let out = scaled_dot_product(&self.split_heads(q)?, &self.split_heads(k)?, &self.split_heads(v)?)?;
        self.merge_heads(&out)
    }

    /// `[b, n, heads * d]` -> `[b, heads, n, d]`.
    fn split_heads(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, n, width) = xs.dims3()?;
        xs.reshape((b, n, self.heads, width / self.heads))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// `[b, heads, n, d]` -> `[b, n, heads * d]`.
    fn merge_heads(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, heads, n, d) = xs.dims4()?;
        xs.transpose(1, 2)?.reshape((b, n, heads * d))
    }
}

/// Largest f32 score block one attention call materialises; longer queries are processed in
/// row chunks (as diffusers' sliced attention), so SDXL's 4096-token self-attention at
/// 1024x1024 needs a few hundred MiB of scores instead of several GiB.
const SCORE_BLOCK_BYTES: usize = 128 << 20;

/// `softmax(q k^T / sqrt(d)) v`, with the softmax in f32 whatever the weights' dtype, in query
/// chunks of at most [`SCORE_BLOCK_BYTES`] of scores.
fn scaled_dot_product(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    scaled_dot_product_in_blocks(q, k, v, SCORE_BLOCK_BYTES)
}

fn scaled_dot_product_in_blocks(q: &Tensor, k: &Tensor, v: &Tensor, block_bytes: usize) -> Result<Tensor> {
    let (batch, heads, queries, depth) = q.dims4()?;
    let keys = k.dim(2)?;
    let q = (q * (1.0 / (depth as f64).sqrt()))?;
    let k_t = k.t()?;
    let row_bytes = batch * heads * keys * DType::F32.size_in_bytes();
    let rows = (block_bytes / row_bytes.max(1)).clamp(1, queries);
    if rows == queries {
        return attend(&q, &k_t, v);
    }
    let chunks = (0..queries)
        .step_by(rows)
        .map(|start| attend(&q.narrow(2, start, rows.min(queries - start))?, &k_t, v))
        .collect::<Result<Vec<_>>>()?;
    Tensor::cat(&chunks, 2)
}

/// One block of attention rows: `softmax(q k_t) v` with the softmax in f32.
fn attend(q: &Tensor, k_t: &Tensor, v: &Tensor) -> Result<Tensor> {
    let scores = q.matmul(k_t)?;
    let weights = candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?.to_dtype(q.dtype())?;
    weights.matmul(v)
}

/// GEGLU feed-forward: `net.2(a * gelu(b))` where `[a, b] = net.0.proj(x)`.
#[derive(Debug)]
pub struct FeedForward {
    proj: Linear,
    out: Linear,
}

impl FeedForward {
    /// Loads `net.0.proj` (`dim -> 8 dim`) and `net.2` (`4 dim -> dim`).
    ///
    /// # Errors
    /// A missing or mis-shaped weight.
    pub fn new(vb: VarBuilder, dim: usize) -> Result<Self> {
        let inner = dim * 4;
        Ok(Self {
            proj: Linear::new(dim, inner * 2, vb.pp("net.0.proj"))?,
            out: Linear::new(inner, dim, vb.pp("net.2"))?,
        })
    }

    /// `residual` plus the feed-forward of `xs`.
    ///
    /// # Errors
    /// A tensor error on mismatched shapes.
    pub fn forward_add(&self, xs: &Tensor, residual: &Tensor) -> Result<Tensor> {
        let product = self.proj.product(xs)?;
        let gated = match kernels::geglu(&product, self.proj.bias())? {
            Some(gated) => gated,
            None => {
                let chunks = product.broadcast_add(self.proj.bias())?.chunk(2, D::Minus1)?;
                (&chunks[0] * chunks[1].gelu_erf()?)?
            }
        };
        self.out.forward_add(&gated, residual)
    }
}

/// diffusers' `BasicTransformerBlock` as SDXL uses it.
#[derive(Debug)]
pub struct BasicTransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff: FeedForward,
    span: tracing::Span,
}

impl BasicTransformerBlock {
    /// Loads a block of width `dim` attending to `context_dim`-wide text with `heads` heads.
    ///
    /// # Errors
    /// A missing or mis-shaped weight.
    pub fn new(vb: VarBuilder, dim: usize, context_dim: usize, heads: usize) -> Result<Self> {
        Ok(Self {
            norm1: layer_norm(dim, 1e-5, vb.pp("norm1"))?,
            attn1: Attention::new(vb.pp("attn1"), dim, dim, heads)?,
            norm2: layer_norm(dim, 1e-5, vb.pp("norm2"))?,
            attn2: Attention::new(vb.pp("attn2"), dim, context_dim, heads)?,
            norm3: layer_norm(dim, 1e-5, vb.pp("norm3"))?,
            ff: FeedForward::new(vb.pp("ff"), dim)?,
            span: tracing::span!(tracing::Level::TRACE, "transformer-block"),
        })
    }

    /// Applies the block to tokens `xs` (`[b, n, dim]`) with text `context`.
    ///
    /// # Errors
    /// A tensor error on mismatched shapes.
    pub fn forward(&self, xs: &Tensor, context: &Tensor, extra: Option<&ExtraTokens>) -> Result<Tensor> {
        let _enter = self.span.enter();
        let xs = self.attn1.forward(&self.norm1.forward(xs)?, None, None, xs)?;
        let xs = self
            .attn2
            .forward(&self.norm2.forward(&xs)?, Some(context), extra, &xs)?;
        self.ff.forward_add(&self.norm3.forward(&xs)?, &xs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn attention_in_query_chunks_equals_attention_in_one_block() -> Result<()> {
        let device = Device::Cpu;
        let q = Tensor::randn(0f32, 1.0, (2, 3, 37, 8), &device)?;
        let k = Tensor::randn(0f32, 1.0, (2, 3, 19, 8), &device)?;
        let v = Tensor::randn(0f32, 1.0, (2, 3, 19, 8), &device)?;
        let whole = scaled_dot_product_in_blocks(&q, &k, &v, usize::MAX)?;
        // 2 * 3 * 19 * 4 bytes per query row: blocks of 5 rows, the last one 2 rows.
        let chunked = scaled_dot_product_in_blocks(&q, &k, &v, 5 * 2 * 3 * 19 * 4)?;
        assert_eq!(chunked.dims(), whole.dims());
        let difference = (chunked - &whole)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        assert!(difference < 1e-6, "chunked attention differs by {difference}");
        Ok(())
    }
}
