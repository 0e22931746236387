//! `swapgraph worker`: takes jobs from the shared queue, one at a time per device, runs them
//! and stores what they wrote.
//!
//! A job is started only after its record counts the start (so a job whose workers keep dying
//! ends failed after its allowed starts), reports progress to the queue while it runs (so the
//! queue gives it to another worker only once this one stops answering), and is acknowledged
//! only after its outputs are stored and its record says how it ended. Each device advertises
//! the models it holds; a job is left for an idle device holding its models, a few times at
//! most, before a device without them runs it.

use super::{events_subject, Attempt, JobOrder, Queue, ADVERTISE_EVERY, ALL_CANCELS};
use crate::exec::{Engine, Event, RunOptions};
use crate::job_run::{run_job, JobOutcome};
use crate::server::{seconds_now, JobImage, JobState, ServerEvent};
use async_nats::jetstream::message::{AckKind, Message};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use swapgraph_node_api::{CancelToken, DeviceSpec, FileRoots, Registry, VramBudget};
use tokio::sync::mpsc;
use tracing::{info, warn};

/// How long one pull waits for a job.
const PULL_WAIT: Duration = Duration::from_secs(2);
/// How often a job is left for a device holding its models before any device runs it.
const MAX_DEFERRALS: i64 = 3;
/// How long a device that left a job to another waits before pulling again.
const DEFER_PAUSE: Duration = Duration::from_millis(500);
/// How long a failed job waits before another try.
const RETRY_DELAY: Duration = Duration::from_millis(500);

/// What a worker runs on and where its files are.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// Its name in job records and advertisements (default: the host name and process id).
    pub name: String,
    /// Its devices, one job at a time each.
    pub devices: Vec<DeviceSpec>,
    /// How much of each device's memory a job may use.
    pub vram_budget: VramBudget,
    /// The folder models resolve in.
    pub models_dir: PathBuf,
    /// Where each job's inputs and outputs are kept while it runs.
    pub scratch_dir: PathBuf,
    /// Whether samplers send a preview of each step (each copies the step's latents to the
    /// host).
    pub previews: bool,
    /// How often a running job tells the queue it is alive: well within the ack wait.
    pub heartbeat: Duration,
}

/// A device as it advertises itself in the workers' bucket.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Advert {
    runner: String,
    device: String,
    running: Option<u64>,
    holds: Vec<String>,
    /// Seconds since the Unix epoch.
    updated: f64,
}

