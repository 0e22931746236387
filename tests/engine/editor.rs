//! The editor end to end in headless Chromium (`web/tests/editor.e2e.mjs`, driven by
//! playwright-core) against a real server on loopback. The screenshot lands in
//! `target/editor-e2e/`.
//!
//! Needs Node.js, `npm ci --prefix web` and Chromium (`CHROMIUM`, default `/usr/bin/chromium`);
//! `.ci/run` installs them.

use super::fixtures::packs;
use std::path::Path;
use swapgraph::exec::Engine;
use swapgraph::server::{serve, ServerConfig};

#[test]
fn the_editor_builds_runs_saves_and_reloads_a_txt2img_graph_in_chromium() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_string());
    assert!(
        Path::new(&chromium).exists() && Path::new("web/node_modules/playwright-core").exists(),
        "the editor test needs Chromium at {chromium} (apt-get install chromium, or set CHROMIUM) and \
         `npm ci --prefix web`; .ci/run installs both"
    );
    let (output, workflows) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let config = ServerConfig {
        device: swapgraph_node_api::DeviceSpec::Cpu,
        output_dir: output.path().to_path_buf(),
        workflows_dir: workflows.path().to_path_buf(),
        max_body_bytes: swapgraph::server::DEFAULT_MAX_BODY_BYTES,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = runtime.spawn(serve(Engine::new(packs()), config, listener, async {
        let _ = stopped.await;
    }));
    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../editor-e2e");
    let status = std::process::Command::new("node")
        .arg("web/tests/editor.e2e.mjs")
        .env("SWAPGRAPH_URL", &url)
        .env("CHROMIUM", &chromium)
        .env("ARTIFACTS", &artifacts)
        .status()
        .expect("node runs");
    let _ = stop.send(());
    let _ = runtime.block_on(server);
    assert!(status.success(), "the editor test failed; see {}", artifacts.display());
    assert!(artifacts.join("editor-txt2img.png").is_file());
    assert!(workflows.path().join("e2e_txt2img.yaml").is_file());
}
