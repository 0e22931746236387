//! The check before a run on a GPU: the workflow is rehearsed (each heavy stage says what it
//! needs of the device without doing its work) and refused, before anything heavy runs, when
//! its largest stage does not fit in the run's device budget even with every weight streamed
//! and every decode in the smallest tiles.

use crate::exec::{Engine, RunOptions};
use crate::plan::Plan;
use std::fmt::Write;
use std::time::Instant;
use swapgraph_model::{candle_device, free_memory_for, memory_manager};
use swapgraph_node_api::{VramBudget, WorkflowNeed};
use tracing::info;

/// Rehearses `plan` on `options`' device and compares its needs with the budget there: the
/// refusal's message when the workflow cannot fit. On the CPU, whose memory the operating
/// system manages, nothing is checked.
pub fn check(engine: &Engine, plan: &Plan, options: &RunOptions) -> Result<(), String> {
    let device = candle_device(options.device).map_err(|e| format!("--device {}: {e}", options.device))?;
    let Some(manager) = memory_manager(&device, options.vram_budget) else {
        return Ok(());
    };
    let started = Instant::now();
    let need = engine.rehearse(plan, options);
    let budget = manager.limit();
    if let Some(stopped) = &need.stopped {
        info!("the check before the run stopped early: {stopped}");
    }
    if let Some(largest) = need.largest() {
        info!(
            "checked in {:.0} ms: the workflow needs {} of device memory at the least (\"{}\", {}), {} with every \
             weight on the device; the run's budget is {}",
            started.elapsed().as_secs_f64() * 1e3,
            gib(largest.need.least),
            largest.node,
            largest.node_type,
            gib(need
                .stages
                .iter()
                .map(|stage| stage.need.unconstrained)
                .max()
                .unwrap_or(0)),
            gib(budget)
        );
    }
    match refusal(&need, budget, options.vram_budget) {
        Some(message) => Err(format!("{} cannot run this workflow: {message}", options.device)),
        None => Ok(()),
    }
}

/// Why a workflow needing `need` cannot run within a device budget of `budget` bytes (from the
/// run's `--vram-budget`), with the device memory that would do; `None` when it fits.
fn refusal(need: &WorkflowNeed, budget: u64, setting: VramBudget) -> Option<String> {
    let largest = need.largest().filter(|stage| stage.need.least > budget)?;
    let least = largest.need.least;
    let mut message = format!(
        "its largest stage, \"{}\" ({}), needs at least {} of device memory: {}; the run's budget is {} ",
        largest.node,
        largest.node_type,
        gib(least),
        largest.need.detail,
        gib(budget),
    );
    match setting {
        VramBudget::Auto => {
            let _ = write!(
                message,
                "(--vram-budget auto: the device's free memory less a margin). It needs {} free on the device: \
                 free device memory held by other processes, or lower the resolution.",
                gib(free_memory_for(least))
            );
        }
        VramBudget::Mebibytes(mib) => {
            let _ = write!(
                message,
                "(--vram-budget {mib}). Raise --vram-budget to at least {} (more than the device has free does not \
                 help), or lower the resolution.",
                least.div_ceil(1 << 20)
            );
        }
    }
    message.push_str(" Nothing was run. What each stage needs, at the least and with every weight on the device:");
    for stage in &need.stages {
        let _ = write!(
            message,
            "\n  {} ({}): {} / {}: {}",
            stage.node,
            stage.node_type,
            gib(stage.need.least),
            gib(stage.need.unconstrained),
            stage.need.detail
        );
    }
    Some(message)
}

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / f64::from(1u32 << 30))
}

#[cfg(test)]
mod tests {
    use super::*;
    use swapgraph_node_api::{DeviceNeed, StageNeed};

    const GIB: u64 = 1 << 30;

    fn stage(node: &str, node_type: &'static str, least: u64, unconstrained: u64) -> StageNeed {
        StageNeed {
            node: node.to_string(),
            node_type,
            need: DeviceNeed {
                least,
                unconstrained,
                detail: format!("{node}'s detail"),
            },
        }
    }

    fn main_job() -> WorkflowNeed {
        WorkflowNeed {
            stages: vec![
                stage("pos", "CLIPTextEncodeSDXL", 1_300 << 20, 1_300 << 20),
                stage("sample", "KSampler", 2_900 << 20, 9 * GIB),
                stage("decode", "VAEDecode", 700 << 20, 25 * GIB),
            ],
            stopped: None,
        }
    }

    #[test]
    fn a_workflow_whose_largest_stage_fits_runs() {
        assert_eq!(refusal(&main_job(), 3 * GIB, VramBudget::Auto), None);
        assert_eq!(
            refusal(&WorkflowNeed::default(), 0, VramBudget::Auto),
            None,
            "nothing measured"
        );
    }

    #[test]
    fn a_refusal_names_the_stage_the_memory_that_would_do_and_every_stage() {
        let message = refusal(&main_job(), 2 * GIB, VramBudget::Auto).expect("2 GiB is too little");
        assert!(
            message.starts_with("its largest stage, \"sample\" (KSampler), needs at least 2.83 GiB"),
            "{message}"
        );
        assert!(message.contains("sample's detail"), "{message}");
        let free = gib(free_memory_for(2_900 << 20));
        assert!(
            message.contains(&format!("It needs {free} free on the device")),
            "{message}"
        );
        for line in [
            "pos (CLIPTextEncodeSDXL): 1.27 GiB / 1.27 GiB",
            "sample (KSampler): 2.83 GiB / 9.00 GiB",
            "decode (VAEDecode): 0.68 GiB / 25.00 GiB",
        ] {
            assert!(message.contains(line), "{line} in {message}");
        }
    }

    #[test]
    fn a_given_budget_too_small_says_which_budget_would_do() {
        let message = refusal(&main_job(), 2 * GIB, VramBudget::Mebibytes(2048)).expect("too little");
        assert!(message.contains("Raise --vram-budget to at least 2900"), "{message}");
    }
}
