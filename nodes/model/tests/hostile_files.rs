//! Weight files that lie or break: each is refused with an error naming the file and the
//! problem, quickly, without a huge allocation and without a panic.

use candle_core::{DType, Device, Shape};
use std::path::Path;
use std::time::Instant;
use swapgraph_model::TensorSource;

/// A valid safetensors file with one f32 tensor "w" of shape [2, 3].
fn valid() -> Vec<u8> {
    let header = r#"{"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend(std::iter::repeat_n(0u8, 24));
    bytes
}

fn with_header(header: &str, data: usize) -> Vec<u8> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend(std::iter::repeat_n(0u8, data));
    bytes
}

fn open_error(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    let started = Instant::now();
    let result = TensorSource::open(&[&path]);
    assert!(started.elapsed().as_secs_f64() < 1.0, "{name}: refusing took too long");
    match result {
        Ok(source) => source
            .load("w", &Shape::from((2, 3)), DType::F32, &Device::Cpu)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_else(|| panic!("{name} was accepted")),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_valid_file_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("valid.safetensors");
    std::fs::write(&path, valid()).unwrap();
    let source = TensorSource::open(&[&path]).unwrap();
    let tensor = source
        .load("w", &Shape::from((2, 3)), DType::F32, &Device::Cpu)
        .unwrap();
    assert_eq!(tensor.dims(), [2, 3]);
}

#[test]
fn broken_safetensors_files_are_refused_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let full = valid();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated.safetensors", full[..full.len() - 10].to_vec()),
        ("empty.safetensors", Vec::new()),
        ("huge_header.safetensors", {
            let mut bytes = u64::MAX.to_le_bytes().to_vec();
            bytes.extend_from_slice(b"{}");
            bytes
        }),
        ("header_past_end.safetensors", {
            let mut bytes = (1u64 << 40).to_le_bytes().to_vec();
            bytes.extend_from_slice(b"{}");
            bytes
        }),
        (
            "offsets_past_end.safetensors",
            with_header(
                r#"{"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,4000000000]}}"#,
                24,
            ),
        ),
        (
            "offsets_disagree_with_shape.safetensors",
            with_header(r#"{"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}}"#, 20),
        ),
        ("not_json.safetensors", with_header("this is not json", 0)),
        (
            "unknown_dtype.safetensors",
            with_header(r#"{"w":{"dtype":"Q9","shape":[2,3],"data_offsets":[0,24]}}"#, 24),
        ),
    ];
    for (name, bytes) in cases {
        let error = open_error(dir.path(), name, &bytes);
        assert!(
            error.contains(name),
            "{name}: the error does not name the file: {error}"
        );
    }
}

#[test]
fn a_tensor_of_another_shape_names_the_key_and_both_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shape.safetensors");
    std::fs::write(&path, valid()).unwrap();
    let source = TensorSource::open(&[&path]).unwrap();
    let error = source
        .load("w", &Shape::from((3, 2)), DType::F32, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("\"w\"") && error.contains("[2, 3]") && error.contains("[3, 2]"),
        "{error}"
    );
    let missing = source
        .load("v", &Shape::from((2, 3)), DType::F32, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(missing.contains("no tensor \"v\""), "{missing}");
}

#[test]
fn a_tensor_of_a_dtype_candle_cannot_hold_is_refused_when_read_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("int32.safetensors");
    let header = r#"{"w":{"dtype":"I32","shape":[2,3],"data_offsets":[0,24]},"v":{"dtype":"F32","shape":[2,3],"data_offsets":[24,48]}}"#;
    std::fs::write(&path, with_header(header, 48)).unwrap();
    let source = TensorSource::open(&[&path]).unwrap();
    let error = source
        .load("w", &Shape::from((2, 3)), DType::F32, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("int32.safetensors") && error.contains("\"w\"") && error.contains("I32"),
        "{error}"
    );
    let other = source.load("v", &Shape::from((2, 3)), DType::F32, &Device::Cpu);
    assert!(other.is_ok(), "the file's other tensors still load");
}
