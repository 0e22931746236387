//! The example workflows run end to end on the built-in tiny models: what they save, that a
//! saved image carries a workflow that plans again, and that a seed gives the same image every
//! run.

use super::fixtures::{packs, run};
use std::path::{Path, PathBuf};
use swapgraph::exec::{Engine, Event, RunOptions};
use swapgraph_node_api::FileRoots;

fn run_workflow(path: &Path, output_dir: &Path) -> Vec<PathBuf> {
    run_text(&path.display().to_string(), &std::fs::read(path).unwrap(), output_dir)
}

fn run_text(name: &str, bytes: &[u8], output_dir: &Path) -> Vec<PathBuf> {
    let files = FileRoots {
        outputs: output_dir.to_path_buf(),
        ..FileRoots::default()
    };
    run_in(name, bytes, files)
}

/// An input folder holding the example workflows' photo where they look for it, for tests
/// that add input files of their own beside it.
pub fn inputs_with_the_photo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("workflows/inputs")).unwrap();
    let photo = "workflows/inputs/astronaut.png";
    std::fs::copy(photo, dir.path().join(photo)).unwrap();
    dir
}

/// The pixels of the first image the workflow `text` saves, run on the built-in models.
pub fn first_image(name: &str, text: &str) -> Vec<u8> {
    let out = tempfile::tempdir().unwrap();
    let files = FileRoots {
        outputs: out.path().to_path_buf(),
        ..FileRoots::default()
    };
    let written = run_in(name, text.as_bytes(), files);
    image::open(&written[0]).unwrap().to_rgb8().into_raw()
}

/// The error that ends the workflow `text`, after checking that it saved nothing.
pub fn run_error(name: &str, text: &str) -> String {
    run_error_with_models(name, text, &FileRoots::default().models)
}

/// [`run_error`] with model names resolved in `models`.
pub fn run_error_with_models(name: &str, text: &str, models: &Path) -> String {
    let engine = Engine::new(packs());
    let plan =
        swapgraph::prepare(name, text.as_bytes(), &[], engine.registry()).unwrap_or_else(|report| panic!("{report}"));
    let out = tempfile::tempdir().unwrap();
    let options = RunOptions {
        files: FileRoots {
            models: models.to_path_buf(),
            outputs: out.path().to_path_buf(),
            ..FileRoots::default()
        },
        ..RunOptions::default()
    };
    let error = run(&engine, &plan, &options).0.unwrap_err().to_string();
    assert_eq!(
        std::fs::read_dir(out.path()).unwrap().count(),
        0,
        "{name}: nothing was saved"
    );
    error
}

/// Runs a workflow whose file names resolve in `files`, after rehearsing it as a run on a GPU
/// does: every node rehearses on the stand-ins before it (the CPU states no device needs), and
/// the rehearsal writes nothing.
pub fn run_in(name: &str, bytes: &[u8], files: FileRoots) -> Vec<PathBuf> {
    let engine = Engine::new(packs());
    let plan = swapgraph::prepare(name, bytes, &[], engine.registry()).unwrap_or_else(|report| panic!("{report}"));
    let options = RunOptions {
        files,
        ..RunOptions::default()
    };
    let need = engine.rehearse(&plan, &options);
    assert_eq!(need.stopped, None, "{name}: the rehearsal stopped");
    assert!(need.stages.is_empty(), "{name}: the CPU states no device needs");
    let written = std::fs::read_dir(&options.files.outputs).map_or(0, |entries| entries.count());
    assert_eq!(written, 0, "{name}: the rehearsal wrote nothing");
    let (result, events) = run(&engine, &plan, &options);
    result.unwrap_or_else(|e| panic!("{name}: {e}"));
    events
        .into_iter()
        .filter_map(|event| match event {
            Event::OutputWritten { path, .. } => Some(path),
            _ => None,
        })
        .collect()
}