/// A worker process: its devices' loops share one connection.
pub struct Worker {
    queue: Queue,
    registry: Registry,
    options: WorkerOptions,
    adverts: Mutex<Vec<Advert>>,
    cancels: Mutex<HashMap<u64, CancelToken>>,
    stopping: AtomicBool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Worker {
    /// A worker for `queue` running `registry`'s node types.
    pub fn new(queue: Queue, registry: Registry, options: WorkerOptions) -> Arc<Self> {
        let devices = crate::server::runner_names(&options.devices);
        let adverts = options
            .devices
            .iter()
            .enumerate()
            .map(|(slot, device)| Advert {
                runner: format!("{} {}", options.name, devices[slot]),
                device: device.to_string(),
                ..Advert::default()
            })
            .collect();
        Arc::new(Self {
            queue,
            registry,
            options,
            adverts: Mutex::new(adverts),
            cancels: Mutex::new(HashMap::new()),
            stopping: AtomicBool::new(false),
        })
    }

    /// Takes and runs jobs until `shutdown` completes; then stops the running jobs and hands
    /// them back to the queue at once (not counted as attempts).
    pub async fn run(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(Arc::clone(&self).listen_for_cancels());
        tasks.spawn(Arc::clone(&self).advertise());
        let mut devices = tokio::task::JoinSet::new();
        for slot in 0..self.options.devices.len() {
            devices.spawn(Arc::clone(&self).serve_device(slot));
        }
        shutdown.await;
        info!("stopping: running jobs go back to the queue");
        self.stopping.store(true, Ordering::SeqCst);
        for cancel in lock(&self.cancels).values() {
            cancel.cancel();
        }
        while devices.join_next().await.is_some() {}
        tasks.abort_all();
        let runners: Vec<String> = lock(&self.adverts).iter().map(|advert| advert.runner.clone()).collect();
        for runner in runners {
            let _ = self.queue.workers.delete(advert_key(&runner)).await;
        }
    }

    /// Cancels running jobs as cancel requests arrive.
    async fn listen_for_cancels(self: Arc<Self>) {
        loop {
            match self.queue.client.subscribe(ALL_CANCELS).await {
                Ok(mut requests) => {
                    while let Some(request) = requests.next().await {
                        let id = request.subject.rsplit('.').next().and_then(|id| id.parse().ok());
                        if let Some(cancel) = id.and_then(|id: u64| lock(&self.cancels).get(&id).cloned()) {
                            cancel.cancel();
                        }
                    }
                }
                Err(problem) => warn!("listening for cancel requests: {problem}"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Refreshes every device's advertisement.
    async fn advertise(self: Arc<Self>) {
        loop {
            let slots = lock(&self.adverts).len();
            for slot in 0..slots {
                self.publish_advert(slot).await;
            }
            tokio::time::sleep(ADVERTISE_EVERY).await;
        }
    }

    async fn publish_advert(&self, slot: usize) {
        let advert = {
            let mut adverts = lock(&self.adverts);
            adverts[slot].updated = seconds_now();
            adverts[slot].clone()
        };
        if let Ok(bytes) = serde_json::to_vec(&advert) {
            let _ = self.queue.workers.put(advert_key(&advert.runner), bytes.into()).await;
        }
    }

    /// Pulls and runs jobs on device `slot` until the worker stops.
    async fn serve_device(self: Arc<Self>, slot: usize) {
        let engine = Arc::new(Engine::new(self.registry.clone()));
        while !self.stopping.load(Ordering::SeqCst) {
            let message = match self.next_order().await {
                Ok(Some(message)) => message,
                Ok(None) => continue,
                Err(problem) => {
                    warn!("taking a job from the queue: {problem}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if let Err(problem) = self.take(slot, &engine, message).await {
                warn!("{problem}");
            }
        }
    }

    async fn next_order(&self) -> Result<Option<Message>, String> {
        let mut batch = self
            .queue
            .consumer
            .fetch()
            .max_messages(1)
            .expires(PULL_WAIT)
            .messages()
            .await
            .map_err(|e| e.to_string())?;
        match batch.next().await {
            Some(Ok(message)) => Ok(Some(message)),
            Some(Err(problem)) => Err(problem.to_string()),
            None => Ok(None),
        }
    }

    /// Decides what to do with a delivered order, and does it.
    async fn take(&self, slot: usize, engine: &Arc<Engine>, message: Message) -> Result<(), String> {
        let order: JobOrder = match serde_json::from_slice(&message.payload) {
            Ok(order) => order,
            Err(e) => {
                let _ = message.ack_with(AckKind::Term).await;
                return Err(format!("an unreadable job order was dropped: {e}"));
            }
        };
        let id = order.id;
        let Some((record, _)) = self.queue.record(id).await? else {
            let _ = message.ack_with(AckKind::Term).await;
            return Err(format!("job {id} has no record; its order was dropped"));
        };
        // Ended already: cancelled while queued, or finished by a worker that died before
        // acknowledging.
        if record.info.state.is_final() {
            return ack(&message, id).await;
        }
        let delivered = message.info().map_or(1, |info| info.delivered);
        let deferrals = delivered - 1 - record.attempts.len() as i64;
        if deferrals < MAX_DEFERRALS && self.better_placed_elsewhere(slot, &order.models).await {
            let _ = message.ack_with(AckKind::Nak(Some(Duration::from_millis(100)))).await;
            tokio::time::sleep(DEFER_PAUSE).await;
            return Ok(());
        }
        let runner = lock(&self.adverts)[slot].runner.clone();
        let record = self
            .queue
            .change_record(id, |record| {
                if record.info.state.is_final() {
                    return false;
                }
                if record.attempts.len() >= order.max_attempts as usize {
                    record.fail();
                    return true;
                }
                record.attempts.push(Attempt {
                    runner: runner.clone(),
                    error: None,
                });
                record.info.start(runner.clone());
                true
            })
            .await?;
        if record.info.state != JobState::Running || record.info.runner.as_deref() != Some(&runner) {
            return ack(&message, id).await;
        }
        info!("job {id}: started on {runner} (attempt {})", record.attempts.len());
        let outcome = self.run_order(slot, engine, &order, &message).await;
        self.finish(&order, &message, outcome).await
    }

    /// Whether an idle device (of this worker or another) holds every model of the job and
    /// `slot`'s device does not.
    async fn better_placed_elsewhere(&self, slot: usize, models: &[String]) -> bool {
        let holds_all = |advert: &Advert| !models.is_empty() && models.iter().all(|model| advert.holds.contains(model));
        let mine = lock(&self.adverts)[slot].clone();
        if holds_all(&mine) {
            return false;
        }
        let Ok(mut keys) = self.queue.workers.keys().await else {
            return false;
        };
        let fresh_after = seconds_now() - 3.0 * ADVERTISE_EVERY.as_secs_f64();
        while let Some(Ok(key)) = keys.next().await {
            let Ok(Some(bytes)) = self.queue.workers.get(&key).await else {
                continue;
            };
            let Ok(advert) = serde_json::from_slice::<Advert>(&bytes) else {
                continue;
            };
            if advert.runner != mine.runner
                && advert.running.is_none()
                && advert.updated > fresh_after
                && holds_all(&advert)
            {
                return true;
            }
        }
        false
    }

    /// Runs job `order` on device `slot`, reporting progress to the queue and publishing its
    /// events, and stores its outputs; returns how it ended and the outputs stored.
    async fn run_order(
        &self,
        slot: usize,
        engine: &Arc<Engine>,
        order: &JobOrder,
        message: &Message,
    ) -> (JobOutcome, Vec<JobImage>) {
        let id = order.id;
        let folder = self.options.scratch_dir.join(format!("job-{id}"));
        let _ = tokio::fs::remove_dir_all(&folder).await;
        let files = FileRoots {
            models: self.options.models_dir.clone(),
            inputs: folder.join("inputs"),
            outputs: folder.join("outputs"),
        };
        let prepared = async {
            tokio::fs::create_dir_all(&files.inputs)
                .await
                .map_err(|e| e.to_string())?;
            self.queue.fetch_inputs(&order.inputs, &files).await?;
            crate::prepare("workflow", order.workflow.as_bytes(), &[], &self.registry)
                .map_err(|report| format!("the workflow is invalid here: {report}"))
        };
        let plan = match prepared.await {
            Ok(plan) => plan,
            Err(problem) => return (JobOutcome::Failed(problem), Vec::new()),
        };
        let cancel = CancelToken::new();
        lock(&self.cancels).insert(id, cancel.clone());
        // A cancel request sent before the token was listed is in the record.
        if let Ok(Some((record, _))) = self.queue.record(id).await {
            if record.cancel_requested {
                cancel.cancel();
            }
        }
        self.set_running(slot, Some(id), &order.models).await;
        let heartbeat = async {
            loop {
                tokio::time::sleep(self.options.heartbeat).await;
                let _ = message.ack_with(AckKind::Progress).await;
            }
        };
        let (sender, receiver) = mpsc::unbounded_channel();
        let publish = self.publish_events(id, &files.outputs, receiver);
        let options = RunOptions {
            device: self.options.devices[slot],
            vram_budget: self.options.vram_budget,
            files: files.clone(),
            cancel,
            ..RunOptions::default()
        };
        // Events are published while the job runs; the channel closes when the run ends.
        let running = async {
            let run = run_job(engine, plan, options, self.options.previews, move |event| {
                let _ = sender.send(event);
            });
            tokio::join!(run, publish)
        };
        let (outcome, images) = tokio::select! {
            ended = running => ended,
            () = heartbeat => unreachable!("the heartbeat never ends"),
        };
        lock(&self.cancels).remove(&id);
        self.set_running(slot, None, &order.models).await;
        let _ = tokio::fs::remove_dir_all(&folder).await;
        match images {
            Ok(images) => (outcome, images),
            Err(problem) if outcome == JobOutcome::Succeeded => (JobOutcome::Failed(problem), Vec::new()),
            Err(_) => (outcome, Vec::new()),
        }
    }

    async fn set_running(&self, slot: usize, running: Option<u64>, models: &[String]) {
        {
            let mut adverts = lock(&self.adverts);
            adverts[slot].running = running;
            adverts[slot].holds = models.to_vec();
        }
        self.publish_advert(slot).await;
    }

    /// Publishes job `id`'s events as they come, storing each output it writes first; returns
    /// the outputs stored, or why one could not be.
    async fn publish_events(
        &self,
        id: u64,
        outputs: &Path,
        mut events: mpsc::UnboundedReceiver<Event>,
    ) -> Result<Vec<JobImage>, String> {
        let mut images = Vec::new();
        let mut failure = None;
        while let Some(event) = events.recv().await {
            let mut image = None;
            if let Event::OutputWritten { node, path } = &event {
                let relative = crate::server::image_name(outputs, path);
                let stored = match relative {
                    Some(relative) => self.queue.store_output(id, outputs, &relative).await,
                    None => Err(format!("the output {} is outside the job's folder", path.display())),
                };
                match stored {
                    Ok(name) => {
                        images.push(JobImage {
                            node: node.to_string(),
                            name: name.clone(),
                        });
                        image = Some(name);
                    }
                    Err(problem) => failure = Some(problem),
                }
            }
            if let Ok(bytes) = serde_json::to_vec(&ServerEvent::run(id, event, image)) {
                let _ = self.queue.client.publish(events_subject(id), bytes.into()).await;
            }
        }
        failure.map_or(Ok(images), Err)
    }

    /// Records how job `order` ended and settles its order: acknowledged when it ended, handed
    /// back for another try when it failed with tries left or the worker is stopping.
    async fn finish(
        &self,
        order: &JobOrder,
        message: &Message,
        (outcome, images): (JobOutcome, Vec<JobImage>),
    ) -> Result<(), String> {
        let id = order.id;
        let stopping = self.stopping.load(Ordering::SeqCst);
        let mut retry = false;
        let record = self
            .queue
            .change_record(id, |record| {
                retry = false;
                match &outcome {
                    JobOutcome::Cancelled if stopping && !record.cancel_requested => {
                        // Handed back: this start does not count.
                        record.attempts.pop();
                        record.info.state = JobState::Queued;
                        record.info.runner = None;
                        retry = true;
                    }
                    JobOutcome::Failed(problem) => {
                        if let Some(attempt) = record.attempts.last_mut() {
                            attempt.error = Some(problem.clone());
                        }
                        if record.attempts.len() >= order.max_attempts as usize {
                            record.fail();
                        } else {
                            record.info.state = JobState::Queued;
                            record.info.error = Some(format!("retrying after: {problem}"));
                            retry = true;
                        }
                    }
                    JobOutcome::Succeeded => {
                        record.info.state = JobState::Succeeded;
                        record.info.images.clone_from(&images);
                        record.info.error = None;
                    }
                    JobOutcome::Cancelled => record.info.state = JobState::Cancelled,
                }
                true
            })
            .await?;
        info!("job {id}: {:?}", record.info.state);
        if retry {
            let delay = if stopping { None } else { Some(RETRY_DELAY) };
            return message
                .ack_with(AckKind::Nak(delay))
                .await
                .map_err(|e| format!("job {id}: handing it back: {e}"));
        }
        ack(message, id).await
    }
}

async fn ack(message: &Message, id: u64) -> Result<(), String> {
    message
        .double_ack()
        .await
        .map_err(|e| format!("job {id}: acknowledging it: {e}"))
}

/// A runner's key in the workers' bucket: its characters that keys cannot hold become `_`.
fn advert_key(runner: &str) -> String {
    runner
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_=".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}
