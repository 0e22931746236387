//! Latent batches: a latent taken out of a batch with `LatentFromBatch` starts from the noise it
//! had in the batch (ComfyUI's batch numbers), so one image of a batch can be made again alone.

use super::workflows::run_in;
use swapgraph_node_api::FileRoots;

/// `sdxl_txt2img.yaml` at 64x64 with a batch of `batch` and `between` (YAML nodes) between the
/// empty latents and the sampler, whose latents input they feed as `pick.latent`.
fn workflow(batch: usize, between: &str) -> String {
    let text = std::fs::read_to_string("workflows/sdxl_txt2img.yaml").unwrap().replace(
        "width: 128, height: 128, batch_size: 1",
        &format!("width: 64, height: 64, batch_size: {batch}"),
    );
    if between.is_empty() {
        return text;
    }
    text.replace("latent_image: latent.latent", "latent_image: pick.latent")
        .replacen("nodes:\n", &format!("nodes:\n{between}"), 1)
}

/// Every image the workflow saves, in order.
fn images(name: &str, text: &str) -> Vec<Vec<u8>> {
    let out = tempfile::tempdir().unwrap();
    let files = FileRoots {
        outputs: out.path().to_path_buf(),
        ..FileRoots::default()
    };
    let mut written = run_in(name, text.as_bytes(), files);
    written.sort();
    written
        .iter()
        .map(|path| image::open(path).unwrap().to_rgb8().into_raw())
        .collect()
}

fn largest_difference(a: &[u8], b: &[u8]) -> u8 {
    a.iter().zip(b).map(|(a, b)| a.abs_diff(*b)).max().unwrap_or(0)
}

#[test]
fn a_latent_taken_from_a_batch_is_sampled_as_it_was_in_the_batch() {
    let batch = images("batch.yaml", &workflow(4, ""));
    assert_eq!(batch.len(), 4);
    let pick = "  pick:\n    type: LatentFromBatch\n    inputs: { samples: latent.latent }\n    params: { batch_index: 2, length: 1 }\n";
    let third = images("third.yaml", &workflow(4, pick));
    assert_eq!(third.len(), 1);
    // The same arithmetic on a batch of one rounds a little differently.
    assert!(
        largest_difference(&third[0], &batch[2]) <= 2,
        "the third image was sampled otherwise"
    );
    let alone = images("alone.yaml", &workflow(1, ""));
    assert!(
        largest_difference(&alone[0], &batch[2]) > 2,
        "a batch of one starts from the batch's first noise"
    );
    assert!(largest_difference(&alone[0], &batch[0]) <= 2);

    // Repeated, the numbers run on: latents 1 and 2, then 3 and 4, of a batch of five.
    let repeat = "  pick:\n    type: RepeatLatentBatch\n    inputs: { samples: two.latent }\n    params: { amount: 2 }\n  two:\n    type: LatentFromBatch\n    inputs: { samples: latent.latent }\n    params: { batch_index: 1, length: 2 }\n";
    let five = images("five.yaml", &workflow(5, ""));
    let repeated = images("repeated.yaml", &workflow(5, repeat));
    assert_eq!(repeated.len(), 4);
    for (image, number) in repeated.iter().zip(1..) {
        assert!(largest_difference(image, &five[number]) <= 2, "image {number}");
    }
}
