//! Where weights come from: safetensors files (with a key map for other layouts), tensors made
//! in memory, or the built-in models' seeded weights, drawn whenever they are read.

use crate::encoding::{Encoding, KEPT_AS_STORED};
use crate::gguf_file::GgufFile;
use crate::patches::WeightPatches;
use crate::safetensors_file::SafetensorsFiles;
use crate::seeded::seeded_tensor;
use crate::{UnitDecoding, UnitSpec};
use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Shape, Tensor};
use rayon::prelude::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a tensor could not be loaded. Each names the source and the key.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The file could not be opened or is not a safetensors file.
    #[error("cannot read {path}: {message}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The source lacks a tensor the model needs.
    #[error("{source_name} has no tensor \"{key}\"")]
    Missing {
        /// The file or built-in model.
        source_name: String,
        /// The key looked for, in the source's own naming.
        key: String,
    },
    /// A tensor has another shape than the model needs.
    #[error("{source_name}: tensor \"{key}\" has shape {found:?}, the model needs {expected:?}")]
    Shape {
        /// The file or built-in model.
        source_name: String,
        /// The key, in the source's own naming.
        key: String,
        /// The shape the model needs.
        expected: Vec<usize>,
        /// The shape in the source.
        found: Vec<usize>,
    },
    /// Reading or converting the tensor failed.
    #[error("{source_name}: tensor \"{key}\": {message}")]
    Tensor {
        /// The file or built-in model.
        source_name: String,
        /// The key.
        key: String,
        /// The underlying error.
        message: String,
    },
    /// The weights were read but the device side could not be set up (a placement's buffers,
    /// streams or host memory).
    #[error("{0}")]
    Device(String),
}

/// Which part of a stored tensor a model's tensor is, for layouts that fuse or transpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The whole tensor.
    Whole,
    /// Chunk `index` of `count` equal chunks along the first dimension (fused q/k/v).
    Chunk {
        /// Which chunk.
        index: usize,
        /// How many chunks.
        count: usize,
    },
    /// The transpose of a matrix (OpenCLIP's text projection).
    Transposed,
    /// A 1x1 convolution kernel as a matrix (original-layout VAE attention).
    Squeezed,
}

/// A model tensor's place in a source: the stored key and the part of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceKey {
    /// The key in the source.
    pub key: String,
    /// The part of that tensor.
    pub part: Part,
}

impl SourceKey {
    /// The whole tensor stored under `key`.
    pub fn whole(key: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            part: Part::Whole,
        }
    }
}

/// Maps a model's own (diffusers) key to where a source stores it, or `None` when the source's
/// layout has no such tensor.
pub type KeyMap = Arc<dyn Fn(&str) -> Option<SourceKey> + Send + Sync>;

enum Backing {
    Files(SafetensorsFiles),
    /// A GGUF file, its quantized tensors dequantized as they are read.
    Gguf(GgufFile),
    Memory(HashMap<String, Tensor>),
    /// Seeded weights of the named model, each drawn when read, so that the host holds no
    /// copy of them beside the one a store keeps.
    Seeded {
        model: String,
        shapes: HashMap<String, Shape>,
        dtype: DType,
    },
}

/// A file format's tensors, read on demand.
trait StoredTensors {
    /// The shape of tensor `name`, read without loading it.
    fn stored_shape(&self, name: &str) -> Option<&[usize]>;
    /// Tensor `name`, read into host memory.
    fn read_tensor(&self, name: &str) -> Result<Tensor, String>;
}

impl StoredTensors for SafetensorsFiles {
    fn stored_shape(&self, name: &str) -> Option<&[usize]> {
        self.shape(name)
    }

    fn read_tensor(&self, name: &str) -> Result<Tensor, String> {
        self.read(name)
    }
}

impl StoredTensors for GgufFile {
    fn stored_shape(&self, name: &str) -> Option<&[usize]> {
        self.shape(name)
    }

    fn read_tensor(&self, name: &str) -> Result<Tensor, String> {
        self.read(name)
    }
}

/// A set of named tensors that models load their weights from.
pub struct TensorSource {
    backing: Arc<Backing>,
    name: String,
    key_map: Option<KeyMap>,
    /// Low-rank changes merged into the weights as they are read.
    patches: Option<Arc<WeightPatches>>,
}

