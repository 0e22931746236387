//! GGUF files, as quantized diffusion models are shared (ComfyUI-GGUF's UNets): metadata, a
//! table of tensors, then each tensor's data at an aligned offset, in quantized blocks (Q8_0,
//! Q5_K, Q4_K and their kin) or as f16, bf16 or f32. The header is read once and checked against
//! the file's size; tensors are read when asked for, with positioned reads, either as stored
//! (kept quantized, see [`crate::encoding`]) or dequantized on the host by candle's block types.

use crate::encoding::{dequantize_on_host, Encoding};
use crate::safetensors_file::read_exact_at;
use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Shape, Tensor};
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"GGUF";
/// The alignment of tensor data when the file names none.
const DEFAULT_ALIGNMENT: u64 = 32;
/// Where a converter that reshaped a tensor to quantize it keeps its shape.
const ORIGINAL_SHAPE: &str = "comfy.gguf.orig_shape.";

/// One tensor's entry in the table.
struct Entry {
    kind: GgmlDType,
    /// The shape the model uses (PyTorch's order, the converter's original shape if it kept one).
    shape: Vec<usize>,
    /// Start in the file, in bytes.
    start: u64,
    /// Length in bytes.
    len: usize,
}

/// A GGUF file, its header read and checked.
pub struct GgufFile {
    path: PathBuf,
    file: File,
    architecture: Option<String>,
    entries: HashMap<String, Entry>,
}

/// A metadata value, as far as it is kept: strings, integers and integer arrays; anything else
/// is skipped.
enum Value {
    Text(String),
    Integer(i64),
    Integers(Vec<i64>),
    Other,
}

impl GgufFile {
    /// Opens `path` and reads its header.
    ///
    /// # Errors
    /// What is wrong, naming the file: unreadable, not GGUF, a version other than 2 or 3, a
    /// quantization type that cannot be read (named), or a table that disagrees with itself or
    /// with the file's size.
    pub fn open(path: &Path) -> Result<Self, String> {
        let named = |message: String| format!("{}: {message}", path.display());
        let file = File::open(path).map_err(|e| named(e.to_string()))?;
        let size = file.metadata().map_err(|e| named(e.to_string()))?.len();
        let mut header = Header {
            reader: BufReader::new(file.try_clone().map_err(|e| named(e.to_string()))?),
            position: 0,
            size,
        };
        let (architecture, entries) = header.read().map_err(named)?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            architecture,
            entries,
        })
    }

    /// `general.architecture`, as the converter wrote it (`sdxl`, `sd1`, `flux`, ...).
    pub fn architecture(&self) -> Option<&str> {
        self.architecture.as_deref()
    }

    /// How many tensors each storage type holds, by GGML's names (`Q4_K: 700, F32: 900`), for
    /// the log.
    pub fn type_counts(&self) -> Vec<(String, usize)> {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for entry in self.entries.values() {
            *counts.entry(format!("{:?}", entry.kind)).or_default() += 1;
        }
        let mut counts: Vec<_> = counts.into_iter().collect();
        counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        counts
    }

    /// Whether any tensor is stored in quantized blocks (not plain f16, bf16 or f32).
    pub(crate) fn holds_quantized_blocks(&self) -> bool {
        self.entries
            .values()
            .any(|entry| !matches!(entry.kind, GgmlDType::F16 | GgmlDType::BF16 | GgmlDType::F32))
    }

    /// Every tensor's name.
    pub(crate) fn names(&self) -> impl Iterator<Item = &String> {
        self.entries.keys()
    }

    /// The shape of tensor `name` as the model uses it.
    pub(crate) fn shape(&self, name: &str) -> Option<&[usize]> {
        self.entries.get(name).map(|entry| entry.shape.as_slice())
    }

    /// The dtype tensor `name` reads as: f16, bf16 or f32 as stored, f32 for quantized blocks.
    pub(crate) fn dtype(&self, name: &str) -> Option<DType> {
        self.entries.get(name).map(|entry| match entry.kind {
            GgmlDType::F16 => DType::F16,
            GgmlDType::BF16 => DType::BF16,
            _ => DType::F32,
        })
    }

    /// Reads tensor `name` into host memory: f16, bf16 and f32 as stored, quantized blocks
    /// dequantized to f32.
    ///
    /// # Errors
    /// A tensor the file lacks, or a failed read.
    pub(crate) fn read(&self, name: &str) -> Result<Tensor, String> {
        let entry = self.entries.get(name).ok_or_else(|| "not in the file".to_string())?;
        match entry.kind {
            GgmlDType::F16 => self.read_plain::<half::f16>(entry),
            GgmlDType::BF16 => self.read_plain::<half::bf16>(entry),
            GgmlDType::F32 => self.read_plain::<f32>(entry),
            kind => {
                let mut stored = vec![0u8; entry.len];
                self.read_bytes(entry, &mut stored)?;
                dequantize_on_host(kind, &stored, &Shape::from(entry.shape.as_slice())).map_err(|e| e.to_string())
            }
        }
    }

    /// How tensor `name` is stored: its storage type and the shape the model uses.
    pub(crate) fn encoding(&self, name: &str) -> Option<Encoding> {
        self.entries.get(name).map(|entry| Encoding {
            kind: entry.kind,
            shape: Shape::from(entry.shape.as_slice()),
        })
    }

    /// Reads tensor `name`'s bytes as stored (quantized blocks stay quantized) into `target`,
    /// which must be as long as they are.
    ///
    /// # Errors
    /// A tensor the file lacks, a target of another length, or a failed read.
    pub(crate) fn read_stored(&self, name: &str, target: &mut [u8]) -> Result<(), String> {
        let entry = self.entries.get(name).ok_or_else(|| "not in the file".to_string())?;
        if target.len() != entry.len {
            return Err(format!("holds {} bytes, {} were expected", entry.len, target.len()));
        }
        self.read_bytes(entry, target)
    }

    fn read_plain<T: candle_core::WithDType + bytemuck::Pod>(&self, entry: &Entry) -> Result<Tensor, String> {
        let mut values = bytemuck::zeroed_vec::<T>(entry.len / std::mem::size_of::<T>());
        self.read_bytes(entry, bytemuck::cast_slice_mut(&mut values))?;
        Tensor::from_vec(values, entry.shape.as_slice(), &Device::Cpu).map_err(|e| e.to_string())
    }

    fn read_bytes(&self, entry: &Entry, target: &mut [u8]) -> Result<(), String> {
        read_exact_at(&self.file, target, entry.start).map_err(|e| format!("{}: {e}", self.path.display()))
    }
}

