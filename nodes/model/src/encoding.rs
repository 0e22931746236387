//! Weights kept as their file stores them: a GGUF UNet's quantized blocks (Q8_0, Q5_K, Q4_K,
//! ...) stay quantized in host memory, on the bus and on the device, and are dequantized on the
//! device layer by layer as the model runs, so a Q4_K UNet holds and streams about a quarter of
//! f16's bytes. Such weights are kept as bytes ([`KEPT_AS_STORED`]); each tensor's [`Encoding`]
//! says how to read its bytes back into values.

use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType};
use candle_core::{DType, Device, Result, Shape, Tensor};

/// The kept dtype of weights kept as their file stores them: each tensor is its stored bytes,
/// one byte an element to the stores that hold and move it.
pub const KEPT_AS_STORED: DType = DType::U8;

/// How a tensor kept as bytes reads back: GGML's storage type of its bytes and the shape the
/// model uses.
#[derive(Clone, Debug, PartialEq)]
pub struct Encoding {
    /// The storage type: quantized blocks, or plain f16, bf16 or f32.
    pub kind: GgmlDType,
    /// The shape the model uses.
    pub shape: Shape,
}

impl Encoding {
    /// Bytes the tensor takes.
    pub fn bytes(&self) -> usize {
        self.shape.elem_count() / self.kind.block_size() * self.kind.type_size()
    }

    /// GGML's name of the storage type (`Q4_K`, `F16`).
    pub fn kind_name(&self) -> String {
        ggml_name(self.kind)
    }
}

/// GGML's name of a storage type (`Q4_K`, `Q8_0`, `F16`).
pub fn ggml_name(kind: GgmlDType) -> String {
    format!("{kind:?}").replace('K', "_K")
}

/// Tensors of at most this many values stay in f32 in a quantized GGUF file, as ComfyUI-GGUF's
/// converter leaves them.
const CONVERTER_SMALL: usize = 1024;

/// How ComfyUI-GGUF's converter stores a tensor of `shape` when it quantizes a UNet to
/// `blocks`: matrices and kernels of more than 1024 values in `blocks` (reshaped to rows of 256
/// when their rows do not split into blocks; in f16 when even that does not split), vectors and
/// small tensors in f32. What a GGUF file of such a UNet holds, for sizing one before it exists.
pub fn converter_encoding(shape: &Shape, blocks: GgmlDType) -> Encoding {
    let dims = shape.dims();
    let elements = shape.elem_count();
    let splits = dims.last().is_some_and(|last| last % blocks.block_size() == 0) || elements % 256 == 0;
    let kind = match () {
        _ if dims.len() < 2 || elements <= CONVERTER_SMALL => GgmlDType::F32,
        _ if splits => blocks,
        _ => GgmlDType::F16,
    };
    Encoding {
        kind,
        shape: shape.clone(),
    }
}

/// `bytes` (one tensor's stored bytes, a one-dimensional u8 tensor) as values in `dtype`, in
/// `encoding`'s shape, on the device the bytes lie on: quantized blocks dequantized there.
///
/// # Errors
/// Bytes of another length than the encoding's, or a device error.
pub fn decode(bytes: &Tensor, encoding: &Encoding, dtype: DType) -> Result<Tensor> {
    if bytes.dtype() != KEPT_AS_STORED || bytes.elem_count() != encoding.bytes() {
        candle_core::bail!(
            "{} bytes of {:?} cannot hold {:?} values of {}",
            bytes.elem_count(),
            bytes.dtype(),
            encoding.shape,
            encoding.kind_name()
        );
    }
    #[cfg(feature = "cuda")]
    if bytes.device().is_cuda() {
        let wide = bytes.apply_op1_no_bwd(&cuda::Decode {
            kind: encoding.kind,
            elements: encoding.shape.elem_count(),
            half: dtype == DType::F16,
        })?;
        return wide.reshape(&encoding.shape)?.to_dtype(dtype);
    }
    let stored = bytes.flatten_all()?.to_vec1::<u8>()?;
    dequantize_on_host(encoding.kind, &stored, &encoding.shape)?
        .to_dtype(dtype)?
        .to_device(bytes.device())
}

