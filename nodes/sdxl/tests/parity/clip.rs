//! The text encoders against transformers' `CLIPTextModel` (quick-GELU, pooled output) and
//! `CLIPTextModelWithProjection` (GELU, projected pooled output), and the tokenizer against
//! transformers' `CLIPTokenizer` on real prompts.

use crate::{assert_close, fixture, load_cases, weights};
use candle_core::DType;
use swapgraph_sdxl::clip::{Activation, ClipConfig, ClipTextEncoder, ClipTokenizer, END_OF_TEXT};

fn tiny(activation: Activation, projection_dim: Option<usize>) -> ClipConfig {
    ClipConfig {
        vocab_size: 1000,
        hidden_size: 32,
        intermediate_size: 64,
        layers: 3,
        heads: 2,
        max_positions: 77,
        activation,
        projection_dim,
        eos_token_id: 999,
    }
}

#[test]
fn both_encoders_match_transformers() {
    let cases = load_cases("clip_cases.safetensors");
    let ids = cases["ids"].to_dtype(DType::U32).unwrap();
    for (name, cfg) in [
        ("l", tiny(Activation::QuickGelu, None)),
        ("g", tiny(Activation::Gelu, Some(16))),
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
