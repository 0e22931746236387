//! A real `swapgraph serve` on a free loopback port with temporary output and workflow folders,
//! for tests that talk to it over TCP.

use super::fixtures::packs;
use std::net::SocketAddr;
use swapgraph::exec::Engine;
use swapgraph::server::{serve, ServerConfig, DEFAULT_MAX_BODY_BYTES};
use swapgraph_node_api::{DeviceSpec, FileRoots};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running server with every pack; models and inputs resolve in the repository.
pub struct LoopbackServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The folder `/api/workflows` reads and writes.
    pub workflows: tempfile::TempDir,
    _output: tempfile::TempDir,
    stop: oneshot::Sender<()>,
    server: JoinHandle<()>,
}

impl LoopbackServer {
    /// Starts the server; call it inside a tokio runtime.
    pub async fn start() -> Self {
        let (output, workflows) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = ServerConfig {
            device: DeviceSpec::Cpu,
            vram_budget: swapgraph_node_api::VramBudget::Auto,
            files: FileRoots {
                outputs: output.path().to_path_buf(),
                ..FileRoots::default()
            },
            workflows_dir: workflows.path().to_path_buf(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(Engine::new(packs()), config, listener, async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            workflows,
            _output: output,
            stop,
            server,
        }
    }

    /// Shuts the server down gracefully and waits for it.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.server.await;
    }
}
