//! The CUDA side of the e4m3 conversions: `eight_bit.cu`'s kernels, and candle's cast kernels for
//! what those do not take.

use crate::nvrtc::{self, grid_stride};
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{
    sys::CUdeviceptr, CudaStream, DevicePtr, DeviceRepr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::{kernels, CudaDType, SlicePtrOrNull, WrapErr};
use candle_core::{
    CpuStorage, CudaDevice, CudaStorage, CustomOp1, DType, Layout, Result, Shape, Storage, Tensor, WithDType,
};
use float8::F8E4M3;
use half::{bf16, f16};
use std::sync::Arc;

const SOURCE: &str = include_str!("eight_bit.cu");
const MODULE: &str = "swapgraph-eight-bit";

/// Tensors a launch widens at most: `WIDEN_RANGES` in `eight_bit.cu`.
const RANGES_A_LAUNCH: usize = 96;

/// Each widened tensor starts this many bytes into the shared buffer, as the weights a layer
/// multiplies must for cuBLAS's fastest kernels.
const ALIGN_BYTES: usize = 256;

/// `eight_bit.cu`'s `Ranges`: the tensors one launch widens.
#[repr(C)]
struct Ranges {
    source: [u64; RANGES_A_LAUNCH],
    target: [u64; RANGES_A_LAUNCH],
    elements: [u32; RANGES_A_LAUNCH],
    first_chunk: [u32; RANGES_A_LAUNCH + 1],
    count: u32,
}

// SAFETY: a plain C struct of integers, passed by value as the kernel's parameter.
unsafe impl DeviceRepr for Ranges {}

fn compiled(device: &CudaDevice) -> Result<nvrtc::Compiled> {
    nvrtc::compiled(device, MODULE, SOURCE)
}

/// Whether [`widen_together`] takes `tensors` to `dtype`: all e4m3, laid out contiguously on one
/// CUDA device, each under 2^32 elements; `dtype` f16, bf16 or f32.
pub(super) fn widen_together_applies(tensors: &[Tensor], dtype: DType) -> bool {
    let Some(first) = tensors.first() else {
        return false;
    };
    matches!(dtype, DType::F16 | DType::BF16 | DType::F32)
        && tensors.iter().all(|tensor| {
            tensor.dtype() == DType::F8E4M3
                && tensor.is_contiguous()
                && tensor.device().same_device(first.device())
                && u32::try_from(tensor.elem_count()).is_ok()
        })
        && first.device().is_cuda()
}

/// `tensors` widened to `dtype`, as views into one new buffer where each starts aligned.
pub(super) fn widen_together(tensors: &[Tensor], dtype: DType) -> Result<Vec<Tensor>> {
    let align = ALIGN_BYTES / dtype.size_in_bytes();
    let mut starts = Vec::with_capacity(tensors.len());
    let mut total = 0;
    for tensor in tensors {
        starts.push(total);
        total += tensor.elem_count().div_ceil(align) * align;
    }
    let op = WidenTogether {
        tensors: tensors.to_vec(),
        starts: starts.clone(),
        total,
        dtype,
    };
    let wide = tensors[0].apply_op1_no_bwd(&op)?;
    tensors
        .iter()
        .zip(starts)
        .map(|(tensor, start)| wide.narrow(0, start, tensor.elem_count())?.reshape(tensor.shape()))
        .collect()
}

/// Widens `tensors` into one buffer of `total` elements of `dtype`, each from its element in
/// `starts`. Applied to the first tensor; reads all of them.
struct WidenTogether {
    tensors: Vec<Tensor>,
    starts: Vec<usize>,
    total: usize,
    dtype: DType,
}

impl WidenTogether {
    fn launch<O: CudaDType + DeviceRepr + WithDType>(&self, device: &CudaDevice) -> Result<CudaStorage> {
        let stream = device.cuda_stream();
        let name = match O::DTYPE {
            DType::F16 => "widen_e4m3_f16",
            DType::BF16 => "widen_e4m3_bf16",
            _ => "widen_e4m3_f32",
        };
        let kernels = compiled(device)?;
        let function = device.get_or_load_custom_func(name, &kernels.module, &kernels.ptx)?;
        // SAFETY: the kernel writes every element a view reads; the padding between is never read.
        let output = unsafe { device.alloc::<O>(self.total.max(1))? };
        let (output_address, writing) = output.device_ptr(&stream);
        let sources = self
            .tensors
            .iter()
            .map(|tensor| source_address(tensor, &stream))
            .collect::<Result<Vec<_>>>()?;
        let element = self.dtype.size_in_bytes() as u64;
        let count = self.tensors.len();
        for first in (0..count).step_by(RANGES_A_LAUNCH) {
            let batch = first..count.min(first + RANGES_A_LAUNCH);
            let mut ranges = Ranges {
                source: [0; RANGES_A_LAUNCH],
                target: [0; RANGES_A_LAUNCH],
                elements: [0; RANGES_A_LAUNCH],
                first_chunk: [0; RANGES_A_LAUNCH + 1],
                count: batch.len() as u32,
            };
            let mut chunks = 0u64;
            for (slot, index) in batch.clone().enumerate() {
                let elements = self.tensors[index].elem_count();
                ranges.source[slot] = sources[index];
                ranges.target[slot] = output_address + self.starts[index] as u64 * element;
                ranges.elements[slot] = elements as u32;
                ranges.first_chunk[slot] = chunk_count(chunks)?;
                chunks += elements.div_ceil(16) as u64;
            }
            ranges.first_chunk[batch.len()] = chunk_count(chunks)?;
            let mut launch = function.builder();
            launch.arg(&ranges);
            // SAFETY: the ranges lie inside the tensors read (contiguous, `elements` long) and
            // inside the output (their starts and lengths are the views'), all on `stream`.
            unsafe { launch.launch(grid_stride(chunks as usize)) }.w()?;
        }
        drop(writing);
        Ok(CudaStorage::wrap_cuda_slice(output, device.clone()))
    }
}

fn chunk_count(chunks: u64) -> Result<u32> {
    u32::try_from(chunks).map_err(|_| candle_core::Error::Msg("too many 8-bit weights to widen in one launch".into()))
}

/// The device address of a contiguous e4m3 tensor's first element (the launch that reads it is
/// queued on `stream` right after, the stream all of the device's work is on).
fn source_address(tensor: &Tensor, stream: &Arc<CudaStream>) -> Result<CUdeviceptr> {
    let (storage, layout) = tensor.storage_and_layout();
    let Storage::Cuda(storage) = &*storage else {
        candle_core::bail!("8-bit weights widened together lie on one CUDA device")
    };
    let (base, _reading) = storage.as_cuda_slice::<F8E4M3>()?.device_ptr(stream);
    Ok(base + layout.start_offset() as u64)
}

impl CustomOp1 for WidenTogether {
    fn name(&self) -> &'static str {
        "widen-e4m3-together"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("8-bit floats are widened with to_dtype on the CPU")
    }

    // The first tensor's storage is read again, with the others', by `launch`.
    fn cuda_fwd(&self, storage: &CudaStorage, _: &Layout) -> Result<(CudaStorage, Shape)> {
        let device = storage.device();
        let output = match self.dtype {
            DType::F16 => self.launch::<f16>(device)?,
            DType::BF16 => self.launch::<bf16>(device)?,
            DType::F32 => self.launch::<f32>(device)?,
            other => candle_core::bail!("8-bit floats widen to f16, bf16 or f32, not {other:?}"),
        };
        Ok((output, Shape::from(self.total.max(1))))
    }
}

