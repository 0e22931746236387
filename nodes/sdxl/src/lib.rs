//! swapgraph's SDXL node pack: the SDXL UNet, VAE and text encoders on candle, samplers, and the
//! text-to-image nodes.

pub mod blocks;
pub mod clip;
pub mod controlnet;
pub mod ip_adapter;
pub mod kernels;
pub mod lora;
pub mod region;
pub mod sampling;
pub mod unet;
pub mod vae;

pub mod checkpoint;
pub mod conditioning;
mod config_json;
pub mod device;
pub mod device_mark;
mod family;
#[cfg(all(test, feature = "cuda"))]
mod gpu_fixtures;
pub mod kept;
mod measured;
mod nodes;

pub use family::SdxlFamily;
pub use nodes::register;
