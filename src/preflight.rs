//! The check before a run on a GPU: the workflow is rehearsed (each heavy stage says what it
//! needs of the device without doing its work) and refused, before anything heavy runs, when
//! its largest stage does not fit in the run's device budget even with every weight streamed
//! and every decode in the smallest tiles.

use crate::exec::{Engine, RunOptions};
use crate::plan::Plan;
use std::fmt::Write;
use std::time::Instant;
use swapgraph_model::{candle_device, device_ceiling, is_out_of_memory, Ceiling};
use swapgraph_node_api::{VramBudget, WorkflowNeed};
use tracing::info;

/// Rehearses `plan` on `options`' device and compares its needs with the most the run can have
/// there: the refusal's message when the workflow cannot fit. On the CPU, whose memory the
/// operating system manages, nothing is checked.
pub fn check(engine: &Engine, plan: &Plan, options: &RunOptions) -> Result<(), String> {
    let device = candle_device(options.device).map_err(|e| format!("--device {}: {e}", options.device))?;
    if device_ceiling(&device, options.vram_budget).is_none() {
        return Ok(());
    }
    let started = Instant::now();
    let need = engine.rehearse(plan, options);
    // After the rehearsal: what it loaded outside the models (adapters) stays for the run.
    let Some(ceiling) = device_ceiling(&device, options.vram_budget) else {
        return Ok(());
    };
    if let Some(stopped) = &need.stopped {
        info!("the check before the run stopped early: {stopped}");
    }
    let spent: Vec<String> = need
        .spent
        .iter()
        .filter(|node| node.millis > 0)
        .map(|node| format!("{} ({}) {} ms", node.node, node.node_type, node.millis))
        .collect();
    if let Some(largest) = need.largest() {
        info!(
            "checked in {:.0} ms [{}]: the workflow needs {} of device memory at the least (\"{}\", {}), {} with every \
             weight on the device; the run can have {}",
            started.elapsed().as_secs_f64() * 1e3,
            spent.join(", "),
            gib(largest.need.least),
            largest.node,
            largest.node_type,
            gib(need
                .stages
                .iter()
                .map(|stage| stage.need.unconstrained)
                .max()
                .unwrap_or(0)),
            gib(ceiling.bytes)
        );
    }
    match refusal(&need, ceiling, options.vram_budget) {
        Some(message) => Err(format!("{} cannot run this workflow: {message}", options.device)),
        None => Ok(()),
    }
}