/// Stored bytes of `kind` as host values of `shape`: f16, bf16 and f32 as stored, quantized
/// blocks dequantized to f32 (candle's block types).
///
/// # Errors
/// Bytes that do not hold `shape`'s values in `kind`.
pub(crate) fn dequantize_on_host(kind: GgmlDType, stored: &[u8], shape: &Shape) -> Result<Tensor> {
    // Eight-byte words, so that candle's blocks (f16 and u32 fields) lie aligned.
    let mut words = vec![0u64; stored.len().div_ceil(8)];
    bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..stored.len()].copy_from_slice(stored);
    let aligned = &bytemuck::cast_slice::<u64, u8>(&words)[..stored.len()];
    match kind {
        // Plain values keep their dtype.
        GgmlDType::F16 => Tensor::from_slice(bytemuck::cast_slice::<u8, half::f16>(aligned), shape, &Device::Cpu),
        GgmlDType::BF16 => Tensor::from_slice(bytemuck::cast_slice::<u8, half::bf16>(aligned), shape, &Device::Cpu),
        _ => qtensor_from_ggml(kind, aligned, vec![shape.elem_count()], &Device::Cpu)?
            .dequantize(&Device::Cpu)?
            .reshape(shape),
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{
        result, CudaSlice, CudaView, DevicePtr, DeviceRepr, LaunchConfig, PushKernelArg, ValidAsZeroBits,
    };
    use candle_core::cuda_backend::{kernels, CudaDType, WrapErr};
    use candle_core::quantized::GgmlDType;
    use candle_core::{CpuStorage, CudaDevice, CudaStorage, CustomOp1, Layout, Result, Shape};
    use half::{bf16, f16};

    /// Stored bytes to values on the device: quantized blocks by candle's dequantizing kernels
    /// (llama.cpp's), to f16 (`half`) or f32; plain values copied out as they are.
    pub(super) struct Decode {
        pub(super) kind: GgmlDType,
        pub(super) elements: usize,
        pub(super) half: bool,
    }

    impl CustomOp1 for Decode {
        fn name(&self) -> &'static str {
            "decode-stored-weights"
        }

        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
            candle_core::bail!("stored weights are decoded on the host by candle's block types")
        }

        fn cuda_fwd(&self, storage: &CudaStorage, layout: &Layout) -> Result<(CudaStorage, Shape)> {
            let device = storage.device();
            let bytes = storage.as_cuda_slice::<u8>()?.slice(layout.start_offset()..);
            let decoded = match (self.kind, self.half) {
                (GgmlDType::F16, _) => wrap(copied::<f16>(device, &bytes, self.elements)?, device),
                (GgmlDType::BF16, _) => wrap(copied::<bf16>(device, &bytes, self.elements)?, device),
                (GgmlDType::F32, _) => wrap(copied::<f32>(device, &bytes, self.elements)?, device),
                (kind, true) => wrap(dequantized::<f16>(device, &bytes, kind, self.elements)?, device),
                (kind, false) => wrap(dequantized::<f32>(device, &bytes, kind, self.elements)?, device),
            };
            Ok((decoded, Shape::from(self.elements)))
        }
    }

    fn wrap<T: CudaDType + DeviceRepr>(values: CudaSlice<T>, device: &CudaDevice) -> CudaStorage {
        CudaStorage::wrap_cuda_slice(values, device.clone())
    }

    /// Plain values: the same bytes in a buffer of their own type.
    fn copied<T: DeviceRepr + ValidAsZeroBits>(
        device: &CudaDevice,
        bytes: &CudaView<u8>,
        elements: usize,
    ) -> Result<CudaSlice<T>> {
        let stream = device.cuda_stream();
        // SAFETY: filled by the copy below.
        let values = unsafe { device.alloc::<T>(elements)? };
        {
            let (source, _reading) = bytes.device_ptr(&stream);
            let (target, _writing) = values.device_ptr(&stream);
            let length = elements * std::mem::size_of::<T>();
            // SAFETY: `decode` checked that the bytes are `length` long; both lie on the device
            // and are used on its stream.
            unsafe { result::memcpy_dtod_async(target, source, length, stream.cu_stream()) }.w()?;
        }
        Ok(values)
    }

    /// Quantized blocks dequantized by candle's kernel for `kind`, launched as candle launches
    /// it.
    fn dequantized<T: DeviceRepr + ValidAsZeroBits>(
        device: &CudaDevice,
        bytes: &CudaView<u8>,
        kind: GgmlDType,
        elements: usize,
    ) -> Result<CudaSlice<T>> {
        const DEQUANTIZE_BLOCK: usize = 256;
        let count = |n: usize| i32::try_from(n).map_err(|_| candle_core::Error::Msg("a tensor too large".into()));
        let superblocks = elements.div_ceil(256);
        let halves = elements.div_ceil(2 * DEQUANTIZE_BLOCK);
        // The kernel, threads a block, blocks, and the count the non-K types take.
        let (name, threads, blocks, groups) = match kind {
            GgmlDType::Q4_0 => ("q4_0", 32, superblocks, Some(count(elements / 32)?)),
            GgmlDType::Q4_1 => ("q4_1", 32, superblocks, Some(count(elements / 32)?)),
            GgmlDType::Q5_0 => ("q5_0", DEQUANTIZE_BLOCK, halves, Some(count(elements)?)),
            GgmlDType::Q5_1 => ("q5_1", DEQUANTIZE_BLOCK, halves, Some(count(elements)?)),
            GgmlDType::Q8_0 => ("q8_0", 32, superblocks, Some(count(elements / 32)?)),
            GgmlDType::Q2K => ("q2_K", 64, superblocks, None),
            GgmlDType::Q3K => ("q3_K", 64, superblocks, None),
            GgmlDType::Q4K => ("q4_K", 32, superblocks, None),
            GgmlDType::Q5K => ("q5_K", 64, superblocks, None),
            GgmlDType::Q6K => ("q6_K", 64, superblocks, None),
            other => candle_core::bail!("no dequantizing kernel for {other:?}"),
        };
        let precision = if std::mem::size_of::<T>() == 2 { "f16" } else { "f32" };
        let function = device.get_or_load_func(&format!("dequantize_block_{name}_{precision}"), &kernels::QUANTIZED)?;
        // SAFETY: the kernel writes every value.
        let values = unsafe { device.alloc::<T>(elements)? };
        let mut launch = function.builder();
        launch.arg(bytes).arg(&values);
        if let Some(groups) = &groups {
            launch.arg(groups);
        }
        let config = LaunchConfig {
            grid_dim: (blocks as u32, 1, 1),
            block_dim: (threads as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the arguments are those of candle's dequantizing kernels (blocks, output, and
        // for the non-K types the count of 32-value groups or of values), in candle's launch
        // shape; each kernel stops at the last value.
        unsafe { launch.launch(config) }.w()?;
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QTensor;

    #[test]
    fn the_converters_layout_quantizes_matrices_and_kernels_and_leaves_vectors_in_f32() {
        let kind = |dims: &[usize]| converter_encoding(&Shape::from(dims), GgmlDType::Q4K).kind;
        assert_eq!(kind(&[1280, 1280]), GgmlDType::Q4K, "rows of 5 blocks");
        assert_eq!(
            kind(&[320, 320, 3, 3]),
            GgmlDType::Q4K,
            "a kernel, reshaped to rows of 256"
        );
        assert_eq!(kind(&[1280]), GgmlDType::F32, "a vector");
        assert_eq!(kind(&[4, 320, 1, 1]), GgmlDType::Q4K, "1280 values: five rows of 256");
        assert_eq!(kind(&[30, 30]), GgmlDType::F32, "small");
        assert_eq!(
            kind(&[33, 33]),
            GgmlDType::F16,
            "1089 values: neither rows of 256 nor of blocks"
        );
        let q4k = converter_encoding(&Shape::from((1280, 1280)), GgmlDType::Q4K);
        assert_eq!(q4k.bytes(), 1280 * 1280 / 256 * 144, "144 bytes a block of 256");
    }

    #[test]
    fn stored_blocks_decode_to_what_candle_dequantizes_and_plain_values_to_themselves() {
        let values = Tensor::arange(0f32, 512.0, &Device::Cpu)
            .unwrap()
            .affine(1.0 / 64.0, -4.0)
            .unwrap()
            .reshape((2, 256))
            .unwrap();
        for kind in [
            GgmlDType::Q8_0,
            GgmlDType::Q4K,
            GgmlDType::Q5_0,
            GgmlDType::F16,
            GgmlDType::F32,
        ] {
            let quantized = QTensor::quantize(&values, kind).unwrap();
            let stored = quantized.data().unwrap().to_vec();
            let encoding = Encoding {
                kind,
                shape: Shape::from((2, 256)),
            };
            assert_eq!(encoding.bytes(), stored.len(), "{kind:?}");
            let bytes = Tensor::from_vec(stored, encoding.bytes(), &Device::Cpu).unwrap();
            let decoded = decode(&bytes, &encoding, DType::F32).unwrap();
            let expected = quantized.dequantize(&Device::Cpu).unwrap();
            assert_eq!(decoded.dims(), &[2, 256]);
            let difference = (decoded - expected).unwrap().abs().unwrap().max_all().unwrap();
            assert_eq!(difference.to_scalar::<f32>().unwrap(), 0.0, "{kind:?}");
        }
        let short = Tensor::zeros(10, DType::U8, &Device::Cpu).unwrap();
        let encoding = Encoding {
            kind: GgmlDType::Q8_0,
            shape: Shape::from(32),
        };
        let refused = decode(&short, &encoding, DType::F32).unwrap_err().to_string();
        assert!(
            refused.contains("10 bytes of U8 cannot hold [32] values of Q8_0"),
            "{refused}"
        );
    }
}
