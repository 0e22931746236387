//! CLIPSetLastLayer in a workflow: -2 is what SDXL uses without it, -1 changes the image, and a
//! layer before the encoders' first is refused by name before any sampling.

use super::workflows::{first_image, run_error};

/// `sdxl_txt2img.yaml` with both prompts encoded by the checkpoint's encoders stopping at
/// `layer`, or as they are when `None`.
fn workflow(layer: Option<i64>) -> String {
    let text = std::fs::read_to_string("workflows/sdxl_txt2img.yaml").unwrap();
    let Some(layer) = layer else {
        return text;
    };
    let node = format!(
        "nodes:\n  skip:\n    type: CLIPSetLastLayer\n    inputs: {{ clip: ckpt.clip }}\n    params: {{ stop_at_clip_layer: {layer} }}\n"
    );
    text.replace("clip: ckpt.clip", "clip: skip.clip")
        .replacen("nodes:\n", &node, 1)
}

fn pixels(layer: Option<i64>) -> Vec<u8> {
    first_image("skip.yaml", &workflow(layer))
}

#[test]
fn the_second_to_last_layer_is_sdxls_and_the_last_changes_the_image() {
    let plain = pixels(None);
    assert!(pixels(Some(-2)) == plain, "-2 is what SDXL uses without the node");
    assert!(pixels(Some(-1)) != plain, "the last layer changed nothing");
}

#[test]
fn a_layer_before_the_first_is_refused_by_name() {
    let error = run_error("skip.yaml", &workflow(Some(-4)));
    assert!(
        error.contains("skip") && error.contains("stop_at_clip_layer") && error.contains("3 and 3 layers"),
        "{error}"
    );
}
