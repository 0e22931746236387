//! Safetensors files read tensor by tensor with positioned reads. Nothing is memory-mapped, so
//! the process holds only the tensors a model has asked for and not yet handed on; the
//! operating system's page cache keeps the file for the next read.

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// The largest header the format allows.
const MAX_HEADER: u64 = 100 << 20;

/// One tensor's entry in a file's header.
struct Entry {
    file: usize,
    dtype: StoredDType,
    shape: Vec<usize>,
    /// Start in the file, in bytes.
    start: u64,
    /// Length in bytes.
    len: usize,
}

/// A dtype the format names; some have no candle counterpart and are refused when read.
#[derive(Clone, Copy)]
enum StoredDType {
    Known(DType),
    /// 8-bit floats with 5 exponent bits: candle has no such dtype, but each is the upper byte
    /// of the f16 of the same value, so they are read as f16, exactly.
    F8E5M2,
    Unsupported(&'static str),
}

/// A header entry as the file spells it.
#[derive(Deserialize)]
struct RawEntry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: (u64, u64),
}

/// One or more safetensors files, their headers read and checked against the files' sizes.
pub(crate) struct SafetensorsFiles {
    files: Vec<(PathBuf, File)>,
    entries: HashMap<String, Entry>,
}

impl SafetensorsFiles {
    /// Opens `paths` and reads their headers.
    ///
    /// # Errors
    /// The path and what is wrong: unreadable, a header that is not one, or an entry whose
    /// dtype is unknown or whose bytes disagree with its shape or lie past the file's end.
    pub(crate) fn open(paths: &[&Path]) -> Result<Self, (PathBuf, String)> {
        let mut files = Vec::new();
        let mut entries = HashMap::new();
        for (index, path) in paths.iter().enumerate() {
            let failed = |message: String| (path.to_path_buf(), message);
            let file = File::open(path).map_err(|e| failed(e.to_string()))?;
            for (name, entry) in read_header(&file, index).map_err(failed)? {
                entries.insert(name, entry);
            }
            files.push((path.to_path_buf(), file));
        }
        Ok(Self { files, entries })
    }

    /// Every tensor's name.
    pub(crate) fn names(&self) -> impl Iterator<Item = &String> {
        self.entries.keys()
    }

    /// The shape of tensor `name`, if the files hold it.
    pub(crate) fn shape(&self, name: &str) -> Option<&[usize]> {
        self.entries.get(name).map(|entry| entry.shape.as_slice())
    }

    /// Reads tensor `name` into host memory, in its stored dtype, with the file's bytes read
    /// straight into the tensor's own buffer.
    ///
    /// # Errors
    /// A tensor the files lack, a dtype candle has no counterpart for, or a failed read.
    pub(crate) fn read(&self, name: &str) -> Result<Tensor, String> {
        let (entry, dtype) = self.entry(name)?;
        if matches!(entry.dtype, StoredDType::F8E5M2) {
            return self.read_widened(entry);
        }
        match dtype {
            DType::U8 => self.read_typed::<u8>(entry),
            DType::U32 => self.read_typed::<u32>(entry),
            DType::I64 => self.read_typed::<i64>(entry),
            DType::F16 => self.read_typed::<half::f16>(entry),
            DType::BF16 => self.read_typed::<half::bf16>(entry),
            DType::F32 => self.read_typed::<f32>(entry),
            DType::F64 => self.read_typed::<f64>(entry),
            DType::F8E4M3 => self.read_typed::<float8::F8E4M3>(entry),
            other => Err(format!("its dtype {other:?} cannot be read")),
        }
    }

    /// Reads tensor `name`'s bytes straight into `target` when the file stores it as `dtype`
    /// (`Ok(false)`, nothing read, when it is stored in another dtype and must be converted).
    ///
    /// # Errors
    /// A tensor the files lack, a `target` of another length, or a failed read.
    pub(crate) fn read_into(&self, name: &str, dtype: DType, target: &mut [u8]) -> Result<bool, String> {
        let (entry, stored) = self.entry(name)?;
        if stored != dtype || matches!(entry.dtype, StoredDType::F8E5M2) {
            return Ok(false);
        }
        if target.len() != entry.len {
            return Err(format!("holds {} bytes, {} were expected", entry.len, target.len()));
        }
        self.read_bytes(entry, target)?;
        Ok(true)
    }

    /// The dtype tensor `name` is stored in, as it reads ([`DType::F16`] for 5-exponent-bit
    /// 8-bit floats); `None` when the files lack it or candle cannot hold it.
    pub(crate) fn dtype(&self, name: &str) -> Option<DType> {
        self.entry(name).ok().map(|(_, dtype)| dtype)
    }

