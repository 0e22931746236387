//! LoRAs in a workflow: one changes the image, at strength 0 it leaves the image as it was, and
//! chained ones add up.

use super::workflows::run_in;
use swapgraph_node_api::FileRoots;

/// `sdxl_txt2img.yaml` with `loras` (file, strength_model, strength_clip) chained between the
/// checkpoint and the nodes that use it.
fn with_loras(loras: &[(&str, f64, f64)]) -> String {
    let text = std::fs::read_to_string("workflows/sdxl_txt2img.yaml").unwrap();
    let last = match loras.len() {
        0 => "ckpt".to_string(),
        count => format!("lora{count}"),
    };
    let mut text = text
        .replace("ckpt.model", &format!("{last}.model"))
        .replace("ckpt.clip", &format!("{last}.clip"));
    let mut nodes = String::new();
    for (index, (file, model, clip)) in loras.iter().enumerate() {
        let from = if index == 0 {
            "ckpt".to_string()
        } else {
            format!("lora{index}")
        };
        nodes += &format!(
            "  lora{}:\n    type: LoraLoader\n    inputs: {{ model: {from}.model, clip: {from}.clip }}\n    \
             params: {{ lora_name: {file}, strength_model: {model}, strength_clip: {clip} }}\n",
            index + 1
        );
    }
    text = text.replacen("nodes:\n", &format!("nodes:\n{nodes}"), 1);
    text
}

fn pixels(loras: &[(&str, f64, f64)]) -> Vec<u8> {
    let out = tempfile::tempdir().unwrap();
    let files = FileRoots {
        models: "nodes/sdxl/fixtures".into(),
        outputs: out.path().to_path_buf(),
        ..FileRoots::default()
    };
    let written = run_in("lora.yaml", with_loras(loras).as_bytes(), files);
    image::open(&written[0]).unwrap().to_rgb8().into_raw()
}

#[test]
fn a_lora_changes_the_image_strength_zero_leaves_it_and_chained_loras_add_up() {
    let plain = pixels(&[]);
    let kohya = pixels(&[("lora_kohya.safetensors", 0.8, 0.6)]);
    assert!(kohya != plain, "the LoRA changed nothing");
    assert!(
        pixels(&[("lora_kohya.safetensors", 0.0, 0.0)]) == plain,
        "a LoRA at strength 0 changed the image"
    );
    let chained = pixels(&[
        ("lora_kohya.safetensors", 0.8, 0.6),
        ("lora_peft.safetensors", 1.0, 1.0),
    ]);
    assert!(chained != kohya && chained != plain, "the second LoRA changed nothing");
}
