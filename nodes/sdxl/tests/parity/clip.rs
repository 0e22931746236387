//! The text encoders against transformers' `CLIPTextModel` (quick-GELU, pooled output) and
//! `CLIPTextModelWithProjection` (GELU, projected pooled output), and the tokenizer against
//! transformers' `CLIPTokenizer` on real prompts.

use crate::{assert_close, fixture, fixture_clip, load_cases, weights};
use candle_core::DType;
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
        let out = encoder.forward(&ids).unwrap();
        assert_close(
            &format!("{name} penultimate"),
            &out.penultimate,
            &cases[&format!("{name}.penultimate")],
        );
        assert_close(
            &format!("{name} pooled"),
            &out.pooled,
            &cases[&format!("{name}.pooled")],
        );
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
