//! `swapgraph worker`.

use super::args::WorkerArgs;
use super::Exit;
use crate::shared::{Queue, Worker, WorkerOptions};
use std::time::Duration;
use swapgraph_node_api::Registry;
use tracing::{error, info};

/// Runs jobs from the shared queue until Ctrl-C or SIGTERM, then hands the running ones back.
pub fn worker(args: WorkerArgs, registry: Registry) -> Exit {
    let Some(url) = args.nats.nats.clone() else {
        error!("worker needs the NATS server: --nats nats://host:4222");
        return Exit::Usage;
    };
    if !args.models_dir.is_dir() {
        error!("--models-dir {}: not a folder", args.models_dir.display());
        return Exit::Usage;
    }
    let scratch_dir = args.scratch_dir;
    if let Err(e) = std::fs::create_dir_all(&scratch_dir) {
        error!("--scratch-dir {}: {e}", scratch_dir.display());
        return Exit::Usage;
    }
    let runtime = match super::async_runtime() {
        Ok(runtime) => runtime,
        Err(exit) => return exit,
    };
    runtime.block_on(async {
        let queue = match args.nats.connect(&url).await {
            Ok(client) => Queue::open(client, Duration::from_secs(args.nats.ack_wait)).await,
            Err(problem) => Err(problem),
        };
        let queue = match queue {
            Ok(queue) => queue,
            Err(problem) => {
                error!("{problem}");
                return Exit::Usage;
            }
        };
        let heartbeat = queue.ack_wait() / 3;
        let options = WorkerOptions {
            name: args.name.unwrap_or_else(default_name),
            devices: args.device.0,
            vram_budget: args.vram_budget,
            models_dir: args.models_dir,
            scratch_dir,
            previews: args.previews,
            heartbeat,
        };
        info!(
            "worker {} takes jobs from {url} on {} device(s)",
            options.name,
            options.devices.len()
        );
        Worker::new(queue, registry, options).run(stop_signal()).await;
        Exit::Success
    })
}

/// The host's name and this process's id.
fn default_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "worker".to_string());
    format!("{host}-{}", std::process::id())
}

/// Completes on Ctrl-C or SIGTERM.
async fn stop_signal() {
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
