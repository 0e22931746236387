//! The shared queue: servers (`serve --nats`) put jobs on a NATS JetStream work queue and
//! workers on any number of machines (`worker --nats`) take them, so nothing queued is lost when
//! a server, a worker or the NATS server restarts, and every GPU of every machine serves one
//! queue.
//!
//! What lives where on the NATS server:
//! - the stream `SWAPGRAPH_JOBS` (subjects `swapgraph.jobs.<id>`, work-queue retention, on
//!   disk): one [`JobOrder`] per job, removed once a worker acknowledges it. Workers pull from
//!   its durable consumer `workers` one job at a time per device, report progress while a job
//!   runs (so the ack wait never runs out on a live worker) and acknowledge only after the job's
//!   outputs are stored and its record says how it ended. A worker that dies stops reporting,
//!   and the job goes to another worker after the ack wait;
//! - the key-value bucket `swapgraph_jobs`: each job's [`JobRecord`] (`job.<id>`), changed only
//!   by compare-and-set, and the next job id (`next_id`), so ids are unique across servers;
//! - the key-value bucket `swapgraph_workers`: what each worker's device holds and runs,
//!   refreshed every few seconds and gone when a worker stops refreshing it;
//! - the object stores `swapgraph_inputs` (input files named by their SHA-256) and
//!   `swapgraph_outputs` (outputs named `<job id>/<name>`, so a job run twice writes the same
//!   names once);
//! - the subjects `swapgraph.events.<id>` (a running job's events, relayed by servers to their
//!   websocket clients) and `swapgraph.cancel.<id>` (cancel requests for running jobs).

mod connect;
mod queue;
mod record;
mod transfer;
mod worker;

pub use connect::{NatsArgs, PASSWORD_VARIABLE};
pub use queue::SharedQueue;
pub use record::{Attempt, InputFile, JobOrder, JobRecord};
pub use worker::{Worker, WorkerOptions};

use async_nats::jetstream::{self, consumer, kv, object_store, stream};
use std::time::Duration;

/// The work queue's stream.
const STREAM: &str = "SWAPGRAPH_JOBS";
/// Its consumer, shared by every worker.
const CONSUMER: &str = "workers";
/// The job records.
const JOBS_BUCKET: &str = "swapgraph_jobs";
/// The workers' advertisements.
const WORKERS_BUCKET: &str = "swapgraph_workers";
/// How long a worker's advertisement lives unless refreshed.
const WORKER_TTL: Duration = Duration::from_secs(20);
/// How often a worker refreshes it.
pub(crate) const ADVERTISE_EVERY: Duration = Duration::from_secs(2);
/// Input files by content.
const INPUTS_STORE: &str = "swapgraph_inputs";
/// Outputs by job.
const OUTPUTS_STORE: &str = "swapgraph_outputs";

/// The subject a job's order is published on.
fn order_subject(id: u64) -> String {
    format!("swapgraph.jobs.{id}")
}

/// The subject a running job's events go to.
fn events_subject(id: u64) -> String {
    format!("swapgraph.events.{id}")
}

/// Every job's events.
const ALL_EVENTS: &str = "swapgraph.events.*";
/// Every job's cancel requests.
const ALL_CANCELS: &str = "swapgraph.cancel.*";

/// The subject cancel requests for a running job go to.
fn cancel_subject(id: u64) -> String {
    format!("swapgraph.cancel.{id}")
}

/// A job record's key.
fn record_key(id: u64) -> String {
    format!("job.{id}")
}

/// The queue's pieces on one NATS connection, created on first use with the settings given
/// (later users take them as they are).
#[derive(Clone)]
pub struct Queue {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    consumer: consumer::PullConsumer,
    jobs: kv::Store,
    workers: kv::Store,
    inputs: object_store::ObjectStore,
    outputs: object_store::ObjectStore,
}

