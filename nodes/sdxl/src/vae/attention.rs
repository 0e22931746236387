//! The single-head spatial self-attention in the VAE's middle blocks.

use crate::kernels;
use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{group_norm, linear, GroupNorm, Linear, VarBuilder};

/// Queries attended at once: the scores of one chunk (its queries by every position, in f32)
/// are what the attention holds, 64 MiB at 1024x1024 instead of 1 GiB for all queries together.
/// Each query's softmax is its own, so chunking changes no result.
const QUERY_CHUNK: usize = 1024;

/// `x + to_out(attention(group_norm(x)))` over all `h * w` positions, one head as wide as the
/// channels.
#[derive(Debug)]
pub struct SpatialAttention {
    group_norm: GroupNorm,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
}

impl SpatialAttention {
    /// Loads `group_norm`, `to_q`, `to_k`, `to_v` and `to_out.0`.
    ///
    /// # Errors
    /// A missing or mis-shaped weight.
    pub fn new(vb: VarBuilder, channels: usize, groups: usize) -> Result<Self> {
        Ok(Self {
            group_norm: group_norm(groups, channels, 1e-6, vb.pp("group_norm"))?,
            to_q: linear(channels, channels, vb.pp("to_q"))?,
            to_k: linear(channels, channels, vb.pp("to_k"))?,
            to_v: linear(channels, channels, vb.pp("to_v"))?,
            to_out: linear(channels, channels, vb.pp("to_out.0"))?,
        })
    }
}

impl Module for SpatialAttention {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = xs.dims4()?;
        // The tokens must be made contiguous: candle's batched matmul inside `Linear` gives wrong
        // results for this transposed layout (caught by the parity test). A channels-last image
        // is already in token order.
        let normed = self.group_norm.forward(xs)?;
        let tokens = if kernels::is_channels_last(&normed) {
            kernels::pixels(&normed)?.reshape((b, h * w, c))?
        } else {
            normed.reshape((b, c, h * w))?.transpose(1, 2)?.contiguous()?
        };
        let q = self.to_q.forward(&tokens)?;
        let k = self.to_k.forward(&tokens)?;
        let v = self.to_v.forward(&tokens)?;
        let keys = k.t()?;
        let positions = h * w;
        let chunks = (0..positions)
            .step_by(QUERY_CHUNK)
            .map(|start| {
                let queries = q.narrow(1, start, QUERY_CHUNK.min(positions - start))?;
                let scores = (queries.matmul(&keys)? / (c as f64).sqrt())?;
                let weights = candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?.to_dtype(xs.dtype())?;
                weights.matmul(&v)
            })
            .collect::<Result<Vec<_>>>()?;
        let out = self.to_out.forward(&Tensor::cat(&chunks, 1)?)?;
        if kernels::is_channels_last(xs) {
            return kernels::add(&kernels::image(&out.reshape((b, h, w, c))?)?, xs);
        }
        out.transpose(1, 2)?.reshape((b, c, h, w))? + xs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::VarMap;

    #[test]
    fn attending_in_query_chunks_changes_nothing() {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let attention = SpatialAttention::new(vb, 8, 4).unwrap();
        // 36 x 36 = 1296 positions: two chunks, the second partial.
        let xs = Tensor::randn(0f32, 1.0, (1, 8, 36, 36), &Device::Cpu).unwrap();
        let chunked = attention.forward(&xs).unwrap();
        let tokens = attention
            .group_norm
            .forward(&xs)
            .unwrap()
            .reshape((1, 8, 1296))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap();
        let (q, k, v) = (
            attention.to_q.forward(&tokens).unwrap(),
            attention.to_k.forward(&tokens).unwrap(),
            attention.to_v.forward(&tokens).unwrap(),
        );
        let scores = (q.matmul(&k.t().unwrap()).unwrap() / 8f64.sqrt()).unwrap();
        let weights = candle_nn::ops::softmax_last_dim(&scores).unwrap();
        let whole = attention.to_out.forward(&weights.matmul(&v).unwrap()).unwrap();
        let whole = (whole.transpose(1, 2).unwrap().reshape((1, 8, 36, 36)).unwrap() + &xs).unwrap();
        let difference = (chunked - whole)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(difference < 1e-5, "{difference}");
    }
}
