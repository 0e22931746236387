//! A model family as a weight placement's setup check sees it (`swapgraph doctor`): the pack
//! that defines the model supplies its units, the memory beside it and a tiny instance to stream,
//! so the check names no model.

use crate::{ModelHandle, UnitSpec, WeightStore};
use candle_core::{DType, Device, Tensor};

/// A tiny instance of a model family with fixed inputs.
pub trait TinyModel {
    /// The model: its units and weights.
    fn model(&self) -> &ModelHandle;

    /// One forward pass over the fixed inputs, the weights from `store`.
    ///
    /// # Errors
    /// A device or tensor error.
    fn run(&self, store: &dyn WeightStore) -> candle_core::Result<Tensor>;
}

/// What a setup check needs of a model family to size and stream it on a device.
pub trait StreamedFamily: Send + Sync {
    /// How reports name the streamed network, e.g. "SDXL UNet".
    fn name(&self) -> &'static str;

    /// The full-size network's swap units.
    ///
    /// # Errors
    /// A configuration whose units cannot be listed.
    fn units(&self) -> candle_core::Result<Vec<UnitSpec>>;

    /// Device bytes of the models that share the device with the network while it runs (text
    /// encoders, a VAE), in the dtypes they run in on `device`.
    ///
    /// # Errors
    /// A configuration whose parameters cannot be listed.
    fn companion_bytes(&self, device: &Device) -> candle_core::Result<u64>;

    /// Bytes of one forward pass's activations at `resolution` pixels square on `device` in
    /// `dtype`; `None` where the device does not report memory.
    ///
    /// # Errors
    /// The pass does not run there.
    fn step_activations(&self, device: &Device, dtype: DType, resolution: usize) -> candle_core::Result<Option<u64>>;

    /// A tiny instance on `device` in `dtype`, for a streamed round trip.
    ///
    /// # Errors
    /// A message naming what could not be built.
    fn tiny(&self, device: &Device, dtype: DType) -> Result<Box<dyn TinyModel>, String>;
}
