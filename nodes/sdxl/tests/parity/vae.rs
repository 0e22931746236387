//! The VAE against diffusers' `AutoencoderKL`: encode (latent mean, scaled) and decode.

use crate::{assert_close, load_cases, weights};
use swapgraph_sdxl::vae::{Vae, VaeConfig};

#[test]
fn encode_and_decode_match_diffusers() {
    let vae = Vae::new(weights("vae_tiny.safetensors"), &VaeConfig::tiny()).unwrap();
    let cases = load_cases("vae_cases.safetensors");
    assert_close("decode", &vae.decode(&cases["latents"]).unwrap(), &cases["decoded"]);
    assert_close("encode", &vae.encode(&cases["image"]).unwrap(), &cases["encoded"]);
}