impl Queue {
    /// Opens the queue on `client`'s server, creating what is missing; a job whose worker stops
    /// reporting goes to another worker after `ack_wait`.
    ///
    /// # Errors
    /// What the NATS server refused (JetStream not enabled, no permission), for the user.
    pub async fn open(client: async_nats::Client, ack_wait: Duration) -> Result<Self, String> {
        let jetstream = jetstream::new(client.clone());
        let stream = jetstream
            .get_or_create_stream(stream::Config {
                name: STREAM.into(),
                subjects: vec!["swapgraph.jobs.*".into()],
                retention: stream::RetentionPolicy::WorkQueue,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("the job stream {STREAM}: {e} (is JetStream enabled: nats-server -js?)"))?;
        let consumer = stream
            .get_or_create_consumer(
                CONSUMER,
                consumer::pull::Config {
                    durable_name: Some(CONSUMER.into()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait,
                    // Starts are counted in the job's record, where a job that keeps failing
                    // or killing its workers ends failed; deferrals to a worker holding the
                    // models are not starts.
                    max_deliver: -1,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| format!("the consumer {CONSUMER} of {STREAM}: {e}"))?;
        let jobs = key_value(&jetstream, JOBS_BUCKET, Duration::ZERO).await?;
        let workers = key_value(&jetstream, WORKERS_BUCKET, WORKER_TTL).await?;
        let inputs = objects(&jetstream, INPUTS_STORE).await?;
        let outputs = objects(&jetstream, OUTPUTS_STORE).await?;
        Ok(Self {
            client,
            jetstream,
            consumer,
            jobs,
            workers,
            inputs,
            outputs,
        })
    }

    /// How long a job's worker may stay silent before the job goes to another: the consumer's
    /// setting, whoever created it.
    pub fn ack_wait(&self) -> Duration {
        self.consumer.cached_info().config.ack_wait
    }

    /// The record of job `id` with its revision, for a compare-and-set.
    async fn record(&self, id: u64) -> Result<Option<(JobRecord, u64)>, String> {
        let entry = self
            .jobs
            .entry(record_key(id))
            .await
            .map_err(|e| format!("reading job {id}'s record: {e}"))?;
        match entry {
            Some(entry) if entry.operation == kv::Operation::Put => serde_json::from_slice(&entry.value)
                .map(|record| Some((record, entry.revision)))
                .map_err(|e| format!("job {id}'s record is unreadable: {e}")),
            _ => Ok(None),
        }
    }

    /// Applies `change` to job `id`'s record, again on a fresh copy whenever another writer got
    /// there first; `change` returns `false` to leave the record as it is. Returns the record as
    /// it stands afterwards.
    async fn change_record(
        &self,
        id: u64,
        mut change: impl FnMut(&mut JobRecord) -> bool,
    ) -> Result<JobRecord, String> {
        loop {
            let (mut record, revision) = self
                .record(id)
                .await?
                .ok_or_else(|| format!("job {id} has no record"))?;
            if !change(&mut record) {
                return Ok(record);
            }
            let bytes = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
            match self.jobs.update(record_key(id), bytes.into(), revision).await {
                Ok(_) => return Ok(record),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                Err(e) => return Err(format!("writing job {id}'s record: {e}")),
            }
        }
    }
}

/// The key-value bucket `bucket`, created when missing; entries older than `max_age` expire
/// (zero: never). Its stream is made as the key-value API makes it (one message per key, rollups,
/// direct reads), here directly: the client's own creation first asks for account details in a
/// form that NATS 2.9 does not send.
async fn key_value(jetstream: &jetstream::Context, bucket: &str, max_age: Duration) -> Result<kv::Store, String> {
    if let Ok(store) = jetstream.get_key_value(bucket).await {
        return Ok(store);
    }
    let created = jetstream
        .create_stream(stream::Config {
            name: format!("KV_{bucket}"),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            max_age,
            storage: stream::StorageType::File,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            num_replicas: 1,
            ..Default::default()
        })
        .await;
    // Another process may have made it since.
    if let Err(problem) = created {
        if jetstream.get_key_value(bucket).await.is_err() {
            return Err(format!("the key-value bucket {bucket}: {problem}"));
        }
    }
    jetstream
        .get_key_value(bucket)
        .await
        .map_err(|e| format!("the key-value bucket {bucket}: {e}"))
}

/// The object store `bucket`, created when missing.
async fn objects(jetstream: &jetstream::Context, bucket: &str) -> Result<object_store::ObjectStore, String> {
    if let Ok(store) = jetstream.get_object_store(bucket).await {
        return Ok(store);
    }
    jetstream
        .create_object_store(object_store::Config {
            bucket: bucket.into(),
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("the object store {bucket}: {e}"))
}
