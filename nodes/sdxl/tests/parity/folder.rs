//! Diffusers folders: the tiny models laid out as diffusers and transformers save them, each
//! with the config.json it is built from, load to the fixtures' numbers.

use super::single_file::matches_the_fixtures;
use crate::fixture;
use candle_core::Device;
use std::path::Path;
use swapgraph_node_api::VramBudget;

/// transformers' config of a tiny CLIP text encoder as the fixtures have it.
fn clip_config(architecture: &str, activation: &str) -> String {
    format!(
        r#"{{"architectures": ["{architecture}"], "hidden_act": "{activation}", "hidden_size": 32,
        "intermediate_size": 64, "max_position_embeddings": 77, "num_attention_heads": 2,
        "num_hidden_layers": 3, "projection_dim": 16, "vocab_size": 1000, "eos_token_id": 999,
        "model_type": "clip_text_model"}}"#
    )
}

/// diffusers' config of the tiny VAE.
const VAE_CONFIG: &str = r#"{"_class_name": "AutoencoderKL", "act_fn": "silu",
    "block_out_channels": [8, 16, 16, 16], "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D",
    "DownEncoderBlock2D", "DownEncoderBlock2D"], "in_channels": 3, "latent_channels": 4, "layers_per_block": 1,
    "norm_num_groups": 4, "out_channels": 3, "scaling_factor": 0.13025, "shift_factor": null,
    "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"]}"#;

fn part(folder: &Path, name: &str, config: &str, weights: &str, file: &str) {
    std::fs::create_dir_all(folder.join(name)).unwrap();
    std::fs::write(folder.join(name).join("config.json"), config).unwrap();
    std::fs::copy(fixture(weights), folder.join(name).join(file)).unwrap();
}

#[test]
fn a_diffusers_folder_is_built_from_its_configs_to_the_same_numbers() {
    let folder = tempfile::tempdir().unwrap();
    let unet_config = std::fs::read_to_string(fixture("unet_tiny_config.json")).unwrap();
    let weights = "diffusion_pytorch_model.safetensors";
    part(folder.path(), "unet", &unet_config, "unet_tiny.safetensors", weights);
    part(folder.path(), "vae", VAE_CONFIG, "vae_tiny.safetensors", weights);
    let (l, g) = (
        clip_config("CLIPTextModel", "quick_gelu"),
        clip_config("CLIPTextModelWithProjection", "gelu"),
    );
    part(
        folder.path(),
        "text_encoder",
        &l,
        "clip_l_tiny.safetensors",
        "model.safetensors",
    );
    part(
        folder.path(),
        "text_encoder_2",
        &g,
        "clip_g_tiny.safetensors",
        "model.safetensors",
    );
    let name = folder.path().to_str().unwrap();
    let checkpoint = swapgraph_sdxl::checkpoint::load(name, &Device::Cpu, VramBudget::Auto).unwrap();
    matches_the_fixtures(&checkpoint);

    let wide = VAE_CONFIG.replace("[8, 16, 16, 16]", "[8, 16, 16]");
    std::fs::write(folder.path().join("vae/config.json"), wide).unwrap();
    let error = swapgraph_sdxl::checkpoint::load(name, &Device::Cpu, VramBudget::Auto)
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains("vae/config.json") && error.contains("four levels"),
        "{error}"
    );
}