#[test]
fn every_example_workflow_runs_and_saves_its_outputs() {
    for entry in std::fs::read_dir("workflows").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue; // workflows/inputs holds the reference images
        }
        let out = tempfile::tempdir().unwrap();
        let written = run_workflow(&path, out.path());
        assert!(!written.is_empty(), "{} saved nothing", path.display());
        assert!(written.iter().all(|p| p.starts_with(out.path()) && p.is_file()));
    }
}

#[test]
fn txt2img_is_reproducible_and_embeds_a_runnable_workflow() {
    let workflow = Path::new("workflows/sdxl_txt2img.yaml");
    let (first, second) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = std::fs::read(&run_workflow(workflow, first.path())[0]).unwrap();
    let b = std::fs::read(&run_workflow(workflow, second.path())[0]).unwrap();
    assert_eq!(a, b, "the same seed gave different images");

    let decoded = image::load_from_memory(&a).unwrap().to_rgb8();
    assert_eq!(decoded.dimensions(), (128, 128));
    let pixels = decoded.into_raw();
    // Any change to the numerics of the tiny pipeline shows here.
    assert_matches_reference(&pixels, "txt2img");
    let mean = pixels.iter().map(|&p| f64::from(p)).sum::<f64>() / pixels.len() as f64;
    assert!(mean > 5.0 && mean < 250.0, "the image is flat ({mean})");

    let embedded = swapgraph_image::decode_png_workflow(&a)
        .unwrap()
        .expect("a workflow chunk");
    let plan =
        swapgraph::prepare("embedded.yaml", embedded.as_bytes(), &[], &packs()).unwrap_or_else(|r| panic!("{r}"));
    let original = swapgraph::prepare("original.yaml", &std::fs::read(workflow).unwrap(), &[], &packs()).unwrap();
    assert_eq!(format!("{:?}", plan.summary()), format!("{:?}", original.summary()));
    assert!(embedded.contains("ui:"), "editor positions survive the round trip");
}

#[test]
fn blockswap_gives_the_same_image_as_the_resident_model() {
    let (plain, swapped) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let pixels = |path: &Path, dir: &Path| {
        let written = run_workflow(path, dir);
        image::open(&written[0]).unwrap().to_rgb8().into_raw()
    };
    let resident = pixels(Path::new("workflows/sdxl_txt2img.yaml"), plain.path());
    let streamed = pixels(Path::new("workflows/sdxl_blockswap.yaml"), swapped.path());
    assert!(resident == streamed, "BlockSwap changed the image");
}

#[test]
fn instantid_steers_the_image_and_blockswap_of_unet_and_controlnet_keeps_it() {
    let text = std::fs::read_to_string("workflows/instantid_blockswap.yaml").unwrap();
    let pixels = |name: &str, text: &str| {
        let dir = tempfile::tempdir().unwrap();
        let written = run_text(name, text.as_bytes(), dir.path());
        image::open(&written[0]).unwrap().to_rgb8().into_raw()
    };
    let streamed = pixels("instantid_blockswap.yaml", &text);
    assert_matches_reference(&streamed, "instantid");
    let resident_text = text.replace("  swap:\n", "  swap:\n    enabled: false\n");
    assert_ne!(resident_text, text);
    let resident = pixels("resident", &resident_text);
    assert!(
        streamed == resident,
        "streaming the UNet and IdentityNet changed the image"
    );
    let plain_text = text.replace(
        "positive: apply.positive, negative: apply.negative",
        "positive: pos.conditioning, negative: neg.conditioning",
    );
    assert_ne!(plain_text, text);
    let plain = pixels("without InstantID", &plain_text);
    let changed = plain.iter().zip(&streamed).filter(|(a, b)| a != b).count();
    assert!(
        changed > plain.len() / 10,
        "InstantID changed only {changed} of {} values",
        plain.len()
    );
}