/// Whether [`Round`] takes `tensor`: f16, contiguous and 16-byte aligned, on a card with 8-bit
/// float units.
pub(super) fn round_applies(tensor: &Tensor) -> Result<bool> {
    let candle_core::Device::Cuda(device) = tensor.device() else {
        return Ok(false);
    };
    let aligned = tensor.layout().start_offset() % 8 == 0;
    Ok(tensor.dtype() == DType::F16
        && tensor.is_contiguous()
        && aligned
        && nvrtc::compute_capability(device)? >= (8, 9))
}

/// Rounds a contiguous f16 tensor to e4m3, sixteen values a thread.
pub(super) struct Round;

impl CustomOp1 for Round {
    fn name(&self) -> &'static str {
        "round-f16-e4m3"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("8-bit floats are rounded with to_dtype on the CPU")
    }

    fn cuda_fwd(&self, storage: &CudaStorage, layout: &Layout) -> Result<(CudaStorage, Shape)> {
        let device = storage.device();
        let elements = layout.shape().elem_count();
        let input = storage.as_cuda_slice::<f16>()?.slice(layout.start_offset()..);
        // SAFETY: the kernel writes every element.
        let output = unsafe { device.alloc::<F8E4M3>(elements.max(1))? };
        let count = elements as u64;
        let kernels = compiled(device)?;
        let function = device.get_or_load_custom_func("round_f16_e4m3", &kernels.module, &kernels.ptx)?;
        let mut launch = function.builder();
        launch.arg(&input).arg(&output).arg(&count);
        // SAFETY: `round_applies` checked the input contiguous, f16 and 16-byte aligned (the
        // buffer is, and the view starts a multiple of eight halves in); the output is new.
        unsafe { launch.launch(grid_stride(elements.div_ceil(16))) }.w()?;
        Ok((
            CudaStorage::wrap_cuda_slice(output, device.clone()),
            layout.shape().clone(),
        ))
    }
}

