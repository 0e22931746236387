//! Lists of conditionings (combined, placed in an area, masked, limited to part of the
//! schedule, with ControlNets) weighed by the denoiser as ComfyUI's sampler weighs them, on the
//! tiny UNet against the fixture's transcription of ComfyUI's `get_area_and_mult`, weighted sum,
//! `create_cond_with_same_area_if_none` and ControlNet `get_control`.

use crate::{assert_close_to, fixture, load_cases};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::sync::Arc;
use swapgraph_model::{ModelHandle, Network, ResidentStore, TensorSource, WeightStore};
use swapgraph_sdxl::conditioning::{Area, Conditioning, ControlHint, Placement, PlacementMask};
use swapgraph_sdxl::controlnet::{ControlNet, ControlNetConfig, EmbeddedHint};
use swapgraph_sdxl::sampling::{
    regions, ControlGuidance, Denoiser, DiscreteSchedule, RegionAdapters, RegionalDenoiser, TextConditioning,
};
use swapgraph_sdxl::unet::{ContextCache, UNet, UNetConfig};

/// The tiny UNet and ControlNet with the fixture's inputs and the conditionings it combines.
struct Tiny {
    inputs: HashMap<String, Tensor>,
    cases: HashMap<String, Tensor>,
    unet: UNet,
    store: ResidentStore,
    controlnet: ModelHandle,
    control_store: Arc<dyn WeightStore>,
    schedule: DiscreteSchedule,
}

impl Tiny {
    fn new() -> Self {
        let unet = UNet::new(UNetConfig::tiny()).unwrap();
        let source = TensorSource::open(&[&fixture("unet_tiny.safetensors")]).unwrap();
        let store = ResidentStore::load(unet.units().to_vec(), &source, DType::F32, &Device::Cpu).unwrap();
        let network = ControlNet::new(ControlNetConfig::tiny()).unwrap();
        let control_source = TensorSource::open(&[&fixture("controlnet_tiny.safetensors")]).unwrap();
        let control_store =
            ResidentStore::load(network.units().to_vec(), &control_source, DType::F32, &Device::Cpu).unwrap();
        Self {
            inputs: load_cases("sampling_cases.safetensors"),
            cases: load_cases("regional_cases.safetensors"),
            unet,
            store,
            controlnet: ModelHandle::new("tiny ControlNet", Arc::new(network), Arc::new(control_source)),
            control_store: Arc::new(control_store),
            schedule: DiscreteSchedule::sdxl(),
        }
    }

    fn text(&self, context: &str, pooled: &str) -> Conditioning {
        let table = if self.inputs.contains_key(context) {
            &self.inputs
        } else {
            &self.cases
        };
        Conditioning::text(table[context].clone(), table[pooled].clone(), None)
    }

    fn scalar(&self, name: &str) -> f64 {
        f64::from(self.cases[name].to_vec1::<f32>().unwrap()[0])
    }

    /// `conditioning` with the tiny ControlNet applied at `strength` with the fixture's hint.
    fn controlled(&self, conditioning: &Conditioning, strength: f64) -> Conditioning {
        conditioning.clone().with_control(Arc::new(ControlHint {
            controlnet: self.controlnet.clone(),
            hint: self.cases["control_hint"].clone(),
            strength,
            start_percent: 0.0,
            end_percent: 1.0,
            context: None,
            region: None,
        }))
    }

