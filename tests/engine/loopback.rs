//! A real `swapgraph serve` on a free loopback port with temporary output and workflow folders,
//! for tests that talk to it over TCP.

use super::fixtures::packs;
use std::net::SocketAddr;
use std::sync::Arc;
use swapgraph::exec::Engine;
use swapgraph::server::{serve, ServerConfig, DEFAULT_MAX_BODY_BYTES};
use swapgraph::shared::SharedQueue;
use swapgraph_node_api::{DeviceSpec, FileRoots};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running server with every pack; models and inputs resolve in the repository.
pub struct LoopbackServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The folder `/api/workflows` reads and writes.
    pub workflows: tempfile::TempDir,
    /// The input folder (uploads land here).
    pub inputs: tempfile::TempDir,
    /// The output folder.
    pub output: tempfile::TempDir,
    stop: oneshot::Sender<()>,
    server: JoinHandle<()>,
}

impl LoopbackServer {
    /// Starts the server; call it inside a tokio runtime.
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// Starts the server, putting jobs on `shared` when given.
    pub async fn start_with(shared: Option<Arc<SharedQueue>>) -> Self {
        let (output, workflows, inputs) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = ServerConfig {
            devices: vec![DeviceSpec::Cpu],
            shared,
            vram_budget: swapgraph_node_api::VramBudget::Auto,
            files: FileRoots {
                outputs: output.path().to_path_buf(),
                inputs: inputs.path().to_path_buf(),
                ..FileRoots::default()
            },
            workflows_dir: workflows.path().to_path_buf(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            previews: false,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(Engine::new(packs()), config, listener, async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            workflows,
            inputs,
            output,
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

/// One HTTP/1.1 request over a fresh loopback connection; the status and body of the answer.
pub async fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    http_with(addr, method, path, "text/plain", body.as_bytes()).await
}

/// [`http`] with a body of `content_type`.
pub async fn http_with(addr: SocketAddr, method: &str, path: &str, content_type: &str, body: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    (status, body)
}
