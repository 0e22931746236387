//! Fused attention (`flash_attention.cu`): `softmax(q k^T / 8) v` per head without a score
//! matrix in device memory, for f16 tensors with 64-wide heads, as every SDXL attention layer
//! has. Reads and writes the token layout `[batch, tokens, heads * 64]` that the projections
//! produce, so neither side needs a transpose.

use candle_core::{Result, Tensor};

/// `softmax(q k^T / sqrt(64)) v` over `heads` heads of token-layout `q` (`[b, n, heads * 64]`),
/// `k` and `v` (`[b, m, heads * 64]`), as `[b, n, heads * 64]`; `None` where the fused kernel
/// does not apply (not CUDA, not f16, other head widths, a GPU older than compute capability 8.0).
///
/// # Errors
/// A compile, load or launch failure of the kernel.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize) -> Result<Option<Tensor>> {
    #[cfg(feature = "cuda")]
    if cuda::applies(q, k, v, heads)? {
        if let Some(out) = super::cudnn_attention::attention(q, k, v, heads)? {
            return Ok(Some(out));
        }
        return q.apply_op3_no_bwd(k, v, &cuda::FlashAttention).map(Some);
    }
    let _ = (q, k, v, heads);
    Ok(None)
}

#[cfg(feature = "cuda")]
mod cuda {
    use crate::kernels::cuda::{all_packed_f16, view};
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::WrapErr;
    use candle_core::{CpuStorage, CudaStorage, CustomOp3, Layout, Result, Shape, Tensor};
    use half::f16;
    use swapgraph_model::nvrtc;

    const SOURCE: &str = concat!(include_str!("half.cuh"), include_str!("flash_attention.cu"));
    /// Head width the kernel is written for.
    pub const HEAD_DIM: usize = 64;
    const ROWS_PER_BLOCK: usize = 128;
    const THREADS: u32 = 128;

    /// Whether the kernel can take these tensors: CUDA, f16, matching batches and widths of
    /// whole 64-wide heads, contiguous from 16-byte aligned starts, and tensor cores that
    /// run `mma.sync` on f16 (compute capability 8.0 and later).
    pub fn applies(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize) -> Result<bool> {
        let candle_core::Device::Cuda(device) = q.device() else {
            return Ok(false);
        };
        if [q, k, v].iter().any(|t| t.rank() != 3) || !all_packed_f16(&[q, k, v]) {
            return Ok(false);
        }
        let (batch, _, width) = q.dims3()?;
        let (_, keys, _) = k.dims3()?;
        let shapes_fit = width == heads * HEAD_DIM
            && keys > 0
            && k.dims3()? == (batch, keys, width)
            && v.dims3()? == (batch, keys, width);
        Ok(shapes_fit && nvrtc::compute_capability(device)?.0 >= 8)
    }

    /// The candle op around the kernel; `applies` is checked before it is used.
    pub(crate) struct FlashAttention;

    impl CustomOp3 for FlashAttention {
        fn name(&self) -> &'static str {
            "flash-attention-f16-d64"
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
            candle_core::bail!("the fused attention kernel runs on CUDA devices only")
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
            let device = q.device();
            let (batch, queries, width) = q_layout.shape().dims3()?;
            let keys = k_layout.shape().dims3()?.1;
            let (q, k, v) = (view(q, q_layout)?, view(k, k_layout)?, view(v, v_layout)?);
            // SAFETY: every element is written by the kernel below.
            let out = unsafe { device.alloc::<f16>(batch * queries * width)? };
            let kernel = nvrtc::compiled(device, "swapgraph-flash-attention", SOURCE)?;
            let function = device.get_or_load_custom_func("flash_attention_f16_d64", &kernel.module, &kernel.ptx)?;

            let (q_len, kv_len) = (queries as i32, keys as i32);
            let (q_batch, kv_batch, row) = ((queries * width) as i64, (keys * width) as i64, width as i64);
            let scale_log2 = std::f32::consts::LOG2_E / (HEAD_DIM as f32).sqrt();
            let mut launch = function.builder();
            launch.arg(&q).arg(&k).arg(&v).arg(&out);
            launch.arg(&q_len).arg(&kv_len);
            launch
                .arg(&q_batch)
                .arg(&row)
                .arg(&kv_batch)
                .arg(&row)
                .arg(&kv_batch)
                .arg(&row);
            launch.arg(&q_batch).arg(&row).arg(&scale_log2);
            let config = LaunchConfig {
                grid_dim: (
                    queries.div_ceil(ROWS_PER_BLOCK) as u32,
                    (width / HEAD_DIM) as u32,
                    batch as u32,
                ),
                block_dim: (THREADS, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: the arguments match the kernel's signature, and `applies` checked that
            // every row the kernel reads lies inside its tensor.
            unsafe { launch.launch(config) }.w()?;
            Ok((
                CudaStorage::wrap_cuda_slice(out, device.clone()),
                Shape::from((batch, queries, width)),
            ))
        }
    }
}

/// Run by the CUDA build's tests on a machine with an NVIDIA GPU.
#[cfg(all(test, feature = "cuda"))]
mod tests {
    use super::attention;
    use candle_core::{DType, Device, Result, Tensor, D};

