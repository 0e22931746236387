//! A model part (text encoders, a VAE) whose master stays on the host: its device copy is built
//! when a node asks for it and dropped when the device needs the room, so a text encoder that
//! has encoded the prompt does not sit beside the UNet while it samples.

use super::memory_manager;
use super::slot::{DeviceSlot, Fill};
use crate::device::{is_out_of_memory, release_cached_memory};
use candle_core::{Device, DeviceLocation, Result};
use std::sync::Arc;
use swapgraph_node_api::VramBudget;

/// Builds the part on a device from its host master.
type Build<T> = Box<dyn Fn(&Device) -> Result<T> + Send + Sync>;

/// The bytes the part takes on a device, which depend on the dtype it runs in there.
type Bytes = Box<dyn Fn(&Device) -> u64 + Send + Sync>;

/// A part with its device copy, if it has one.
pub struct OnDevice<T> {
    name: String,
    bytes: Bytes,
    build: Build<T>,
    slot: Arc<DeviceSlot<DeviceLocation, T>>,
}

impl<T: Send + Sync + 'static> OnDevice<T> {
    /// A part named `name` (for logs) that takes `bytes(device)` on a device, built there by
    /// `build`.
    pub fn new(
        name: impl Into<String>,
        bytes: impl Fn(&Device) -> u64 + Send + Sync + 'static,
        build: impl Fn(&Device) -> Result<T> + Send + Sync + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            bytes: Box::new(bytes),
            build: Box::new(build),
            slot: Arc::default(),
        }
    }

    /// Bytes the part takes on `device`.
    pub fn bytes(&self, device: &Device) -> u64 {
        (self.bytes)(device)
    }

    /// Whether the part is on `device` now (a later [`OnDevice::get`] there builds nothing).
    pub fn is_on(&self, device: &Device) -> bool {
        let location = device.location();
        self.slot.holds(|made_for| *made_for == location)
    }

    /// The part on `device`: the copy already there, or one built after making room for it
    /// within `budget`. While the caller holds it, it stays on the device.
    ///
    /// # Errors
    /// Whatever building it on the device returns (out of memory among them).
    pub fn get(&self, device: &Device, budget: VramBudget) -> Result<Arc<T>> {
        let location = device.location();
        let manager = memory_manager(device, budget);
        let bytes = self.bytes(device);
        let fill = Fill {
            name: self.name.clone(),
            manager: manager.as_ref(),
            room_for: Some(bytes),
        };
        let place = |fill: Fill| -> Result<Arc<T>> {
            self.slot.get_or_fill(
                |made_for| *made_for == location,
                fill,
                || Ok((location, Arc::new((self.build)(device)?), bytes)),
            )
        };
        match place(fill) {
            // The accounting said it fits and the device disagreed: every idle model leaves and
            // the pool's cached blocks go back to the driver before one more try.
            Err(e) if is_out_of_memory(&e.to_string()) => {
                tracing::info!(
                    "{}: out of device memory while placing it; sending every idle model away and releasing the \
                     memory pool's cached blocks, then trying again",
                    self.name
                );
                if let Some(manager) = &manager {
                    manager.make_room(u64::MAX, &[]);
                }
                release_cached_memory(device);
                place(Fill {
                    name: self.name.clone(),
                    manager: manager.as_ref(),
                    room_for: None,
                })
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Evict;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn builds_once_per_device_and_again_after_eviction() {
        let builds = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&builds);
        let part = OnDevice::new(
            "encoder",
            |_: &Device| 10,
            move |_: &Device| {
                counted.fetch_add(1, Ordering::SeqCst);
                Ok(7u32)
            },
        );
        assert!(!part.is_on(&Device::Cpu));
        let first = part.get(&Device::Cpu, VramBudget::Auto).unwrap();
        assert!(part.is_on(&Device::Cpu));
        assert_eq!(*part.get(&Device::Cpu, VramBudget::Auto).unwrap(), 7);
        assert_eq!(builds.load(Ordering::SeqCst), 1, "the copy is reused");
        assert!(!part.slot.evict(), "in use while a caller holds it");
        drop(first);
        assert!(part.slot.evict());
        assert!(!part.is_on(&Device::Cpu), "gone once evicted");
        part.get(&Device::Cpu, VramBudget::Auto).unwrap();
        assert_eq!(builds.load(Ordering::SeqCst), 2, "built again after leaving");
    }

    #[test]
    fn a_placement_that_runs_out_of_memory_is_tried_once_more_and_other_errors_are_not() {
        let builds = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&builds);
        let part = OnDevice::new(
            "encoder",
            |_: &Device| 10,
            move |_: &Device| match counted.fetch_add(1, Ordering::SeqCst) {
                0 => Err(candle_core::Error::Msg("DriverError(CUDA_ERROR_OUT_OF_MEMORY)".into())),
                _ => Ok(7u32),
            },
        );
        assert_eq!(*part.get(&Device::Cpu, VramBudget::Auto).unwrap(), 7);
        assert_eq!(builds.load(Ordering::SeqCst), 2);

        let tries = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&tries);
        let broken = OnDevice::new(
            "encoder",
            |_: &Device| 10,
            move |_: &Device| -> Result<u32> {
                counted.fetch_add(1, Ordering::SeqCst);
                Err(candle_core::Error::Msg("a missing tensor".into()))
            },
        );
        assert!(broken.get(&Device::Cpu, VramBudget::Auto).is_err());
        assert_eq!(
            tries.load(Ordering::SeqCst),
            1,
            "only running out of memory is tried again"
        );
    }
}
