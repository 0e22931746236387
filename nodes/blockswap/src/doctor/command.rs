//! `swapgraph doctor`, the command the BlockSwap pack adds: the setup check, with settings
//! recommended from measurements.

use super::{diagnose, workflow, Diagnosis, Fit, KeptWeights, Recommendation, Status};
use crate::preset;
use crate::SwapSettings;
use candle_core::quantized::GgmlDType;
use clap::Parser;
use std::path::PathBuf;
use std::sync::Arc;
use swapgraph_model::{candle_device, StreamedFamily};
use swapgraph_node_api::{
    CheckedWorkflow, CommandContext, DeviceSpec, FileRoots, PackCommand, VramBudget, WorkflowCheck,
};

/// The device `doctor` checks unless told: the first GPU in the CUDA build, else the CPU.
const DOCTOR_DEVICE: &str = if cfg!(feature = "cuda") { "cuda:0" } else { "cpu" };

/// Exit code when a check fails or the device cannot be used.
const FAILED: u8 = 1;

/// Exit code of a command-line usage error.
const USAGE: u8 = 2;

/// `swapgraph doctor`, streaming and sizing a model of `family`.
pub fn doctor_command(family: Arc<dyn StreamedFamily>) -> PackCommand {
    PackCommand {
        name: "doctor",
        about: "Check that BlockSwap works on this machine (device, driver, page-locked memory, host-to-device \
                bandwidth, a streamed round trip) and recommend settings at 1024x1024 and 1280x1280 from what it \
                measures here; with --workflow, check what each stage of a workflow needs of this device. Exits 1 \
                when a check fails or a stage does not fit",
        run: Arc::new(move |args: &[String], context: &CommandContext| run(args, family.as_ref(), context)),
    }
}

/// Check that BlockSwap works on this machine (device, driver, page-locked memory,
/// host-to-device bandwidth, a streamed round trip) and recommend settings at 1024x1024 and
/// 1280x1280 from what it measures here; with --workflow, check what each stage of a workflow
/// needs of this device. Exits 1 when a check fails or a stage does not fit.
#[derive(Debug, Parser)]
#[command(name = "swapgraph doctor")]
struct DoctorArgs {
    /// The device to check: cpu, cuda or cuda:N.
    #[arg(long, default_value = DOCTOR_DEVICE)]
    device: DeviceSpec,
    /// Print the checks and recommendations as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// How the UNet's weights are kept for the recommendations: default (the device's dtype, f16
    /// on GPUs), fp8_e4m3fn (8-bit floats, as UNETLoader keeps them: half the bytes to hold and
    /// to stream), or the blocks of a GGUF UNet as UnetLoaderGGUF keeps them (q8_0, q5_0, q4_0,
    /// q6_k, q5_k, q4_k; laid out as ComfyUI-GGUF's converter writes SDXL UNets).
    #[arg(long, default_value = "default", value_parser = ["default", "fp8_e4m3fn", "q8_0", "q5_0", "q4_0", "q6_k", "q5_k", "q4_k"])]
    weight_dtype: String,
    /// Write the 1024x1024 recommendation as a BlockSwap preset file (the keys
    /// enable_blockswap, blockswap_blocks, ...), for `run --blockswap-preset`.
    #[arg(long, value_name = "FILE")]
    write_preset: Option<PathBuf>,
    /// Also check a workflow as `run` would run it on this device: the budget a run gets here,
    /// and what each stage (text encoding, sampling, decoding) needs at the least and with
    /// every weight on the device, without doing their work. Exits 1 when a stage does not fit.
    #[arg(long, value_name = "FILE")]
    workflow: Option<PathBuf>,
    /// With --workflow: override a param, node.param=value, as `run --set` does. Repeatable.
    #[arg(long = "set", value_name = "NODE.PARAM=VALUE", requires = "workflow")]
    set: Vec<String>,
    /// With --workflow: the run's device memory budget, in MiB, or auto, as `run --vram-budget`.
    #[arg(long, default_value = "auto", value_name = "auto|MiB")]
    vram_budget: VramBudget,
    /// With --workflow: the folder model names resolve in, as `run --models-dir`.
    #[arg(long, default_value = ".")]
    models_dir: PathBuf,
    /// With --workflow: the folder input names resolve in, as `run --input-dir`.
    #[arg(long, default_value = ".")]
    input_dir: PathBuf,
}

/// Parses `args` (those after `doctor`) and runs the command.
fn run(args: &[String], family: &dyn StreamedFamily, context: &CommandContext) -> u8 {
    let parsed =
        DoctorArgs::try_parse_from(std::iter::once("swapgraph doctor".to_string()).chain(args.iter().cloned()));
    match parsed {
        Ok(args) => doctor(args, family, context),
        Err(error) => {
            let code = if error.use_stderr() { USAGE } else { 0 };
            // Printing help or a usage error only fails when the terminal is gone.
            let _ = error.print();
            code
        }
    }
}

