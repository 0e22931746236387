//! The job queue: workflows submitted to the server wait in order for the one executor of the
//! server's device, which runs them on a shared engine, so models loaded by one job are cached
//! for the next.

use super::events::{Broadcast, ServerEvent};
use crate::exec::{Engine, Event, EventSink, RunError, RunOptions};
use crate::plan::Plan;
use crate::preflight;
use serde::Serialize;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};
use swapgraph_node_api::{CancelToken, DeviceSpec, FileRoots, VramBudget};
use tokio::sync::mpsc;

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
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
#[derive(Clone, Debug, Serialize)]
pub struct JobInfo {
    /// Its id, unique within the server's life.
    pub id: u64,
    /// The workflow's name, from its `name` field or the submission.
    pub name: String,
    /// Where it is.
    pub state: JobState,
    /// Seconds since the Unix epoch when it was submitted.
    pub submitted_at: f64,
    /// Images it wrote, in order.
    pub images: Vec<JobImage>,
    /// The client that submitted it, when it named itself: its events go to that client.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The last step a node reported done, e.g. the sampler's step 3 of 30.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<JobProgress>,
}

/// An image a job wrote.
#[derive(Clone, Debug, Serialize)]
pub struct JobImage {
    /// The id of the node that wrote it.
    pub node: String,
    /// Its name under the output directory, `/`-separated (for `/api/images/{name}`).
    pub name: String,
}

/// Step `step` of `total` of node `node` is done.
#[derive(Clone, Debug, Serialize)]
pub struct JobProgress {
    /// The node's id.
    pub node: String,
    /// Steps done.
    pub step: u64,
    /// Steps in all.
    pub total: u64,
}

struct Job {
    info: JobInfo,
    cancel: CancelToken,
}

/// Why a job could not be cancelled.
#[derive(Debug, PartialEq, Eq)]
pub enum CancelError {
    /// No job has this id.
    Unknown,
    /// The job already ended in this state.
    Finished(JobState),
}

/// The queue and the record of every job of this server's life.
pub struct JobQueue {
    jobs: Mutex<Vec<Job>>,
    sender: mpsc::UnboundedSender<(u64, Plan)>,
    events: Broadcast,
}

/// How the executor runs jobs.
#[derive(Clone, Debug)]
pub struct ExecutorOptions {
    /// The device every job runs on.
    pub device: DeviceSpec,
    /// How much of the device's memory each job may use.
    pub vram_budget: VramBudget,
    /// The folders file names resolve in and outputs go to.
    pub files: FileRoots,
}

impl JobQueue {
    /// A queue whose executor runs on `engine` until the queue is dropped; start the executor
    /// by spawning the returned future on the async runtime.
    pub fn new(
        engine: Arc<Engine>,
        options: ExecutorOptions,
        events: Broadcast,
    ) -> (Arc<Self>, impl std::future::Future<Output = ()> + Send + 'static) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let queue = Arc::new(Self {
            jobs: Mutex::new(Vec::new()),
            sender,
            events,
        });
        let executor = execute(Arc::downgrade(&queue), receiver, engine, options);
        (queue, executor)
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Job>> {
        // A panic while holding the lock leaves plain data behind: keep serving it.
        self.jobs.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `plan` under `name` for the client `client_id`, if it named itself; returns the
    /// new job.
    pub fn submit(&self, plan: Plan, name: String, client_id: Option<String>) -> JobInfo {
        self.submit_with(plan, name, client_id, |_| {})
    }

    /// [`JobQueue::submit`], calling `before_queueing` with the new job's id before the
    /// executor can start it (to record what belongs with the job first).
    pub fn submit_with(
        &self,
        plan: Plan,
        name: String,
        client_id: Option<String>,
        before_queueing: impl FnOnce(u64),
    ) -> JobInfo {
        let info = {
            let mut jobs = self.lock();
            let info = JobInfo {
                id: jobs.len() as u64 + 1,
                name,
                state: JobState::Queued,
                submitted_at: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64()),
                images: Vec::new(),
                client_id,
                error: None,
                progress: None,
            };
            jobs.push(Job {
                info: info.clone(),
                cancel: CancelToken::new(),
            });
            info
        };
        before_queueing(info.id);
        // The executor lives as long as the queue, so the channel is open.
        let _ = self.sender.send((info.id, plan));
        self.publish_queue();
        info
    }

    /// Every job, oldest first.
    pub fn list(&self) -> Vec<JobInfo> {
        self.lock().iter().map(|job| job.info.clone()).collect()
    }

    /// One job.
    pub fn get(&self, id: u64) -> Option<JobInfo> {
        self.lock()
            .iter()
            .find(|job| job.info.id == id)
            .map(|job| job.info.clone())
    }

    /// Cancels a queued job (it will not run) or a running one (it stops after the current
    /// step or sampler iteration).
    ///
    /// # Errors
    /// [`CancelError`] for an unknown or finished job.
    pub fn cancel(&self, id: u64) -> Result<JobInfo, CancelError> {
        let info = {
            let mut jobs = self.lock();
            let job = jobs
                .iter_mut()
                .find(|job| job.info.id == id)
                .ok_or(CancelError::Unknown)?;
            match job.info.state {
                state if state.is_final() => return Err(CancelError::Finished(state)),
                JobState::Queued => job.info.state = JobState::Cancelled,
                _ => {}
            }
            job.cancel.cancel();
            job.info.clone()
        };
        self.publish_queue();
        Ok(info)
    }

    /// Sends the whole queue to event listeners.
    pub fn publish_queue(&self) {
        self.events.send(ServerEvent::Queue { jobs: self.list() });
    }

    fn update(&self, id: u64, change: impl FnOnce(&mut JobInfo)) {
        if let Some(job) = self.lock().iter_mut().find(|job| job.info.id == id) {
            change(&mut job.info);
        }
    }

    /// Marks a queued job running and returns its cancel token; `None` if it was cancelled.
    fn start(&self, id: u64) -> Option<CancelToken> {
        let mut jobs = self.lock();
        let job = jobs.iter_mut().find(|job| job.info.id == id)?;
        if job.info.state != JobState::Queued {
            return None;
        }
        job.info.state = JobState::Running;
        Some(job.cancel.clone())
    }
}

