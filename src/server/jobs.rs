//! Jobs as the API shows them, and the queue behind the API: the server's own devices
//! ([`LocalQueue`]) or a queue on NATS shared with workers on other machines ([`SharedQueue`]).

use super::local_queue::LocalQueue;
use crate::exec::Event;
use crate::job_run::JobOutcome;
use crate::plan::Plan;
use crate::shared::SharedQueue;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use swapgraph_node_api::FileRoots;

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for the executor.
    Queued,
    /// Running now.
    Running,
    /// Every output was produced.
    Succeeded,
    /// A node failed; `error` says which and why.
    Failed,
    /// Cancelled before or while running.
    Cancelled,
}

impl JobState {
    /// Whether the job will not change any more.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// A job as the API shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobInfo {
    /// Its id: unique within the server's life, and across every server of a shared queue.
    pub id: u64,
    /// The workflow's name, from its `name` field or the submission.
    pub name: String,
    /// Where it is.
    pub state: JobState,
    /// Seconds since the Unix epoch when it was submitted.
    pub submitted_at: f64,
    /// Seconds since the Unix epoch when it last started running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<f64>,
    /// Images it wrote, in order.
    #[serde(default)]
    pub images: Vec<JobImage>,
    /// Where it runs or ran: the device (`cuda:1`; `cpu/2` for the second of two executors on
    /// one device), or for a shared queue the worker and its device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner: Option<String>,
    /// The client that submitted it, when it named itself: its events go to that client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The last step a node reported done, e.g. the sampler's step 3 of 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<JobProgress>,
}

/// An image a job wrote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobImage {
    /// The id of the node that wrote it.
    pub node: String,
    /// Its name under the output directory, `/`-separated (for `/api/images/{name}`).
    pub name: String,
}

/// Step `step` of `total` of node `node` is done.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobProgress {
    /// The node's id.
    pub node: String,
    /// Steps done.
    pub step: u64,
    /// Steps in all.
    pub total: u64,
}

impl JobInfo {
    /// A job just submitted, queued.
    pub fn queued(id: u64, name: String, client_id: Option<String>) -> Self {
        Self {
            id,
            name,
            state: JobState::Queued,
            submitted_at: seconds_now(),
            started_at: None,
            images: Vec::new(),
            runner: None,
            client_id,
            error: None,
            progress: None,
        }
    }
}

/// Seconds since the Unix epoch.
pub fn seconds_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl JobInfo {
    /// Marks it running on `runner` from now.
    pub fn start(&mut self, runner: String) {
        self.state = JobState::Running;
        self.runner = Some(runner);
        self.started_at = Some(seconds_now());
        self.progress = None;
    }

    /// Records how its run ended.
    pub fn finish(&mut self, outcome: JobOutcome) {
        match outcome {
            JobOutcome::Succeeded => self.state = JobState::Succeeded,
            JobOutcome::Cancelled => self.state = JobState::Cancelled,
            JobOutcome::Failed(error) => {
                self.state = JobState::Failed;
                self.error = Some(error);
            }
        }
    }
}

impl JobProgress {
    /// The progress `event` reports, if it is a step done.
    pub fn of(event: &Event) -> Option<Self> {
        match event {
            Event::Progress { node, step, total } => Some(Self {
                node: node.to_string(),
                step: *step,
                total: *total,
            }),
            _ => None,
        }
    }
}

/// Why a job could not be cancelled.
#[derive(Debug, PartialEq, Eq)]
pub enum CancelError {
    /// No job has this id.
    Unknown,
    /// The job already ended in this state.
    Finished(JobState),
    /// The shared queue could not be reached: the message says why.
    Unreachable(String),
}

/// A workflow the API accepted, for the queue.
pub struct Submission {
    /// The checked plan.
    pub plan: Plan,
    /// The job's name.
    pub name: String,
    /// The client that submitted it, when it named itself.
    pub client_id: Option<String>,
}

/// The queue behind the API.
#[derive(Clone)]
pub enum Jobs {
    /// Jobs run on this server's devices, queued in memory.
    Local(Arc<LocalQueue>),
    /// Jobs go to a durable queue on NATS that workers take them from; their input files are
    /// read from these folders.
    Shared(Arc<SharedQueue>, FileRoots),
}

impl Jobs {
    /// Queues `submission`, calling `before_queueing` with the new job's id before any runner
    /// can start it (to record what belongs with the job first).
    ///
    /// # Errors
    /// Why the shared queue did not take the job; nothing was queued then.
    pub async fn submit(&self, submission: Submission, before_queueing: impl FnOnce(u64)) -> Result<JobInfo, String> {
        match self {
            Self::Local(queue) => Ok(queue.submit(submission, before_queueing)),
            Self::Shared(queue, files) => queue.submit(submission, files, before_queueing).await,
        }
    }

    /// Every job, oldest first.
    pub fn list(&self) -> Vec<JobInfo> {
        match self {
            Self::Local(queue) => queue.list(),
            Self::Shared(queue, _) => queue.list(),
        }
    }

    /// One job.
    pub fn get(&self, id: u64) -> Option<JobInfo> {
        match self {
            Self::Local(queue) => queue.get(id),
            Self::Shared(queue, _) => queue.get(id),
        }
    }

    /// Cancels a queued job (it will not run) or a running one (it stops after the current
    /// step or sampler iteration, wherever it runs).
    ///
    /// # Errors
    /// [`CancelError`] for an unknown or finished job, or an unreachable shared queue.
    pub async fn cancel(&self, id: u64) -> Result<JobInfo, CancelError> {
        match self {
            Self::Local(queue) => queue.cancel(id),
            Self::Shared(queue, _) => queue.cancel(id).await,
        }
    }
}