/// The header, read in order with its position counted against the file's size.
struct Header {
    reader: BufReader<File>,
    position: u64,
    size: u64,
}

impl Header {
    fn read(&mut self) -> Result<(Option<String>, HashMap<String, Entry>), String> {
        let mut magic = [0u8; 4];
        self.bytes(&mut magic)
            .map_err(|_| "too short to be a GGUF file".to_string())?;
        if &magic != MAGIC {
            return Err("not a GGUF file (it does not start with \"GGUF\")".into());
        }
        let version = self.u32()?;
        if !(2..=3).contains(&version) {
            return Err(format!("GGUF version {version} cannot be read (2 and 3 can)"));
        }
        let tensor_count = self.count("tensors", 8)?;
        let metadata_count = self.count("metadata entries", 8)?;
        let mut architecture = None;
        let mut alignment = DEFAULT_ALIGNMENT;
        let mut original_shapes = HashMap::new();
        for _ in 0..metadata_count {
            let key = self.string()?;
            let value_type = self.u32()?;
            let value = self.value(value_type).map_err(|e| format!("metadata \"{key}\": {e}"))?;
            match (key.as_str(), value) {
                ("general.architecture", Value::Text(text)) => architecture = Some(text),
                ("general.alignment", Value::Integer(n)) if n > 0 && (n as u64).is_power_of_two() => {
                    alignment = n as u64;
                }
                ("general.alignment", _) => return Err("general.alignment is not a power of two".into()),
                (key, Value::Integers(dims)) if key.starts_with(ORIGINAL_SHAPE) => {
                    let dims = dims
                        .into_iter()
                        .map(usize::try_from)
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|_| format!("metadata \"{key}\": a negative dimension"))?;
                    original_shapes.insert(key[ORIGINAL_SHAPE.len()..].to_string(), dims);
                }
                _ => {}
            }
        }
        let mut table = Vec::with_capacity(tensor_count.min(1 << 16) as usize);
        for _ in 0..tensor_count {
            let name = self.string()?;
            let dims = self.u32()?;
            if dims == 0 || dims > 4 {
                return Err(format!("tensor \"{name}\" has {dims} dimensions (1 to 4 can be read)"));
            }
            let mut ggml_dims = Vec::with_capacity(dims as usize);
            for _ in 0..dims {
                ggml_dims.push(self.u64()?);
            }
            let kind_code = self.u32()?;
            let kind = ggml_kind(kind_code).map_err(|e| format!("tensor \"{name}\": {e}"))?;
            let offset = self.u64()?;
            table.push((name, ggml_dims, kind, offset));
        }
        let data_start = self.position.next_multiple_of(alignment);
        let mut entries = HashMap::with_capacity(table.len());
        for (name, ggml_dims, kind, offset) in table {
            let entry = self.entry(
                &name,
                &ggml_dims,
                kind,
                offset,
                data_start,
                original_shapes.remove(&name),
            )?;
            entries.insert(name, entry);
        }
        Ok((architecture, entries))
    }

    /// A tensor's entry, its bytes checked against its type, its shape and the file.
    fn entry(
        &self,
        name: &str,
        ggml_dims: &[u64],
        kind: GgmlDType,
        offset: u64,
        data_start: u64,
        original: Option<Vec<usize>>,
    ) -> Result<Entry, String> {
        let bad = |problem: String| format!("tensor \"{name}\": {problem}");
        let elements = ggml_dims
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d))
            .filter(|&n| n <= self.size.saturating_mul(8))
            .ok_or_else(|| bad(format!("its shape {ggml_dims:?} holds more values than the file could")))?;
        let block = kind.block_size() as u64;
        if ggml_dims[0] % block != 0 {
            return Err(bad(format!(
                "rows of {} values do not split into {kind:?} blocks of {block}",
                ggml_dims[0]
            )));
        }
        let len = elements / block * kind.type_size() as u64;
        let start = data_start
            .checked_add(offset)
            .filter(|start| start.checked_add(len).is_some_and(|end| end <= self.size))
            .ok_or_else(|| bad(format!("its {len} bytes at offset {offset} lie past the file's end")))?;
        // PyTorch's order is GGML's reversed; a converter that reshaped the tensor to quantize
        // it kept the original.
        let shape = match original {
            Some(shape) if shape.iter().product::<usize>() as u64 == elements => shape,
            Some(shape) => {
                return Err(bad(format!(
                    "its original shape {shape:?} does not hold its {elements} values"
                )))
            }
            None => ggml_dims.iter().rev().map(|&d| d as usize).collect(),
        };
        Ok(Entry {
            kind,
            shape,
            start,
            len: len as usize,
        })
    }

    fn bytes(&mut self, buffer: &mut [u8]) -> Result<(), String> {
        self.reader
            .read_exact(buffer)
            .map_err(|_| format!("the header ends early, at byte {}", self.position))?;
        self.position += buffer.len() as u64;
        Ok(())
    }

    fn u32(&mut self) -> Result<u32, String> {
        let mut b = [0u8; 4];
        self.bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self) -> Result<u64, String> {
        let mut b = [0u8; 8];
        self.bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// A count of items of at least `item_bytes` each, checked against what is left.
    fn count(&mut self, what: &str, item_bytes: u64) -> Result<u64, String> {
        let count = self.u64()?;
        if count.saturating_mul(item_bytes) > self.size - self.position {
            return Err(format!("it claims {count} {what}, more than the file holds"));
        }
        Ok(count)
    }

    fn string(&mut self) -> Result<String, String> {
        let len = self.count("bytes of text", 1)?;
        let mut text = vec![0u8; len as usize];
        self.bytes(&mut text)?;
        String::from_utf8(text).map_err(|_| format!("text that is not UTF-8 before byte {}", self.position))
    }

    /// An unsigned little-endian integer of `width` bytes.
    fn uint(&mut self, width: usize) -> Result<u64, String> {
        let mut b = [0u8; 8];
        self.bytes(&mut b[..width])?;
        Ok(u64::from_le_bytes(b))
    }

    /// A value of GGUF type `value_type`.
    fn value(&mut self, value_type: u32) -> Result<Value, String> {
        Ok(match value_type {
            0 | 7 => Value::Integer(self.uint(1)? as i64),
            1 => Value::Integer(i64::from(self.uint(1)? as u8 as i8)),
            2 => Value::Integer(self.uint(2)? as i64),
            3 => Value::Integer(i64::from(self.uint(2)? as u16 as i16)),
            4 => Value::Integer(self.uint(4)? as i64),
            5 => Value::Integer(i64::from(self.uint(4)? as u32 as i32)),
            10 | 11 => Value::Integer(self.uint(8)? as i64),
            6 | 12 => {
                self.uint(if value_type == 6 { 4 } else { 8 })?;
                Value::Other
            }
            8 => Value::Text(self.string()?),
            9 => {
                let item_type = self.u32()?;
                let count = self.count("array items", 1)?;
                let integers = matches!(item_type, 0..=5 | 10 | 11);
                let mut values = Vec::new();
                for _ in 0..count {
                    match self.value(item_type)? {
                        Value::Integer(n) if integers => values.push(n),
                        _ => {}
                    }
                }
                if integers {
                    Value::Integers(values)
                } else {
                    Value::Other
                }
            }
            other => return Err(format!("unknown value type {other}")),
        })
    }
}

