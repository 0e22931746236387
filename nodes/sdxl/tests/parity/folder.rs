//! Diffusers folders: the tiny models laid out as diffusers and transformers save them, each
//! with the config.json those libraries wrote for it, load to the fixtures' numbers, whole or
//! one model at a time (UNETLoader, VAELoader).

use super::single_file::matches_the_fixtures;
use crate::fixture;
use candle_core::Device;
use std::path::Path;
use swapgraph_node_api::VramBudget;
use swapgraph_sdxl::checkpoint::{unet_file, vae_file, Checkpoint};

/// `folder/name/` with the fixtures `config` and `weights` as `config.json` and `file`.
fn part(folder: &Path, name: &str, config: &str, weights: &str, file: &str) {
    std::fs::create_dir_all(folder.join(name)).unwrap();
    std::fs::copy(fixture(config), folder.join(name).join("config.json")).unwrap();
    std::fs::copy(fixture(weights), folder.join(name).join(file)).unwrap();
}

#[test]
fn a_diffusers_folder_is_built_from_its_configs_to_the_same_numbers() {
    let folder = tempfile::tempdir().unwrap();
    let (weights, encoder) = ("diffusion_pytorch_model.safetensors", "model.safetensors");
    for (name, config, fixture_weights, file) in [
        ("unet", "unet_tiny_config.json", "unet_tiny.safetensors", weights),
        ("vae", "vae_tiny_config.json", "vae_tiny.safetensors", weights),
        (
            "text_encoder",
            "clip_l_tiny_config.json",
            "clip_l_tiny.safetensors",
            encoder,
        ),
        (
            "text_encoder_2",
            "clip_g_tiny_config.json",
            "clip_g_tiny.safetensors",
            encoder,
        ),
    ] {
        part(folder.path(), name, config, fixture_weights, file);
    }
    let name = folder.path().to_str().unwrap();
    let checkpoint = swapgraph_sdxl::checkpoint::load(name, &Device::Cpu, VramBudget::Auto).unwrap();
    matches_the_fixtures(&checkpoint);
    // UNETLoader and VAELoader take the pipeline folder, or its unet/ and vae/ folders.
    for (unet, vae) in [
        (folder.path().to_path_buf(), folder.path().to_path_buf()),
        (folder.path().join("unet"), folder.path().join("vae")),
    ] {
        let split = Checkpoint {
            model: unet_file::load(unet.to_str().unwrap()).unwrap(),
            clip: std::sync::Arc::clone(&checkpoint.clip),
            vae: vae_file::load(vae.to_str().unwrap()).unwrap(),
        };
        matches_the_fixtures(&split);
    }

    let vae_config = folder.path().join("vae/config.json");
    let three_levels = std::fs::read_to_string(&vae_config).unwrap().replacen("16,\n", "", 1);
    std::fs::write(&vae_config, three_levels).unwrap();
    let error = swapgraph_sdxl::checkpoint::load(name, &Device::Cpu, VramBudget::Auto)
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains("vae/config.json") && error.contains("four levels"),
        "{error}"
    );
}