impl TensorSource {
    /// Opens safetensors files, reading their headers; tensors are read when loaded.
    ///
    /// # Errors
    /// [`SourceError::Unreadable`] naming the first file that cannot be opened or whose header
    /// is broken.
    pub fn open(paths: &[&Path]) -> Result<Self, SourceError> {
        let files =
            SafetensorsFiles::open(paths).map_err(|(path, message)| SourceError::Unreadable { path, message })?;
        let name = paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        Ok(Self {
            backing: Arc::new(Backing::Files(files)),
            name,
            key_map: None,
            patches: None,
        })
    }

    /// A GGUF file's tensors, quantized ones dequantized when read (see [`GgufFile`]).
    pub fn from_gguf(file: GgufFile, name: impl Into<String>) -> Self {
        Self {
            backing: Arc::new(Backing::Gguf(file)),
            name: name.into(),
            key_map: None,
            patches: None,
        }
    }

    /// Tensors made in memory, e.g. a built-in model's seeded weights.
    pub fn from_tensors(name: impl Into<String>, tensors: HashMap<String, Tensor>) -> Self {
        Self {
            backing: Arc::new(Backing::Memory(tensors)),
            name: name.into(),
            key_map: None,
            patches: None,
        }
    }

    /// The seeded weights of `model` (see [`crate::seeded_tensor`]) for `params`, in `dtype`:
    /// nothing is drawn until a tensor is loaded, and every load draws the same values.
    pub fn seeded(
        name: impl Into<String>,
        model: impl Into<String>,
        params: Vec<(String, Shape)>,
        dtype: DType,
    ) -> Self {
        Self {
            backing: Arc::new(Backing::Seeded {
                model: model.into(),
                shapes: params.into_iter().collect(),
                dtype,
            }),
            name: name.into(),
            key_map: None,
            patches: None,
        }
    }

    /// The same weights with `patches` merged in as they are read (after any this source
    /// already merges), sharing the files: the source itself is unchanged.
    pub fn patched(&self, patches: &WeightPatches) -> Self {
        let patches = match &self.patches {
            Some(earlier) => earlier.then(patches),
            None => patches.clone(),
        };
        Self {
            backing: Arc::clone(&self.backing),
            name: self.name.clone(),
            key_map: self.key_map.clone(),
            patches: Some(Arc::new(patches)),
        }
    }

    /// Reads keys through `key_map` (a model's key -> the source's key).
    pub fn with_key_map(mut self, key_map: KeyMap) -> Self {
        self.key_map = Some(key_map);
        self
    }

    /// Whether the source is a GGUF file holding quantized blocks, which a model can keep as
    /// stored ([`KEPT_AS_STORED`]).
    pub fn holds_quantized_blocks(&self) -> bool {
        matches!(&*self.backing, Backing::Gguf(file) if file.holds_quantized_blocks())
    }

    /// Every key the source holds, in its own naming.
    pub fn keys(&self) -> Vec<String> {
        match &*self.backing {
            Backing::Files(files) => files.names().cloned().collect(),
            Backing::Gguf(file) => file.names().cloned().collect(),
            Backing::Memory(tensors) => tensors.keys().cloned().collect(),
            Backing::Seeded { shapes, .. } => shapes.keys().cloned().collect(),
        }
    }

    /// The shape of the tensor stored under `key`, in the source's own naming, read without
    /// loading it.
    pub fn stored_shape(&self, key: &str) -> Option<Vec<usize>> {
        match &*self.backing {
            Backing::Files(files) => files.shape(key).map(<[usize]>::to_vec),
            Backing::Gguf(file) => file.shape(key).map(<[usize]>::to_vec),
            Backing::Memory(tensors) => tensors.get(key).map(|t| t.dims().to_vec()),
            Backing::Seeded { shapes, .. } => shapes.get(key).map(|s| s.dims().to_vec()),
        }
    }

    /// Whether the source holds the model key `key`.
    pub fn contains(&self, key: &str) -> bool {
        let Some(SourceKey { key, .. }) = self.source_key(key) else {
            return false;
        };
        match &*self.backing {
            Backing::Files(files) => files.shape(&key).is_some(),
            Backing::Gguf(file) => file.shape(&key).is_some(),
            Backing::Memory(tensors) => tensors.contains_key(&key),
            Backing::Seeded { shapes, .. } => shapes.contains_key(&key),
        }
    }

