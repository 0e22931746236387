//! The text encoders against transformers' `CLIPTextModel` (quick-GELU, pooled output) and
//! `CLIPTextModelWithProjection` (GELU, projected pooled output), and the tokenizer against
//! transformers' `CLIPTokenizer` on real prompts.

use crate::{assert_close, checkpoint_part, fixture, fixture_clip, load_cases, weights};
use candle_core::{DType, Device};
use swapgraph_node_api::VramBudget;
use swapgraph_sdxl::clip::{Activation, ClipTextEncoder, ClipTokenizer, END_OF_TEXT};

#[test]
fn both_encoders_match_transformers() {
    let cases = load_cases("clip_cases.safetensors");
    let ids = cases["ids"].to_dtype(DType::U32).unwrap();
    for (name, cfg) in [
        ("l", fixture_clip(Activation::QuickGelu, None)),
        ("g", fixture_clip(Activation::Gelu, Some(16))),
    ] {
        let encoder = ClipTextEncoder::new(weights(&format!("clip_{name}_tiny.safetensors")), &cfg).unwrap();
        let out = encoder.forward(&ids, 2).unwrap();
        assert_close(
            &format!("{name} penultimate"),
            &out.hidden,
            &cases[&format!("{name}.penultimate")],
        );
        assert_close(
            &format!("{name} pooled"),
            &out.pooled,
            &cases[&format!("{name}.pooled")],
        );
    }
}

/// Stopping at each layer from the end (ComfyUI's CLIPSetLastLayer) gives transformers' hidden
/// states of that layer, before the final norm; past the first layer is refused.
#[test]
fn every_layer_from_the_end_matches_transformers() {
    let ids = load_cases("clip_cases.safetensors")["ids"]
        .to_dtype(DType::U32)
        .unwrap();
    let cases = load_cases("clip_layer_cases.safetensors");
    for (name, cfg) in [
        ("l", fixture_clip(Activation::QuickGelu, None)),
        ("g", fixture_clip(Activation::Gelu, Some(16))),
    ] {
        let encoder = ClipTextEncoder::new(weights(&format!("clip_{name}_tiny.safetensors")), &cfg).unwrap();
        for from_end in 1..=cfg.layers {
            let key = format!("{name}.from_end.{from_end}");
            assert_close(&key, &encoder.forward(&ids, from_end).unwrap().hidden, &cases[&key]);
        }
        for outside in [0, cfg.layers + 1] {
            let error = encoder.forward(&ids, outside).unwrap_err().to_string();
            assert!(error.contains("has 3 layers"), "{error}");
        }
    }
}

#[test]
fn tokenizer_matches_transformers_on_real_prompts() {
    let tokenizer = ClipTokenizer::standard().unwrap();
    let cases: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(fixture("tokenizer_cases.json")).unwrap()).unwrap();
    for case in cases {
        let prompt = case["prompt"].as_str().unwrap();
        let expected: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(
            tokenizer.windows(prompt, END_OF_TEXT)[0].to_vec(),
            expected,
            "{prompt:?}"
        );
    }
}

/// Text encoders from files of their own (DualCLIPLoader): transformers' layout and bigG in
/// OpenCLIP's, in either order, encode as transformers does; two of a kind, or a file that is no
/// text encoder, are refused by name.
#[test]
fn text_encoders_from_files_of_their_own_match_transformers_in_either_order() {
    use swapgraph_sdxl::checkpoint::clip_file::{load_encoder, pair};
    let dir = tempfile::tempdir().unwrap();
    let open_clip = checkpoint_part("conditioner.embedders.1.model.", dir.path(), "clip_g.safetensors");
    let (cfg_l, cfg_g) = (
        fixture_clip(Activation::QuickGelu, None),
        fixture_clip(Activation::Gelu, Some(16)),
    );
    let l = || load_encoder(&fixture("clip_l_tiny.safetensors"), Some(cfg_l)).unwrap();
    let cases = load_cases("clip_cases.safetensors");
    let ids = cases["ids"].to_dtype(DType::U32).unwrap();
    for g_path in [fixture("clip_g_tiny.safetensors"), open_clip] {
        let g = || load_encoder(&g_path, Some(cfg_g)).unwrap();
        for clip in [pair(l(), g(), "l", "g").unwrap(), pair(g(), l(), "g", "l").unwrap()] {
            let out_l = clip
                .clip_l
                .get(&Device::Cpu, VramBudget::Auto)
                .unwrap()
                .forward(&ids, 2)
                .unwrap();
            let out_g = clip
                .clip_g
                .get(&Device::Cpu, VramBudget::Auto)
                .unwrap()
                .forward(&ids, 2)
                .unwrap();
            assert_close("l", &out_l.hidden, &cases["l.penultimate"]);
            assert_close("g", &out_g.hidden, &cases["g.penultimate"]);
            assert_close("g pooled", &out_g.pooled, &cases["g.pooled"]);
        }
    }
    let twice = pair(l(), l(), "a", "b").err().unwrap().to_string();
    assert!(twice.contains("both CLIP-L"), "{twice}");
    let unet = load_encoder(&fixture("unet_tiny.safetensors"), None)
        .err()
        .unwrap()
        .to_string();
    assert!(unet.contains("is not a CLIP text encoder"), "{unet}");
}
