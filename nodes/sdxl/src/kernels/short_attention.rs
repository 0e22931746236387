//! Attention over a few keys (`short_attention.cu`), alone or added to another attention's
//! output. IP-Adapter's decoupled cross-attention adds `scale * attention(q, k_image, v_image)`
//! over 4 to 16 image tokens to the text attention's output in every cross-attention layer, and
//! InstantID's ControlNet cross-attends to 16 face tokens. One pass reads the queries (and the
//! output added to) and writes the result, where a fused attention kernel built for long key
//! sequences works in tiles of 64 or more keys, and the addition takes a scaling of the values
//! and another pass over the whole output.

use candle_core::{Result, Tensor};

/// `softmax(q k^T / 8) v` over `heads` 64-wide heads, for token-layout `q` (`[b, n, heads * 64]`)
/// and `k`, `v` (`[b, m, heads * 64]`, `m` at most 64); `None` where the kernel does not apply
/// (not CUDA, not packed f16, other shapes, more keys).
///
/// # Errors
/// A compile, load or launch failure of the kernel.
pub fn short_attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize) -> Result<Option<Tensor>> {
    #[cfg(feature = "cuda")]
    if cuda::applies(None, q, k, v, heads) {
        let op = cuda::ShortAttention {
            base: None,
            heads,
            scale: 1.0,
        };
        return q.apply_op3_no_bwd(k, v, &op).map(Some);
    }
    let _ = (q, k, v, heads);
    Ok(None)
}

/// `base + scale * softmax(q k^T / 8) v`: [`short_attention`] added to `base` (of `q`'s shape)
/// in the same pass.
///
/// # Errors
/// A compile, load or launch failure of the kernel.
pub fn add_short_attention(
    base: &Tensor,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    heads: usize,
) -> Result<Option<Tensor>> {
    #[cfg(feature = "cuda")]
    if cuda::applies(Some(base), q, k, v, heads) {
        let op = cuda::ShortAttention {
            base: Some(base.clone()),
            heads,
            scale: scale as f32,
        };
        return q.apply_op3_no_bwd(k, v, &op).map(Some);
    }
    let _ = (base, q, k, v, scale, heads);
    Ok(None)
}

#[cfg(feature = "cuda")]
mod cuda {
    use crate::kernels::cuda::{all_packed_f16, held_view, view, ThreeTensors};
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::WrapErr;
    use candle_core::{CpuStorage, CudaStorage, CustomOp3, Layout, Result, Shape, Tensor};
    use half::f16;
    use swapgraph_model::nvrtc;

    const SOURCE: &str = concat!(include_str!("half.cuh"), include_str!("short_attention.cu"));
    /// The most keys the kernel takes: past it a fused attention kernel built for long
    /// sequences is the better choice.
    pub const MOST_KEYS: usize = 64;
    const HEAD_DIM: usize = 64;
    const THREADS: u32 = 256;
    /// (query token, head) pairs a block takes: eight lanes each.
    const GROUPS_PER_BLOCK: usize = THREADS as usize / 8;

    /// Whether the kernel takes these tensors: packed f16 on one CUDA device, `base` (if any)
    /// and `q` of one shape, `k` and `v` of one batch and width with a few tokens, whole
    /// 64-wide heads.
    pub fn applies(base: Option<&Tensor>, q: &Tensor, k: &Tensor, v: &Tensor, heads: usize) -> bool {
        let (Ok((batch, _, width)), Ok((key_batch, keys, key_width))) = (q.dims3(), k.dims3()) else {
            return false;
        };
        width == heads * HEAD_DIM
            && base.is_none_or(|base| base.shape() == q.shape())
            && (key_batch, key_width) == (batch, width)
            && (1..=MOST_KEYS).contains(&keys)
            && v.shape() == k.shape()
            && all_packed_f16(&[q, k, v])
            && base.is_none_or(|base| all_packed_f16(&[q, base]))
    }

    /// The candle op around the kernel over `q`, `k` and `v`, holding the output it adds to
    /// when there is one; `applies` is checked before it is used.
    pub struct ShortAttention {
        pub base: Option<Tensor>,
        pub heads: usize,
        pub scale: f32,
    }

    impl CustomOp3 for ShortAttention {
        fn name(&self) -> &'static str {
            "short-attention-f16"
        }

        fn cpu_fwd(
            &self,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
        ) -> Result<(CpuStorage, Shape)> {
            candle_core::bail!("the short attention kernel runs on CUDA devices only")
        }

