//! One device's memory for a whole run: which models' weights are on it, and which leave, least
//! recently used first, when another model needs the room.
//!
//! Every device copy of a model (text encoders, a UNet's store, a ControlNet's, the VAE)
//! registers here with its bytes and a way to drop it. The host copy is always the master, so
//! leaving the device copies nothing back. A copy in use (a node holds it) is never dropped.
//! Decisions are plain arithmetic on the registered bytes against a limit, so they are tested
//! with a limit and fake residents, without a device.

use std::sync::{Mutex, PoisonError, Weak};

/// Something on the device that can leave it: a model's device copy.
pub trait Evict: Send + Sync {
    /// Drops the device copy unless it is in use; whether it is gone.
    fn evict(&self) -> bool;
}

/// Names one registered device copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResidentId(u64);

/// A device copy the manager knows of.
struct Entry {
    id: ResidentId,
    name: String,
    bytes: u64,
    last_used: u64,
    copy: Weak<dyn Evict>,
}

#[derive(Default)]
struct State {
    limit: u64,
    clock: u64,
    next_id: u64,
    entries: Vec<Entry>,
}

/// The device memory a run may use and the model copies that hold it.
pub struct DeviceMemoryManager {
    state: Mutex<State>,
}

impl DeviceMemoryManager {
    /// A manager for a device of which `limit` bytes may hold weights and working memory.
    pub fn new(limit: u64) -> Self {
        Self {
            state: Mutex::new(State {
                limit,
                ..State::default()
            }),
        }
    }

    /// The bytes the run may use.
    pub fn limit(&self) -> u64 {
        self.lock().limit
    }

    /// Sets the bytes the run may use (each run sets its own budget).
    pub fn set_limit(&self, limit: u64) {
        self.lock().limit = limit;
    }

    /// Bytes the registered copies hold.
    pub fn held(&self) -> u64 {
        let mut state = self.lock();
        state.forget_dropped();
        state.entries.iter().map(|entry| entry.bytes).sum()
    }

    /// Bytes the copies `ids` hold (those still registered).
    pub fn bytes_of(&self, ids: &[ResidentId]) -> u64 {
        let mut state = self.lock();
        state.forget_dropped();
        state
            .entries
            .iter()
            .filter(|entry| ids.contains(&entry.id))
            .map(|entry| entry.bytes)
            .sum()
    }

    /// Registers a device copy of `bytes` named `name`, as just used; `copy` drops it on request.
    pub fn register(&self, name: impl Into<String>, bytes: u64, copy: Weak<dyn Evict>) -> ResidentId {
        let mut state = self.lock();
        state.next_id += 1;
        state.clock += 1;
        let id = ResidentId(state.next_id);
        let last_used = state.clock;
        state.entries.push(Entry {
            id,
            name: name.into(),
            bytes,
            last_used,
            copy,
        });
        id
    }

    /// Marks a copy as just used, so it leaves after the others.
    pub fn touch(&self, id: ResidentId) {
        let mut state = self.lock();
        state.clock += 1;
        let now = state.clock;
        if let Some(entry) = state.entries.iter_mut().find(|entry| entry.id == id) {
            entry.last_used = now;
        }
    }

    /// Forgets a copy that was dropped by its owner.
    pub fn unregister(&self, id: ResidentId) {
        self.lock().entries.retain(|entry| entry.id != id);
    }

