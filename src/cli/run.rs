//! `swapgraph run` and `swapgraph validate`.

use super::args::{RunArgs, ValidateArgs, WorkflowArgs};
use super::{render, Exit};
use crate::exec::{Engine, EventSink, RunError, RunOptions};
use crate::plan::Plan;
use crate::preflight;
use crate::validate::{ValidationError, ValidationReport};
use crate::workflow::{read_bytes, Override};
use std::io::IsTerminal;
use swapgraph_node_api::{CancelToken, DeviceSpec, Registry};
use tracing::{error, info, warn};

/// Validates, plans and runs a workflow `args.repeat` times in one engine.
pub fn run(args: RunArgs, registry: Registry) -> Exit {
    if matches!(args.device, DeviceSpec::Cuda(_)) && !cfg!(feature = "cuda") {
        error!(
            "--device {}: this build of swapgraph runs on the CPU only; build with --features cuda",
            args.device
        );
        return Exit::Usage;
    }
    let files = match args.folders.roots() {
        Ok(files) => files,
        Err(problem) => {
            error!("{problem}");
            return Exit::Usage;
        }
    };
    let plan = match load(&args.workflow, &registry) {
        Ok(plan) => plan,
        Err(exit) => return exit,
    };
    let runtime = match super::async_runtime() {
        Ok(runtime) => runtime,
        Err(exit) => return exit,
    };
    let engine = Engine::new(registry);
    let options = |cancel: &CancelToken| RunOptions {
        device: args.device,
        vram_budget: args.vram_budget,
        files: files.clone(),
        cancel: cancel.clone(),
        parallelism: args.jobs.map_or(RunOptions::default().parallelism, usize::from),
    };
    if let Err(refused) = preflight::check(&engine, &plan, &options(&CancelToken::new())) {
        error!("{refused}");
        return Exit::RuntimeFailure;
    }
    let interactive = std::io::stderr().is_terminal() && !tracing::enabled!(tracing::Level::DEBUG);
    runtime.block_on(async {
        let cancel = CancelToken::new();
        let on_interrupt = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                warn!("cancelling: stopping after the current step");
                on_interrupt.cancel();
            }
        });
        for round in 1..=args.repeat {
            let options = options(&cancel);
            let (sink, receiver) = EventSink::channel();
            let renderer = tokio::spawn(render::render(receiver, interactive));
            let result = engine.run(&plan, &options, &sink).await;
            drop(sink);
            let _ = renderer.await;
            match result {
                Ok(summary) => info!(
                    "run {round}/{}: {} nodes ran, {} cached",
                    args.repeat, summary.executed, summary.cached
                ),
                Err(RunError::Cancelled) => {
                    error!("the run was cancelled");
                    return Exit::Cancelled;
                }
                Err(failure) => {
                    error!("{failure}");
                    return Exit::RuntimeFailure;
                }
            }
        }
        Exit::Success
    })
}

/// Checks a workflow and prints its plan or its problems.
pub fn validate(args: ValidateArgs, registry: &Registry) -> Exit {
    match load_quietly(&args.workflow, registry) {
        Ok(plan) => {
            let summary = plan.summary();
            if args.json {
                print_json(&serde_json::json!({ "valid": true, "plan": summary }));
            } else {
                let order: Vec<&str> = summary.steps.iter().map(|s| s.id.as_str()).collect();
                println!(
                    "{} is valid; {} nodes run in this order: {}",
                    args.workflow.workflow.display(),
                    order.len(),
                    order.join(", ")
                );
                if !summary.bypassed.is_empty() {
                    println!("bypassed: {}", join(&summary.bypassed));
                }
                if !summary.unused.is_empty() {
                    println!("not run (feed no output node): {}", join(&summary.unused));
                }
            }
            Exit::Success
        }
        Err(Failure::Report(report)) if args.json => {
            print_json(&serde_json::json!({ "valid": false, "report": report }));
            Exit::InvalidWorkflow
        }
        Err(failure) => failure.print(),
    }
}

fn join(ids: &[crate::workflow::NodeId]) -> String {
    ids.iter().map(|id| id.as_str()).collect::<Vec<_>>().join(", ")
}

fn print_json(value: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
}

/// Why a workflow could not be planned.
pub(super) enum Failure {
    Unreadable(String),
    Report(ValidationReport),
}

impl Failure {
    /// The problem as one message.
    pub(super) fn message(&self) -> String {
        match self {
            Self::Unreadable(message) => message.clone(),
            Self::Report(report) => report.to_string(),
        }
    }

    fn print(self) -> Exit {
        match self {
            Self::Unreadable(message) => eprintln!("error: {message}"),
            Self::Report(report) => eprintln!("{report}; nothing was run"),
        }
        Exit::InvalidWorkflow
    }
}

fn load(args: &WorkflowArgs, registry: &Registry) -> Result<Plan, Exit> {
    load_quietly(args, registry).map_err(Failure::print)
}

/// Reads, overrides, validates and plans; `--set` problems join the validation report.
pub(super) fn load_quietly(args: &WorkflowArgs, registry: &Registry) -> Result<Plan, Failure> {
    let source = args.workflow.display().to_string();
    let bytes = read_bytes(&args.workflow).map_err(|e| Failure::Unreadable(e.to_string()))?;
    type Parse = fn(&str, usize) -> Result<Override, ValidationError>;
    let by_node = args.set.iter().map(|text| (text, Override::parse as Parse));
    let by_type = args
        .set_type
        .iter()
        .map(|text| (text, Override::parse_for_type as Parse));
    let (overrides, mut errors): (Vec<_>, Vec<_>) = by_node
        .chain(by_type)
        .enumerate()
        .map(|(i, (text, parse))| parse(text, i + 1))
        .partition(Result::is_ok);
    let overrides: Vec<Override> = overrides.into_iter().filter_map(Result::ok).collect();
    let bad_overrides: Vec<ValidationError> = errors.drain(..).filter_map(Result::err).collect();
    match crate::prepare(&source, &bytes, &overrides, registry) {
        Ok(_) if !bad_overrides.is_empty() => Err(Failure::Report(ValidationReport::new(source, bad_overrides))),
        Ok(plan) => Ok(plan),
        Err(report) => {
            let mut all = report.errors;
            all.extend(bad_overrides);
            Err(Failure::Report(ValidationReport::new(report.source, all)))
        }
    }
}