/// The storage type GGML numbers `code`.
fn ggml_kind(code: u32) -> Result<GgmlDType, String> {
    Ok(match code {
        0 => GgmlDType::F32,
        1 => GgmlDType::F16,
        2 => GgmlDType::Q4_0,
        3 => GgmlDType::Q4_1,
        6 => GgmlDType::Q5_0,
        7 => GgmlDType::Q5_1,
        8 => GgmlDType::Q8_0,
        10 => GgmlDType::Q2K,
        11 => GgmlDType::Q3K,
        12 => GgmlDType::Q4K,
        13 => GgmlDType::Q5K,
        14 => GgmlDType::Q6K,
        30 => GgmlDType::BF16,
        16..=23 | 29 => {
            return Err(format!(
                "GGML type {code} (an IQ quantization) cannot be read: use a Q or K quantization"
            ))
        }
        34 | 35 => return Err(format!("GGML type {code} (a ternary quantization) cannot be read")),
        other => return Err(format!("unknown GGML type {other}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A GGUF file by hand: `metadata` (key, type, value bytes), then `tensors` (name, GGML
    /// dims, type code, offset), then `data` at 32 bytes' alignment.
    fn gguf(
        version: u32,
        metadata: &[(&str, u32, Vec<u8>)],
        tensors: &[(&str, &[u64], u32, u64)],
        data: &[u8],
    ) -> Vec<u8> {
        let text = |s: &str| [(s.len() as u64).to_le_bytes().to_vec(), s.as_bytes().to_vec()].concat();
        let mut out = b"GGUF".to_vec();
        out.extend(version.to_le_bytes());
        out.extend((tensors.len() as u64).to_le_bytes());
        out.extend((metadata.len() as u64).to_le_bytes());
        for (key, kind, value) in metadata {
            out.extend(text(key));
            out.extend(kind.to_le_bytes());
            out.extend(value);
        }
        for (name, dims, kind, offset) in tensors {
            out.extend(text(name));
            out.extend((dims.len() as u32).to_le_bytes());
            dims.iter().for_each(|d| out.extend(d.to_le_bytes()));
            out.extend(kind.to_le_bytes());
            out.extend(offset.to_le_bytes());
        }
        out.resize(out.len().next_multiple_of(32), 0);
        out.extend(data);
        out
    }

    fn open(bytes: &[u8]) -> Result<GgufFile, String> {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(bytes).unwrap();
        GgufFile::open(file.path())
    }

    fn text_value(s: &str) -> Vec<u8> {
        [(s.len() as u64).to_le_bytes().to_vec(), s.as_bytes().to_vec()].concat()
    }

    fn int32_array(values: &[i32]) -> Vec<u8> {
        let mut out = 5u32.to_le_bytes().to_vec();
        out.extend((values.len() as u64).to_le_bytes());
        values.iter().for_each(|v| out.extend(v.to_le_bytes()));
        out
    }

    #[test]
    fn tensors_read_in_pytorchs_order_with_a_converters_original_shape() {
        let values: Vec<u8> = (0..12)
            .flat_map(|i| half::f16::from_f32(i as f32).to_le_bytes())
            .collect();
        // Q8_0: one block of 32 values, scale 0.5, quants -16..16.
        let mut block = half::f16::from_f32(0.5).to_le_bytes().to_vec();
        block.extend((0..32).map(|i| (i as i8 - 16) as u8));
        let data = [values.clone(), vec![0; 8], block].concat();
        let metadata = [
            ("general.architecture", 8, text_value("sdxl")),
            ("comfy.gguf.orig_shape.kernel", 9, int32_array(&[2, 2, 2, 4])),
        ];
        let tensors = [("matrix", &[4u64, 3][..], 1, 0), ("kernel", &[32u64][..], 8, 32)];
        let file = open(&gguf(3, &metadata, &tensors, &data)).unwrap();
        assert_eq!(file.architecture(), Some("sdxl"));
        assert_eq!(file.shape("matrix"), Some(&[3, 4][..]), "GGML's dims reversed");
        let matrix = file.read("matrix").unwrap();
        assert_eq!(matrix.dtype(), DType::F16);
        assert_eq!(
            matrix.to_dtype(DType::F32).unwrap().to_vec2::<f32>().unwrap()[2],
            [8.0, 9.0, 10.0, 11.0]
        );
        let kernel = file.read("kernel").unwrap();
        assert_eq!(kernel.dims(), &[2, 2, 2, 4], "the converter's original shape");
        let flat = kernel.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!((flat[0], flat[31]), (-8.0, 7.5), "scale times quant");
        assert_eq!(
            file.type_counts(),
            vec![("F16".to_string(), 1), ("Q8_0".to_string(), 1)]
        );
    }

    #[test]
    fn broken_and_lying_files_are_refused_with_what_is_wrong() {
        let refused = |bytes: &[u8]| open(bytes).err().unwrap();
        assert!(refused(b"GGU").contains("too short to be a GGUF file"));
        assert!(refused(b"PK\x03\x04 a zip").contains("not a GGUF file"));
        assert!(refused(&gguf(1, &[], &[], &[])).contains("GGUF version 1 cannot be read"));
        let mut lying = gguf(3, &[], &[], &[]);
        lying[8..16].copy_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(refused(&lying).contains("claims 1152921504606846976 tensors"));
        let long_key = [("k", 8, (u64::MAX).to_le_bytes().to_vec())];
        assert!(refused(&gguf(3, &long_key, &[], &[])).contains("more than the file holds"));
        let past_end = [("w", &[32u64][..], 0, 0)];
        assert!(refused(&gguf(3, &[], &past_end, &[0; 16])).contains("lie past the file's end"));
        let iq = [("w", &[256u64][..], 16, 0)];
        assert!(refused(&gguf(3, &[], &iq, &[])).contains("an IQ quantization"));
        let rows = [("w", &[48u64][..], 8, 0)];
        assert!(refused(&gguf(3, &[], &rows, &[0; 64])).contains("do not split into Q8_0 blocks of 32"));
        let five = [("w", &[1u64, 1, 1, 1, 1][..], 0, 0)];
        assert!(refused(&gguf(3, &[], &five, &[0; 4])).contains("5 dimensions"));
        let wrong = [("comfy.gguf.orig_shape.w", 9, int32_array(&[3, 3]))];
        let tensor = [("w", &[8u64][..], 0, 0)];
        assert!(
            refused(&gguf(3, &wrong, &tensor, &[0; 32])).contains("original shape [3, 3] does not hold its 8 values")
        );
        let alignment = [("general.alignment", 4, 3u32.to_le_bytes().to_vec())];
        assert!(refused(&gguf(3, &alignment, &[], &[])).contains("not a power of two"));
    }
}