    /// Makes room for `bytes` more: evicts copies not in use, least recently used first, except
    /// those in `keep`, until `bytes` fit beside what stays. Returns the bytes the limit leaves
    /// beside what stays, which is less than `bytes` when even that did not make enough room.
    pub fn make_room(&self, bytes: u64, keep: &[ResidentId]) -> u64 {
        let mut state = self.lock();
        state.forget_dropped();
        let mut order: Vec<usize> = (0..state.entries.len())
            .filter(|&i| !keep.contains(&state.entries[i].id))
            .collect();
        order.sort_by_key(|&i| state.entries[i].last_used);
        let mut held: u64 = state.entries.iter().map(|entry| entry.bytes).sum();
        let mut evicted = Vec::new();
        for index in order {
            if held.saturating_add(bytes) <= state.limit {
                break;
            }
            let entry = &state.entries[index];
            if entry.copy.upgrade().is_some_and(|copy| copy.evict()) {
                tracing::info!(
                    "{} ({:.2} GiB) left the device to make room",
                    entry.name,
                    entry.bytes as f64 / f64::from(1u32 << 30)
                );
                held -= entry.bytes;
                evicted.push(entry.id);
            }
        }
        state.entries.retain(|entry| !evicted.contains(&entry.id));
        state.limit.saturating_sub(held)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    /// Drops entries whose copies no longer exist (their model was dropped).
    fn forget_dropped(&mut self) {
        self.entries.retain(|entry| entry.copy.strong_count() > 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// A fake device copy: evicts unless marked in use.
    #[derive(Default)]
    struct FakeCopy {
        in_use: AtomicBool,
        evicted: AtomicBool,
    }

    impl Evict for FakeCopy {
        fn evict(&self) -> bool {
            let gone = !self.in_use.load(Ordering::SeqCst);
            self.evicted.fetch_or(gone, Ordering::SeqCst);
            gone
        }
    }

    const GIB: u64 = 1 << 30;

    fn resident(manager: &DeviceMemoryManager, name: &str, gib: u64) -> (Arc<FakeCopy>, ResidentId) {
        let copy = Arc::new(FakeCopy::default());
        let weak = Arc::downgrade(&copy) as Weak<dyn Evict>;
        let id = manager.register(name, gib * GIB, weak);
        (copy, id)
    }

    #[test]
    fn the_least_recently_used_idle_copies_leave_first_and_only_as_many_as_needed() {
        // A run on an 8 GiB budget: the text encoders encode, the UNet samples, the VAE decodes.
        let manager = DeviceMemoryManager::new(8 * GIB);
        let (clip, clip_id) = resident(&manager, "text encoders", 2);
        assert_eq!(manager.make_room(5 * GIB, &[]), 6 * GIB, "the UNet fits beside them");
        let (unet, unet_id) = resident(&manager, "UNet", 5);
        manager.touch(clip_id);
        // The VAE needs 2 GiB: the UNet was used less recently than the encoders, so it leaves.
        assert_eq!(manager.make_room(2 * GIB, &[]), 6 * GIB);
        assert!(unet.evicted.load(Ordering::SeqCst) && !clip.evicted.load(Ordering::SeqCst));
        assert_eq!(manager.held(), 2 * GIB);
        let _ = unet_id;
    }

    #[test]
    fn copies_in_use_or_kept_stay_and_the_shortfall_is_reported() {
        let manager = DeviceMemoryManager::new(6 * GIB);
        let (busy, _) = resident(&manager, "ControlNet", 3);
        busy.in_use.store(true, Ordering::SeqCst);
        let (kept, kept_id) = resident(&manager, "UNet", 2);
        let (idle, _) = resident(&manager, "VAE", 1);
        assert_eq!(
            manager.make_room(4 * GIB, &[kept_id]),
            GIB,
            "only the idle VAE could leave"
        );
        assert!(idle.evicted.load(Ordering::SeqCst));
        assert!(!busy.evicted.load(Ordering::SeqCst) && !kept.evicted.load(Ordering::SeqCst));
        assert_eq!(manager.held(), 5 * GIB);
    }

    #[test]
    fn dropped_copies_are_forgotten_and_the_limit_can_change() {
        let manager = DeviceMemoryManager::new(4 * GIB);
        let (copy, _) = resident(&manager, "text encoders", 3);
        drop(copy);
        assert_eq!(manager.held(), 0);
        manager.set_limit(2 * GIB);
        assert_eq!(manager.make_room(GIB, &[]), 2 * GIB);
    }
}
