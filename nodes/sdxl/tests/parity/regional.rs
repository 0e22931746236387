//! Lists of conditionings (combined, placed in an area, masked, limited to part of the
//! schedule) weighed by the denoiser as ComfyUI's sampler weighs them, on the tiny UNet against
//! the fixture's transcription of ComfyUI's `get_area_and_mult`, weighted sum and
//! `create_cond_with_same_area_if_none`.

use crate::{assert_close_to, fixture, load_cases};
use candle_core::{DType, Device, Tensor};
use swapgraph_model::{ResidentStore, TensorSource};
use swapgraph_sdxl::conditioning::{Area, Conditioning, Placement, PlacementMask};
use swapgraph_sdxl::sampling::{regions, Denoiser, DiscreteSchedule, RegionalDenoiser, TextConditioning};
use swapgraph_sdxl::unet::{UNet, UNetConfig};

#[test]
fn combined_placed_and_masked_conditionings_are_weighed_as_comfyui_weighs_them() {
    let inputs = load_cases("sampling_cases.safetensors");
    let cases = load_cases("regional_cases.safetensors");
    let unet = UNet::new(UNetConfig::tiny()).unwrap();
    let source = TensorSource::open(&[&fixture("unet_tiny.safetensors")]).unwrap();
    let store = ResidentStore::load(unet.units().to_vec(), &source, DType::F32, &Device::Cpu).unwrap();
    let schedule = DiscreteSchedule::sdxl();
    let time_ids = inputs["sample.time_ids"].clone();
    let text = |context: &str, pooled: &str, cases: &std::collections::HashMap<String, Tensor>| {
        Conditioning::text(cases[context].clone(), cases[pooled].clone(), None)
    };
    let first = text("sample.positive", "sample.pooled_positive", &inputs);
    let other = text("second_context", "second_pooled", &cases);
    let negative = text("sample.negative", "sample.pooled_negative", &inputs);
    let placed = |c: &Conditioning, placement: Placement| Conditioning { placement, ..c.clone() };
    let scalar = |name: &str| cases[name].to_vec1::<f32>().unwrap()[0] as f64;
    let denoise = |positive: Vec<Conditioning>, sigma: f64| {
        let x = &cases["x"];
        let (positive, negative) = regions(
            (&positive, std::slice::from_ref(&negative)),
            |c| {
                Ok(TextConditioning {
                    context: c.context.clone(),
                    pooled: c.pooled.clone(),
                    time_ids: time_ids.clone(),
                })
            },
            x.dims4().unwrap(),
            &schedule,
            &Device::Cpu,
        )
        .unwrap();
        let mut denoiser = RegionalDenoiser {
            unet: &unet,
            store: &store,
            schedule: &schedule,
            positive,
            negative,
            cfg: 5.0,
        };
        denoiser.denoise(x, sigma).unwrap()
    };
    let sigma = scalar("sigma");
    let area = |width, height, x, y, strength| Placement {
        area: Some(Area::Pixels { width, height, x, y }),
        strength,
        ..Placement::default()
    };
    // ConditioningCombine of the whole image and an area at the right edge (the negative side
    // gets one of the same area), then an area inside, feathered on every side.
    let combined = denoise(vec![first.clone(), placed(&other, area(32, 128, 64, 0, 0.7))], sigma);
    assert_close_to("combined", &combined, &cases["combined"], 1e-5);
    let inner = denoise(vec![first.clone(), placed(&other, area(64, 64, 32, 40, 1.0))], sigma);
    assert_close_to("inner area", &inner, &cases["inner_area"], 1e-5);
    let small = denoise(vec![first.clone(), placed(&other, area(64, 32, 32, 48, 1.5))], sigma);
    assert_close_to("small area", &small, &cases["small_area"], 1e-5);
    // A mask, resampled to the latents and scaled by its strength.
    let mask = Placement {
        mask: Some(PlacementMask {
            values: cases["mask"].clone(),
            strength: 0.8,
            area_to_bounds: false,
        }),
        ..Placement::default()
    };
    let masked = denoise(vec![placed(&first, mask), other.clone()], sigma);
    assert_close_to("masked", &masked, &cases["masked"], 1e-5);
    // ConditioningSetTimestepRange(0.5, 1): left out while the noise is above the half-way sigma.
    let late_half = Placement {
        percent: Some((0.5, 1.0)),
        ..Placement::default()
    };
    for when in ["late", "early"] {
        let at = scalar(&format!("range_{when}_sigma"));
        let ranged = denoise(vec![first.clone(), placed(&other, late_half.clone())], at);
        assert_close_to(when, &ranged, &cases[&format!("range_{when}")], 1e-5);
    }
    // The placed conditioning changed the prediction (the test can tell them apart).
    let plain = denoise(vec![first.clone()], sigma);
    let moved = (&combined - &plain)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(moved > 1e-3, "{moved}");
}