/// Runs queued jobs one after another until the queue is gone.
async fn execute(
    queue: std::sync::Weak<JobQueue>,
    mut receiver: mpsc::UnboundedReceiver<(u64, Plan)>,
    engine: Arc<Engine>,
    options: ExecutorOptions,
) {
    while let Some((id, plan)) = receiver.recv().await {
        let Some(queue) = queue.upgrade() else {
            return;
        };
        let Some(cancel) = queue.start(id) else {
            continue;
        };
        queue.publish_queue();
        let run_options = RunOptions {
            device: options.device,
            vram_budget: options.vram_budget,
            files: options.files.clone(),
            cancel,
            ..RunOptions::default()
        };
        let (sink, mut run_events) = EventSink::channel();
        // While a client watches, samplers preview every step: the editor's stream shows them
        // (ComfyUI's clients get them only when asked for, see `ServerConfig::previews`). Unwatched
        // jobs skip them: each copies the step's latents to the host.
        let sink = if queue.events.watched() {
            sink.with_previews()
        } else {
            sink
        };
        let forward = {
            let queue = Arc::clone(&queue);
            let output_dir = options.files.outputs.clone();
            tokio::spawn(async move {
                while let Some(event) = run_events.recv().await {
                    let image = match &event {
                        Event::OutputWritten { path, node } => image_name(&output_dir, path).map(|name| JobImage {
                            node: node.to_string(),
                            name,
                        }),
                        _ => None,
                    };
                    if let Some(image) = &image {
                        queue.update(id, |info| info.images.push(image.clone()));
                    }
                    if let Event::Progress { node, step, total } = &event {
                        let progress = JobProgress {
                            node: node.to_string(),
                            step: *step,
                            total: *total,
                        };
                        queue.update(id, |info| info.progress = Some(progress));
                    }
                    let image = image.map(|image| image.name);
                    let preview = match &event {
                        Event::Preview { width, height, rgb, .. } => png_data_url(*width, *height, rgb),
                        _ => None,
                    };
                    queue.events.send(ServerEvent::Run {
                        job: id,
                        event,
                        image,
                        preview,
                    });
                }
            })
        };
        // Err(None) when cancelled, else the error.
        let result = match checked(&engine, plan, &run_options).await {
            Ok(plan) => match engine.run(&plan, &run_options, &sink).await {
                Ok(_) => Ok(()),
                Err(RunError::Cancelled) => Err(None),
                Err(error) => Err(Some(error.to_string())),
            },
            Err(refused) => Err(Some(refused)),
        };
        drop(sink);
        let _ = forward.await;
        queue.update(id, |info| match result {
            Ok(()) => info.state = JobState::Succeeded,
            Err(None) => info.state = JobState::Cancelled,
            Err(Some(error)) => {
                info.state = JobState::Failed;
                info.error = Some(error);
            }
        });
        queue.publish_queue();
    }
}

/// `plan` once the check before a run (see [`preflight`]) found that it fits the device, else
/// why not.
async fn checked(engine: &Arc<Engine>, plan: Plan, options: &RunOptions) -> Result<Arc<Plan>, String> {
    let (engine, plan, options) = (Arc::clone(engine), Arc::new(plan), options.clone());
    tokio::task::spawn_blocking(move || preflight::check(&engine, &plan, &options).map(|()| plan))
        .await
        .unwrap_or_else(|panic| Err(format!("the check before the run failed: {panic}")))
}

/// A written file's name relative to the output directory, `/`-separated.
fn image_name(output_dir: &Path, path: &Path) -> Option<String> {
    let relative = path.strip_prefix(output_dir).ok()?;
    let parts: Vec<&str> = relative.iter().map(|part| part.to_str()).collect::<Option<_>>()?;
    Some(parts.join("/"))
}

/// An RGB picture as a `data:image/png;base64,` URL, for a browser's `<img>`.
fn png_data_url(width: u32, height: u32, rgb: &[u8]) -> Option<String> {
    use base64::Engine as _;
    let picture = image::RgbImage::from_raw(width, height, rgb.to_vec())?;
    let mut png = std::io::Cursor::new(Vec::new());
    picture.write_to(&mut png, image::ImageFormat::Png).ok()?;
    Some(format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png.get_ref())
    ))
}
