//! One job's run as the server's executors and the shared queue's workers make it: the check
//! that the workflow fits the device, then the run, with every event handed to the caller as it
//! happens.

use crate::exec::{Engine, Event, EventSink, RunError, RunOptions};
use crate::plan::Plan;
use crate::preflight;
use std::sync::Arc;

/// How a job's run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobOutcome {
    /// Every output was produced.
    Succeeded,
    /// The job's cancel token was set before it finished.
    Cancelled,
    /// It does not fit the device, or a node failed: why.
    Failed(String),
}

/// Runs `plan` on `engine` with `options`, giving each event to `on_event` in order (from a task
/// of its own, so a slow consumer never stalls the run); with `previews`, samplers make a preview
/// of each step, which copies the step's latents to the host.
pub async fn run_job(
    engine: &Arc<Engine>,
    plan: Plan,
    options: RunOptions,
    previews: bool,
    mut on_event: impl FnMut(Event) + Send + 'static,
) -> JobOutcome {
    let (sink, mut events) = EventSink::channel();
    let sink = if previews { sink.with_previews() } else { sink };
    let forward = tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            on_event(event);
        }
    });
    let outcome = match checked(engine, plan, &options).await {
        Ok(plan) => match engine.run(&plan, &options, &sink).await {
            Ok(_) => JobOutcome::Succeeded,
            Err(RunError::Cancelled) => JobOutcome::Cancelled,
            Err(error) => JobOutcome::Failed(error.to_string()),
        },
        Err(refused) => JobOutcome::Failed(refused),
    };
    drop(sink);
    let _ = forward.await;
    outcome
}

/// `plan` once the check before a run (see [`preflight`]) found that it fits the device, else
/// why not.
async fn checked(engine: &Arc<Engine>, plan: Plan, options: &RunOptions) -> Result<Arc<Plan>, String> {
    let (engine, plan, options) = (Arc::clone(engine), Arc::new(plan), options.clone());
    tokio::task::spawn_blocking(move || preflight::check(&engine, &plan, &options).map(|()| plan))
        .await
        .unwrap_or_else(|panic| Err(format!("the check before the run failed: {panic}")))
}
