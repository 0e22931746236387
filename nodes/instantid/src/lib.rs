//! swapgraph's InstantID pack: identity-preserving generation from one face photo.
//!
//! A face embedding becomes image tokens ([`weights`]: Resampler and IP-Adapter projections)
//! that every cross-attention layer of the UNet attends to, while IdentityNet, a ControlNet fed
//! the face's keypoint image and the same tokens, steers the layout.
//!
//! Reference: Wang et al., "InstantID: Zero-shot Identity-Preserving Generation in Seconds"
//! (2024).

pub mod face;
pub mod keypoints;
mod nodes;
pub mod raster;
pub mod weights;

pub use nodes::register;
