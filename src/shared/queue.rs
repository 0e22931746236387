//! The server's side of the shared queue: it stores a submitted job's inputs, writes its record
//! and publishes its order; it keeps a copy of every record (watched in the key-value bucket)
//! for the API, relays running jobs' events to its websocket clients, and copies finished
//! jobs' outputs into its output folder.

use super::{cancel_subject, order_subject, record_key, JobOrder, JobRecord, NatsArgs, Queue, ALL_EVENTS};
use crate::exec::Event;
use crate::server::{Broadcast, CancelError, JobInfo, JobProgress, JobState, ServerEvent, Submission};
use async_nats::jetstream::kv;
use futures_util::StreamExt;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use swapgraph_node_api::{FileFolder, FileRoots};
use tracing::warn;

/// The key of the next job id in the records' bucket.
const NEXT_ID_KEY: &str = "next_id";
/// How long the relay waits before watching again after the NATS server went away.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// A server's handle on the shared queue.
pub struct SharedQueue {
    queue: Queue,
    max_attempts: u32,
    jobs: Mutex<BTreeMap<u64, JobInfo>>,
}

impl std::fmt::Debug for SharedQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedQueue")
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

impl SharedQueue {
    /// Connects to the queue on `url`; a job fails after `max_attempts` starts. `ack_wait`
    /// applies when this server creates the queue.
    ///
    /// # Errors
    /// Why the NATS server could not be reached or refused the queue, for the user.
    pub async fn connect(
        nats: &NatsArgs,
        url: &str,
        ack_wait: Duration,
        max_attempts: u32,
    ) -> Result<Arc<Self>, String> {
        let client = nats.connect(url).await?;
        let queue = Queue::open(client, ack_wait).await?;
        Ok(Arc::new(Self {
            queue,
            max_attempts,
            jobs: Mutex::new(BTreeMap::new()),
        }))
    }

