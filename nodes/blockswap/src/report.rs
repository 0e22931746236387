//! BlockSwap's memory summary, with the seed's lines (blocks swapped, offloaded memory, main
//! memory, GPU allocated, reserved and utilization, CPU memory), then how the transfers went.

use crate::plan::SwapPlan;
use crate::settings::{Granularity, SwapSettings};
use candle_core::DType;
use swapgraph_model::DeviceMemory;
use swapgraph_node_api::{MemoryReport, PassTimeline};

/// How weights kept in `dtype` are held and moved, for the summary.
pub fn kept_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F8E4M3 => "fp8 (e4m3), widened layer by layer as the model runs",
        DType::U8 => "as stored (GGUF blocks), dequantized on the device layer by layer as the model runs",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        DType::F32 => "f32",
        _ => "another dtype",
    }
}

/// The summary of a plan for weights kept in `kept`, before anything ran.
pub fn plan_report(plan: &SwapPlan, settings: &SwapSettings, kept: DType) -> MemoryReport {
    let granularity = match settings.granularity {
        Granularity::Unit => format!("unit, prefetch {}", settings.prefetch),
        Granularity::Block => "block".to_string(),
    };
    MemoryReport {
        title: "BlockSwap".to_string(),
        details: vec![
            (
                "blocks swapped".into(),
                format!("{} ({})", plan.swapped_blocks.len(), plan.swapped_blocks.join(", ")),
            ),
            (
                "units swapped".into(),
                format!("{} of {}", plan.swapped_units(), plan.pass_units),
            ),
            ("offloaded memory".into(), mib(plan.streamed_bytes as f64)),
            ("main memory".into(), mib(plan.resident_bytes as f64)),
            ("transfer buffers".into(), mib(plan.buffer_bytes as f64)),
            ("device weights".into(), mib(plan.device_bytes() as f64)),
            (
                "context projections".into(),
                format!(
                    "{} on the host, copied in once per conditioning",
                    mib(plan.context_bytes as f64)
                ),
            ),
            ("granularity".into(), granularity),
            ("weights kept in".into(), kept_name(kept).to_string()),
        ],
        ..MemoryReport::default()
    }
}

/// One streamed unit's figures per forward pass.
#[derive(Clone, Debug, PartialEq)]
pub struct UnitLine {
    /// The unit's name (`up_blocks.0.attentions.1.transformer_blocks.3`).
    pub name: String,
    /// Copy time per pass.
    pub transfer_ms: f64,
    /// Time compute stood still waiting for the copy, per pass.
    pub wait_ms: f64,
}

/// What happened while the model ran, for the summary after sampling.
#[derive(Clone, Debug, Default)]
pub struct RunFigures {
    /// How units moved.
    pub transfers: String,
    /// Why the asked-for streaming path was not taken.
    pub fallback: Option<String>,
    /// Forward passes so far.
    pub passes: u64,
    /// Bytes copied to the device per pass.
    pub streamed_per_pass: f64,
    /// Page-locked host bytes holding swapped units (streaming path).
    pub pinned_bytes: Option<u64>,
    /// Device bytes of the transfer ring (streaming path).
    pub ring_bytes: Option<u64>,
    /// Per-unit timings, per pass.
    pub units: Vec<UnitLine>,
    /// The device's memory, where it reports it.
    pub device: Option<DeviceMemory>,
    /// The last forward pass, unit by unit.
    pub timeline: PassTimeline,
}

/// Units listed one by one in the summary: the slowest transfers.
const UNITS_SHOWN: usize = 8;

/// Memory as it stands: the process's host memory, the device's, and what of the device's
/// allocation the plan accounts for (its resident weights and its transfer buffers).
pub fn memory_now(plan: &SwapPlan, ring_bytes: Option<u64>, device: Option<DeviceMemory>) -> MemoryReport {
    let mut report = MemoryReport::of_process("BlockSwap");
    if let Some(device) = device {
        report.device_allocated_bytes = Some(device.allocated);
        report.device_reserved_bytes = Some(device.reserved);
        report.device_total_bytes = Some(device.total);
        report.device_parts = vec![
            ("weights kept on the device".into(), plan.resident_bytes),
            ("transfer ring".into(), ring_bytes.unwrap_or(plan.buffer_bytes)),
        ];
    }
    report
}

