//! The workflow check the binary lends packs' commands (`doctor --workflow`).

use super::args::WorkflowArgs;
use super::run::load_quietly;
use crate::exec::{Engine, RunOptions};
use std::sync::Arc;
use swapgraph_model::{candle_device, device_ceiling};
use swapgraph_node_api::{CheckWorkflow, CheckedWorkflow, Registry, WorkflowCheck};

/// The check of a workflow planned as `run` plans it and rehearsed on the device asked for.
pub fn workflow_checker(registry: Registry) -> CheckWorkflow {
    let engine = Arc::new(Engine::new(registry));
    Arc::new(move |check: &WorkflowCheck| {
        let args = WorkflowArgs {
            workflow: check.workflow.clone(),
            set: check.set.clone(),
            set_type: Vec::new(),
        };
        let plan = load_quietly(&args, engine.registry()).map_err(|failure| failure.message())?;
        let device = candle_device(check.device).map_err(|e| format!("--device {}: {e}", check.device))?;
        let options = RunOptions {
            device: check.device,
            vram_budget: check.vram_budget,
            files: check.files.clone(),
            ..RunOptions::default()
        };
        let need = engine.rehearse(&plan, &options);
        // After the rehearsal: what it loaded outside the models (adapters) stays for a run.
        let ceiling = device_ceiling(&device, check.vram_budget);
        Ok(CheckedWorkflow {
            need,
            budget: ceiling.map(|ceiling| ceiling.bytes),
            outside: ceiling.map_or(0, |ceiling| ceiling.outside),
        })
    })
}
