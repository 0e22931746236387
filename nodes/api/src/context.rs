//! What a running node can see of the run: device, file folders, cancellation, and a reporter.

use crate::{CancelToken, DeviceSpec, FileRoots, MemoryReport, NodeError, VramBudget};
use std::path::Path;
use std::sync::Arc;

/// Receives what a node reports while it runs; the engine turns each call into an event of the
/// run's event stream, tagged with the node's id.
pub trait NodeReporter: Send + Sync {
    /// Step `step` of `total` of a long loop is done (sampler steps, swap units).
    fn progress(&self, step: u64, total: u64);
    /// A memory snapshot, e.g. BlockSwap's summary.
    fn memory(&self, report: MemoryReport);
    /// A file was written to the output folder.
    fn output_written(&self, path: &Path);
    /// Whether anyone watches previews: a node makes them only then.
    fn wants_previews(&self) -> bool;
    /// A picture of what a long loop has made so far (a sampler's current prediction).
    fn preview(&self, preview: Preview);
}

/// A small RGB picture of a node's work in progress, for the clients watching a run.
#[derive(Clone, Debug)]
pub struct Preview {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The pixels, row by row, three bytes each.
    pub rgb: Arc<[u8]>,
}

/// The run-wide settings and services a node gets when it runs.
#[derive(Clone)]
pub struct RunContext {
    /// The id of the node being run, for log messages.
    pub node_id: Arc<str>,
    /// Where models execute.
    pub device: DeviceSpec,
    /// How much of the device's memory the run may use.
    pub vram_budget: VramBudget,
    /// The models, input and output folders that file names resolve in.
    pub files: FileRoots,
    /// The workflow being run, as YAML, for outputs that embed it (PNG text chunks).
    pub workflow: Option<Arc<str>>,
    /// Set when the run should stop.
    pub cancel: CancelToken,
    /// Receives progress, memory reports and written files.
    pub reporter: Arc<dyn NodeReporter>,
}

impl RunContext {
    /// Fails with [`NodeError::Cancelled`] once the run has been cancelled; call it between the
    /// steps of any loop that takes more than a moment.
    ///
    /// # Errors
    /// [`NodeError::Cancelled`] when the run was cancelled.
    pub fn check_cancelled(&self) -> Result<(), NodeError> {
        if self.cancel.is_cancelled() {
            Err(NodeError::Cancelled)
        } else {
            Ok(())
        }
    }

    /// Reports that step `step` of `total` is done.
    pub fn progress(&self, step: u64, total: u64) {
        self.reporter.progress(step, total);
    }
}
