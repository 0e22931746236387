//! The editor end to end in headless Chromium (`web/tests/editor.e2e.mjs`, driven by
//! playwright-core) against a real server on loopback. The screenshot lands in
//! `target/editor-e2e/`.
//!
//! Needs Node.js, `npm ci --prefix web` and Chromium (`CHROMIUM`, default `/usr/bin/chromium`);
//! `scripts/test.sh` installs them when they are missing.

use super::loopback::LoopbackServer;
use std::path::Path;

#[test]
fn the_editor_builds_runs_saves_and_reloads_a_txt2img_graph_in_chromium() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_string());
    assert!(
        Path::new(&chromium).exists() && Path::new("web/node_modules/playwright-core").exists(),
        "the editor test needs Chromium at {chromium} (apt-get install chromium, or set CHROMIUM) and \
         `npm ci --prefix web`; scripts/test.sh installs both"
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(LoopbackServer::start());
    let url = format!("http://{}/", server.addr);
    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../editor-e2e");
    let status = std::process::Command::new("node")
        .arg("web/tests/editor.e2e.mjs")
        .env("SWAPGRAPH_URL", &url)
        .env("CHROMIUM", &chromium)
        .env("ARTIFACTS", &artifacts)
        .status()
        .expect("node runs");
    let saved = server.workflows.path().join("e2e_txt2img.yaml").is_file();
    runtime.block_on(server.stop());
    assert!(status.success(), "the editor test failed; see {}", artifacts.display());
    assert!(artifacts.join("editor-txt2img.png").is_file());
    assert!(saved);
}
