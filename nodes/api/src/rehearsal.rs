//! A rehearsal: a run's check before its work, in which every node that would do heavy device
//! work says how much device memory that work needs instead of doing it, and hands on stand-ins
//! of the right shapes so that the nodes after it can say too. It lets a run that cannot fit be
//! refused before anything is computed, and `doctor --workflow` say what each stage needs.

use crate::Value;

/// The device memory one node's work needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceNeed {
    /// Bytes the work needs at the least: everything that can stream or go in tiles doing so
    /// at its smallest setting. Below this the node cannot run.
    pub least: u64,
    /// Bytes the work would take with every weight on the device and nothing in tiles: with
    /// this much the node runs at its fastest.
    pub unconstrained: u64,
    /// What the bytes are, for a reader: e.g. "the UNet and a ControlNet streamed at their
    /// smallest beside a step's activations at 1024x1024".
    pub detail: String,
}

/// What a node did in a rehearsal.
#[derive(Debug)]
pub enum Rehearsal {
    /// The node did its work, which was light (a loader that reads lazily, a node on the
    /// host): its outputs are real and the run may reuse them.
    Ran(Vec<Value>),
    /// The node left its work for the run and stood in for it.
    StoodIn {
        /// Outputs of the declared types and the shapes the real ones will have, which later
        /// nodes only measure.
        outputs: Vec<Value>,
        /// What its work needs of the device; `None` where that is nothing worth stating (a
        /// small projection) or the device reports no memory (the CPU).
        need: Option<DeviceNeed>,
    },
}

/// A node's device need in a workflow's rehearsal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageNeed {
    /// The node's id in the workflow.
    pub node: String,
    /// Its type.
    pub node_type: &'static str,
    /// What it needs.
    pub need: DeviceNeed,
}

/// What a workflow needs of the device, stage by stage, as a rehearsal found it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkflowNeed {
    /// Each node that uses the device heavily, in the order they run.
    pub stages: Vec<StageNeed>,
    /// Where the rehearsal stopped early (a node that could not be rehearsed), with why: the
    /// stages after it are unknown.
    pub stopped: Option<String>,
    /// How long each node the rehearsal ran or stood in took, in the order they ran: a run's
    /// one-off work before its first heavy stage, itemised.
    pub spent: Vec<NodeTime>,
}

/// The time one node took in a rehearsal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeTime {
    /// The node's id in the workflow.
    pub node: String,
    /// Its type.
    pub node_type: &'static str,
    /// Milliseconds it took.
    pub millis: u64,
}

impl WorkflowNeed {
    /// The stage that needs the most device memory at the least: the workflow needs this much.
    pub fn largest(&self) -> Option<&StageNeed> {
        self.stages.iter().max_by_key(|stage| stage.need.least)
    }
}