/// Converts a tensor to or from e4m3 by candle's cast kernels: to the dtype it holds.
pub(super) struct Cast(pub(super) DType);

/// The name candle's cast kernels give a dtype.
fn kernel_name(dtype: DType) -> Result<&'static str> {
    Ok(match dtype {
        DType::F8E4M3 => "f8_e4m3",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        DType::F32 => "f32",
        other => candle_core::bail!("8-bit floats convert to and from f16, bf16 or f32, not {other:?}"),
    })
}

/// Launches candle's kernel `cast_{from}_{to}` over `storage` (of `I`) as laid out by `layout`,
/// into a new buffer of `O`.
fn cast<I: CudaDType + DeviceRepr + WithDType, O: CudaDType + DeviceRepr + WithDType>(
    device: &CudaDevice,
    storage: &CudaStorage,
    layout: &Layout,
) -> Result<CudaStorage> {
    let elements = layout.shape().elem_count();
    let input = storage.as_cuda_slice::<I>()?.slice(layout.start_offset()..);
    let info = SlicePtrOrNull::<usize>::params_from_layout(device, layout)?;
    let name = format!("cast_{}_{}", kernel_name(I::DTYPE)?, kernel_name(O::DTYPE)?);
    let function = device.get_or_load_func(&name, &kernels::CAST)?;
    // SAFETY: the kernel writes every element.
    let output = unsafe { device.alloc::<O>(elements)? };
    let dims = layout.dims().len();
    let mut launch = function.builder();
    launch.arg(&elements).arg(&dims);
    info.builder_arg(&mut launch);
    launch.arg(&input).arg(&output);
    // SAFETY: the arguments are those of candle's cast kernels (count, rank, dims and strides or
    // null when contiguous, input, output).
    unsafe { launch.launch(LaunchConfig::for_num_elems(elements as u32)) }.w()?;
    Ok(CudaStorage::wrap_cuda_slice(output, device.clone()))
}

impl CustomOp1 for Cast {
    fn name(&self) -> &'static str {
        "cast-f8e4m3"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("8-bit floats are converted with to_dtype on the CPU")
    }

    fn cuda_fwd(&self, storage: &CudaStorage, layout: &Layout) -> Result<(CudaStorage, Shape)> {
        let device = storage.device();
        let converted = match (storage.dtype(), self.0) {
            (DType::F8E4M3, DType::F16) => cast::<F8E4M3, f16>(device, storage, layout)?,
            (DType::F8E4M3, DType::BF16) => cast::<F8E4M3, bf16>(device, storage, layout)?,
            (DType::F8E4M3, DType::F32) => cast::<F8E4M3, f32>(device, storage, layout)?,
            (DType::F16, DType::F8E4M3) => cast::<f16, F8E4M3>(device, storage, layout)?,
            (DType::BF16, DType::F8E4M3) => cast::<bf16, F8E4M3>(device, storage, layout)?,
            (DType::F32, DType::F8E4M3) => cast::<f32, F8E4M3>(device, storage, layout)?,
            (from, to) => candle_core::bail!("no 8-bit float conversion from {from:?} to {to:?}"),
        };
        Ok((converted, layout.shape().clone()))
    }
}