        fn cuda_fwd(
            &self,
            q: &CudaStorage,
            q_layout: &Layout,
            k: &CudaStorage,
            k_layout: &Layout,
            v: &CudaStorage,
            v_layout: &Layout,
        ) -> Result<(CudaStorage, Shape)> {
            self.launch((q, q_layout, k, k_layout, v, v_layout))
        }
    }

    impl ShortAttention {
        fn launch(&self, (q, q_layout, k, k_layout, v, v_layout): ThreeTensors) -> Result<(CudaStorage, Shape)> {
            let device = q.device();
            let shape = q_layout.shape().clone();
            let (batch, queries, _) = shape.dims3()?;
            let (_, keys, _) = k_layout.shape().dims3()?;
            let kernel = nvrtc::compiled(device, "swapgraph-short-attention", SOURCE)?;
            let function = device.get_or_load_custom_func("short_attention_f16", &kernel.module, &kernel.ptx)?;
            let held = self.base.as_ref().map(|base| base.storage_and_layout());
            let base_view = held
                .as_ref()
                .map(|(storage, layout)| held_view(storage, layout))
                .transpose()?;
            let (q_view, k_view, v_view) = (view(q, q_layout)?, view(k, k_layout)?, view(v, v_layout)?);
            // SAFETY: every element is written by the kernel below.
            let out = unsafe { device.alloc::<f16>(shape.elem_count())? };
            let groups = batch * queries * self.heads;
            let blocks = groups.div_ceil(GROUPS_PER_BLOCK).min(u32::MAX as usize) as u32;
            let [batch, queries, keys, heads] = [batch, queries, keys, self.heads].map(|n| n as i32);
            let null: u64 = 0;
            let mut launch = function.builder();
            match &base_view {
                Some(base) => launch.arg(base),
                None => launch.arg(&null),
            };
            launch
                .arg(&q_view)
                .arg(&k_view)
                .arg(&v_view)
                .arg(&out)
                .arg(&batch)
                .arg(&queries)
                .arg(&keys)
                .arg(&heads)
                .arg(&self.scale);
            let config = LaunchConfig {
                grid_dim: (blocks, 1, 1),
                block_dim: (THREADS, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: the arguments match the kernel's signature, and `applies` checked the
            // shapes it indexes by.
            unsafe { launch.launch(config) }.w()?;
            Ok((CudaStorage::wrap_cuda_slice(out, device.clone()), shape))
        }
    }
}

/// Run by the CUDA build's tests on a machine with an NVIDIA GPU.
#[cfg(all(test, feature = "cuda"))]
mod tests {
    use super::cuda::MOST_KEYS;
    use super::{add_short_attention, short_attention};
    use crate::kernels::cuda::{max_relative_error, random_pair};
    use candle_core::{Device, Result, Tensor, D};

    /// `base + scale * softmax(q k^T / 8) v` per head, in f32 on the CPU.
    fn reference(base: &Tensor, q: &Tensor, k: &Tensor, v: &Tensor, scale: f64, heads: usize) -> Result<Tensor> {
        let split = |t: &Tensor| -> Result<Tensor> {
            let (b, n, width) = t.dims3()?;
            t.reshape((b, n, heads, width / heads))?.transpose(1, 2)?.contiguous()
        };
        let scores = (split(q)?.matmul(&split(k)?.t()?)? / 8.0)?;
        let weights = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let attended = weights.matmul(&split(v)?)?.transpose(1, 2)?;
        let (b, n, _, d) = attended.dims4()?;
        base + (attended.reshape((b, n, heads * d))? * scale)?
    }

    #[test]
    fn short_attention_added_matches_the_cpu_f32_reference() -> Result<()> {
        let gpu = Device::new_cuda(0)?;
        // (batch, queries, keys, heads): IP-Adapter's 16 and 4 image tokens at SDXL's two
        // attention levels with CFG, and a small odd case whose last warp is partly idle.
        for (batch, queries, keys, heads) in [(2, 4096, 16, 10), (2, 1024, 4, 20), (1, 7, 3, 1)] {
            let width = heads * 64;
            let (base, base_gpu) = random_pair(&[batch, queries, width], &gpu)?;
            let (q, q_gpu) = random_pair(&[batch, queries, width], &gpu)?;
            let (k, k_gpu) = random_pair(&[batch, keys, width], &gpu)?;
            let (v, v_gpu) = random_pair(&[batch, keys, width], &gpu)?;
            let expected = reference(&base, &q, &k, &v, 0.8, heads)?;
            let fused =
                add_short_attention(&base_gpu, &q_gpu, &k_gpu, &v_gpu, 0.8, heads)?.expect("the kernel applies");
            assert_eq!(fused.dims(), expected.dims());
            let error = max_relative_error(&fused, &expected)?;
            assert!(
                error < 4e-3,
                "{batch}x{queries} over {keys} keys, {heads} heads: error {error}"
            );
            let alone = short_attention(&q_gpu, &k_gpu, &v_gpu, heads)?.expect("the kernel applies");
            let expected = reference(&base.zeros_like()?, &q, &k, &v, 1.0, heads)?;
            let error = max_relative_error(&alone, &expected)?;
            assert!(
                error < 4e-3,
                "{batch}x{queries} over {keys} keys, {heads} heads, alone: error {error}"
            );
        }
        Ok(())
    }

    #[test]
    fn short_attention_declines_long_keys_and_other_shapes() -> Result<()> {
        let gpu = Device::new_cuda(0)?;
        let (_, q) = random_pair(&[1, 8, 128], &gpu)?;
        let (_, long) = random_pair(&[1, MOST_KEYS + 1, 128], &gpu)?;
        assert!(
            add_short_attention(&q, &q, &long, &long, 1.0, 2)?.is_none(),
            "too many keys"
        );
        assert!(short_attention(&q, &long, &long, 2)?.is_none(), "too many keys");
        let (_, k) = random_pair(&[1, 4, 128], &gpu)?;
        assert!(add_short_attention(&q, &q, &k, &k, 1.0, 4)?.is_none(), "32-wide heads");
        let (_, other_batch) = random_pair(&[2, 4, 128], &gpu)?;
        assert!(
            add_short_attention(&q, &q, &other_batch, &other_batch, 1.0, 2)?.is_none(),
            "keys of another batch"
        );
        Ok(())
    }
}
