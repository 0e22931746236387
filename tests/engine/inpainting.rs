//! Inpainting in a workflow. SetLatentNoiseMask: where the mask is 1 the sampler works as
//! without it, where it is 0 the input latents are kept, and a half mask changes only part.
//! VAEEncodeForInpaint: an empty mask keeps the photo; a mask greys out what it covers before
//! encoding, so the result differs from masking the photo's own latents.

use super::workflows::{inputs_with_the_photo, run_in};
use swapgraph_node_api::FileRoots;

/// `sdxl_img2img.yaml` at full denoise, its encoded photo masked by a mask image painted by
/// `paint` (a column's value from its x), or unmasked when `None`; or, with `decode_input`,
/// the encoded photo decoded without sampling. The image it saves.
fn image(paint: Option<&dyn Fn(u32) -> u8>, decode_input: bool) -> image::RgbImage {
    image_encoded(paint, decode_input, false)
}

/// As [`image`], the mask given to VAEEncodeForInpaint (growing it by 6) when `for_inpaint`.
fn image_encoded(paint: Option<&dyn Fn(u32) -> u8>, decode_input: bool, for_inpaint: bool) -> image::RgbImage {
    let dir = inputs_with_the_photo();
    let mut text = std::fs::read_to_string("workflows/sdxl_img2img.yaml")
        .unwrap()
        .replace("denoise: 0.6", "denoise: 1.0");
    if let Some(paint) = paint {
        image::GrayImage::from_fn(512, 512, |x, _| image::Luma([paint(x)]))
            .save(dir.path().join("mask.png"))
            .unwrap();
        text = text
            .replace("latent_image: encode.latent", "latent_image: masked.latent")
            .replacen(
                "nodes:\n",
                "nodes:\n  region: { type: LoadImageMask, params: { image: mask.png, channel: red } }\n  \
             masked: { type: SetLatentNoiseMask, inputs: { samples: encode.latent, mask: region.mask } }\n",
                1,
            );
    }
    if for_inpaint {
        text = text
            .replace("latent_image: masked.latent", "latent_image: encode.latent")
            .replace(
                "type: VAEEncode\n    inputs: { pixels: photo.image, vae: ckpt.vae }",
                "type: VAEEncodeForInpaint\n    inputs: { pixels: photo.image, vae: ckpt.vae, mask: region.mask }",
            );
        assert!(text.contains("VAEEncodeForInpaint"));
    }
    if decode_input {
        text = text.replace("samples: sample.latent", "samples: encode.latent");
    }
    let out = tempfile::tempdir().unwrap();
    let files = FileRoots {
        inputs: dir.path().to_path_buf(),
        outputs: out.path().to_path_buf(),
        ..FileRoots::default()
    };
    let written = run_in("inpaint.yaml", text.as_bytes(), files);
    image::open(&written[0]).unwrap().to_rgb8()
}

/// Mean and largest difference between two images, in levels of 255.
fn difference(a: &image::RgbImage, b: &image::RgbImage) -> (f64, u8) {
    let pairs = a.as_raw().iter().zip(b.as_raw());
    let total: u64 = pairs.clone().map(|(x, y)| u64::from(x.abs_diff(*y))).sum();
    let largest = pairs.map(|(x, y)| x.abs_diff(*y)).max().unwrap_or(0);
    (total as f64 / a.as_raw().len() as f64, largest)
}

#[test]
fn the_mask_decides_where_the_sampler_changes_the_latents() {
    let unmasked = image(None, false);
    let input = image(None, true);
    assert!(
        image(Some(&|_| 255), false) == unmasked,
        "a full mask changed the sampling"
    );
    let (mean, largest) = difference(&image(Some(&|_| 0), false), &input);
    assert!(
        mean < 0.1 && largest <= 2,
        "an empty mask changed the input: mean {mean}, largest {largest}"
    );
    let half = image(Some(&|x| if x < 256 { 255 } else { 0 }), false);
    assert!(difference(&half, &unmasked).0 > 1.0, "the half mask kept nothing");
    assert!(difference(&half, &input).0 > 1.0, "the half mask changed nothing");
}

#[test]
fn encoding_for_inpainting_keeps_what_the_mask_leaves_and_greys_what_it_covers() {
    let input = image(None, true);
    let (mean, largest) = difference(&image_encoded(Some(&|_| 0), false, true), &input);
    assert!(
        mean < 0.1 && largest <= 2,
        "an empty mask changed the photo: mean {mean}, largest {largest}"
    );
    let half = |x: u32| if x < 256 { 255 } else { 0 };
    let greyed = image_encoded(Some(&half), false, true);
    assert!(greyed != image(Some(&half), false), "greying out changed nothing");
    assert!(difference(&greyed, &input).0 > 1.0, "the mask changed nothing");
}
