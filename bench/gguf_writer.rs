//! Writes weights as a GGUF file laid out as ComfyUI-GGUF's converter lays out quantized UNets
//! ([`converter_encoding`]): matrices and kernels in the chosen blocks, a tensor whose rows do
//! not split into them reshaped to rows of 256 with its shape kept as
//! `comfy.gguf.orig_shape.<name>` (in f16 when even that does not split), and vectors and small
//! tensors in f32. Quantized on every core.

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{DType, Shape, Tensor};
use std::path::Path;
use swapgraph_model::converter_encoding;

/// A tensor as written: its blocks, and the shape the model uses when it was reshaped.
type Written = (String, QTensor, Option<Vec<usize>>);

/// Writes `tensors` (name and shape) to `path` in `kind`'s blocks, each drawn by `draw` (its
/// values, any dtype) on one of the cores as it is quantized, with `general.architecture`
/// `sdxl`. Returns the bytes of tensor data written.
pub fn write_gguf(
    path: &Path,
    tensors: &[(String, Shape)],
    kind: GgmlDType,
    draw: impl Fn(&str) -> Tensor + Sync,
) -> Result<u64, Box<dyn std::error::Error>> {
    let cores = std::thread::available_parallelism().map_or(4, usize::from);
    let written: Vec<Written> = std::thread::scope(|scope| {
        let workers: Vec<_> = tensors
            .chunks(tensors.len().div_ceil(cores).max(1))
            .map(|chunk| {
                let draw = &draw;
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|(name, shape)| quantize(name, shape, kind, draw(name)))
                        .collect::<candle_core::Result<Vec<_>>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| worker.join().expect("a quantizing thread"))
            .collect::<candle_core::Result<Vec<Vec<_>>>>()
            .map(|chunks| chunks.into_iter().flatten().collect())
    })?;
    let shapes: Vec<(String, gguf_file::Value)> = written
        .iter()
        .filter_map(|(name, _, original)| {
            let dims = original
                .as_ref()?
                .iter()
                .map(|&d| gguf_file::Value::I32(d as i32))
                .collect();
            Some((format!("comfy.gguf.orig_shape.{name}"), gguf_file::Value::Array(dims)))
        })
        .collect();
    let architecture = gguf_file::Value::String("sdxl".into());
    let mut metadata: Vec<(&str, &gguf_file::Value)> = vec![("general.architecture", &architecture)];
    metadata.extend(shapes.iter().map(|(key, value)| (key.as_str(), value)));
    let table: Vec<(&str, &QTensor)> = written.iter().map(|(name, q, _)| (name.as_str(), q)).collect();
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    gguf_file::write(&mut file, &metadata, &table)?;
    Ok(written.iter().map(|(_, q, _)| q.storage_size_in_bytes() as u64).sum())
}

/// One tensor as the converter writes it ([`converter_encoding`]).
fn quantize(name: &str, shape: &Shape, kind: GgmlDType, values: Tensor) -> candle_core::Result<Written> {
    let values = values.to_dtype(DType::F32)?.reshape(shape)?;
    let stored = converter_encoding(shape, kind).kind;
    let rows_split = shape.dims().last().is_some_and(|last| last % kind.block_size() == 0);
    if stored != kind || rows_split {
        return Ok((name.to_string(), QTensor::quantize(&values, stored)?, None));
    }
    let rows = values.reshape((shape.elem_count() / 256, 256))?;
    Ok((
        name.to_string(),
        QTensor::quantize(&rows, kind)?,
        Some(shape.dims().to_vec()),
    ))
}
