//! Execution: runs a [`Plan`]'s steps on blocking worker threads, as many at once as the
//! dependencies and the parallelism limit allow, reusing cached outputs, publishing events and
//! honouring cancellation.
//!
//! Scheduling follows ComfyUI's execution list: a ready set of steps whose producers are done,
//! taken lowest plan index first, with a count of unfinished producers per waiting step. Steps
//! whose nodes use the device run one at a time; others run beside them.

mod cache;
mod events;
mod file_identity;
mod rehearse;
mod schedule;

pub use events::{Event, EventSink, NodeEvents, NodeTypeName};

use crate::plan::{Plan, Step};
use crate::workflow::NodeId;
use cache::{OutputCache, Signatures};
use schedule::Schedule;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use swapgraph_node_api::{
    Args, CancelToken, DeviceSpec, FileRoots, MemoryReport, NodeDescriptor, NodeError, Registry, RunContext, Value,
    VramBudget,
};
use tokio::task::JoinSet;

/// Settings of one run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Where models execute.
    pub device: DeviceSpec,
    /// How much of the device's memory the run may use.
    pub vram_budget: VramBudget,
    /// The models, input and output folders the workflow's file names resolve in.
    pub files: FileRoots,
    /// Cancels the run when set. The engine sets it too when a node fails, so that steps
    /// running beside the failed one stop early: give each run its own token.
    pub cancel: CancelToken,
    /// How many steps may compute at once.
    pub parallelism: usize,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            device: DeviceSpec::Cpu,
            vram_budget: VramBudget::Auto,
            files: FileRoots::default(),
            cancel: CancelToken::new(),
            parallelism: std::thread::available_parallelism().map_or(2, |n| n.get().min(4)),
        }
    }
}

/// What a finished run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Steps computed.
    pub executed: usize,
    /// Steps taken from the cache.
    pub cached: usize,
}

/// Why a run stopped before producing all outputs.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A node failed, panicked, or returned outputs that differ from its descriptor.
    #[error("node \"{node}\" ({node_type}) failed: {error}")]
    NodeFailed {
        /// The failing node.
        node: NodeId,
        /// Its type.
        node_type: &'static str,
        /// What went wrong.
        error: String,
    },
    /// The run was cancelled.
    #[error("the run was cancelled")]
    Cancelled,
}

/// Runs plans against a registry of node types, keeping an output cache across runs: the
/// server and `run --repeat` reuse loaded models this way.
pub struct Engine {
    registry: Registry,
    cache: OutputCache,
    runs: AtomicU64,
}

/// A step's outcome as the worker thread returns it.
type Outcome = (usize, Result<Vec<Value>, NodeError>, Duration);

impl Engine {
    /// An engine with an empty cache.
    pub fn new(registry: Registry) -> Self {
        Self {
            registry,
            cache: OutputCache::default(),
            runs: AtomicU64::new(0),
        }
    }

    /// The node types this engine knows.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Runs `plan`, publishing progress to `events`.
    ///
    /// # Errors
    /// [`RunError::NodeFailed`] for the first node that failed; [`RunError::Cancelled`] when
    /// `options.cancel` was set before all steps finished.
    pub async fn run(&self, plan: &Plan, options: &RunOptions, events: &EventSink) -> Result<RunSummary, RunError> {
        let started = Instant::now();
        let mut signatures = Signatures::new(plan, self.runs.fetch_add(1, Ordering::Relaxed));
        let mut schedule = Schedule::new(plan);
        let mut running = JoinSet::new();
        let mut summary = RunSummary::default();
        let mut failure: Option<RunError> = None;
        let uses_device = |index: usize| plan.steps[index].node_type.descriptor().uses_device;
        let mut device_busy = false;
        events.send(Event::RunStarted {
            steps: plan.steps.len(),
        });
        loop {
            while running.len() < options.parallelism.max(1) && failure.is_none() && !options.cancel.is_cancelled() {
                let Some(index) = schedule.next_ready(|index| !(device_busy && uses_device(index))) else {
                    break;
                };
                let step = &plan.steps[index];
                let descriptor = step.node_type.descriptor();
                let files_read = file_identity::files_read(plan, index, &schedule, &options.files);
                let signature = signatures.sign(plan, index, files_read);
                match self.cache.get(signature).filter(|_| descriptor.cacheable) {
                    Some(outputs) => {
                        events.send(Event::NodeCached {
                            node: step.id.clone(),
                            node_type: descriptor.type_name.into(),
                        });
                        summary.cached += 1;
                        schedule.complete(index, outputs);
                    }
                    None => {
                        events.send(Event::NodeStarted {
                            node: step.id.clone(),
                            node_type: descriptor.type_name.into(),
                        });
                        device_busy |= uses_device(index);
                        let job = job(index, plan, &schedule, options, events);
                        running.spawn_blocking(job);
                    }
                }
            }
            let Some(joined) = running.join_next().await else {
                break;
            };
            let (index, outcome, elapsed) = joined.expect("step workers catch their panics and are never aborted");
            device_busy &= !uses_device(index);
            let step = &plan.steps[index];
            let node_type = step.node_type.descriptor().type_name;
            match outcome.and_then(|outputs| check_outputs(step, outputs)) {
                Ok(outputs) => {
                    let elapsed_ms = elapsed.as_secs_f64() * 1e3;
                    events.send(Event::NodeFinished {
                        node: step.id.clone(),
                        node_type: node_type.into(),
                        elapsed_ms,
                    });
                    summary.executed += 1;
                    let outputs: Arc<[Value]> = outputs.into();
                    let signature = signatures.get(index).expect("a step is signed before it runs");
                    self.cache.insert(signature, Arc::clone(&outputs));
                    schedule.complete(index, outputs);
                }
                // Stopped by the cancellation: not a failure of its own.
                Err(NodeError::Cancelled) => {}
                Err(error) => {
                    let error = error.to_string();
                    events.send(Event::NodeFailed {
                        node: step.id.clone(),
                        node_type: node_type.into(),
                        error: error.clone(),
                    });
                    if failure.is_none() {
                        options.cancel.cancel();
                        failure = Some(RunError::NodeFailed {
                            node: step.id.clone(),
                            node_type,
                            error,
                        });
                    }
                }
            }
        }
        self.keep_used_results(&signatures, &schedule);
        events.send(Event::Memory {
            node: None,
            report: Box::new(MemoryReport::of_process("process")),
        });
        let cancelled = failure.is_none() && !schedule.all_done();
        events.send(Event::RunFinished {
            executed: summary.executed,
            cached: summary.cached,
            elapsed_ms: started.elapsed().as_secs_f64() * 1e3,
            cancelled,
            failed: failure.is_some(),
        });
        match failure {
            Some(error) => Err(error),
            None if cancelled => Err(RunError::Cancelled),
            None => Ok(summary),
        }
    }