#[test]
fn an_instantid_mask_limits_the_face_to_its_region_and_weighs_the_positive_conditioning() {
    let text = std::fs::read_to_string("workflows/instantid_blockswap.yaml").unwrap();
    let dir = inputs_with_the_photo();
    let pixels = |name: &str, text: &str| {
        let out = tempfile::tempdir().unwrap();
        let files = FileRoots {
            inputs: dir.path().to_path_buf(),
            outputs: out.path().to_path_buf(),
            ..FileRoots::default()
        };
        let written = run_in(name, text.as_bytes(), files);
        image::open(&written[0]).unwrap().to_rgb8().into_raw()
    };
    let sampled_with = |text: &str, positive: &str, negative: &str| {
        text.replace(
            "positive: apply.positive, negative: apply.negative",
            &format!("positive: {positive}, negative: {negative}"),
        )
    };
    // The masked positive conditioning beside the unmasked text, as ComfyUI_InstantID's masks
    // are used.
    let beside_the_text = |text: &str| {
        sampled_with(text, "both.conditioning", "apply.negative").replacen(
            "nodes:\n",
            "nodes:\n  both: { type: ConditioningCombine, inputs: { conditioning_1: apply.positive, conditioning_2: pos.conditioning } }\n",
            1,
        )
    };
    let with_mask = |name: &str, paint: &dyn Fn(u32) -> u8, sampled: &dyn Fn(&str) -> String| {
        let path = format!("{name}.png");
        image::RgbImage::from_fn(96, 64, |x, _| image::Rgb([paint(x), 0, 0]))
            .save(dir.path().join(&path))
            .unwrap();
        let masked = text
            .replace(
                "      negative: neg.conditioning\n    params: { weight",
                "      negative: neg.conditioning\n      mask: region.mask\n    params: { weight",
            )
            .replace(
                "nodes:\n",
                &format!("nodes:\n  region:\n    type: LoadImageMask\n    params: {{ image: {path}, channel: red }}\n"),
            );
        assert!(masked.contains("mask: region.mask"));
        pixels(name, &sampled(&masked))
    };
    let alone = |text: &str| text.to_string();
    // A full mask weighs the positive conditioning by 1 everywhere: the image without a mask
    // (sampled region by region instead of in one batch: the same within rounding).
    let unmasked = pixels("unmasked", &text);
    let everywhere = mean_difference(&with_mask("everywhere", &|_| 255, &alone), &unmasked);
    assert!(everywhere < 0.5, "a full mask changed the image by {everywhere}");
    // An empty one leaves the face conditioning no weight: the text beside it alone (with the
    // negative side's IdentityNet and tokens limited to the same empty mask).
    let text_only = with_mask("text only", &|_| 0, &|masked| {
        sampled_with(masked, "pos.conditioning", "apply.negative")
    });
    let nowhere = mean_difference(&with_mask("nowhere", &|_| 0, &beside_the_text), &text_only);
    assert!(nowhere < 0.5, "an empty mask left the face acting: {nowhere}");
    let left = with_mask("left", &|x| if x < 48 { 255 } else { 0 }, &beside_the_text);
    assert!(
        mean_difference(&left, &text_only) > 1.0 && mean_difference(&left, &unmasked) > 1.0,
        "a half mask acted like no mask or a full one"
    );
}

/// The mean difference between two images' pixels, in levels of 255.
fn mean_difference(a: &[u8], b: &[u8]) -> f64 {
    a.iter().zip(b).map(|(x, y)| f64::from(x.abs_diff(*y))).sum::<f64>() / a.len() as f64
}