/// Runs the checks on the chosen device, prints them (text or JSON), checks the workflow if
/// given, and optionally writes the 1024x1024 recommendation as a preset file.
fn doctor(args: DoctorArgs, family: &dyn StreamedFamily, context: &CommandContext) -> u8 {
    let device = match candle_device(args.device) {
        Ok(device) => device,
        Err(e) => {
            eprintln!("FAIL  device: {e}");
            return FAILED;
        }
    };
    let kept = match args.weight_dtype.as_str() {
        "fp8_e4m3fn" => KeptWeights::Dtype(candle_core::DType::F8E4M3),
        "q8_0" => KeptWeights::Blocks(GgmlDType::Q8_0),
        "q5_0" => KeptWeights::Blocks(GgmlDType::Q5_0),
        "q4_0" => KeptWeights::Blocks(GgmlDType::Q4_0),
        "q6_k" => KeptWeights::Blocks(GgmlDType::Q6K),
        "q5_k" => KeptWeights::Blocks(GgmlDType::Q5K),
        "q4_k" => KeptWeights::Blocks(GgmlDType::Q4K),
        _ => KeptWeights::Compute,
    };
    let diagnosis = diagnose(&device, family, kept);
    let checked = match check_workflow(&args, context) {
        Ok(checked) => checked,
        Err(e) => {
            eprintln!("error: {e}");
            return FAILED;
        }
    };
    if args.json {
        let mut report = serde_json::to_value(&diagnosis).unwrap_or_default();
        if let Some(checked) = &checked {
            report["workflow"] = workflow::to_json(checked);
        }
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        print!("{}", describe(&diagnosis, &args.device.to_string()));
        if let (Some(checked), Some(path)) = (&checked, &args.workflow) {
            let setting = args.vram_budget.to_string();
            print!("{}", workflow::describe(&path.display().to_string(), &setting, checked));
        }
    }
    if let Some(path) = &args.write_preset {
        let Some(first) = diagnosis.recommendations.first() else {
            eprintln!(
                "error: no recommendation to write to {}: nothing was measured on this device",
                path.display()
            );
            return FAILED;
        };
        let (enabled, settings) = preset_for(first);
        if let Err(e) = std::fs::write(path, preset::to_json(enabled, &settings) + "\n") {
            eprintln!("error: cannot write {}: {e}", path.display());
            return FAILED;
        }
        eprintln!(
            "wrote the {0}x{0} recommendation to {1}",
            first.resolution,
            path.display()
        );
    }
    if diagnosis.healthy() && checked.as_ref().is_none_or(workflow::fits) {
        0
    } else {
        FAILED
    }
}

/// The workflow of `--workflow`, rehearsed on the device as `run` would run it; `None` when none
/// was given.
fn check_workflow(args: &DoctorArgs, context: &CommandContext) -> Result<Option<CheckedWorkflow>, String> {
    let Some(path) = &args.workflow else {
        return Ok(None);
    };
    for (flag, dir) in [("--models-dir", &args.models_dir), ("--input-dir", &args.input_dir)] {
        if !dir.is_dir() {
            return Err(format!("{flag} {}: not a folder", dir.display()));
        }
    }
    let check = WorkflowCheck {
        workflow: path.clone(),
        set: args.set.clone(),
        files: FileRoots {
            models: args.models_dir.clone(),
            inputs: args.input_dir.clone(),
            ..FileRoots::default()
        },
        device: args.device,
        vram_budget: args.vram_budget,
    };
    (context.check_workflow)(&check).map(Some)
}

/// A recommendation in the preset's terms (which know block counts, not budgets).
fn preset_for(recommendation: &Recommendation) -> (bool, SwapSettings) {
    let settings = SwapSettings::default();
    match recommendation.fit {
        Fit::Resident => (false, settings),
        Fit::Swap { blocks_to_swap, .. } => (
            true,
            SwapSettings {
                blocks_to_swap: blocks_to_swap.unwrap_or(3),
                ..settings
            },
        ),
        Fit::TooSmall { .. } => (
            true,
            SwapSettings {
                blocks_to_swap: 3,
                ..settings
            },
        ),
    }
}

fn describe(diagnosis: &Diagnosis, device: &str) -> String {
    let mut text = format!("swapgraph doctor ({device})\n");
    for check in &diagnosis.checks {
        let status = match check.status {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
        };
        text += &format!("  {status}  {}: {}\n", check.name, check.detail);
    }
    if !diagnosis.recommendations.is_empty() {
        text += &format!(
            "Recommended BlockSwap settings for the {} ({}), from this device's free memory:\n",
            diagnosis.model, diagnosis.weights
        );
    }
    let gib = |bytes: u64| bytes as f64 / (1u64 << 30) as f64;
    for r in &diagnosis.recommendations {
        let line = match &r.fit {
            Fit::Resident => "every weight fits: no BlockSwap needed".to_string(),
            Fit::Swap {
                budget_mb,
                blocks_to_swap,
                streamed_bytes,
            } => {
                let blocks = blocks_to_swap.map_or("no block count fits; use the budget".to_string(), |b| {
                    format!("or blocks_to_swap: {b}")
                });
                let floor = diagnosis.pinned_gb_s.map_or(String::new(), |rate| {
                    format!(
                        ", transfer floor {:.0} ms per step",
                        *streamed_bytes as f64 / (rate * 1e9) * 1e3
                    )
                });
                format!(
                    "vram_budget_mb: {budget_mb} ({blocks}); streams {:.2} GiB per step{floor}",
                    gib(*streamed_bytes)
                )
            }
            Fit::TooSmall {
                minimum_mb,
                available_mb,
            } => format!(
                "does not fit: {available_mb} MiB left for weights, BlockSwap needs at least {minimum_mb} MiB; \
                 use a smaller resolution or tiled decoding"
            ),
        };
        text += &format!(
            "  {0}x{0}: activations {1:.2} GiB, text encoders and VAE {2:.2} GiB; {line}\n",
            r.resolution,
            gib(r.activation_bytes),
            gib(r.companion_bytes)
        );
    }
    text
}
