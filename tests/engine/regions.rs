//! Lists of conditionings in a workflow (`workflows/sdxl_regions.yaml`): placed conditionings
//! change the image where and when they apply, a conditioning combined with itself is that
//! conditioning, and adapters on combined conditionings are refused before any work.

use super::workflows::{first_image, run_error};

/// The mean difference between two images' pixels, in levels of 255.
fn mean_difference(a: &[u8], b: &[u8]) -> f64 {
    a.iter().zip(b).map(|(x, y)| f64::from(x.abs_diff(*y))).sum::<f64>() / a.len() as f64
}

#[test]
fn placed_conditionings_change_the_image_and_one_combined_with_itself_does_not() {
    let regions = std::fs::read_to_string("workflows/sdxl_regions.yaml").unwrap();
    let with_regions = first_image("regions", &regions);
    let scene_only = regions.replace("positive: all.conditioning", "positive: scene.conditioning");
    let scene = first_image("scene", &scene_only);
    assert!(
        mean_difference(&with_regions, &scene) > 1.0,
        "the regions changed nothing"
    );
    // Two copies of a conditioning average to it (sampled region by region, where the single
    // one is sampled in one batched pass: the same within rounding).
    let twice = scene_only.replace("positive: scene.conditioning", "positive: twice.conditioning").replacen(
        "nodes:\n",
        "nodes:\n  twice: { type: ConditioningCombine, inputs: { conditioning_1: scene.conditioning, conditioning_2: scene.conditioning } }\n",
        1,
    );
    let difference = mean_difference(&first_image("twice", &twice), &scene);
    assert!(difference < 0.5, "{difference}");
    // The sky prompt's first half of the steps shapes the image: moved to the last 1% it barely
    // acts, and the image differs.
    let at_the_end = regions.replace("start: 0.0, end: 0.5", "start: 0.99, end: 1.0");
    assert!(mean_difference(&first_image("at the end", &at_the_end), &with_regions) > 1.0);
}

#[test]
fn instantid_on_combined_conditionings_is_refused_before_any_work() {
    let main = std::fs::read_to_string("workflows/instantid_blockswap.yaml").unwrap();
    let combined = main.replace("positive: pos.conditioning", "positive: both.conditioning").replacen(
        "nodes:\n",
        "nodes:\n  both: { type: ConditioningCombine, inputs: { conditioning_1: pos.conditioning, conditioning_2: pos.conditioning } }\n",
        1,
    );
    let error = run_error("combined", &combined);
    assert!(
        error.contains("combined or placed") && error.contains("carry a ControlNet or InstantID"),
        "{error}"
    );
}

#[test]
fn a_second_controlnet_on_a_conditioning_is_refused_rather_than_dropping_the_first() {
    // InstantID, then a second ControlNet (as ComfyUI_InstantID's depth example chains them).
    let main = std::fs::read_to_string("workflows/instantid_blockswap.yaml").unwrap();
    let chained = main
        .replace(
            "positive: apply.positive, negative: apply.negative",
            "positive: depth.positive, negative: depth.negative",
        )
        .replacen(
            "nodes:\n",
            "nodes:\n  depth:\n    type: ControlNetApplyAdvanced\n    inputs: { positive: apply.positive, negative: apply.negative, control_net: controlnet.control_net, image: reference.image }\n",
            1,
        );
    let error = run_error("chained", &chained);
    assert!(
        error.contains("depth.positive") && error.contains("carries a ControlNet already"),
        "{error}"
    );
}
