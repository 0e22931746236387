//! The run's event stream: one typed stream that the CLI's progress bars, the logs and the
//! server's websocket all read.

use crate::workflow::NodeId;
use serde::Serialize;
use std::path::{Path, PathBuf};
use swapgraph_node_api::{MemoryReport, NodeReporter};
use tokio::sync::mpsc;

/// Something that happened during a run.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A run began with this many steps.
    RunStarted { steps: usize },
    /// A node began computing.
    NodeStarted { node: NodeId, node_type: &'static str },
    /// A node's result was taken from the cache.
    NodeCached { node: NodeId, node_type: &'static str },
    /// A node finished step `step` of `total` of a long loop.
    Progress { node: NodeId, step: u64, total: u64 },
    /// A node computed its outputs.
    NodeFinished {
        node: NodeId,
        node_type: &'static str,
        elapsed_ms: f64,
    },
    /// A node failed; the run stops.
    NodeFailed {
        node: NodeId,
        node_type: &'static str,
        error: String,
    },
    /// A memory snapshot from a node, or from the engine at the end of a run (`node` absent).
    Memory {
        #[serde(skip_serializing_if = "Option::is_none")]
        node: Option<NodeId>,
        report: MemoryReport,
    },
    /// An output node wrote a file.
    OutputWritten { node: NodeId, path: PathBuf },
    /// The run ended; `cancelled` or `failed` tell why it ended early.
    RunFinished {
        executed: usize,
        cached: usize,
        elapsed_ms: f64,
        cancelled: bool,
        failed: bool,
    },
}

/// The sending end of the event stream. Cloning shares the stream; sending never blocks and
/// never fails, so a slow or gone reader cannot stall a run.
#[derive(Clone, Debug)]
pub struct EventSink(Option<mpsc::UnboundedSender<Event>>);

impl EventSink {
    /// A sink and the receiver that reads its events in order.
    pub fn channel() -> (Self, mpsc::UnboundedReceiver<Event>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        (Self(Some(sender)), receiver)
    }

    /// A sink that drops every event, for callers that only want the result.
    pub fn discard() -> Self {
        Self(None)
    }

    /// Publishes an event.
    pub fn send(&self, event: Event) {
        if let Some(sender) = &self.0 {
            let _ = sender.send(event);
        }
    }

    /// A reporter for one node, tagging its events with the node id.
    pub fn for_node(&self, node: NodeId) -> NodeEvents {
        NodeEvents {
            node,
            sink: self.clone(),
        }
    }
}

/// The [`NodeReporter`] given to a running node.
pub struct NodeEvents {
    node: NodeId,
    sink: EventSink,
}

impl NodeReporter for NodeEvents {
    fn progress(&self, step: u64, total: u64) {
        self.sink.send(Event::Progress {
            node: self.node.clone(),
            step,
            total,
        });
    }

    fn memory(&self, report: MemoryReport) {
        self.sink.send(Event::Memory {
            node: Some(self.node.clone()),
            report,
        });
    }

    fn output_written(&self, path: &Path) {
        self.sink.send(Event::OutputWritten {
            node: self.node.clone(),
            path: path.to_path_buf(),
        });
    }
}
