//! A run's rehearsal (see [`Rehearsal`]): the plan's steps one at a time, the nodes with heavy
//! device work standing in for it, so that what the workflow needs of the device is known
//! before anything heavy runs. The light work done on the way (loaders that read lazily, nodes
//! on the host) goes into the cache, so the run that follows does not do it again.

use super::{check_linked_params, check_outputs, file_identity, panic_message, step_args, step_context};
use super::{Engine, EventSink, RunOptions, Schedule, Signatures};
use crate::plan::Plan;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use swapgraph_node_api::{NodeError, NodeTime, Rehearsal, StageNeed, Value, WorkflowNeed};

impl Engine {
    /// Rehearses `plan` under `options`: every node that stands in says what its device work
    /// needs. Output nodes (those that save or show results) are left out, so a rehearsal
    /// writes nothing. A node that cannot be rehearsed ends it early, with the reason
    /// in [`WorkflowNeed::stopped`]: the stages before it are still known.
    pub fn rehearse(&self, plan: &Plan, options: &RunOptions) -> WorkflowNeed {
        let mut signatures = Signatures::new(plan, self.runs.fetch_add(1, Ordering::Relaxed));
        let mut schedule = Schedule::new(plan);
        // Steps whose outputs are stand-ins, or were computed from stand-ins.
        let mut stand_ins = vec![false; plan.steps.len()];
        let mut need = WorkflowNeed::default();
        let events = EventSink::discard();
        while let Some(index) = schedule.next_ready(|_| true) {
            if options.cancel.is_cancelled() {
                need.stopped = Some("the run was cancelled".to_string());
                break;
            }
            let step = &plan.steps[index];
            let descriptor = step.node_type.descriptor();
            let files_read = file_identity::files_read(plan, index, &schedule, &options.files);
            let signature = signatures.sign(plan, index, files_read);
            if descriptor.is_output {
                continue;
            }
            let from_stand_ins = step.inputs.iter().any(|input| stand_ins[input.step]);
            let cached = self
                .cache
                .get(signature)
                .filter(|_| descriptor.cacheable && !from_stand_ins);
            if let Some(outputs) = cached {
                schedule.complete(index, outputs);
                continue;
            }
            let args = step_args(plan, index, &schedule);
            let ctx = step_context(plan, index, options, &events);
            let clock = Instant::now();
            let rehearsed = check_linked_params(descriptor, args).and_then(|args| {
                catch_unwind(AssertUnwindSafe(|| step.node_type.rehearse(&args, &ctx))).unwrap_or_else(|panic| {
                    Err(NodeError::msg(format!("the node panicked: {}", panic_message(&*panic))))
                })
            });
            need.spent.push(NodeTime {
                node: step.id.to_string(),
                node_type: descriptor.type_name,
                millis: clock.elapsed().as_millis() as u64,
            });
            let (outputs, stood_in) = match rehearsed {
                Ok(Rehearsal::Ran(outputs)) => (outputs, from_stand_ins),
                Ok(Rehearsal::StoodIn { outputs, need: stage }) => {
                    if let Some(stage) = stage {
                        need.stages.push(StageNeed {
                            node: step.id.to_string(),
                            node_type: descriptor.type_name,
                            need: stage,
                        });
                    }
                    (outputs, true)
                }
                Err(error) => {
                    need.stopped = Some(format!(
                        "node \"{}\" ({}) could not be rehearsed: {error}",
                        step.id, descriptor.type_name
                    ));
                    break;
                }
            };
            let outputs: Arc<[Value]> = match check_outputs(step, outputs) {
                Ok(outputs) => outputs.into(),
                Err(error) => {
                    need.stopped = Some(format!("node \"{}\" ({}): {error}", step.id, descriptor.type_name));
                    break;
                }
            };
            stand_ins[index] = stood_in;
            if !stood_in && descriptor.cacheable {
                self.cache.insert(signature, Arc::clone(&outputs));
            }
            schedule.complete(index, outputs);
        }
        need
    }
}
