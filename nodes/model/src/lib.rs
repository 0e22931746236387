//! The model seam of swapgraph, and the tensor values packs exchange: a model is an ordered list of swap units whose weights a
//! [`WeightStore`] hands out right before a unit runs and takes back right after.
//!
//! Model code (the SDXL UNet, ControlNet) builds each unit's layers from the weights the store
//! gives it and knows nothing about where they live; a store (resident, or BlockSwap's
//! streaming one) knows nothing about UNets beyond the [`UnitSpec`] list: names, sections,
//! tensor shapes and bytes, in execution order.

mod device;
pub mod disk_cache;
mod encoding;
mod family;
mod gguf_file;
mod handle;
mod memory;
/// Kernel sources compiled at run time for the card they run on.
#[cfg(feature = "cuda")]
pub mod nvrtc;
mod patches;
mod record;
mod safetensors_file;
mod seeded;
mod source;
mod store;
mod unit;
mod values;
mod widen;

pub use device::{
    candle_device, device_info, device_memory, gpu_count, is_out_of_memory, release_cached_memory, reset_peak_memory,
    weight_dtype, DeviceInfo, DeviceMemory, HEADROOM_FRACTION,
};
pub use encoding::{converter_encoding, decode, ggml_name, Encoding, KEPT_AS_STORED};
pub use family::{StreamedFamily, TinyModel};
pub use gguf_file::GgufFile;
pub use handle::{ModelHandle, Network, Placement, Resident, Room, StoreCache};
pub use memory::{device_ceiling, memory_manager, Ceiling, DeviceMemoryManager, Evict, OnDevice, ResidentId};
pub use patches::{LowRank, WeightPatches};
pub use record::record_params;
pub use seeded::{seeded_tensor, seeded_tensors};
pub use source::{KeyMap, Part, SourceError, SourceKey, TensorSource};
pub use store::{load_unit, ResidentStore, UnitDecoding, UnitWeights, WeightDTypes, WeightStore};
pub use unit::{UnitGroup, UnitSpec};
pub use values::{Image, Latent, Mask};
pub use widen::{to_e4m3, widen, widen_all, E4M3_MAX};
