//! The split loaders in a workflow. UNETLoader: the UNet kept as stored runs as the checkpoint's
//! own, kept in 8-bit floats it changes the image (its weights are rounded, and with
//! `fp8_e4m3fn_fast` the linear layers' inputs too), and a weight dtype
//! that cannot be kept is refused by name before any sampling. VAELoader and DualCLIPLoader:
//! the checkpoint's VAE and text encoders loaded on their own work as the checkpoint's.

use super::workflows::{first_image, run_error};

/// `sdxl_txt2img.yaml` sampling with the built-in tiny UNet loaded by UNETLoader with
/// `weight_dtype`, or with the checkpoint's own UNet when `None`.
fn workflow(weight_dtype: Option<&str>) -> String {
    let text = std::fs::read_to_string("workflows/sdxl_txt2img.yaml").unwrap();
    let Some(weight_dtype) = weight_dtype else {
        return text;
    };
    let node = format!(
        "nodes:\n  unet:\n    type: UNETLoader\n    params: {{ unet_name: builtin:tiny-sdxl, weight_dtype: {weight_dtype} }}\n"
    );
    text.replace("ckpt.model", "unet.model").replacen("nodes:\n", &node, 1)
}

fn pixels(weight_dtype: Option<&str>) -> Vec<u8> {
    first_image("unet.yaml", &workflow(weight_dtype))
}

#[test]
fn a_unet_kept_as_stored_samples_as_the_checkpoints_and_one_kept_in_eight_bits_is_rounded() {
    let checkpoint = pixels(None);
    assert!(
        pixels(Some("default")) == checkpoint,
        "the UNet as stored differs from the checkpoint's"
    );
    let fp8 = pixels(Some("fp8_e4m3fn"));
    assert!(fp8 != checkpoint, "8-bit weights changed nothing");
    let fast = pixels(Some("fp8_e4m3fn_fast"));
    let differing = fast.iter().zip(&fp8).filter(|(a, b)| a != b).count();
    assert!(
        differing > 0 && fast.len() == fp8.len(),
        "fp8_e4m3fn_fast rounds the linear layers' inputs to 8 bits too"
    );
}

#[test]
fn fp8_e5m2_is_refused_by_name_before_sampling() {
    let error = run_error("e5m2.yaml", &workflow(Some("fp8_e5m2")));
    assert!(
        error.contains("unet") && error.contains("weight_dtype") && error.contains("fp8_e4m3fn"),
        "{error}"
    );
}

#[test]
fn a_vae_loaded_on_its_own_decodes_as_the_checkpoints() {
    let text = std::fs::read_to_string("workflows/sdxl_txt2img.yaml").unwrap();
    assert!(
        text.contains("vae: ckpt.vae"),
        "the workflow decodes with the checkpoint's VAE"
    );
    let loaded = text.replace("vae: ckpt.vae", "vae: vae.vae").replacen(
        "nodes:\n",
        "nodes:\n  vae:\n    type: VAELoader\n    params: { vae_name: builtin:tiny-sdxl }\n",
        1,
    );
    let decode = |workflow: &str| first_image("vae.yaml", workflow);
    assert!(decode(&loaded) == decode(&text), "the VAE on its own decoded otherwise");
}

#[test]
fn text_encoders_loaded_on_their_own_encode_as_the_checkpoints() {
    let text = std::fs::read_to_string("workflows/sdxl_txt2img.yaml").unwrap();
    let loaded = text.replace("clip: ckpt.clip", "clip: clip.clip").replacen(
        "nodes:\n",
        "nodes:\n  clip:\n    type: DualCLIPLoader\n    params: { clip_name1: builtin:tiny-sdxl, clip_name2: builtin:tiny-sdxl, type: sdxl }\n",
        1,
    );
    assert!(
        first_image("clip.yaml", &loaded) == first_image("plain.yaml", &text),
        "the text encoders on their own encoded otherwise"
    );
}

#[test]
fn text_encoders_on_the_cpu_alone_are_refused_by_name() {
    let text = std::fs::read_to_string("workflows/sdxl_txt2img.yaml").unwrap();
    let loaded = text.replace("clip: ckpt.clip", "clip: clip.clip").replacen(
        "nodes:\n",
        "nodes:\n  clip:\n    type: DualCLIPLoader\n    params: { clip_name1: builtin:tiny-sdxl, clip_name2: builtin:tiny-sdxl, device: cpu }\n",
        1,
    );
    let error = run_error("clip.yaml", &loaded);
    assert!(error.contains("device") && error.contains("--device cpu"), "{error}");
}

/// A models folder with a safetensors UNet and GGUF files of other architectures.
fn unet_files() -> tempfile::TempDir {
    use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
    let models = tempfile::tempdir().unwrap();
    let weight =
        candle_core::Tensor::zeros((320, 4, 3, 3), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
    let tensors = std::collections::HashMap::from([("input_blocks.0.0.weight".to_string(), weight.clone())]);
    candle_core::safetensors::save(&tensors, models.path().join("unet.safetensors")).unwrap();
    let quantized = QTensor::quantize(&weight, GgmlDType::F32).unwrap();
    for (file, architecture) in [("flux.gguf", "flux"), ("sd15.gguf", "sd1")] {
        let architecture = gguf_file::Value::String(architecture.into());
        let mut out = std::fs::File::create(models.path().join(file)).unwrap();
        gguf_file::write(
            &mut out,
            &[("general.architecture", &architecture)],
            &[("input_blocks.0.0.weight", &quantized)],
        )
        .unwrap();
    }
    std::fs::write(models.path().join("short.gguf"), b"GGUF\x03\x00").unwrap();
    models
}

#[test]
fn unet_loader_gguf_names_what_it_cannot_load() {
    let models = unet_files();
    let text = std::fs::read_to_string("workflows/sdxl_txt2img.yaml").unwrap();
    let refused = |file: &str| {
        let node = format!("nodes:\n  unet:\n    type: UnetLoaderGGUF\n    params: {{ unet_name: {file} }}\n");
        let text = text.replace("ckpt.model", "unet.model").replacen("nodes:\n", &node, 1);
        super::workflows::run_error_with_models(&format!("{file}.yaml"), &text, models.path())
    };
    for (file, expected) in [
        ("unet.safetensors", "is not a GGUF file; UNETLoader reads"),
        ("flux.gguf", "architecture \"flux\", not an SDXL UNet"),
        ("sd15.gguf", "Stable Diffusion 1.x, not SDXL"),
        ("short.gguf", "the header ends early"),
        ("absent.gguf", "absent.gguf"),
    ] {
        let error = refused(file);
        assert!(error.contains(expected) && error.contains("unet"), "{file}: {error}");
    }
}
