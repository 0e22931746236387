//! The one place a device copy lives: a slot holding the copy, what it was made for, and its
//! registration with the device's memory manager, which may empty the slot when the copy is not
//! in use. Text encoders and VAEs ([`super::OnDevice`]) and the UNet's and ControlNet's weight
//! stores ([`crate::StoreCache`]) keep theirs in one.

use super::{DeviceMemoryManager, Evict, ResidentId};
use std::sync::{Arc, Mutex, PoisonError, Weak};

/// A slot for one device copy of type `T`, made for a `K` (a device, a model and dtype).
pub struct DeviceSlot<K, T: ?Sized> {
    copy: Mutex<Option<SlotCopy<K, T>>>,
}

struct SlotCopy<K, T: ?Sized> {
    made_for: K,
    value: Arc<T>,
    resident: Option<(Arc<DeviceMemoryManager>, ResidentId)>,
}

/// How to fill a slot whose copy cannot be reused.
pub struct Fill<'a> {
    /// The copy's name in the manager's log.
    pub name: String,
    /// The device's memory manager; `None` on the CPU.
    pub manager: Option<&'a Arc<DeviceMemoryManager>>,
    /// Bytes to make room for before building, when the copy's size is known beforehand.
    pub room_for: Option<u64>,
}

impl<K, T: ?Sized> Default for DeviceSlot<K, T> {
    fn default() -> Self {
        Self { copy: Mutex::new(None) }
    }
}

impl<K: Send + 'static, T: ?Sized + Send + Sync + 'static> DeviceSlot<K, T> {
    /// The copy when `reuse` accepts what it was made for (marked as just used); else the old
    /// copy is dropped and `build` makes the next, returning what it is for, the copy and its
    /// device bytes, which is registered with `fill`'s manager.
    ///
    /// # Errors
    /// Whatever `build` returns.
    pub fn get_or_fill<E>(
        self: &Arc<Self>,
        reuse: impl FnOnce(&K) -> bool,
        fill: Fill,
        build: impl FnOnce() -> Result<(K, Arc<T>, u64), E>,
    ) -> Result<Arc<T>, E> {
        let mut copy = self.copy.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(existing) = copy.as_ref().filter(|existing| reuse(&existing.made_for)) {
            if let Some((manager, id)) = &existing.resident {
                manager.touch(*id);
            }
            return Ok(Arc::clone(&existing.value));
        }
        // Drop the old copy before building the next, so two never hold device memory at once.
        if let Some(SlotCopy {
            resident: Some((manager, id)),
            ..
        }) = copy.take()
        {
            manager.unregister(id);
        }
        if let (Some(manager), Some(bytes)) = (fill.manager, fill.room_for) {
            manager.make_room(bytes, &[]);
        }
        let (made_for, value, bytes) = build()?;
        let resident = fill.manager.map(|manager| {
            let weak = Arc::downgrade(self) as Weak<dyn Evict>;
            (Arc::clone(manager), manager.register(fill.name, bytes, weak))
        });
        *copy = Some(SlotCopy {
            made_for,
            value: Arc::clone(&value),
            resident,
        });
        Ok(value)
    }

    /// Whether the slot holds a copy that `made_for` accepts.
    pub fn holds(&self, made_for: impl FnOnce(&K) -> bool) -> bool {
        let copy = self.copy.lock().unwrap_or_else(PoisonError::into_inner);
        copy.as_ref().is_some_and(|copy| made_for(&copy.made_for))
    }

    /// The copy's registration with its manager, if it has one.
    pub fn resident(&self) -> Option<ResidentId> {
        let copy = self.copy.lock().unwrap_or_else(PoisonError::into_inner);
        copy.as_ref().and_then(|copy| copy.resident.as_ref().map(|(_, id)| *id))
    }
}

impl<K: Send, T: ?Sized + Send + Sync> Evict for DeviceSlot<K, T> {
    fn evict(&self) -> bool {
        // Busy means a node is fetching or building the copy: in use.
        let Ok(mut copy) = self.copy.try_lock() else {
            return false;
        };
        match copy.as_ref() {
            Some(existing) if Arc::strong_count(&existing.value) > 1 => false,
            _ => {
                *copy = None;
                true
            }
        }
    }
}