    fn source_key(&self, key: &str) -> Option<SourceKey> {
        match &self.key_map {
            Some(map) => map(key),
            None => Some(SourceKey::whole(key)),
        }
    }

    /// Loads the tensor the model calls `key`, checks its shape, converts it to `dtype` on
    /// `device`; in [`KEPT_AS_STORED`], its bytes as stored (see [`TensorSource::kept_unit`]).
    ///
    /// # Errors
    /// [`SourceError::Missing`], [`SourceError::Shape`] or [`SourceError::Tensor`], naming the
    /// source's key.
    pub fn load(&self, key: &str, shape: &Shape, dtype: DType, device: &Device) -> Result<Tensor, SourceError> {
        if dtype == KEPT_AS_STORED {
            let (encoding, _) = self.stored_encoding(key, shape);
            let mut stored = vec![0u8; encoding.bytes()];
            self.read_stored(key, shape, &mut stored)?;
            return Tensor::from_vec(stored, encoding.bytes(), device).map_err(|e| SourceError::Tensor {
                source_name: self.name.clone(),
                key: key.to_string(),
                message: e.to_string(),
            });
        }
        let missing = |key: String| SourceError::Missing {
            source_name: self.name.clone(),
            key,
        };
        let SourceKey { key: source_key, part } = self.source_key(key).ok_or_else(|| missing(key.to_string()))?;
        let failed = |e: candle_core::Error| SourceError::Tensor {
            source_name: self.name.clone(),
            key: source_key.clone(),
            message: e.to_string(),
        };
        let stored = match &*self.backing {
            Backing::Files(files) => self.read_checked(files, &source_key, shape, part)?,
            Backing::Gguf(file) => self.read_checked(file, &source_key, shape, part)?,
            Backing::Memory(tensors) => tensors
                .get(&source_key)
                .ok_or_else(|| missing(source_key.clone()))?
                .clone(),
            Backing::Seeded { model, shapes, dtype } => {
                let stored = shapes.get(&source_key).ok_or_else(|| missing(source_key.clone()))?;
                seeded_tensor(model, &source_key, stored, *dtype).map_err(failed)?
            }
        };
        let tensor = match part {
            Part::Whole => stored,
            Part::Chunk { index, count } => {
                let rows = stored.dim(0).map_err(failed)?;
                if count == 0 || rows % count != 0 {
                    return Err(self.shape_error(&source_key, shape, stored.dims()));
                }
                // A copy of its own: a view would carry the whole fused tensor to the device.
                stored
                    .narrow(0, index * rows / count, rows / count)
                    .and_then(|chunk| chunk.force_contiguous())
                    .map_err(failed)?
            }
            Part::Transposed => stored.t().and_then(|t| t.contiguous()).map_err(failed)?,
            Part::Squeezed => stored.flatten_from(1).map_err(failed)?,
        };
        if tensor.dims() != shape.dims() {
            return Err(self.shape_error(&source_key, shape, tensor.dims()));
        }
        let patches = self.patches.as_ref().filter(|patches| patches.changes(key));
        // A scaled 8-bit weight is its values times its scale. Kept in 8 bits it stays as
        // stored, its scale handed out beside it (`unit_decoding`); else it is scaled here.
        let scale = self.stored_scale(&source_key).map_err(|message| SourceError::Tensor {
            source_name: self.name.clone(),
            key: source_key.clone(),
            message,
        })?;
        let kept_as_stored = dtype == DType::F8E4M3 && tensor.dtype() == dtype && patches.is_none();
        let scale = scale.filter(|_| !kept_as_stored);
        let tensor = match scale {
            Some(scale) => tensor.to_dtype(DType::F32).and_then(|t| t * scale).map_err(failed)?,
            None => tensor,
        };
        // Kept in 8 bits, a scaled weight goes back to its file's scale.
        let unscale = |t: Tensor| match scale {
            Some(scale) if dtype == DType::F8E4M3 => t.to_dtype(DType::F32).and_then(|t| t / scale),
            _ => Ok(t),
        };
        // A change is merged where the weight will live, in f32, before the run's dtype.
        if let Some(patches) = patches {
            // 8-bit floats are widened and made on the host (see `widen`).
            let merge_on = if dtype == DType::F8E4M3 { &Device::Cpu } else { device };
            let weight = match tensor.dtype() {
                DType::F8E4M3 => tensor.to_dtype(DType::F32),
                _ => Ok(tensor),
            }
            .and_then(|t| t.to_device(merge_on))
            .map_err(failed)?;
            let merged = patches.apply(key, &weight).unwrap_or_else(|| Ok(weight.clone()));
            return merged
                .and_then(unscale)
                .and_then(|t| t.to_dtype(dtype))
                .and_then(|t| t.to_device(device))
                .map_err(failed);
        }
        unscale(tensor)
            .and_then(|t| t.to_dtype(dtype))
            .and_then(|t| t.to_device(device))
            .map_err(failed)
    }

