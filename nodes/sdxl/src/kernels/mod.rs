//! The UNet's own CUDA kernels, for the hot paths where candle's generic operations leave speed
//! on the table. Each is a candle custom op compiled at run time by NVRTC for the device it
//! runs on, so builds need no extra toolchain step; each entry point answers `None` where its
//! kernel does not apply (CPU, other dtypes or shapes) and the caller takes the generic path.
//! Convolutions go to cuDNN, loaded at run time when it is on the library path, and linear
//! layers to cuBLASLt with their bias and residual in the product's epilogue.

mod attention;
mod convolution;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;
#[cfg(feature = "cuda")]
pub(crate) mod cudnn;
#[cfg(feature = "cuda")]
pub(crate) mod cudnn_attention;
#[cfg(feature = "cuda")]
mod cudnn_graph;
// The model seam's decoding of weights kept as stored (GGUF blocks), checked on the device with
// the kernels' tests.
#[cfg(all(test, feature = "cuda"))]
mod decode_tests;
mod epilogue;
mod gemm;
mod group_norm;
mod layer_norm;
mod layout;
mod to_pixels;
// The model seam's widening of weights kept in 8 bits, checked on the device with the kernels'
// tests.
#[cfg(all(test, feature = "cuda"))]
mod widen_tests;

pub use attention::attention;
pub use convolution::{conv2d, resident_filter};
pub use epilogue::{bias_add, geglu};
pub use gemm::{linear, linear_e4m3, takes_e4m3_products};
pub use group_norm::group_norm;
pub use layer_norm::layer_norm;
pub use layout::{add, cat_channels, elementwise, image, is_channels_last, pixels, to_channels_last, upsample_nearest};
#[cfg(feature = "cuda")]
pub use swapgraph_model::nvrtc::compute_capability;
