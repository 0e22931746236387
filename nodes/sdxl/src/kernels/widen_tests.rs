//! Weights kept in 8 bits widen on the device exactly as on the host, many at once (a unit's
//! matrices, norms and biases, whole or as views at any offset into a larger buffer, as
//! BlockSwap's ring hands them out), and inputs round to 8 bits as the host rounds them.

use candle_core::{DType, Device, Result, Tensor};
use swapgraph_model::{to_e4m3, widen, widen_all};

/// Every e4m3 bit pattern (NaN, both zeros, subnormals, ±448) and then random bytes, `len` long.
fn e4m3_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    (0..len)
        .map(|i| {
            if i < 256 {
                return i as u8;
            }
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 56) as u8
        })
        .collect()
}

/// `tensor`'s values as f32 bits on the host, every NaN as one marker (so NaNs compare equal).
/// Moved to the host first: candle's own conversion from e4m3 has no CUDA kernel.
fn bits_of(tensor: &Tensor) -> Result<Vec<u32>> {
    Ok(tensor
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?
        .iter()
        .map(|v| if v.is_nan() { u32::MAX } else { v.to_bits() })
        .collect())
}

#[test]
fn weights_kept_in_eight_bits_widen_together_on_the_device_exactly_as_on_the_host() -> Result<()> {
    let gpu = Device::new_cuda(0)?;
    // Lengths of whole chunks, a ragged tail, fewer than a chunk, and more tensors than a launch
    // takes; starts at offsets that are and are not 16-byte aligned.
    let lengths: Vec<usize> = (0..200).map(|i| [640 * 1280, 1000, 7, 640, 4096 + 3][i % 5]).collect();
    let total: usize = lengths.iter().sum::<usize>() + 3 * lengths.len();
    let bytes = e4m3_bytes(total, 5);
    let buffer = Tensor::from_vec(bytes.clone(), total, &gpu)?;
    let host = Tensor::from_vec(bytes, total, &Device::Cpu)?;
    let mut start = 0;
    let (mut on_gpu, mut on_host) = (Vec::new(), Vec::new());
    for (i, &len) in lengths.iter().enumerate() {
        start += i % 4;
        let view = |t: &Tensor| -> Result<Tensor> {
            // Raw bytes reinterpreted as e4m3: the kept dtype of the tensors.
            let f8 = as_e4m3(&t.narrow(0, start, len)?)?;
            if len == 640 * 1280 {
                f8.reshape((640, 1280))
            } else {
                Ok(f8)
            }
        };
        on_gpu.push(view(&buffer)?);
        on_host.push(view(&host)?);
        start += len;
    }
    for dtype in [DType::F16, DType::BF16, DType::F32] {
        let widened = widen_all(&on_gpu, dtype)?;
        for (index, (wide, kept)) in widened.iter().zip(&on_host).enumerate() {
            assert_eq!(
                (wide.dims(), wide.dtype()),
                (kept.dims(), dtype),
                "tensor {index} to {dtype:?}"
            );
            assert_eq!(
                bits_of(wide)?,
                bits_of(&kept.to_dtype(DType::F32)?)?,
                "tensor {index} to {dtype:?}"
            );
        }
        let single = widen(&on_gpu[1], dtype)?;
        assert_eq!(bits_of(&single)?, bits_of(&on_host[1].to_dtype(DType::F32)?)?);
    }
    Ok(())
}

/// A u8 tensor's bytes as e4m3 values (the bytes a file or the ring holds).
fn as_e4m3(bytes: &Tensor) -> Result<Tensor> {
    let values: Vec<float8::F8E4M3> = bytes
        .to_vec1::<u8>()?
        .into_iter()
        .map(float8::F8E4M3::from_bits)
        .collect();
    Tensor::from_vec(values, bytes.elem_count(), bytes.device())
}

#[test]
fn inputs_round_to_eight_bits_on_the_device_as_on_the_host() -> Result<()> {
    let gpu = Device::new_cuda(0)?;
    // Ties, values beyond ±448, subnormals and a ragged tail, at an offset into a buffer.
    let values: Vec<f32> = (0..40_003)
        .map(|i| {
            let i = i as f32;
            match i as usize % 4 {
                0 => (i - 20_000.0) * 0.037,
                1 => (i * 0.618).sin() * 600.0,
                2 => (i * 0.3).cos() * 1e-3,
                _ => 1.0 + (i as usize % 16) as f32 / 16.0 + 1.0 / 32.0,
            }
        })
        .collect();
    let input = Tensor::from_vec(values, 40_003, &Device::Cpu)?.to_dtype(DType::F16)?;
    let on_gpu =
        Tensor::cat(&[Tensor::zeros(8, DType::F16, &gpu)?, input.to_device(&gpu)?], 0)?.narrow(0, 8, 40_003)?;
    assert_eq!(bits_of(&to_e4m3(&on_gpu)?)?, bits_of(&to_e4m3(&input)?)?);
    Ok(())
}