    fn jobs(&self) -> MutexGuard<'_, BTreeMap<u64, JobInfo>> {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `submission`, whose input files are in `files`' input folder; see
    /// [`crate::server::Jobs::submit`].
    ///
    /// # Errors
    /// Why the NATS server did not take the job; nothing is queued then.
    pub async fn submit(
        &self,
        submission: Submission,
        files: &FileRoots,
        before_queueing: impl FnOnce(u64),
    ) -> Result<JobInfo, String> {
        let plan = &submission.plan;
        let inputs = self.queue.store_inputs(plan, files).await?;
        let id = self.next_id().await?;
        let order = JobOrder {
            id,
            workflow: plan.workflow_yaml().to_string(),
            inputs,
            models: plan
                .files_named(FileFolder::Models)
                .into_iter()
                .map(|(_, name)| name)
                .collect(),
            max_attempts: self.max_attempts,
        };
        let record = JobRecord {
            info: JobInfo::queued(id, submission.name, submission.client_id),
            attempts: Vec::new(),
            cancel_requested: false,
        };
        let bytes = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
        self.queue
            .jobs
            .create(record_key(id), bytes.into())
            .await
            .map_err(|e| format!("recording job {id}: {e}"))?;
        before_queueing(id);
        self.jobs().insert(id, record.info.clone());
        let order = serde_json::to_vec(&order).map_err(|e| e.to_string())?;
        let published = match self.queue.jetstream.publish(order_subject(id), order.into()).await {
            Ok(acknowledgement) => acknowledgement.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(problem) = published {
            let problem = format!("the queue did not take job {id}: {problem}");
            let _ = self
                .queue
                .change_record(id, |record| {
                    record.info.state = JobState::Failed;
                    record.info.error = Some(problem.clone());
                    true
                })
                .await;
            self.jobs().remove(&id);
            return Err(problem);
        }
        Ok(record.info)
    }

    /// A new job id, unique across every server of the queue: the counter is advanced by
    /// compare-and-set, again whenever another server got there first.
    async fn next_id(&self) -> Result<u64, String> {
        let unreachable = |e: &dyn std::fmt::Display| format!("taking a job id: {e}");
        loop {
            let entry = self.queue.jobs.entry(NEXT_ID_KEY).await.map_err(|e| unreachable(&e))?;
            let Some(entry) = entry else {
                match self.queue.jobs.create(NEXT_ID_KEY, "2".into()).await {
                    Ok(_) => return Ok(1),
                    Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(unreachable(&e)),
                }
            };
            let next: u64 = std::str::from_utf8(&entry.value)
                .ok()
                .and_then(|text| text.parse().ok())
                .ok_or_else(|| format!("the queue's {NEXT_ID_KEY} is not a number"))?;
            let after = (next + 1).to_string();
            match self.queue.jobs.update(NEXT_ID_KEY, after.into(), entry.revision).await {
                Ok(_) => return Ok(next),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                Err(e) => return Err(unreachable(&e)),
            }
        }
    }

    /// Every job, oldest first.
    pub fn list(&self) -> Vec<JobInfo> {
        self.jobs().values().cloned().collect()
    }

    /// One job.
    pub fn get(&self, id: u64) -> Option<JobInfo> {
        self.jobs().get(&id).cloned()
    }

    /// Cancels a queued job (no worker will run it) or a running one (its worker stops it after
    /// the current step).
    ///
    /// # Errors
    /// [`CancelError`] for an unknown or finished job, or an unreachable NATS server.
    pub async fn cancel(&self, id: u64) -> Result<JobInfo, CancelError> {
        let mut ended = None;
        let record = self
            .queue
            .change_record(id, |record| {
                ended = record.info.state.is_final().then_some(record.info.state);
                match record.info.state {
                    _ if ended.is_some() => return false,
                    JobState::Queued => record.info.state = JobState::Cancelled,
                    _ => {}
                }
                record.cancel_requested = true;
                true
            })
            .await;
        let record = match record {
            Ok(record) => record,
            Err(_) if self.get(id).is_none() => return Err(CancelError::Unknown),
            Err(problem) => return Err(CancelError::Unreachable(problem)),
        };
        if let Some(state) = ended {
            return Err(CancelError::Finished(state));
        }
        self.queue
            .client
            .publish(cancel_subject(id), "cancel".into())
            .await
            .map_err(|e| CancelError::Unreachable(e.to_string()))?;
        self.jobs().insert(id, record.info.clone());
        Ok(record.info)
    }

    /// The workers' devices as they advertise themselves: what each runs and holds.
    ///
    /// # Errors
    /// An unreachable NATS server.
    pub async fn workers(&self) -> Result<Vec<serde_json::Value>, String> {
        let mut listed = self.queue.workers.keys().await.map_err(|e| e.to_string())?;
        // The listing reads the bucket's history as it goes: a worker that reports its status
        // during it is listed again, so each key is read once.
        let mut keys = std::collections::BTreeSet::new();
        while let Some(Ok(key)) = listed.next().await {
            keys.insert(key);
        }
        let mut workers = Vec::new();
        for key in keys {
            if let Ok(Some(value)) = self.queue.workers.get(&key).await {
                workers.extend(serde_json::from_slice::<serde_json::Value>(&value).ok());
            }
        }
        Ok(workers)
    }

    /// Keeps the copy of the records, relays running jobs' events to `events` and copies
    /// finished jobs' outputs into `output_dir`, until the server stops; it watches again after
    /// the NATS server comes back.
    pub async fn relay(self: Arc<Self>, events: Broadcast, output_dir: PathBuf) {
        let records = {
            let queue = Arc::clone(&self);
            let (events, output_dir) = (events.clone(), output_dir.clone());
            async move {
                loop {
                    if let Err(problem) = queue.watch_records(&events, &output_dir).await {
                        warn!("watching the shared queue's job records: {problem}");
                    }
                    tokio::time::sleep(RETRY_AFTER).await;
                }
            }
        };
        let run_events = async move {
            loop {
                if let Err(problem) = self.relay_events(&events, &output_dir).await {
                    warn!("relaying the shared queue's job events: {problem}");
                }
                tokio::time::sleep(RETRY_AFTER).await;
            }
        };
        tokio::join!(records, run_events);
    }

    async fn watch_records(&self, events: &Broadcast, output_dir: &Path) -> Result<(), String> {
        let mut watch = self
            .queue
            .jobs
            .watch_with_history("job.*")
            .await
            .map_err(|e| e.to_string())?;
        while let Some(entry) = watch.next().await {
            let entry = entry.map_err(|e| e.to_string())?;
            let Ok(record) = serde_json::from_slice::<JobRecord>(&entry.value) else {
                continue;
            };
            let mut info = record.info;
            // Outputs are in the output folder before anyone hears the job ended.
            if info.state.is_final() {
                for image in &info.images {
                    if let Err(problem) = self.queue.fetch_output(&image.name, output_dir).await {
                        warn!("job {}: copying its output {}: {problem}", info.id, image.name);
                    }
                }
            }
            {
                let mut jobs = self.jobs();
                // Progress comes with the events, not the record.
                if info.state != JobState::Queued {
                    info.progress = jobs.get(&info.id).and_then(|known| known.progress.clone());
                }
                jobs.insert(info.id, info);
            }
            events.send(ServerEvent::Queue { jobs: self.list() });
        }
        Err("the watch ended".into())
    }

    async fn relay_events(&self, events: &Broadcast, output_dir: &Path) -> Result<(), String> {
        let mut subscription = self
            .queue
            .client
            .subscribe(ALL_EVENTS)
            .await
            .map_err(|e| e.to_string())?;
        while let Some(message) = subscription.next().await {
            let Ok(mut event) = serde_json::from_slice::<ServerEvent>(&message.payload) else {
                continue;
            };
            let ServerEvent::Run {
                job,
                event: run_event,
                image,
                preview,
            } = &mut event
            else {
                continue;
            };
            if let (Event::OutputWritten { path, .. }, Some(name)) = (&mut *run_event, &image) {
                match self.queue.fetch_output(name, output_dir).await {
                    Ok(local) => *path = local,
                    Err(problem) => warn!("job {job}: copying its output {name}: {problem}"),
                }
            }
            if let (Event::Preview { rgb, .. }, Some(url)) = (&mut *run_event, &preview) {
                *rgb = pixels_of(url).unwrap_or_else(|| Arc::from([]));
            }
            if let Some(progress) = JobProgress::of(run_event) {
                if let Some(info) = self.jobs().get_mut(job) {
                    info.progress = Some(progress);
                }
            }
            events.send(event);
        }
        Err("the subscription ended".into())
    }
}

/// The RGB pixels of a preview's PNG data URL, for ComfyUI's binary preview frames.
fn pixels_of(url: &str) -> Option<Arc<[u8]>> {
    use base64::Engine as _;
    let png = url.strip_prefix("data:image/png;base64,")?;
    let png = base64::engine::general_purpose::STANDARD.decode(png).ok()?;
    let picture = image::load_from_memory_with_format(&png, image::ImageFormat::Png).ok()?;
    Some(picture.to_rgb8().into_raw().into())
}
