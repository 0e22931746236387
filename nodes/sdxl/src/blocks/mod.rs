//! Building blocks the UNet and the VAE share.

mod resnet;
mod sampling;

pub use resnet::{ResnetBlock2D, ResnetConfig};
pub use sampling::{Downsample2D, Upsample2D};