    /// Every tensor of `params` (the model's keys with their shapes) loaded as
    /// [`TensorSource::load`] does, in `dtype` on the host, read in parallel: for models built
    /// whole on a device (text encoders), whose reading is most of bringing them there.
    ///
    /// # Errors
    /// As [`TensorSource::load`], for the first tensor that fails.
    pub fn load_all(&self, params: &[(String, Shape)], dtype: DType) -> Result<HashMap<String, Tensor>, SourceError> {
        params
            .par_iter()
            .map(|(key, shape)| Ok((key.clone(), self.load(key, shape, dtype, &Device::Cpu)?)))
            .collect()
    }

    /// The dtype the tensor the model calls `key` is stored in (as it reads), without reading
    /// it; `None` when the source lacks it.
    pub fn stored_dtype(&self, key: &str) -> Option<DType> {
        let SourceKey { key, .. } = self.source_key(key)?;
        match &*self.backing {
            Backing::Files(files) => files.dtype(&key),
            Backing::Gguf(file) => file.dtype(&key),
            Backing::Memory(tensors) => tensors.get(&key).map(Tensor::dtype),
            Backing::Seeded { shapes, dtype, .. } => shapes.contains_key(&key).then_some(*dtype),
        }
    }

    /// What `unit`'s weights kept in `kept` need to become the values its layers use, keyed by
    /// the unit's own tensor names: the scales of weights kept in 8 bits that were stored scaled
    /// (a layer's `scale_weight` or `weight_scale` beside its `weight`), each kept weight's
    /// multiplier when it is widened to run; and, for weights kept as stored, each one's
    /// [`Encoding`].
    ///
    /// # Errors
    /// A scale that cannot be read as one number.
    pub fn unit_decoding(&self, unit: &UnitSpec, kept: DType) -> Result<UnitDecoding, SourceError> {
        let mut decoding = UnitDecoding::default();
        if kept == KEPT_AS_STORED {
            for (name, shape) in &unit.tensors {
                let (encoding, _) = self.stored_encoding(&unit.key(name), shape);
                decoding.encodings.insert(name.clone(), encoding);
            }
        }
        if kept != DType::F8E4M3 {
            return Ok(decoding);
        }
        for (name, _) in &unit.tensors {
            let key = unit.key(name);
            let Some(SourceKey { key: source_key, .. }) = self.source_key(&key) else {
                continue;
            };
            let scale = self.stored_scale(&source_key).map_err(|message| SourceError::Tensor {
                source_name: self.name.clone(),
                key: source_key.clone(),
                message,
            })?;
            if let Some(scale) = scale {
                decoding.scales.insert(name.clone(), scale);
            }
        }
        Ok(decoding)
    }

    /// `unit` with each tensor's shape as kept in `kept`: for weights kept as stored, its
    /// length in bytes (what stores hold, move and plan with), else the model's shape.
    pub fn kept_unit(&self, unit: &UnitSpec, kept: DType) -> UnitSpec {
        if kept != KEPT_AS_STORED {
            return unit.clone();
        }
        let tensors = unit
            .tensors
            .iter()
            .map(|(name, shape)| {
                let (encoding, _) = self.stored_encoding(&unit.key(name), shape);
                (name.clone(), Shape::from(encoding.bytes()))
            })
            .collect();
        UnitSpec {
            tensors,
            ..unit.clone()
        }
    }

