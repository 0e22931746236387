//! The server's own queue: jobs wait in memory, in order, for one of the server's devices. Each
//! device has an executor with an engine of its own (its own cache of loaded models) and the
//! device's own memory manager; a job goes to a free device that already holds its models, else
//! to the least loaded free one (see [`placement`](super::placement)).

use super::events::{Broadcast, ServerEvent};
use super::jobs::{CancelError, JobImage, JobInfo, JobProgress, JobState, Submission};
use super::placement::{self, DeviceSlot};
use crate::exec::{Engine, Event, RunOptions};
use crate::job_run::run_job;
use crate::plan::Plan;
use serde::Serialize;
use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use swapgraph_node_api::{CancelToken, DeviceSpec, FileFolder, FileRoots, Registry, VramBudget};
use tokio::sync::mpsc;

/// How the executors run jobs.
#[derive(Clone, Debug)]
pub struct ExecutorOptions {
    /// The devices, one executor each; a device named twice gets two executors.
    pub devices: Vec<DeviceSpec>,
    /// How much of each device's memory a job may use.
    pub vram_budget: VramBudget,
    /// The folders file names resolve in and outputs go to.
    pub files: FileRoots,
}

/// A job waiting for a device.
struct Waiting {
    id: u64,
    plan: Plan,
    models: Vec<String>,
}

struct Job {
    info: JobInfo,
    cancel: CancelToken,
}

/// One device's executor as the API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct ExecutorInfo {
    /// The device.
    pub device: DeviceSpec,
    /// The name jobs show in `runner`.
    pub runner: String,
    /// The job running there now.
    pub running: Option<u64>,
    /// How many jobs it has taken.
    pub jobs_taken: u64,
    /// The models of the last job it ran, which its cache holds.
    pub holds: Vec<String>,
}

/// The queue, the record of every job of this server's life, and the devices' executors.
pub struct LocalQueue {
    jobs: Mutex<Vec<Job>>,
    waiting: Mutex<VecDeque<Waiting>>,
    slots: Mutex<Vec<DeviceSlot>>,
    running: Mutex<Vec<Option<u64>>>,
    executors: Vec<(DeviceSpec, String, mpsc::UnboundedSender<Waiting>)>,
    events: Broadcast,
}

