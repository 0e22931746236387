//! Building blocks the UNet and the VAE share.

mod conv;
mod linear;
mod norm;
mod resnet;
mod sampling;

pub use conv::Conv2d;
pub use linear::Linear;
pub use norm::{GroupNorm, LayerNorm};
pub use resnet::{ResnetBlock2D, ResnetConfig};
pub use sampling::{Downsample2D, Upsample2D};