    /// The regional denoiser's prediction for the fixture's latents at `sigma`, guided at 5.
    fn denoise(&self, positive: &[Conditioning], negative: &[Conditioning], sigma: f64) -> Tensor {
        let x = &self.cases["x"];
        let time_ids = &self.inputs["sample.time_ids"];
        let (positive, negative) = regions(
            (positive, negative),
            |c| {
                Ok(TextConditioning {
                    context: c.context.clone(),
                    pooled: c.pooled.clone(),
                    time_ids: time_ids.clone(),
                })
            },
            |c, text| {
                let controls = c
                    .controls
                    .iter()
                    .map(|hint| ControlGuidance {
                        controlnet: hint.controlnet.network.as_any().downcast_ref::<ControlNet>().unwrap(),
                        store: Arc::clone(&self.control_store),
                        hint: hint.hint.clone(),
                        strength: hint.strength,
                        contexts: (None, Some(text.context.clone())),
                        percent: (hint.start_percent, hint.end_percent),
                        region: None,
                        context_cache: ContextCache::default(),
                        embedded_hint: EmbeddedHint::default(),
                    })
                    .collect();
                Ok(RegionAdapters {
                    controls,
                    image_tokens: None,
                })
            },
            x.dims4().unwrap(),
            &self.schedule,
            &Device::Cpu,
        )
        .unwrap();
        let mut denoiser = RegionalDenoiser {
            unet: &self.unet,
            store: &self.store,
            schedule: &self.schedule,
            positive,
            negative,
            cfg: 5.0,
            split: None,
        };
        denoiser.denoise(x, sigma).unwrap()
    }
}

fn area(width: u64, height: u64, x: u64, y: u64, strength: f64) -> Placement {
    Placement {
        area: Some(Area::Pixels { width, height, x, y }),
        strength,
        ..Placement::default()
    }
}

/// Asserts that `a` and `b` differ somewhere by more than rounding: the test can tell them apart.
fn assert_moved(a: &Tensor, b: &Tensor) {
    let moved = (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(moved > 1e-3, "{moved}");
}

fn placed(c: &Conditioning, placement: Placement) -> Conditioning {
    Conditioning { placement, ..c.clone() }
}

#[test]
fn combined_placed_and_masked_conditionings_are_weighed_as_comfyui_weighs_them() {
    let tiny = Tiny::new();
    let cases = &tiny.cases;
    let first = tiny.text("sample.positive", "sample.pooled_positive");
    let other = tiny.text("second_context", "second_pooled");
    let negative = [tiny.text("sample.negative", "sample.pooled_negative")];
    let denoise = |positive: Vec<Conditioning>, sigma| tiny.denoise(&positive, &negative, sigma);
    let scalar = |name: &str| tiny.scalar(name);
    let sigma = scalar("sigma");
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
    assert_moved(&combined, &plain);
}

#[test]
fn controlnets_on_placed_and_combined_conditionings_act_as_in_comfyui() {
    let tiny = Tiny::new();
    let cases = &tiny.cases;
    let first = tiny.text("sample.positive", "sample.pooled_positive");
    let other = tiny.text("second_context", "second_pooled");
    let negative = tiny.text("sample.negative", "sample.pooled_negative");
    let sigma = tiny.scalar("sigma");
    // An area 12 latent pixels wide and 8 high: the hint (160x96) cropped to its aspect and
    // resampled to 96x64 pixels; the negative side gets the area with the ControlNet.
    let in_area = placed(&tiny.controlled(&other, 0.8), area(96, 64, 16, 40, 1.0));
    let controlled = tiny.denoise(&[first.clone(), in_area], std::slice::from_ref(&negative), sigma);
    assert_close_to("ControlNet in an area", &controlled, &cases["control_area"], 1e-5);
    // Combined conditionings, each with its own ControlNet strength, and the negative with one.
    let combined = tiny.denoise(
        &[tiny.controlled(&first, 0.8), tiny.controlled(&other, 0.5)],
        &[tiny.controlled(&negative, 0.8)],
        sigma,
    );
    assert_close_to(
        "ControlNets on combined conditionings",
        &combined,
        &cases["control_combined"],
        1e-5,
    );
    // The ControlNet changed the prediction (the test can tell them apart).
    let plain = tiny.denoise(&[first, placed(&other, area(96, 64, 16, 40, 1.0))], &[negative], sigma);
    assert_moved(&controlled, &plain);
}
