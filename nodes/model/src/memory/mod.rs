//! Device memory for a whole run: one [`DeviceMemoryManager`] per GPU, which every model's
//! device copy registers with, and [`OnDevice`], a model part whose master stays on the host and
//! whose device copy comes when a node needs it and leaves when another needs the room.
//!
//! Like ComfyUI's model management (`comfy/model_management.py`: models loaded on demand, the
//! least recently used unloaded first), but within a budget the user can set (`--vram-budget`),
//! and with BlockSwap streaming what does not fit instead of failing.

mod manager;
mod on_device;
mod slot;

pub use manager::{DeviceMemoryManager, Evict, ResidentId};
pub use on_device::OnDevice;
pub(crate) use slot::{DeviceSlot, Fill};

use crate::device_memory;
use candle_core::Device;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use swapgraph_node_api::VramBudget;

/// Device memory `auto` leaves to the driver, cuBLAS and cuDNN workspaces and the pool's
/// fragmentation: this share of what the device offers, and at least [`MIN_MARGIN`].
pub const MARGIN_FRACTION: f64 = 0.05;
/// The least margin `auto` keeps.
pub const MIN_MARGIN: u64 = 384 << 20;

/// The manager of `device`'s memory with the run's `budget` applied, less what the process holds
/// outside the manager's copies; `None` on the CPU, whose memory the operating system manages.
pub fn memory_manager(device: &Device, budget: VramBudget) -> Option<Arc<DeviceMemoryManager>> {
    static MANAGERS: OnceLock<Mutex<HashMap<String, Arc<DeviceMemoryManager>>>> = OnceLock::new();
    let memory = device_memory(device)?;
    // What this process can use: free memory plus everything its memory pool holds.
    let offered = memory.free + memory.reserved;
    let limit = budget_bytes(budget, offered);
    let mut managers = MANAGERS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let manager = managers
        .entry(format!("{:?}", device.location()))
        .or_insert_with(|| Arc::new(DeviceMemoryManager::new(limit)));
    // What the process holds outside the registered copies (adapters, activations, tensors
    // passed between nodes) is not the manager's to give.
    let unmanaged = memory.allocated.saturating_sub(manager.held());
    manager.set_limit(limit.saturating_sub(unmanaged));
    tracing::debug!(
        "device memory: {} MiB allocated ({} MiB by models, {unmanaged_mib} MiB outside them), {} MiB reserved, {} \
         MiB free; the run's models may have {} MiB",
        memory.allocated >> 20,
        manager.held() >> 20,
        memory.reserved >> 20,
        memory.free >> 20,
        manager.limit() >> 20,
        unmanaged_mib = unmanaged >> 20
    );
    Some(Arc::clone(manager))
}

/// The most device memory a run on `device` can have under `budget`, without the margin `auto`
/// keeps for the driver's and libraries' workspaces (a run may dip into it), and what the
/// process holds outside the models' copies (adapters, values passed between nodes), which
/// that figure already excludes; `None` on the CPU.
pub fn device_ceiling(device: &Device, budget: VramBudget) -> Option<Ceiling> {
    let memory = device_memory(device)?;
    let offered = memory.free + memory.reserved;
    let held = memory_manager(device, budget).map_or(0, |manager| manager.held());
    let outside = memory.allocated.saturating_sub(held);
    let limit = match budget {
        VramBudget::Auto => offered,
        VramBudget::Mebibytes(_) => budget_bytes(budget, offered),
    };
    Some(Ceiling {
        bytes: limit.saturating_sub(outside),
        outside,
    })
}

/// The most device memory a run can have for its models and their work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ceiling {
    /// Bytes for the models and their work.
    pub bytes: u64,
    /// Bytes the process holds outside the models' copies, which the budget also pays for.
    pub outside: u64,
}

/// The bytes a run may use under `budget` on a device that offers `offered` bytes.
fn budget_bytes(budget: VramBudget, offered: u64) -> u64 {
    let margin = ((offered as f64 * MARGIN_FRACTION) as u64).max(MIN_MARGIN);
    let auto = offered.saturating_sub(margin);
    match budget {
        VramBudget::Auto => auto,
        VramBudget::Mebibytes(mib) => (mib << 20).min(offered),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_keeps_a_margin_and_a_given_budget_never_exceeds_the_device() {
        const GIB: u64 = 1 << 30;
        assert_eq!(budget_bytes(VramBudget::Auto, 80 * GIB), 76 * GIB);
        assert_eq!(budget_bytes(VramBudget::Auto, 4 * GIB), 4 * GIB - MIN_MARGIN);
        assert_eq!(budget_bytes(VramBudget::Mebibytes(6144), 80 * GIB), 6 * GIB);
        assert_eq!(budget_bytes(VramBudget::Mebibytes(6144), 4 * GIB), 4 * GIB);
    }
}
