//! Attention and the transformer block of SDXL's `Transformer2DModel`: self-attention,
//! cross-attention on the text (plus optional extra image tokens, IP-Adapter style), and a GEGLU
//! feed-forward, each after a LayerNorm and with a residual.

use crate::blocks::{LayerNorm, Linear};
use crate::kernels;
use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;

/// Extra key/value tokens for a cross-attention layer: IP-Adapter's decoupled attention adds
/// `scale * attention(q, k_ip, v_ip)` to the text attention's output, weighted per query token
/// when a region limits where it acts. The scale is carried in the values (`scale * v_ip`, the
/// same sum over 16 tokens rather than the whole image's), made once when they are projected.
#[derive(Clone, Debug)]
pub struct ExtraTokens {
    /// Keys of the extra tokens, already projected: `[b, n, inner]`.
    pub keys: Tensor,
    /// Values of the extra tokens, already projected and scaled by the weight of their
    /// contribution: `[b, n, inner]`.
    pub values: Tensor,
    /// Per-query-token weights `[1, n, 1]` (a region mask at this layer's grid), if any.
    pub token_weights: Option<Tensor>,
}

/// The keys and values one cross-attention layer attends to, projected from the conditioning:
/// `[b, n, inner]` each.
#[derive(Clone, Debug)]
pub struct ContextKeys {
    /// Keys.
    pub keys: Tensor,
    /// Values.
    pub values: Tensor,
}

/// `to_k` and `to_v`: tokens to keys and values. In a cross-attention layer a swap unit of its
/// own, run once per conditioning rather than in every step, since the text stays the same
/// through a sampling run; in self-attention part of the layer.
#[derive(Debug)]
pub struct ContextProjection {
    to_k: Linear,
    to_v: Linear,
}

impl ContextProjection {
    /// Loads `to_k` and `to_v` from `context_dim`-wide tokens to `dim`-wide keys and values.
    ///
    /// # Errors
    /// A missing or mis-shaped weight.
    pub fn new(vb: VarBuilder, context_dim: usize, dim: usize) -> Result<Self> {
        Ok(Self {
            to_k: Linear::no_bias(context_dim, dim, vb.pp("to_k"))?,
            to_v: Linear::no_bias(context_dim, dim, vb.pp("to_v"))?,
        })
    }

    /// Keys and values of `tokens` (`[b, n, context_dim]`).
    ///
    /// # Errors
    /// A tensor error on mismatched shapes.
    pub fn forward(&self, tokens: &Tensor) -> Result<ContextKeys> {
        Ok(ContextKeys {
            keys: self.to_k.forward(tokens)?,
            values: self.to_v.forward(tokens)?,
        })
    }
}

/// Multi-head attention from queries (`to_q`, no bias) to given keys and values, with an output
/// projection: the cross-attention layer, whose keys and values come projected.
#[derive(Debug)]
pub struct Attention {
    to_q: Linear,
    to_out: Linear,
    heads: usize,
    span: tracing::Span,
}

impl Attention {
    /// Loads `to_q` and `to_out.0` for `dim`-wide queries.
    ///
    /// # Errors
    /// A missing or mis-shaped weight.
    pub fn new(vb: VarBuilder, dim: usize, heads: usize) -> Result<Self> {
        let to_q = Linear::no_bias(dim, dim, vb.pp("to_q"))?;
        Self::with_query(vb, to_q, dim, heads)
    }

    fn with_query(vb: VarBuilder, to_q: Linear, dim: usize, heads: usize) -> Result<Self> {
        Ok(Self {
            to_q,
            to_out: Linear::new(dim, dim, vb.pp("to_out.0"))?,
            heads,
            span: tracing::span!(tracing::Level::TRACE, "attention"),
        })
    }

    /// Attends from `xs` (`[b, n, dim]`) to `context`'s keys and values, adding `extra`
    /// tokens' attention when given, and returns `residual` plus the result.
    ///
    /// # Errors
    /// A tensor error on mismatched shapes.
    pub fn forward(
        &self,
        xs: &Tensor,
        context: &ContextKeys,
        extra: Option<&ExtraTokens>,
        residual: &Tensor,
    ) -> Result<Tensor> {
        let _enter = self.span.enter();
        let q = self.to_q.forward(xs)?;
        let mut out = self.attend(&q, &context.keys, &context.values)?;
        if let Some(extra) = extra {
            let mut image = self.attend(&q, &extra.keys, &extra.values)?;
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

/// Self-attention: [`Attention`] over the tokens' own keys and values.
#[derive(Debug)]
pub struct SelfAttention {
    attention: Attention,
    projection: ContextProjection,
}

impl SelfAttention {
    /// Loads `to_q`, `to_k`, `to_v` and `to_out.0` for `dim`-wide tokens.
    ///
    /// # Errors
    /// A missing or mis-shaped weight.
    pub fn new(vb: VarBuilder, dim: usize, heads: usize) -> Result<Self> {
        let to_q = Linear::no_bias(dim, dim, vb.pp("to_q"))?;
        let projection = ContextProjection::new(vb.clone(), dim, dim)?;
        Ok(Self {
            attention: Attention::with_query(vb, to_q, dim, heads)?,
            projection,
        })
    }

    /// `residual` plus the attention of `xs` (`[b, n, dim]`) to itself.
    ///
    /// # Errors
    /// A tensor error on mismatched shapes.
    pub fn forward(&self, xs: &Tensor, residual: &Tensor) -> Result<Tensor> {
        let own = self.projection.forward(xs)?;
        self.attention.forward(xs, &own, None, residual)
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
        let gated = match kernels::geglu(&product, self.proj.bias()?)? {
            Some(gated) => gated,
            None => {
                let chunks = product.broadcast_add(self.proj.bias()?)?.chunk(2, D::Minus1)?;
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
    attn1: SelfAttention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff: FeedForward,
    span: tracing::Span,
}

impl BasicTransformerBlock {
    /// Loads a block of width `dim` with `heads` heads. The cross-attention's keys and values
    /// (`attn2.to_k`, `attn2.to_v`) are not part of it: see [`ContextProjection`].
    ///
    /// # Errors
    /// A missing or mis-shaped weight.
    pub fn new(vb: VarBuilder, dim: usize, heads: usize) -> Result<Self> {
        Ok(Self {
            norm1: LayerNorm::new(dim, 1e-5, vb.pp("norm1"))?,
            attn1: SelfAttention::new(vb.pp("attn1"), dim, heads)?,
            norm2: LayerNorm::new(dim, 1e-5, vb.pp("norm2"))?,
            attn2: Attention::new(vb.pp("attn2"), dim, heads)?,
            norm3: LayerNorm::new(dim, 1e-5, vb.pp("norm3"))?,
            ff: FeedForward::new(vb.pp("ff"), dim)?,
            span: tracing::span!(tracing::Level::TRACE, "transformer-block"),
        })
    }

    /// Applies the block to tokens `xs` (`[b, n, dim]`), cross-attending to `context`'s keys
    /// and values.
    ///
    /// # Errors
    /// A tensor error on mismatched shapes.
    pub fn forward(&self, xs: &Tensor, context: &ContextKeys, extra: Option<&ExtraTokens>) -> Result<Tensor> {
        let _enter = self.span.enter();
        let xs = self.attn1.forward(&self.norm1.forward(xs)?, xs)?;
        let xs = self.attn2.forward(&self.norm2.forward(&xs)?, context, extra, &xs)?;
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