    /// The plain definition in f32 on the CPU: per head, `softmax(q k^T / 8) v`.
    fn reference(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize) -> Result<Tensor> {
        let split = |t: &Tensor| -> Result<Tensor> {
            let (b, n, w) = t.dims3()?;
            t.reshape((b, n, heads, w / heads))?.transpose(1, 2)?.contiguous()
        };
        let scores = (split(q)?.matmul(&split(k)?.t()?)? / 8.0)?;
        let weights = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let out = weights.matmul(&split(v)?)?;
        let (b, h, n, d) = out.dims4()?;
        out.transpose(1, 2)?.reshape((b, n, h * d))
    }

    type Attention = fn(&Tensor, &Tensor, &Tensor, usize) -> Result<Option<Tensor>>;

    /// swapgraph's own kernel, whatever cuDNN offers.
    fn own_kernel(q: &Tensor, k: &Tensor, v: &Tensor, _heads: usize) -> Result<Option<Tensor>> {
        q.apply_op3_no_bwd(k, v, &super::cuda::FlashAttention).map(Some)
    }

    /// `run` on SDXL's self- and cross-attention shapes, ragged tiles, a single token, and
    /// sharp softmaxes (queries scaled up) that test the running maximum, against the
    /// reference on the same f16-rounded inputs.
    fn matches_the_reference(name: &str, run: Attention) -> Result<()> {
        let gpu = Device::new_cuda(0)?;
        let cases = [
            (1, 2, 4096, 4096, 1.0),
            (2, 20, 1024, 77, 1.0),
            (2, 10, 1000, 93, 1.0),
            (1, 3, 65, 130, 4.0),
            (2, 1, 1, 1, 1.0),
            (1, 4, 200, 333, 8.0),
        ];
        for (batch, heads, queries, keys, sharpness) in cases {
            let width = heads * 64;
            let q = (Tensor::randn(0f32, 1.0, (batch, queries, width), &Device::Cpu)? * sharpness)?;
            let k = Tensor::randn(0f32, 1.0, (batch, keys, width), &Device::Cpu)?;
            let v = Tensor::randn(0f32, 1.0, (batch, keys, width), &Device::Cpu)?;
            let on_gpu = |t: &Tensor| t.to_dtype(DType::F16)?.to_device(&gpu);
            let shape = (batch, heads, queries, keys, sharpness);
            let fused = run(&on_gpu(&q)?, &on_gpu(&k)?, &on_gpu(&v)?, heads)?
                .unwrap_or_else(|| panic!("{name} applies to f16 CUDA tensors with 64-wide heads, {shape:?}"));
            // The reference sees the same f16-rounded inputs, so only the kernel's arithmetic differs.
            let rounded = |t: &Tensor| t.to_dtype(DType::F16)?.to_dtype(DType::F32);
            let expected = reference(&rounded(&q)?, &rounded(&k)?, &rounded(&v)?, heads)?;
            let difference = (fused.to_device(&Device::Cpu)?.to_dtype(DType::F32)? - &expected)?.abs()?;
            let max = difference.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            let mean = difference.mean_all()?.to_scalar::<f32>()?;
            assert!(
                max < 1e-2 && mean < 1e-3,
                "{name}, {shape:?}: max difference {max}, mean {mean}"
            );
        }
        Ok(())
    }

    #[test]
    fn fused_attention_matches_the_cpu_f32_reference_within_f16_tolerance() -> Result<()> {
        matches_the_reference("swapgraph's kernel", own_kernel)?;
        // cuDNN's fused operation where the loaded cuDNN has it (9.13 and later), as `attention`
        // takes it then.
        let api = crate::kernels::cudnn::api().expect("these tests need libcudnn.so.9 on the library path");
        // SAFETY: a plain query without arguments.
        if unsafe { (api.version)() } >= 91300 {
            matches_the_reference("cuDNN's fused attention", crate::kernels::cudnn_attention::attention)?;
        }
        matches_the_reference("attention", attention)
    }

    #[test]
    fn other_dtypes_and_head_widths_take_the_generic_path() -> Result<()> {
        let gpu = Device::new_cuda(0)?;
        let f32_tokens = Tensor::zeros((1, 8, 128), DType::F32, &gpu)?;
        assert!(attention(&f32_tokens, &f32_tokens, &f32_tokens, 2)?.is_none());
        let wide_heads = Tensor::zeros((1, 8, 128), DType::F16, &gpu)?;
        assert!(attention(&wide_heads, &wide_heads, &wide_heads, 1)?.is_none());
        let on_cpu = Tensor::zeros((1, 8, 128), DType::F16, &Device::Cpu)?;
        assert!(attention(&on_cpu, &on_cpu, &on_cpu, 2)?.is_none());
        Ok(())
    }
}
