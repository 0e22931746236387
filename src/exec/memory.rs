//! The process's own memory use, reported at the end of every run.

use swapgraph_node_api::MemoryReport;

/// Resident and peak resident host memory of this process, where the platform tells
/// (Linux: `/proc/self/status`); figures it cannot read are left out.
pub fn process_report() -> MemoryReport {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
    };
    MemoryReport {
        title: "process".to_string(),
        host_resident_bytes: kib("VmRSS:"),
        host_peak_bytes: kib("VmHWM:"),
        ..MemoryReport::default()
    }
}