    /// How the tensor the model calls `key` (of `shape`) is kept as stored, and whether that is
    /// the file's own bytes: a GGUF file's tensor as the file has it, quantized or not; a tensor
    /// a LoRA changes, a part of a stored tensor or one from another format, in f16.
    fn stored_encoding(&self, key: &str, shape: &Shape) -> (Encoding, bool) {
        let as_f16 = Encoding {
            kind: GgmlDType::F16,
            shape: shape.clone(),
        };
        let patched = self.patches.as_ref().is_some_and(|patches| patches.changes(key));
        let (Backing::Gguf(file), Some(SourceKey { key, part: Part::Whole }), false) =
            (&*self.backing, self.source_key(key), patched)
        else {
            return (as_f16, false);
        };
        match file.encoding(&key) {
            Some(encoding) if encoding.shape == *shape => (encoding, true),
            _ => (as_f16, false),
        }
    }

    /// The tensor the model calls `key` as stored (see [`TensorSource::stored_encoding`]), in a
    /// host buffer as long as its encoding.
    fn read_stored(&self, key: &str, shape: &Shape, target: &mut [u8]) -> Result<(), SourceError> {
        let (encoding, own_bytes) = self.stored_encoding(key, shape);
        let failed = |message: String| SourceError::Tensor {
            source_name: self.name.clone(),
            key: key.to_string(),
            message,
        };
        if target.len() != encoding.bytes() {
            return Err(failed(format!(
                "holds {} bytes as stored, {} were expected",
                encoding.bytes(),
                target.len()
            )));
        }
        match (&*self.backing, self.source_key(key)) {
            (Backing::Gguf(file), Some(SourceKey { key: source_key, .. })) if own_bytes => {
                file.read_stored(&source_key, target).map_err(failed)
            }
            _ => {
                let values = self.load(key, shape, DType::F16, &Device::Cpu)?;
                write_bytes(&values, target).map_err(|e| failed(e.to_string()))
            }
        }
    }

    /// The scale stored beside the 8-bit weight `source_key` (`….scale_weight`, as ComfyUI's
    /// scaled fp8 files have it, or `….weight_scale`), if any.
    fn stored_scale(&self, source_key: &str) -> Result<Option<f64>, String> {
        let Backing::Files(files) = &*self.backing else {
            return Ok(None);
        };
        if !files.is_eight_bit(source_key) {
            return Ok(None);
        }
        let Some(layer) = source_key.strip_suffix(".weight") else {
            return Ok(None);
        };
        let Some(scale_key) = [format!("{layer}.scale_weight"), format!("{source_key}_scale")]
            .into_iter()
            .find(|candidate| files.shape(candidate).is_some())
        else {
            return Ok(None);
        };
        let scale = files
            .read(&scale_key)
            .and_then(|t| {
                t.flatten_all()
                    .and_then(|t| t.to_dtype(DType::F64)?.to_vec1::<f64>())
                    .map_err(|e| e.to_string())
            })
            .map_err(|e| format!("its scale \"{scale_key}\": {e}"))?;
        match scale.as_slice() {
            [scale] if scale.is_finite() => Ok(Some(*scale)),
            _ => Err(format!("its scale \"{scale_key}\" is not one finite number")),
        }
    }

    /// Writes the tensor the model calls `key`, checked and converted as [`TensorSource::load`]
    /// does, into `target` in its native byte order. A file that stores it whole in `dtype` is
    /// read straight into `target` (page-locked memory, say) with no copy between.
    ///
    /// # Errors
    /// As [`TensorSource::load`], or a `target` whose length is not the tensor's.
    pub fn read_into(&self, key: &str, shape: &Shape, dtype: DType, target: &mut [u8]) -> Result<(), SourceError> {
        if dtype == KEPT_AS_STORED {
            return self.read_stored(key, shape, target);
        }
        let patched = self.patches.as_ref().is_some_and(|patches| patches.changes(key));
        if let (
            Backing::Files(files),
            Some(SourceKey {
                key: source_key,
                part: Part::Whole,
            }),
            false,
        ) = (&*self.backing, self.source_key(key), patched)
        {
            let stored = files.shape(&source_key).ok_or_else(|| SourceError::Missing {
                source_name: self.name.clone(),
                key: source_key.clone(),
            })?;
            if stored != shape.dims() {
                return Err(self.shape_error(&source_key, shape, stored));
            }
            let read = files
                .read_into(&source_key, dtype, target)
                .map_err(|message| SourceError::Tensor {
                    source_name: self.name.clone(),
                    key: source_key.clone(),
                    message,
                })?;
            if read {
                return Ok(());
            }
        }
        let loaded = self.load(key, shape, dtype, &Device::Cpu)?;
        write_bytes(&loaded, target).map_err(|e| SourceError::Tensor {
            source_name: self.name.clone(),
            key: key.to_string(),
            message: e.to_string(),
        })
    }