/// Locks `mutex`; a panic while holding it leaves plain data behind: keep serving it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl LocalQueue {
    /// A queue whose executors, one per device with an engine of `registry`'s types each, run
    /// until the queue is dropped; start them by spawning the returned future.
    pub fn new(
        registry: &Registry,
        options: ExecutorOptions,
        events: Broadcast,
    ) -> (Arc<Self>, impl std::future::Future<Output = ()> + Send + 'static) {
        let runners = runner_names(&options.devices);
        let mut receivers = Vec::new();
        let mut executors = Vec::new();
        for (device, runner) in options.devices.iter().zip(runners) {
            let (sender, receiver) = mpsc::unbounded_channel();
            executors.push((*device, runner, sender));
            receivers.push(receiver);
        }
        let queue = Arc::new(Self {
            jobs: Mutex::new(Vec::new()),
            waiting: Mutex::new(VecDeque::new()),
            slots: Mutex::new(vec![DeviceSlot::default(); executors.len()]),
            running: Mutex::new(vec![None; executors.len()]),
            executors,
            events,
        });
        let weak = Arc::downgrade(&queue);
        let registry = registry.clone();
        let all = async move {
            let mut tasks = tokio::task::JoinSet::new();
            for (slot, receiver) in receivers.into_iter().enumerate() {
                let engine = Arc::new(Engine::new(registry.clone()));
                tasks.spawn(execute(weak.clone(), slot, receiver, engine, options.clone()));
            }
            while tasks.join_next().await.is_some() {}
        };
        (queue, all)
    }

    /// Queues `submission`; see [`super::Jobs::submit`].
    pub fn submit(&self, submission: Submission, before_queueing: impl FnOnce(u64)) -> JobInfo {
        let info = {
            let mut jobs = lock(&self.jobs);
            let info = JobInfo::queued(jobs.len() as u64 + 1, submission.name, submission.client_id);
            jobs.push(Job {
                info: info.clone(),
                cancel: CancelToken::new(),
            });
            info
        };
        before_queueing(info.id);
        let models = submission
            .plan
            .files_named(FileFolder::Models)
            .into_iter()
            .map(|(_, name)| name)
            .collect();
        lock(&self.waiting).push_back(Waiting {
            id: info.id,
            plan: submission.plan,
            models,
        });
        self.publish_queue();
        self.dispatch();
        info
    }

    /// Hands waiting jobs, oldest first, to free devices.
    fn dispatch(&self) {
        let mut waiting = lock(&self.waiting);
        let mut slots = lock(&self.slots);
        while let Some(next) = waiting.front() {
            let Some(slot) = placement::choose(&next.models, &slots) else {
                return;
            };
            let job = waiting.pop_front().expect("the front was just seen");
            let taken = &mut slots[slot];
            taken.busy = true;
            taken.jobs_taken += 1;
            taken.holds.clone_from(&job.models);
            // The executor lives as long as the queue, so its channel is open.
            let _ = self.executors[slot].2.send(job);
        }
    }

    /// Every job, oldest first.
    pub fn list(&self) -> Vec<JobInfo> {
        lock(&self.jobs).iter().map(|job| job.info.clone()).collect()
    }

    /// One job.
    pub fn get(&self, id: u64) -> Option<JobInfo> {
        lock(&self.jobs)
            .iter()
            .find(|job| job.info.id == id)
            .map(|job| job.info.clone())
    }

    /// Each device's executor: what runs there and what it holds.
    pub fn executors(&self) -> Vec<ExecutorInfo> {
        let slots = lock(&self.slots);
        let running = lock(&self.running);
        self.executors
            .iter()
            .zip(slots.iter().zip(running.iter()))
            .map(|((device, runner, _), (slot, running))| ExecutorInfo {
                device: *device,
                runner: runner.clone(),
                running: *running,
                jobs_taken: slot.jobs_taken,
                holds: slot.holds.clone(),
            })
            .collect()
    }

    /// Cancels a queued or running job; see [`super::Jobs::cancel`].
    ///
    /// # Errors
    /// [`CancelError`] for an unknown or finished job.
    pub fn cancel(&self, id: u64) -> Result<JobInfo, CancelError> {
        let info = {
            let mut jobs = lock(&self.jobs);
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
    fn publish_queue(&self) {
        self.events.send(ServerEvent::Queue { jobs: self.list() });
    }

    fn update(&self, id: u64, change: impl FnOnce(&mut JobInfo)) {
        if let Some(job) = lock(&self.jobs).iter_mut().find(|job| job.info.id == id) {
            change(&mut job.info);
        }
    }

    /// Marks a queued job running on `slot`'s device and returns its cancel token; `None` if
    /// it was cancelled.
    fn start(&self, id: u64, slot: usize) -> Option<CancelToken> {
        let mut jobs = lock(&self.jobs);
        let job = jobs.iter_mut().find(|job| job.info.id == id)?;
        if job.info.state != JobState::Queued {
            return None;
        }
        job.info.start(self.executors[slot].1.clone());
        lock(&self.running)[slot] = Some(id);
        Some(job.cancel.clone())
    }

    /// `slot`'s device is free again.
    fn free(&self, slot: usize) {
        lock(&self.running)[slot] = None;
        lock(&self.slots)[slot].busy = false;
        self.dispatch();
    }
}

/// The name each device's executor goes by: the device, numbered where a device is named
/// more than once (`cpu/1`, `cpu/2`).
pub fn runner_names(devices: &[DeviceSpec]) -> Vec<String> {
    devices
        .iter()
        .enumerate()
        .map(|(index, device)| {
            let same = devices.iter().filter(|other| *other == device).count();
            if same == 1 {
                device.to_string()
            } else {
                let nth = devices[..=index].iter().filter(|other| *other == device).count();
                format!("{device}/{nth}")
            }
        })
        .collect()
}

/// Runs the jobs handed to `slot`'s device one after another until the queue is gone.
async fn execute(
    queue: Weak<LocalQueue>,
    slot: usize,
    mut jobs: mpsc::UnboundedReceiver<Waiting>,
    engine: Arc<Engine>,
    options: ExecutorOptions,
) {
    while let Some(Waiting { id, plan, .. }) = jobs.recv().await {
        let Some(queue) = queue.upgrade() else {
            return;
        };
        let Some(cancel) = queue.start(id, slot) else {
            queue.free(slot);
            continue;
        };
        queue.publish_queue();
        let run_options = RunOptions {
            device: options.devices[slot],
            vram_budget: options.vram_budget,
            files: options.files.clone(),
            cancel,
            ..RunOptions::default()
        };
        // While a client watches, samplers preview every step: the editor's stream shows them
        // (ComfyUI's clients get them only when asked for, see `ServerConfig::previews`).
        // Unwatched jobs skip them: each copies the step's latents to the host.
        let previews = queue.events.watched();
        let on_event = {
            let queue = Arc::clone(&queue);
            let output_dir = options.files.outputs.clone();
            move |event: Event| {
                let image = match &event {
                    Event::OutputWritten { path, node } => image_name(&output_dir, path).map(|name| JobImage {
                        node: node.to_string(),
                        name,
                    }),
                    _ => None,
                };
                queue.record(id, &event, image.as_ref());
                queue
                    .events
                    .send(ServerEvent::run(id, event, image.map(|image| image.name)));
            }
        };
        let outcome = run_job(&engine, plan, run_options, previews, on_event).await;
        queue.update(id, |info| info.finish(outcome));
        queue.publish_queue();
        queue.free(slot);
    }
}

impl LocalQueue {
    /// Keeps what the job's record shows of `event`: images written and the last step done.
    fn record(&self, id: u64, event: &Event, image: Option<&JobImage>) {
        if let Some(image) = image {
            self.update(id, |info| info.images.push(image.clone()));
        }
        if let Some(progress) = JobProgress::of(event) {
            self.update(id, |info| info.progress = Some(progress));
        }
    }
}

/// A written file's name relative to the output directory, `/`-separated.
pub fn image_name(output_dir: &Path, path: &Path) -> Option<String> {
    let relative = path.strip_prefix(output_dir).ok()?;
    let parts: Vec<&str> = relative.iter().map(|part| part.to_str()).collect::<Option<_>>()?;
    Some(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_named_twice_are_numbered() {
        let devices = [DeviceSpec::Cpu, DeviceSpec::Cuda(0), DeviceSpec::Cpu];
        assert_eq!(runner_names(&devices), ["cpu/1", "cuda:0", "cpu/2"]);
    }
}