    /// Whether tensor `name` is stored in 8-bit floats (either kind).
    pub(crate) fn is_eight_bit(&self, name: &str) -> bool {
        self.entries
            .get(name)
            .is_some_and(|entry| matches!(entry.dtype, StoredDType::F8E5M2 | StoredDType::Known(DType::F8E4M3)))
    }

    fn entry(&self, name: &str) -> Result<(&Entry, DType), String> {
        let entry = self.entries.get(name).ok_or_else(|| "not in the file".to_string())?;
        match entry.dtype {
            StoredDType::Known(dtype) => Ok((entry, dtype)),
            StoredDType::F8E5M2 => Ok((entry, DType::F16)),
            StoredDType::Unsupported(stored) => Err(format!("its dtype {stored} cannot be read")),
        }
    }

    /// Reads an F8_E5M2 tensor as f16: each value's byte becomes the upper byte of its f16.
    fn read_widened(&self, entry: &Entry) -> Result<Tensor, String> {
        let mut bytes = vec![0u8; entry.len];
        self.read_bytes(entry, &mut bytes)?;
        let values: Vec<half::f16> = bytes
            .into_iter()
            .map(|byte| half::f16::from_bits(u16::from(byte) << 8))
            .collect();
        Tensor::from_vec(values, entry.shape.as_slice(), &Device::Cpu).map_err(|e| e.to_string())
    }

    fn read_typed<T: candle_core::WithDType + bytemuck::Pod>(&self, entry: &Entry) -> Result<Tensor, String> {
        let mut values = bytemuck::zeroed_vec::<T>(entry.len / std::mem::size_of::<T>());
        self.read_bytes(entry, bytemuck::cast_slice_mut(&mut values))?;
        Tensor::from_vec(values, entry.shape.as_slice(), &Device::Cpu).map_err(|e| e.to_string())
    }

    fn read_bytes(&self, entry: &Entry, target: &mut [u8]) -> Result<(), String> {
        let (path, file) = &self.files[entry.file];
        read_exact_at(file, target, entry.start).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// The entries of `file`'s header, checked against its size.
fn read_header(file: &File, index: usize) -> Result<Vec<(String, Entry)>, String> {
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    let mut length = [0u8; 8];
    read_exact_at(file, &mut length, 0).map_err(|_| "too short to be a safetensors file".to_string())?;
    let header_len = u64::from_le_bytes(length);
    if header_len > MAX_HEADER || header_len > size - 8 {
        return Err(format!(
            "not a safetensors file: its header length {header_len} exceeds the file ({size} bytes)"
        ));
    }
    let mut header = vec![0u8; header_len as usize];
    read_exact_at(file, &mut header, 8).map_err(|e| e.to_string())?;
    let raw: HashMap<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| format!("not a safetensors file: its header is not JSON ({e})"))?;
    let data_start = 8 + header_len;
    raw.into_iter()
        .filter(|(name, _)| name != "__metadata__")
        .map(|(name, value)| {
            let raw: RawEntry = serde_json::from_value(value).map_err(|e| format!("tensor \"{name}\": {e}"))?;
            let entry = checked_entry(raw, index, data_start, size).map_err(|e| format!("tensor \"{name}\": {e}"))?;
            Ok((name, entry))
        })
        .collect()
}

/// An entry whose dtype is known and whose bytes match its shape and lie within the file.
fn checked_entry(raw: RawEntry, file: usize, data_start: u64, size: u64) -> Result<Entry, String> {
    let (dtype, element) = stored_dtype(&raw.dtype).ok_or_else(|| format!("unknown dtype \"{}\"", raw.dtype))?;
    let (begin, end) = raw.data_offsets;
    if begin > end || data_start.checked_add(end).is_none_or(|last| last > size) {
        return Err(format!(
            "its bytes {begin}..{end} lie past the file's end ({} bytes of data)",
            size - data_start
        ));
    }
    let elements = raw.shape.iter().try_fold(1u64, |n, &d| n.checked_mul(d as u64));
    if elements.and_then(|n| n.checked_mul(element)) != Some(end - begin) {
        return Err(format!(
            "shape {:?} of {} needs another byte count than its {} bytes",
            raw.shape,
            raw.dtype,
            end - begin
        ));
    }
    Ok(Entry {
        file,
        dtype,
        shape: raw.shape,
        start: data_start + begin,
        len: (end - begin) as usize,
    })
}

/// Dtypes the format names that candle cannot hold, with their sizes in bytes.
const UNSUPPORTED: [(&str, u64); 6] = [("BOOL", 1), ("I8", 1), ("U16", 2), ("I16", 2), ("I32", 4), ("U64", 8)];

/// The dtype the format calls `name`, and its size in bytes.
fn stored_dtype(name: &str) -> Option<(StoredDType, u64)> {
    let known = match name {
        "U8" => DType::U8,
        "U32" => DType::U32,
        "I64" => DType::I64,
        "F16" => DType::F16,
        "BF16" => DType::BF16,
        "F32" => DType::F32,
        "F64" => DType::F64,
        "F8_E4M3" => DType::F8E4M3,
        "F8_E5M2" => return Some((StoredDType::F8E5M2, 1)),
        _ => {
            let (name, size) = UNSUPPORTED.into_iter().find(|(n, _)| *n == name)?;
            return Some((StoredDType::Unsupported(name), size));
        }
    };
    Some((StoredDType::Known(known), known.size_in_bytes() as u64))
}

#[cfg(unix)]
pub(crate) fn read_exact_at(file: &File, buffer: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buffer, offset)
}