/// The summary after running: the plan's lines, device and host memory, then transfer totals
/// and the slowest units with their overlap.
pub fn run_report(plan: &SwapPlan, settings: &SwapSettings, kept: DType, figures: &RunFigures) -> MemoryReport {
    let now = memory_now(plan, figures.ring_bytes, figures.device);
    let mut report = MemoryReport {
        details: plan_report(plan, settings, kept).details,
        ..now
    };
    if let Some(device) = figures.device {
        report.details.push((
            "GPU utilization".into(),
            format!("{:.1}%", 100.0 * device.allocated as f64 / device.total.max(1) as f64),
        ));
        report
            .details
            .push(("GPU peak allocated".into(), mib(device.peak_allocated as f64)));
    }
    let details = &mut report.details;
    details.push(("transfers".into(), figures.transfers.clone()));
    if let Some(reason) = &figures.fallback {
        details.push(("fallback".into(), reason.clone()));
    }
    if let Some(bytes) = figures.pinned_bytes {
        details.push(("page-locked host memory".into(), mib(bytes as f64)));
    }
    if let Some(bytes) = figures.ring_bytes {
        details.push(("transfer ring".into(), mib(bytes as f64)));
    }
    details.push(("forward passes".into(), figures.passes.to_string()));
    details.push(("streamed per pass".into(), mib(figures.streamed_per_pass)));
    let transfer = total_ms(&figures.units, |u| u.transfer_ms);
    let wait = total_ms(&figures.units, |u| u.wait_ms);
    details.push(("transfer per pass".into(), format!("{transfer:.2} ms")));
    details.push(("compute wait per pass".into(), format!("{wait:.2} ms")));
    details.push(("overlap".into(), overlap(transfer, wait)));
    if !figures.timeline.units.is_empty() {
        report.timeline = Some(figures.timeline.clone());
    }
    let mut slowest = figures.units.clone();
    slowest.sort_by(|a, b| b.transfer_ms.total_cmp(&a.transfer_ms));
    for unit in slowest.into_iter().take(UNITS_SHOWN) {
        details.push((
            unit.name,
            format!(
                "transfer {:.2} ms, wait {:.2} ms, overlap {}",
                unit.transfer_ms,
                unit.wait_ms,
                overlap(unit.transfer_ms, unit.wait_ms)
            ),
        ));
    }
    report
}

/// A per-unit time summed over units; 0 when none streamed (a float `sum` of nothing is -0,
/// which would print as "-0.00 ms").
fn total_ms(units: &[UnitLine], ms: fn(&UnitLine) -> f64) -> f64 {
    units.iter().map(ms).fold(0.0, |total, x| total + x)
}

/// The share of transfer time hidden behind compute.
fn overlap(transfer_ms: f64, wait_ms: f64) -> String {
    if transfer_ms <= 0.0 {
        return "-".into();
    }
    format!("{:.0}%", 100.0 * (1.0 - wait_ms / transfer_ms).clamp(0.0, 1.0))
}

/// Bytes as MiB with one decimal.
pub fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_is_the_hidden_share_of_transfer_time() {
        assert_eq!(overlap(10.0, 0.0), "100%");
        assert_eq!(overlap(10.0, 2.5), "75%");
        assert_eq!(overlap(10.0, 12.0), "0%");
        assert_eq!(overlap(0.0, 0.0), "-");
    }

    /// The plan swapping the one block of a one-unit model kept in `dtype`.
    fn one_swapped_unit(dtype: DType) -> (SwapPlan, SwapSettings) {
        let units = vec![swapgraph_model::UnitSpec {
            name: "mid_block.resnets.0".into(),
            group: swapgraph_model::UnitGroup::in_block("mid_block", "mid", 0),
            tensors: vec![("weight".into(), (64usize, 64usize).into())],
        }];
        let settings = SwapSettings {
            blocks_to_swap: 1,
            ..SwapSettings::default()
        };
        (crate::plan::plan(&units, dtype, &settings).unwrap(), settings)
    }

    #[test]
    fn the_summary_says_how_the_weights_are_kept() {
        let (plan, settings) = one_swapped_unit(DType::F8E4M3);
        let report = plan_report(&plan, &settings, DType::F8E4M3);
        let kept = report.details.iter().find(|(name, _)| name == "weights kept in");
        assert_eq!(kept.map(|(_, value)| value.as_str()), Some(kept_name(DType::F8E4M3)));
        assert!(kept_name(DType::F8E4M3).starts_with("fp8"));
    }

    #[test]
    fn on_a_gpu_the_allocation_is_split_into_weights_and_ring() {
        let (plan, _) = one_swapped_unit(DType::F16);
        let device = DeviceMemory {
            allocated: 100 << 20,
            reserved: 120 << 20,
            total: 80 << 30,
            ..DeviceMemory::default()
        };
        let report = memory_now(&plan, Some(3 << 20), Some(device));
        assert_eq!(report.device_allocated_bytes, Some(100 << 20));
        assert_eq!(
            report.device_parts,
            vec![
                ("weights kept on the device".to_string(), plan.resident_bytes),
                ("transfer ring".to_string(), 3 << 20),
            ]
        );
        assert!(
            memory_now(&plan, None, None).device_parts.is_empty(),
            "no device, no parts"
        );
    }

    #[test]
    fn nothing_streamed_totals_a_plain_zero() {
        assert_eq!(format!("{:.2}", total_ms(&[], |u| u.transfer_ms)), "0.00");
    }
}