/// FNV-1a of image bytes, for snapshots of whole images.
/// Holds a 128x128 image's RGB `pixels` to `tests/engine/references/NAME.png`: within a quarter
/// of a level on average and 4 levels at most, what the CPU's own floating-point paths (AVX2
/// against AVX-512 kernels) leave, while any change to the pipeline's numerics moves far more.
/// `UPDATE_REFERENCES=1` writes the reference instead.
fn assert_matches_reference(pixels: &[u8], name: &str) {
    let path = Path::new("tests/engine/references").join(format!("{name}.png"));
    if std::env::var("UPDATE_REFERENCES").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        image::RgbImage::from_raw(128, 128, pixels.to_vec())
            .unwrap()
            .save(&path)
            .unwrap();
    }
    let reference = image::open(&path)
        .unwrap_or_else(|e| {
            panic!(
                "reference image {}: {e} (UPDATE_REFERENCES=1 writes it)",
                path.display()
            )
        })
        .to_rgb8()
        .into_raw();
    assert_eq!(
        reference.len(),
        pixels.len(),
        "{name}: image size differs from {}",
        path.display()
    );
    let differences: Vec<u8> = reference.iter().zip(pixels).map(|(a, b)| a.abs_diff(*b)).collect();
    let mean = differences.iter().map(|&d| f64::from(d)).sum::<f64>() / differences.len() as f64;
    let largest = differences.iter().copied().max().unwrap_or(0);
    assert!(
        mean <= 0.25 && largest <= 4,
        "{name}: pixels differ from {} by {mean:.3} on average, {largest} at most",
        path.display()
    );
}

#[test]
fn images_and_latents_are_resampled_to_the_sizes_asked_for_and_batches_joined() {
    let size = |path: &Path| image::image_dimensions(path).unwrap();
    let out = tempfile::tempdir().unwrap();
    let second_pass = run_workflow(Path::new("workflows/sdxl_hires_fix.yaml"), out.path());
    assert_eq!(size(&second_pass[0]), (192, 192), "128 px latents upscaled by 1.5");

    let scaled = r#"
version: 1
nodes:
  photo: { type: LoadImage, params: { image: workflows/inputs/astronaut.png } }
  wide: { type: ImageScale, inputs: { image: photo.image }, params: { width: 96, height: 64, crop: center, upscale_method: lanczos } }
  kept: { type: ImageScale, inputs: { image: photo.image }, params: { width: 0, height: 40, upscale_method: area } }
  half: { type: ImageScaleBy, inputs: { image: photo.image }, params: { scale_by: 0.25, upscale_method: bilinear } }
  save_wide: { type: SaveImage, inputs: { images: wide.image }, params: { filename_prefix: wide } }
  save_kept: { type: SaveImage, inputs: { images: kept.image }, params: { filename_prefix: kept } }
  save_half: { type: SaveImage, inputs: { images: half.image }, params: { filename_prefix: half } }
  both: { type: ImageBatch, inputs: { image1: wide.image, image2: half.image } }
  save_both: { type: SaveImage, inputs: { images: both.image }, params: { filename_prefix: both } }
"#;
    let out = tempfile::tempdir().unwrap();
    let mut sizes: Vec<(String, (u32, u32))> = run_text("scaled.yaml", scaled.as_bytes(), out.path())
        .iter()
        .map(|path| (path.file_name().unwrap().to_string_lossy().into_owned(), size(path)))
        .collect();
    sizes.sort();
    assert_eq!(
        sizes,
        [
            ("both_00001.png".to_string(), (96, 64)),
            ("both_00002.png".to_string(), (96, 64)),
            ("half_00001.png".to_string(), (128, 128)),
            ("kept_00001.png".to_string(), (40, 40)),
            ("wide_00001.png".to_string(), (96, 64)),
        ]
    );
    // Lanczos works in 8 bits, which latents cannot take: refused by name.
    let hires = std::fs::read_to_string("workflows/sdxl_hires_fix.yaml").unwrap();
    let lanczos = hires.replacen("upscale_method: bicubic", "upscale_method: lanczos", 1);
    assert_ne!(lanczos, hires, "the workflow names its upscale method");
    let error = run_error("lanczos latents", &lanczos);
    assert!(error.contains("lanczos") && error.contains("latents"), "{error}");
}