    /// A builder that loads through this source, for layers built directly from it (text
    /// encoders, VAE) rather than unit by unit.
    pub fn var_builder(self: &Arc<Self>, dtype: DType, device: &Device) -> candle_nn::VarBuilder<'static> {
        candle_nn::VarBuilder::from_backend(Box::new(SourceBackend(Arc::clone(self))), dtype, device.clone())
    }

    /// Tensor `source_key` of `file`, its size checked against `shape` before it is read (a lying
    /// file must not make us read gigabytes).
    fn read_checked(
        &self,
        file: &dyn StoredTensors,
        source_key: &str,
        shape: &Shape,
        part: Part,
    ) -> Result<Tensor, SourceError> {
        let stored = file.stored_shape(source_key).ok_or_else(|| SourceError::Missing {
            source_name: self.name.clone(),
            key: source_key.to_string(),
        })?;
        if part == Part::Whole && stored != shape.dims() {
            return Err(self.shape_error(source_key, shape, stored));
        }
        file.read_tensor(source_key).map_err(|message| SourceError::Tensor {
            source_name: self.name.clone(),
            key: source_key.to_string(),
            message,
        })
    }

    fn shape_error(&self, key: &str, expected: &Shape, found: &[usize]) -> SourceError {
        SourceError::Shape {
            source_name: self.name.clone(),
            key: key.to_string(),
            expected: expected.dims().to_vec(),
            found: found.to_vec(),
        }
    }
}

/// A host tensor's elements into `target`, in their native byte order.
fn write_bytes(tensor: &Tensor, target: &mut [u8]) -> candle_core::Result<()> {
    let flat = tensor.flatten_all()?;
    let bytes = flat.elem_count() * flat.dtype().size_in_bytes();
    if bytes != target.len() {
        candle_core::bail!("holds {bytes} bytes, {} were expected", target.len());
    }
    match flat.dtype() {
        DType::F16 => target.copy_from_slice(bytemuck::cast_slice(&flat.to_vec1::<half::f16>()?)),
        DType::BF16 => target.copy_from_slice(bytemuck::cast_slice(&flat.to_vec1::<half::bf16>()?)),
        DType::F32 => target.copy_from_slice(bytemuck::cast_slice(&flat.to_vec1::<f32>()?)),
        DType::F8E4M3 => target.copy_from_slice(bytemuck::cast_slice(&flat.to_vec1::<float8::F8E4M3>()?)),
        other => candle_core::bail!("weights are written as f16, bf16, f32 or fp8 (e4m3), not {other:?}"),
    }
    Ok(())
}

/// Lets candle layers load straight from a [`TensorSource`], keeping its messages.
struct SourceBackend(Arc<TensorSource>);

impl candle_nn::var_builder::SimpleBackend for SourceBackend {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        self.0
            .load(name, &shape, dtype, device)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("{}: tensor \"{name}\" was asked for without a shape", self.0.name)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.contains(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> TensorSource {
        let fused = Tensor::arange(0f32, 12.0, &Device::Cpu)
            .unwrap()
            .reshape((6, 2))
            .unwrap();
        let tensors = HashMap::from([("fused".to_string(), fused)]);
        TensorSource::from_tensors("test.safetensors", tensors)
    }

    #[test]
    fn a_mis_shaped_tensor_names_its_key_and_both_shapes() {
        let error = source()
            .load("fused", &Shape::from((2, 6)), DType::F32, &Device::Cpu)
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "test.safetensors: tensor \"fused\" has shape [6, 2], the model needs [2, 6]"
        );
        let missing = source()
            .load("absent", &Shape::from(3), DType::F32, &Device::Cpu)
            .unwrap_err();
        assert_eq!(missing.to_string(), "test.safetensors has no tensor \"absent\"");
    }