/// Why a workflow needing `need` cannot run within `ceiling` (from the run's `--vram-budget`
/// `setting`), with the device memory that would do; `None` when it fits. A rehearsal that ran
/// out of device memory (a loader placing weights) refuses it too.
fn refusal(need: &WorkflowNeed, ceiling: Ceiling, setting: VramBudget) -> Option<String> {
    let outside = if ceiling.outside > 0 {
        format!(
            " ({} of it is held outside the models, by adapters)",
            gib(ceiling.outside)
        )
    } else {
        String::new()
    };
    let mut message = match (&need.stopped, need.largest()) {
        (Some(stopped), _) if is_out_of_memory(stopped) => format!(
            "{}: the device ran out of memory before any work, with {} for the run{outside}. Free device \
             memory held by other processes, or run on a larger device.",
            // The driver's error alone, without the backtrace some errors carry on later lines.
            stopped.lines().next().unwrap_or_default(),
            gib(ceiling.bytes)
        ),
        (_, Some(largest)) if largest.need.least > ceiling.bytes => {
            let least = largest.need.least;
            let mut message = format!(
                "its largest stage, \"{}\" ({}), needs at least {} of device memory: {}; the run can have {}{outside} ",
                largest.node,
                largest.node_type,
                gib(least),
                largest.need.detail,
                gib(ceiling.bytes),
            );
            let wanted = least + ceiling.outside;
            let _ = match setting {
                VramBudget::Auto => write!(
                    message,
                    "(--vram-budget auto: the device's free memory). It needs {} free on the device: free device \
                     memory held by other processes, or lower the resolution.",
                    gib(wanted)
                ),
                VramBudget::Mebibytes(mib) => write!(
                    message,
                    "(--vram-budget {mib}). Raise --vram-budget to at least {} (more than the device has free does \
                     not help), or lower the resolution.",
                    wanted.div_ceil(1 << 20)
                ),
            };
            message
        }
        _ => return None,
    };
    message.push_str(" Nothing was run.");
    if !need.stages.is_empty() {
        message.push_str(" What each stage needs, at the least and with every weight on the device:");
    }
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
            ..WorkflowNeed::default()
        }
    }

    fn ceiling(bytes: u64, outside: u64) -> Ceiling {
        Ceiling { bytes, outside }
    }

    #[test]
    fn a_workflow_whose_largest_stage_fits_runs() {
        assert_eq!(refusal(&main_job(), ceiling(3 * GIB, 0), VramBudget::Auto), None);
        let nothing = WorkflowNeed::default();
        assert_eq!(
            refusal(&nothing, ceiling(0, 0), VramBudget::Auto),
            None,
            "nothing measured"
        );
    }

    #[test]
    fn a_refusal_names_the_stage_the_memory_that_would_do_and_every_stage() {
        let message = refusal(&main_job(), ceiling(2 * GIB, 0), VramBudget::Auto).expect("2 GiB is too little");
        assert!(
            message.starts_with("its largest stage, \"sample\" (KSampler), needs at least 2.83 GiB"),
            "{message}"
        );
        assert!(message.contains("sample's detail"), "{message}");
        assert!(message.contains("It needs 2.83 GiB free on the device"), "{message}");
        for line in [
            "pos (CLIPTextEncodeSDXL): 1.27 GiB / 1.27 GiB",
            "sample (KSampler): 2.83 GiB / 9.00 GiB",
            "decode (VAEDecode): 0.68 GiB / 25.00 GiB",
        ] {
            assert!(message.contains(line), "{line} in {message}");
        }
    }

    #[test]
    fn what_the_process_holds_outside_the_models_is_counted_in_the_advice() {
        let message = refusal(&main_job(), ceiling(GIB, GIB), VramBudget::Mebibytes(2048)).expect("too little");
        assert!(
            message.contains("1.00 GiB of it is held outside the models"),
            "{message}"
        );
        assert!(
            message.contains("Raise --vram-budget to at least 3924"),
            "2900 MiB for sampling and 1024 MiB held outside: {message}"
        );
        let auto = refusal(&main_job(), ceiling(GIB, GIB), VramBudget::Auto).expect("too little");
        assert!(auto.contains("It needs 3.83 GiB free on the device"), "{auto}");
    }

    #[test]
    fn a_rehearsal_that_ran_out_of_device_memory_refuses_the_run() {
        let need = WorkflowNeed {
            stages: Vec::new(),
            stopped: Some(
                "node \"ckpt\" (CheckpointLoaderSimple) could not be rehearsed: CUDA_ERROR_OUT_OF_MEMORY\n   0: <unknown>"
                    .into(),
            ),
            ..WorkflowNeed::default()
        };
        let message = refusal(&need, ceiling(GIB, 0), VramBudget::Auto).expect("refused");
        assert!(!message.contains("<unknown>"), "no backtrace: {message}");
        assert!(
            message.contains("ran out of memory before any work") && message.contains("\"ckpt\""),
            "{message}"
        );
        let other = WorkflowNeed {
            stages: Vec::new(),
            stopped: Some("node \"x\" (T) could not be rehearsed: a file is missing".into()),
            ..WorkflowNeed::default()
        };
        assert_eq!(
            refusal(&other, ceiling(GIB, 0), VramBudget::Auto),
            None,
            "the run reports that itself"
        );
    }
}
