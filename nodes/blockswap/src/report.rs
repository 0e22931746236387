//! BlockSwap's memory summary, with the seed's lines: blocks swapped, offloaded memory, main
//! memory, and what the device and host hold.

use crate::plan::SwapPlan;
use crate::settings::{Granularity, SwapSettings};
use crate::store::mib;
use swapgraph_node_api::MemoryReport;

/// The summary of a plan, before anything ran.
pub fn plan_report(plan: &SwapPlan, settings: &SwapSettings) -> MemoryReport {
    let granularity = match settings.granularity {
        Granularity::Unit => format!("unit, prefetch {}", settings.prefetch),
        Granularity::Block => "block".to_string(),
    };
    MemoryReport {
        title: "BlockSwap".to_string(),
        host_resident_bytes: None,
        details: vec![
            (
                "blocks swapped".into(),
                format!("{} ({})", plan.swapped_blocks.len(), plan.swapped_blocks.join(", ")),
            ),
            (
                "units swapped".into(),
                format!("{} of {}", plan.swapped_units(), plan.swapped.len()),
            ),
            ("offloaded memory".into(), mib(plan.streamed_bytes as f64)),
            ("main memory".into(), mib(plan.resident_bytes as f64)),
            ("transfer buffers".into(), mib(plan.buffer_bytes as f64)),
            ("device weights".into(), mib(plan.device_bytes() as f64)),
            ("granularity".into(), granularity),
            ("transfers".into(), transfer_mode(settings).to_string()),
        ],
        ..MemoryReport::default()
    }
}

/// How weights move in this build: synchronous copies (a no-op on the CPU). `non_blocking` asks
/// for side-stream copies from page-locked memory, which need the CUDA build's stream support.
pub fn transfer_mode(settings: &SwapSettings) -> &'static str {
    if settings.non_blocking {
        "synchronous (non_blocking asked; side-stream copies need the CUDA build)"
    } else {
        "synchronous"
    }
}