#[test]
fn a_zeroed_negative_and_a_repeated_batch_change_what_is_sampled() {
    let text = std::fs::read_to_string("workflows/sdxl_txt2img.yaml").unwrap();
    let zeroed = text
        .replace("negative: neg.conditioning", "negative: zero.conditioning")
        .replace("latent_image: latent.latent", "latent_image: twice.latent")
        .replacen(
            "nodes:\n",
            "nodes:\n  zero: { type: ConditioningZeroOut, inputs: { conditioning: neg.conditioning } }\n  \
             twice: { type: RepeatLatentBatch, inputs: { samples: latent.latent }, params: { amount: 2 } }\n",
            1,
        );
    let out = tempfile::tempdir().unwrap();
    let written = run_text("zeroed.yaml", zeroed.as_bytes(), out.path());
    assert_eq!(written.len(), 2, "a batch of two: {written:?}");
    let pixels = |path: &Path| image::open(path).unwrap().to_rgb8().into_raw();
    let (first, second) = (pixels(&written[0]), pixels(&written[1]));
    assert!(first != second, "each copy of the batch starts from its own noise");
    let plain = tempfile::tempdir().unwrap();
    let usual = run_workflow(Path::new("workflows/sdxl_txt2img.yaml"), plain.path());
    assert!(pixels(&usual[0]) != first, "the zeroed negative changed nothing");
}

#[test]
fn ksampler_advanced_splits_a_schedule_into_parts_that_add_up_to_the_whole() {
    let text = std::fs::read_to_string("workflows/sdxl_txt2img.yaml").unwrap();
    let common = "seed: 42, steps: 8, cfg: 5.0, sampler_name: euler, scheduler: karras";
    let advanced =
        |params: &str| format!("noise_seed: 42, steps: 8, cfg: 5.0, sampler_name: euler, scheduler: karras, {params}");
    let whole = text.replace(
        &format!("type: KSampler\n    inputs: {{ model: ckpt.model, positive: pos.conditioning, negative: neg.conditioning, latent_image: latent.latent }}\n    params: {{ {common}, denoise: 1.0 }}"),
        &format!("type: KSamplerAdvanced\n    inputs: {{ model: ckpt.model, positive: pos.conditioning, negative: neg.conditioning, latent_image: latent.latent }}\n    params: {{ {} }}", advanced("add_noise: enable")),
    );
    assert_ne!(whole, text, "the sampler node was replaced");
    let split = text.replace(
        "latent_image: latent.latent",
        "latent_image: first.latent",
    ).replace(
        "type: KSampler\n",
        "type: KSamplerAdvanced\n",
    ).replace(
        &format!("params: {{ {common}, denoise: 1.0 }}"),
        &format!("params: {{ {} }}", advanced("add_noise: disable, start_at_step: 4")),
    ).replacen(
        "nodes:\n",
        &format!(
            "nodes:\n  first:\n    type: KSamplerAdvanced\n    inputs: {{ model: ckpt.model, positive: pos.conditioning, \
             negative: neg.conditioning, latent_image: latent.latent }}\n    params: {{ {} }}\n",
            advanced("end_at_step: 4, return_with_leftover_noise: enable")
        ),
        1,
    );
    let pixels = |name: &str, yaml: &str| {
        let out = tempfile::tempdir().unwrap();
        let written = run_text(name, yaml.as_bytes(), out.path());
        image::open(&written[0]).unwrap().to_rgb8().into_raw()
    };
    let reference = pixels("plain.yaml", &text);
    assert!(
        pixels("whole.yaml", &whole) == reference,
        "the whole schedule is KSampler's"
    );
    assert!(
        pixels("split.yaml", &split) == reference,
        "steps 0-4 then 4-8 are steps 0-8"
    );

    let past_end = whole.replace("add_noise: enable", "add_noise: enable, start_at_step: 8");
    let engine = swapgraph::exec::Engine::new(super::fixtures::packs());
    let plan = swapgraph::prepare("past_end.yaml", past_end.as_bytes(), &[], engine.registry()).unwrap();
    let need = engine.rehearse(&plan, &swapgraph::exec::RunOptions::default());
    let stopped = need.stopped.expect("refused before any work");
    assert!(stopped.contains("start_at_step 8 is at or past the end"), "{stopped}");
}
