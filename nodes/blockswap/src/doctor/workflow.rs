//! `doctor --workflow`: what a workflow needs of this device, stage by stage, against the budget
//! a run would get here, from a rehearsal of the workflow (no stage does its work).

use std::fmt::Write;
use swapgraph_node_api::{CheckedWorkflow, StageNeed};

/// How a stage fits the run's budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StageFit {
    /// With every weight on the device and nothing in tiles.
    Whole,
    /// Only with weights streamed or the image in tiles.
    Reduced,
    /// Not even then.
    DoesNotFit,
}

impl StageFit {
    /// How `stage` fits in `budget` bytes.
    pub fn of(stage: &StageNeed, budget: u64) -> Self {
        if stage.need.unconstrained <= budget {
            Self::Whole
        } else if stage.need.least <= budget {
            Self::Reduced
        } else {
            Self::DoesNotFit
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Whole => "fits with every weight on the device",
            Self::Reduced => "fits streaming or in tiles",
            Self::DoesNotFit => "DOES NOT FIT",
        }
    }
}

/// Whether every stage of `checked` fits its budget (vacuously on the CPU).
pub fn fits(checked: &CheckedWorkflow) -> bool {
    checked.budget.is_none_or(|budget| {
        checked
            .need
            .stages
            .iter()
            .all(|stage| StageFit::of(stage, budget) != StageFit::DoesNotFit)
    })
}

/// The report on `checked` (workflow `name`, budget flag `setting`) for people.
pub fn describe(name: &str, setting: &str, checked: &CheckedWorkflow) -> String {
    let Some(budget) = checked.budget else {
        return format!(
            "Workflow {name}: on the CPU the operating system manages memory; there is no device budget to check\n"
        );
    };
    let gib = |bytes: u64| format!("{:.2} GiB", bytes as f64 / f64::from(1u32 << 30));
    let outside = match checked.outside {
        0 => String::new(),
        bytes => format!(" beside {} held outside the models (adapters)", gib(bytes)),
    };
    let mut text = format!(
        "Workflow {name}: --vram-budget {setting} lets a run have {} here{outside}\n",
        gib(budget)
    );
    for stage in &checked.need.stages {
        let _ = writeln!(
            text,
            "  {} ({}): {}: {} at the least, {} with every weight on the device: {}",
            stage.node,
            stage.node_type,
            StageFit::of(stage, budget).describe(),
            gib(stage.need.least),
            gib(stage.need.unconstrained),
            stage.need.detail
        );
    }
    if let Some(stopped) = &checked.need.stopped {
        let _ = writeln!(text, "  (the check stopped early: {stopped})");
    }
    if let Some(largest) = checked.need.largest() {
        let _ = writeln!(
            text,
            "It needs at least {} (\"{}\"): {} free on the device with --vram-budget auto.",
            gib(largest.need.least),
            largest.node,
            gib(largest.need.least + checked.outside)
        );
    }
    text
}

/// The report on `checked` as JSON.
pub fn to_json(checked: &CheckedWorkflow) -> serde_json::Value {
    let stages: Vec<_> = checked
        .need
        .stages
        .iter()
        .map(|stage| {
            serde_json::json!({
                "node": stage.node,
                "type": stage.node_type,
                "least_bytes": stage.need.least,
                "unconstrained_bytes": stage.need.unconstrained,
                "detail": stage.need.detail,
                "fit": checked.budget.map(|budget| StageFit::of(stage, budget)),
            })
        })
        .collect();
    serde_json::json!({
        "budget_bytes": checked.budget,
        "outside_bytes": checked.outside,
        "least_bytes": checked.need.largest().map(|stage| stage.need.least),
        "stages": stages,
        "stopped": checked.need.stopped,
        "fits": fits(checked),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use swapgraph_node_api::{DeviceNeed, WorkflowNeed};

    const GIB: u64 = 1 << 30;

    fn checked(budget: Option<u64>) -> CheckedWorkflow {
        let stage = |node: &str, least, unconstrained| StageNeed {
            node: node.to_string(),
            node_type: "T",
            need: DeviceNeed {
                least,
                unconstrained,
                detail: String::new(),
            },
        };
        CheckedWorkflow {
            need: WorkflowNeed {
                stages: vec![stage("encode", GIB, GIB), stage("sample", 3 * GIB, 9 * GIB)],
                stopped: None,
                spent: Vec::new(),
            },
            budget,
            outside: GIB / 2,
        }
    }

    #[test]
    fn each_stage_fits_whole_reduced_or_not_at_all() {
        let fits_of = |budget| -> Vec<StageFit> {
            let c = checked(Some(budget));
            c.need.stages.iter().map(|s| StageFit::of(s, budget)).collect()
        };
        assert_eq!(fits_of(10 * GIB), [StageFit::Whole, StageFit::Whole]);
        assert_eq!(fits_of(4 * GIB), [StageFit::Whole, StageFit::Reduced]);
        assert_eq!(fits_of(2 * GIB), [StageFit::Whole, StageFit::DoesNotFit]);
        assert!(fits(&checked(Some(3 * GIB))));
        assert!(!fits(&checked(Some(2 * GIB))));
        assert!(fits(&checked(None)), "nothing to check on the CPU");
    }

    #[test]
    fn the_report_names_each_stage_and_the_free_memory_that_would_do() {
        let text = describe("w.yaml", "auto", &checked(Some(2 * GIB)));
        assert!(
            text.starts_with(
                "Workflow w.yaml: --vram-budget auto lets a run have 2.00 GiB here beside 0.50 GiB held outside the \
                 models"
            ),
            "{text}"
        );
        assert!(
            text.contains("sample (T): DOES NOT FIT: 3.00 GiB at the least, 9.00 GiB"),
            "{text}"
        );
        assert!(text.contains("3.50 GiB free on the device"), "{text}");
        let json = to_json(&checked(Some(2 * GIB)));
        assert_eq!(json["stages"][1]["fit"], "does_not_fit");
        assert_eq!(json["fits"], false);
    }
}