#[cfg(windows)]
pub(crate) fn read_exact_at(file: &File, mut buffer: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    while !buffer.is_empty() {
        match std::os::windows::fs::FileExt::seek_read(file, buffer, offset)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            read => {
                buffer = &mut buffer[read..];
                offset += read as u64;
            }
        }
    }
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::io::Write;

    /// Resident pages of mapped files, from the kernel's account of this process.
    fn resident_file_bytes() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("RssFile:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
    }

    #[test]
    fn reading_every_tensor_of_a_file_keeps_none_of_it_resident() {
        const TENSORS: usize = 64;
        const ELEMENTS: usize = 1 << 20;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.safetensors");
        let header: serde_json::Map<String, serde_json::Value> = (0..TENSORS)
            .map(|i| {
                let offsets = [i * ELEMENTS * 4, (i + 1) * ELEMENTS * 4];
                let entry = serde_json::json!({"dtype": "F32", "shape": [ELEMENTS], "data_offsets": offsets});
                (format!("t{i}"), entry)
            })
            .collect();
        let header = serde_json::to_vec(&header).unwrap();
        let mut file = std::io::BufWriter::new(File::create(&path).unwrap());
        file.write_all(&(header.len() as u64).to_le_bytes()).unwrap();
        file.write_all(&header).unwrap();
        for i in 0..TENSORS {
            let values: Vec<u8> = (0..ELEMENTS).flat_map(|j| ((i + j) as f32).to_le_bytes()).collect();
            file.write_all(&values).unwrap();
        }
        file.into_inner().unwrap().sync_all().unwrap();

        let before = resident_file_bytes();
        let files = SafetensorsFiles::open(&[&path]).unwrap();
        for i in 0..TENSORS {
            let tensor = files.read(&format!("t{i}")).unwrap();
            let values = tensor.narrow(0, ELEMENTS - 2, 2).unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(values, [(i + ELEMENTS - 2) as f32, (i + ELEMENTS - 1) as f32]);
        }
        let grown = resident_file_bytes().saturating_sub(before);
        let file_bytes = (TENSORS * ELEMENTS * 4) as u64;
        assert!(
            grown < file_bytes / 8,
            "reading a {file_bytes}-byte file left {grown} bytes of it resident"
        );
    }

    #[test]
    fn eight_bit_floats_read_as_stored_or_e5m2_widened_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("eight.safetensors");
        let e4m3 = [1.0f32, -0.5, 448.0, 0.015625].map(float8::F8E4M3::from_f32);
        // e5m2 is f16's upper byte: 1.0, -2.0, 0.5 and 57344 (its largest).
        let e5m2 = [0x3cu8, 0xc0, 0x38, 0x7b];
        let header = serde_json::json!({
            "a": {"dtype": "F8_E4M3", "shape": [2, 2], "data_offsets": [0, 4]},
            "b": {"dtype": "F8_E5M2", "shape": [4], "data_offsets": [4, 8]},
        });
        let header = serde_json::to_vec(&header).unwrap();
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend(&header);
        bytes.extend(e4m3.iter().map(|v| v.to_bits()));
        bytes.extend(e5m2);
        std::fs::write(&path, bytes).unwrap();
        let files = SafetensorsFiles::open(&[&path]).unwrap();
        let a = files.read("a").unwrap();
        assert_eq!(a.dtype(), DType::F8E4M3);
        let a = a
            .to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(a, [1.0, -0.5, 448.0, 0.015625]);
        let b = files.read("b").unwrap();
        assert_eq!((b.dtype(), files.dtype("b")), (DType::F16, Some(DType::F16)));
        let b = b.to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(b, [1.0, -2.0, 0.5, 57344.0]);
        assert!(files.is_eight_bit("a") && files.is_eight_bit("b"));
        assert!(
            !files.read_into("b", DType::F16, &mut [0; 8]).unwrap(),
            "e5m2 is converted, not copied"
        );
    }
}
