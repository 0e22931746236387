//! The run's event stream: one typed stream that the CLI's progress bars, the logs and the
//! server's websocket all read.

use crate::workflow::NodeId;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use swapgraph_node_api::{MemoryReport, NodeReporter, Preview};
use tokio::sync::mpsc;

/// A node type's name as events carry it: the registry's own name, or one read back from
/// another process's events (workers of a shared queue send theirs over the network).
pub type NodeTypeName = Cow<'static, str>;

/// Something that happened during a run. Events read back from JSON (another process's run)
/// carry no preview pixels: those travel as an image of their own.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A run began with this many steps.
    RunStarted { steps: usize },
    /// A node began computing.
    NodeStarted { node: NodeId, node_type: NodeTypeName },
    /// A node's result was taken from the cache.
    NodeCached { node: NodeId, node_type: NodeTypeName },
    /// A node finished step `step` of `total` of a long loop.
    Progress { node: NodeId, step: u64, total: u64 },
    /// A node computed its outputs.
    NodeFinished {
        node: NodeId,
        node_type: NodeTypeName,
        elapsed_ms: f64,
    },
    /// A node failed; the run stops.
    NodeFailed {
        node: NodeId,
        node_type: NodeTypeName,
        error: String,
    },
    /// A memory snapshot from a node, or from the engine at the end of a run (`node` absent).
    Memory {
        #[serde(skip_serializing_if = "Option::is_none")]
        node: Option<NodeId>,
        /// Boxed: with a timeline it is the largest event by far.
        report: Box<MemoryReport>,
    },
    /// An output node wrote a file.
    OutputWritten { node: NodeId, path: PathBuf },
    /// A node's work in progress as a small RGB picture (sent only to sinks that want previews;
    /// its pixels are left out of the serialized event).
    Preview {
        node: NodeId,
        width: u32,
        height: u32,
        #[serde(skip, default = "no_pixels")]
        rgb: Arc<[u8]>,
    },
    /// The run ended; `cancelled` or `failed` tell why it ended early.
    RunFinished {
        executed: usize,
        cached: usize,
        elapsed_ms: f64,
        cancelled: bool,
        failed: bool,
    },
}

fn no_pixels() -> Arc<[u8]> {
    Arc::from([])
}

/// The sending end of the event stream. Cloning shares the stream; sending never blocks and
/// never fails, so a slow or gone reader cannot stall a run.
#[derive(Clone, Debug)]
pub struct EventSink {
    sender: Option<mpsc::UnboundedSender<Event>>,
    /// Whether nodes should make previews for this stream.
    previews: bool,
}

impl EventSink {
    /// A sink and the receiver that reads its events in order.
    pub fn channel() -> (Self, mpsc::UnboundedReceiver<Event>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let sink = Self {
            sender: Some(sender),
            previews: false,
        };
        (sink, receiver)
    }

    /// A sink that drops every event, for callers that only want the result.
    pub fn discard() -> Self {
        Self {
            sender: None,
            previews: false,
        }
    }

    /// The same stream, asking nodes for previews of their work in progress.
    pub fn with_previews(self) -> Self {
        Self { previews: true, ..self }
    }

    /// Publishes an event.
    pub fn send(&self, event: Event) {
        if let Some(sender) = &self.sender {
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
            report: Box::new(report),
        });
    }

    fn output_written(&self, path: &Path) {
        self.sink.send(Event::OutputWritten {
            node: self.node.clone(),
            path: path.to_path_buf(),
        });
    }

    fn wants_previews(&self) -> bool {
        self.sink.previews && self.sink.sender.is_some()
    }

    fn preview(&self, preview: Preview) {
        self.sink.send(Event::Preview {
            node: self.node.clone(),
            width: preview.width,
            height: preview.height,
            rgb: preview.rgb,
        });
    }
}
