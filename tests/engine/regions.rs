//! Lists of conditionings in a workflow (`workflows/sdxl_regions.yaml`): placed conditionings
//! change the image where and when they apply, a conditioning combined with itself is that
//! conditioning, with InstantID's adapters too. Chained ControlNets on one conditioning add
//! their residuals.

use super::workflows::first_image;

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
fn instantid_on_a_conditioning_combined_with_itself_is_instantid_on_that_conditioning() {
    let main = std::fs::read_to_string("workflows/instantid_blockswap.yaml").unwrap();
    let single = first_image("single", &main);
    // Each of the two copies brings IdentityNet and the face tokens to its region; the regions
    // cover the image and average to the single conditioning's prediction.
    let combined = main.replace("positive: pos.conditioning", "positive: both.conditioning").replacen(
        "nodes:\n",
        "nodes:\n  both: { type: ConditioningCombine, inputs: { conditioning_1: pos.conditioning, conditioning_2: pos.conditioning } }\n",
        1,
    );
    let difference = mean_difference(&first_image("combined", &combined), &single);
    assert!(difference < 0.5, "{difference}");
    // Without InstantID's adapters in the regions the image would be another.
    let plain = main.replace(
        "positive: apply.positive, negative: apply.negative",
        "positive: pos.conditioning, negative: neg.conditioning",
    );
    assert!(mean_difference(&first_image("plain", &plain), &single) > 1.0);
}

/// The main workflow with ControlNets chained after InstantID's IdentityNet (as
/// ComfyUI_InstantID's depth example chains one), each `ControlNetApplyAdvanced` with its
/// strength, the sampler taking the last one's conditionings.
fn chained_after_instantid(strengths: &[f64]) -> String {
    let main = std::fs::read_to_string("workflows/instantid_blockswap.yaml").unwrap();
    let mut nodes = String::new();
    let mut previous = "apply".to_string();
    for (number, strength) in strengths.iter().enumerate() {
        let name = format!("control{number}");
        nodes += &format!(
            "  {name}:\n    type: ControlNetApplyAdvanced\n    inputs: {{ positive: {previous}.positive, negative: {previous}.negative, control_net: controlnet.control_net, image: reference.image }}\n    params: {{ strength: {strength} }}\n"
        );
        previous = name;
    }
    main.replace(
        "positive: apply.positive, negative: apply.negative",
        &format!("positive: {previous}.positive, negative: {previous}.negative"),
    )
    .replacen("nodes:\n", &format!("nodes:\n{nodes}"), 1)
}

#[test]
fn chained_controlnets_add_their_residuals() {
    let alone = first_image("alone", &chained_after_instantid(&[]));
    assert!(
        first_image("zero", &chained_after_instantid(&[0.0])) == alone,
        "a ControlNet at strength 0 adds nothing to the chain"
    );
    let half = first_image("half", &chained_after_instantid(&[0.5]));
    assert!(
        mean_difference(&half, &alone) > 1.0,
        "the chained ControlNet changed nothing"
    );
    // Residuals scale with strength, so two links at a quarter add up to one at a half.
    let quarters = first_image("quarters", &chained_after_instantid(&[0.25, 0.25]));
    let difference = mean_difference(&quarters, &half);
    assert!(difference < 0.5, "{difference}");
}