    #[test]
    fn parts_of_fused_and_transposed_tensors() {
        let chunk = |index| {
            source()
                .with_key_map(Arc::new(move |_: &str| {
                    Some(SourceKey {
                        key: "fused".into(),
                        part: Part::Chunk { index, count: 3 },
                    })
                }))
                .load("q", &Shape::from((2, 2)), DType::F32, &Device::Cpu)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        assert_eq!(chunk(1), [4.0, 5.0, 6.0, 7.0]);
        // A chunk holds only its own values, not a view of the fused tensor (which would carry
        // all of it to the device).
        let q = source()
            .with_key_map(Arc::new(|_: &str| {
                Some(SourceKey {
                    key: "fused".into(),
                    part: Part::Chunk { index: 1, count: 3 },
                })
            }))
            .load("q", &Shape::from((2, 2)), DType::F32, &Device::Cpu)
            .unwrap();
        let (storage, layout) = q.storage_and_layout();
        let candle_core::Storage::Cpu(values) = &*storage else {
            panic!("a CPU load");
        };
        assert_eq!((values.as_slice::<f32>().unwrap().len(), layout.start_offset()), (4, 0));
        drop(storage);
        let transposed = source()
            .with_key_map(Arc::new(|_: &str| {
                Some(SourceKey {
                    key: "fused".into(),
                    part: Part::Transposed,
                })
            }))
            .load("t", &Shape::from((2, 6)), DType::F32, &Device::Cpu)
            .unwrap();
        assert_eq!(transposed.to_vec2::<f32>().unwrap()[1][..3], [1.0, 3.0, 5.0]);
    }

    #[test]
    fn read_into_gives_the_bytes_load_gives_whether_read_straight_or_converted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let values = Tensor::arange(0f32, 6.0, &Device::Cpu)
            .unwrap()
            .reshape((2, 3))
            .unwrap();
        let tensors = HashMap::from([
            ("half".to_string(), values.to_dtype(DType::F16).unwrap()),
            ("full".to_string(), values.clone()),
        ]);
        candle_core::safetensors::save(&tensors, &path).unwrap();
        let file = TensorSource::open(&[&path]).unwrap();
        let shape = Shape::from((2, 3));
        let expected: Vec<u8> = values
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .into_iter()
            .flat_map(|v| half::f16::from_f32(v).to_le_bytes())
            .collect();
        for key in ["half", "full"] {
            let mut target = vec![0xAA; 12];
            file.read_into(key, &shape, DType::F16, &mut target).unwrap();
            assert_eq!(target, expected, "{key}");
        }
        let wrong_shape = file.read_into("half", &Shape::from((3, 2)), DType::F16, &mut [0; 12]);
        assert!(matches!(wrong_shape, Err(SourceError::Shape { .. })), "{wrong_shape:?}");
        let short = file.read_into("half", &shape, DType::F16, &mut [0; 10]).unwrap_err();
        assert!(
            short.to_string().contains("holds 12 bytes, 10 were expected"),
            "{short}"
        );
        let missing = file.read_into("absent", &shape, DType::F16, &mut [0; 12]).unwrap_err();
        assert!(missing.to_string().ends_with("has no tensor \"absent\""), "{missing}");
    }

    #[test]
    fn a_change_to_a_weight_kept_in_eight_bits_is_merged_before_it_is_rounded() {
        let cpu = Device::Cpu;
        let weight = Tensor::new(&[[0.5f32, -1.25], [2.0, 0.1]], &cpu).unwrap();
        let source = TensorSource::from_tensors("w", HashMap::from([("w".to_string(), weight.clone())]));
        let (up, down) = (
            Tensor::new(&[[1f32], [2.0]], &cpu).unwrap(),
            Tensor::new(&[[0.3f32, 0.7]], &cpu).unwrap(),
        );
        let mut patches = WeightPatches::default();
        patches.add(
            "w",
            crate::LowRank {
                up: up.clone(),
                down: down.clone(),
                scale: 0.5,
            },
        );
        let shape = Shape::from((2, 2));
        let values = |t: Tensor| t.to_dtype(DType::F32).unwrap().to_vec2::<f32>().unwrap();
        let eight_bits = |t: Tensor| values(t.to_dtype(DType::F8E4M3).unwrap());
        let merged = source.patched(&patches).load("w", &shape, DType::F8E4M3, &cpu).unwrap();
        assert_eq!(merged.dtype(), DType::F8E4M3);
        let expected = (&weight + (up.matmul(&down).unwrap() * 0.5).unwrap()).unwrap();
        assert_eq!(values(merged), eight_bits(expected));
        let plain = source.load("w", &shape, DType::F8E4M3, &cpu).unwrap();
        assert_eq!(
            values(plain),
            eight_bits(weight),
            "without the change: the weight rounded"
        );
    }