    /// Drops cached results this run did not use (ComfyUI's default cache policy).
    fn keep_used_results(&self, signatures: &Signatures, schedule: &Schedule) {
        let used: Vec<_> = signatures
            .signed()
            .filter(|(index, _)| schedule.is_done(*index))
            .map(|(_, signature)| signature)
            .collect();
        self.cache.retain_only(&used);
    }
}

/// The closure a worker thread runs for one step: gathers the arguments, runs the node, and
/// turns a panic into an error.
fn job(
    index: usize,
    plan: &Plan,
    schedule: &Schedule,
    options: &RunOptions,
    events: &EventSink,
) -> impl FnOnce() -> Outcome + Send + 'static {
    let args = step_args(plan, index, schedule);
    let ctx = step_context(plan, index, options, events);
    let node_type = Arc::clone(&plan.steps[index].node_type);
    move || {
        let clock = Instant::now();
        let outcome = check_linked_params(node_type.descriptor(), args).and_then(|args| {
            catch_unwind(AssertUnwindSafe(|| node_type.run(&args, &ctx)))
                .unwrap_or_else(|panic| Err(NodeError::msg(format!("the node panicked: {}", panic_message(&*panic)))))
        });
        (index, outcome, clock.elapsed())
    }
}

/// Step `index`'s arguments: its literal params and its producers' outputs.
fn step_args(plan: &Plan, index: usize, schedule: &Schedule) -> Vec<(&'static str, Value)> {
    let step = &plan.steps[index];
    let mut args = step.literals.clone();
    for input in &step.inputs {
        let value = schedule
            .output(input.step, input.output)
            .expect("producers finish before their consumers");
        args.push((input.arg, value.clone()));
    }
    args
}

/// What step `index`'s node sees of the run.
fn step_context(plan: &Plan, index: usize, options: &RunOptions, events: &EventSink) -> RunContext {
    let step = &plan.steps[index];
    RunContext {
        node_id: Arc::from(step.id.as_str()),
        device: options.device,
        vram_budget: options.vram_budget,
        files: options.files.clone(),
        workflow: Some(plan.workflow_yaml()),
        cancel: options.cancel.clone(),
        reporter: Arc::new(events.for_node(step.id.clone())),
    }
}

/// Checks values that arrive over links into params against the params' ranges and choices,
/// which validation could only check for literals.
fn check_linked_params(descriptor: &NodeDescriptor, args: Vec<(&'static str, Value)>) -> Result<Args, NodeError> {
    let checked = args
        .into_iter()
        .map(|(name, value)| match descriptor.find_param(name) {
            Some(param) => param
                .accept(value)
                .map(|value| (name, value))
                .map_err(|problem| NodeError::Argument {
                    name: name.to_string(),
                    problem: problem.to_string(),
                }),
            None => Ok((name, value)),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Args::new(checked))
}

/// Checks that a node returned exactly the outputs its descriptor declares.
fn check_outputs(step: &Step, outputs: Vec<Value>) -> Result<Vec<Value>, NodeError> {
    let declared: Vec<_> = step.node_type.descriptor().outputs.iter().map(|o| o.socket).collect();
    let returned: Vec<_> = outputs.iter().map(Value::socket_type).collect();
    if declared == returned {
        Ok(outputs)
    } else {
        Err(NodeError::msg(format!(
            "the node returned outputs {returned:?} but declares {declared:?}; this is a bug in its node pack"
        )))
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_string())
}
