//! The execution list: which steps are ready, which wait, and for how many producers.

use crate::plan::Plan;
use std::collections::BTreeSet;
use std::sync::Arc;
use swapgraph_node_api::Value;

/// Bookkeeping of one run: results so far and the steps whose producers are all done.
pub struct Schedule {
    dependents: Vec<Vec<usize>>,
    blockers: Vec<usize>,
    ready: BTreeSet<usize>,
    results: Vec<Option<Arc<[Value]>>>,
}

impl Schedule {
    /// The schedule of a plan before any step ran.
    pub fn new(plan: &Plan) -> Self {
        let count = plan.steps.len();
        let mut dependents = vec![Vec::new(); count];
        let mut blockers = vec![0; count];
        for (index, step) in plan.steps.iter().enumerate() {
            let producers: BTreeSet<usize> = step.inputs.iter().map(|input| input.step).collect();
            blockers[index] = producers.len();
            for producer in producers {
                dependents[producer].push(index);
            }
        }
        let ready = (0..count).filter(|&i| blockers[i] == 0).collect();
        Self {
            dependents,
            blockers,
            ready,
            results: vec![None; count],
        }
    }

    /// The ready step with the lowest plan index that `allowed` accepts, removed from the ready
    /// set.
    pub fn next_ready(&mut self, allowed: impl Fn(usize) -> bool) -> Option<usize> {
        let step = self.ready.iter().copied().find(|&step| allowed(step))?;
        self.ready.remove(&step);
        Some(step)
    }

    /// Output `output` of finished step `step`.
    pub fn output(&self, step: usize, output: usize) -> Option<&Value> {
        self.results[step].as_ref().and_then(|outputs| outputs.get(output))
    }

    /// Records a step's outputs and makes the steps waiting only on it ready.
    pub fn complete(&mut self, step: usize, outputs: Arc<[Value]>) {
        self.results[step] = Some(outputs);
        for &dependent in &self.dependents[step] {
            self.blockers[dependent] -= 1;
            if self.blockers[dependent] == 0 {
                self.ready.insert(dependent);
            }
        }
    }

    /// Whether step `step` has finished.
    pub fn is_done(&self, step: usize) -> bool {
        self.results[step].is_some()
    }

    /// Whether every step has finished.
    pub fn all_done(&self) -> bool {
        self.results.iter().all(Option::is_some)
    }
}