    #[test]
    fn gguf_blocks_are_kept_as_stored_and_a_changed_weight_in_f16() {
        use candle_core::quantized::{gguf_file, QTensor};
        let cpu = Device::Cpu;
        let values = (Tensor::arange(0f32, 64.0, &cpu).unwrap() / 16.0)
            .unwrap()
            .reshape((2, 32))
            .unwrap();
        let blocks = QTensor::quantize(&values, GgmlDType::Q8_0).unwrap();
        let bias = QTensor::quantize(&Tensor::new(&[0.5f32, -1.0], &cpu).unwrap(), GgmlDType::F32).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.gguf");
        let table = [("w", &blocks), ("b", &bias)];
        gguf_file::write(&mut std::fs::File::create(&path).unwrap(), &[], &table).unwrap();
        let source = TensorSource::from_gguf(GgufFile::open(&path).unwrap(), "w.gguf");
        assert!(source.holds_quantized_blocks());
        let unit = UnitSpec {
            name: String::new(),
            group: crate::UnitGroup::outside_blocks(0),
            tensors: vec![("w".into(), Shape::from((2, 32))), ("b".into(), Shape::from(2))],
        };
        let kept = source.kept_unit(&unit, KEPT_AS_STORED);
        assert_eq!(kept.tensors[0].1.dims(), [2 * 34], "two Q8_0 blocks of 34 bytes");
        assert_eq!(kept.tensors[1].1.dims(), [8], "two f32 values");
        let stored = source.load("w", &unit.tensors[0].1, KEPT_AS_STORED, &cpu).unwrap();
        assert_eq!(stored.to_vec1::<u8>().unwrap(), blocks.data().unwrap().to_vec());
        let decoding = source.unit_decoding(&unit, KEPT_AS_STORED).unwrap();
        let decoded = crate::decode(&stored, &decoding.encodings["w"], DType::F32).unwrap();
        let dequantized = blocks.dequantize(&cpu).unwrap();
        assert_eq!(decoded.to_vec2::<f32>().unwrap(), dequantized.to_vec2::<f32>().unwrap());
        // What the file does not hold as the model needs it is refused by name, as stored too.
        let misshaped = source
            .load("w", &Shape::from((4, 16)), KEPT_AS_STORED, &cpu)
            .unwrap_err();
        assert_eq!(
            misshaped.to_string(),
            "w.gguf: tensor \"w\" has shape [2, 32], the model needs [4, 16]"
        );
        let missing = source
            .load("absent", &Shape::from(2), KEPT_AS_STORED, &cpu)
            .unwrap_err();
        assert_eq!(missing.to_string(), "w.gguf has no tensor \"absent\"");
        let short = source
            .read_into("w", &unit.tensors[0].1, KEPT_AS_STORED, &mut [0; 10])
            .unwrap_err();
        assert!(
            short.to_string().contains("holds 68 bytes as stored, 10 were expected"),
            "{short}"
        );

        let mut patches = WeightPatches::default();
        patches.add(
            "w",
            crate::LowRank {
                up: Tensor::ones((2, 1), DType::F32, &cpu).unwrap(),
                down: Tensor::ones((1, 32), DType::F32, &cpu).unwrap(),
                scale: 0.25,
            },
        );
        let patched = source.patched(&patches);
        let changed = patched.unit_decoding(&unit, KEPT_AS_STORED).unwrap();
        assert_eq!(
            changed.encodings["w"].kind,
            GgmlDType::F16,
            "a changed weight is kept in f16"
        );
        assert_eq!(changed.encodings["b"].kind, GgmlDType::F32, "the others as stored");
        let bytes = patched.load("w", &unit.tensors[0].1, KEPT_AS_STORED, &cpu).unwrap();
        assert_eq!(bytes.dims(), [2 * 32 * 2]);
        let merged = crate::decode(&bytes, &changed.encodings["w"], DType::F32).unwrap();
        let expected = (dequantized + 0.25)
            .unwrap()
            .to_dtype(DType::F16)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        assert_eq!(merged.to_vec2::<f32>().unwrap(), expected.to_vec2::<f32>().unwrap());
    }
}
