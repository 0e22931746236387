//! `swapgraph serve`.

use super::args::ServeArgs;
use super::Exit;
use crate::exec::Engine;
use crate::server::{self, ServerConfig};
use crate::shared::SharedQueue;
use std::time::Duration;
use swapgraph_node_api::Registry;
use tracing::{error, info, warn};

/// Serves the editor and API until Ctrl-C.
pub fn serve(args: ServeArgs, registry: Registry) -> Exit {
    if !args.workflows_dir.is_dir() {
        error!("--workflows-dir {}: not a folder", args.workflows_dir.display());
        return Exit::Usage;
    }
    if let Err(e) = std::fs::create_dir_all(&args.folders.output_dir) {
        error!("--output-dir {}: {e}", args.folders.output_dir.display());
        return Exit::Usage;
    }
    let files = match args.folders.roots() {
        Ok(files) => files,
        Err(problem) => {
            error!("{problem}");
            return Exit::Usage;
        }
    };
    if !args.host.is_loopback() {
        warn!(
            "listening on {}: anyone who can reach it can run workflows and write workflow files",
            args.host
        );
    }
    let runtime = match super::async_runtime() {
        Ok(runtime) => runtime,
        Err(exit) => return exit,
    };
    let shared = match &args.nats.nats {
        Some(url) => {
            let ack_wait = Duration::from_secs(args.nats.ack_wait);
            let connected = SharedQueue::connect(&args.nats, url, ack_wait, args.max_attempts);
            match runtime.block_on(connected) {
                Ok(queue) => {
                    info!("jobs go to the shared queue on {url}");
                    Some(queue)
                }
                Err(problem) => {
                    error!("{problem}");
                    return Exit::Usage;
                }
            }
        }
        None => None,
    };
    let config = ServerConfig {
        devices: args.device.0,
        shared,
        vram_budget: args.vram_budget,
        files,
        workflows_dir: args.workflows_dir,
        max_body_bytes: args.max_body_kib * 1024,
        previews: args.preview_method != "none",
    };
    runtime.block_on(async {
        let listener = match tokio::net::TcpListener::bind((args.host, args.port)).await {
            Ok(listener) => listener,
            Err(e) => {
                error!("cannot listen on {}:{}: {e}", args.host, args.port);
                return Exit::Usage;
            }
        };
        match listener.local_addr() {
            Ok(addr) => info!("the editor is at http://{addr}/"),
            Err(e) => warn!("listening, address unknown: {e}"),
        }
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
            info!("stopping");
        };
        server::serve(Engine::new(registry), config, listener, shutdown).await;
        Exit::Success
    })
}
