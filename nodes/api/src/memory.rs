//! Memory reports that nodes (BlockSwap above all) and the engine publish during a run.

use serde::{Deserialize, Serialize};

/// A snapshot of memory use, as the CLI and the editor show it. Every figure is optional because
/// not every device can report every figure; `details` carries extra labelled lines (per-unit
/// transfer times, overlap) in the order they should be shown.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemoryReport {
    /// What the report is about, e.g. "BlockSwap" or "run".
    pub title: String,
    /// Bytes of device memory in use by tensors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_allocated_bytes: Option<u64>,
    /// Bytes of device memory held by the allocator.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_reserved_bytes: Option<u64>,
    /// Total bytes of device memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_total_bytes: Option<u64>,
    /// Resident bytes of this process in host memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_resident_bytes: Option<u64>,
    /// Peak resident bytes of this process in host memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_peak_bytes: Option<u64>,
    /// Further labelled figures, already formatted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<(String, String)>,
    /// What the device's allocated bytes hold, by kind, where a node knows (BlockSwap: the
    /// weights it keeps on the device and its transfer ring); the rest of the allocation is
    /// activations and other models.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub device_parts: Vec<(String, u64)>,
    /// One forward pass of a streamed model as it ran, for a timeline (BlockSwap with `debug`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeline: Option<PassTimeline>,
}

/// When each unit of one forward pass was copied to the device, waited for and used, in
/// milliseconds from the pass's start: what a timeline of the copy stream and the compute draws.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PassTimeline {
    /// The units, in the order the pass used them.
    pub units: Vec<UnitSpan>,
}

/// One unit's part of a [`PassTimeline`]; each span is `[start, end]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UnitSpan {
    /// The unit's name (`up_blocks.0.attentions.1`).
    pub unit: String,
    /// Its copy to the device; absent for a unit that stays on the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy: Option<[f64; 2]>,
    /// Compute standing still until the copy was done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<[f64; 2]>,
    /// The unit's compute, where it is measured (on the host clock when compute is synchronous;
    /// on a GPU the compute between two waits is the previous unit's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute: Option<[f64; 2]>,
}

/// Host memory the system could give this process without swapping (Linux: `MemAvailable` of
/// `/proc/meminfo`), or `None` where the platform does not tell.
pub fn host_available_bytes() -> Option<u64> {
    meminfo_bytes("MemAvailable:")
}

/// The host's memory in all (Linux: `MemTotal` of `/proc/meminfo`), or `None` where the
/// platform does not tell.
pub fn host_total_bytes() -> Option<u64> {
    meminfo_bytes("MemTotal:")
}

/// One figure of `/proc/meminfo`, in bytes.
fn meminfo_bytes(key: &str) -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find_map(|line| line.strip_prefix(key))?;
    line.trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .ok()
        .map(|kib| kib * 1024)
}

impl MemoryReport {
    /// This process's resident and peak resident host memory, where the platform tells (Linux:
    /// `/proc/self/status`); figures it cannot read are left out.
    pub fn of_process(title: impl Into<String>) -> Self {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(key))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|kib| kib * 1024)
        };
        Self {
            title: title.into(),
            host_resident_bytes: kib("VmRSS:"),
            host_peak_bytes: kib("VmHWM:"),
            ..Self::default()
        }
    }
}
