//! ComfyUI's HTTP API on `serve`: a ComfyUI client published on PyPI (`comfy_api_simplified`,
//! run by `tests/engine/comfy_client.py`) drives the main job exactly as it drives ComfyUI, and
//! the API's refusals keep ComfyUI's shapes and its files stay in their folders.
//!
//! The client runs in a Python environment at `target/comfy-client` (or `COMFY_CLIENT_PYTHON`);
//! `scripts/test.sh` makes it when it is missing.

use super::loopback::{http, http_with, LoopbackServer};
use std::path::{Path, PathBuf};

/// The Python that has the published client.
fn client_python() -> PathBuf {
    let python = std::env::var_os("COMFY_CLIENT_PYTHON").map_or_else(
        || Path::new(env!("CARGO_TARGET_TMPDIR")).join("../comfy-client/bin/python"),
        PathBuf::from,
    );
    assert!(
        python.exists(),
        "the ComfyUI client test needs a Python with comfy_api_simplified at {} (or COMFY_CLIENT_PYTHON); \
         scripts/test.sh makes one",
        python.display()
    );
    python
}

#[test]
fn a_published_comfyui_client_queues_the_main_job_follows_it_and_fetches_its_image() {
    let python = client_python();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(LoopbackServer::start());
    let fetched = server.output.path().join("fetched.png");
    let output = std::process::Command::new(python)
        .arg("tests/engine/comfy_client.py")
        .arg(format!("http://{}", server.addr))
        .arg("tests/cases/comfyui/instantid_api.json")
        .arg("workflows/inputs/astronaut.png")
        .arg(&fetched)
        .output()
        .expect("the client runs");
    let uploaded = server.inputs.path().join("uploads/astronaut.png");
    let saved = server.output.path().join("instantid/portrait_00001.png");
    let (uploaded, saved, fetched) = (std::fs::read(uploaded), std::fs::read(saved), std::fs::read(&fetched));
    runtime.block_on(server.stop());
    assert!(
        output.status.success(),
        "the client failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    // It read the nodes in ComfyUI's shape, uploaded the photo and got back the image the job
    // saved, byte for byte.
    assert!(seen["node_types"].as_u64().unwrap() > 40, "{seen}");
    assert!(seen["samplers"].as_array().unwrap().contains(&"ddpm".into()), "{seen}");
    assert_eq!(seen["device_type"], "cpu");
    assert_eq!(
        seen["uploaded"],
        serde_json::json!({"name": "astronaut.png", "subfolder": "uploads", "type": "input"})
    );
    assert_eq!(
        uploaded.unwrap(),
        std::fs::read("workflows/inputs/astronaut.png").unwrap()
    );
    assert_eq!(seen["image_name"], "portrait_00001.png");
    let (saved, fetched) = (saved.unwrap(), fetched.unwrap());
    assert_eq!(fetched, saved);
    let image = image::load_from_memory(&fetched).unwrap();
    assert_eq!((image.width(), image.height()), (128, 128));
    assert_eq!(
        seen["queue"],
        serde_json::json!({"queue_running": [], "queue_pending": []})
    );
}

/// A multipart form with an `image` file part and text fields.
fn form(filename: &str, image: &[u8], fields: &[(&str, &str)]) -> (String, Vec<u8>) {
    let boundary = "swapgraphtestboundary";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend(
            format!("--{boundary}\r\ncontent-disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").bytes(),
        );
    }
    body.extend(
        format!(
            "--{boundary}\r\ncontent-disposition: form-data; name=\"image\"; filename=\"{filename}\"\r\n\
             content-type: image/png\r\n\r\n"
        )
        .bytes(),
    );
    body.extend(image);
    body.extend(format!("\r\n--{boundary}--\r\n").bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comfyuis_refusals_keep_its_shapes_and_files_stay_in_their_folders() {
    let server = LoopbackServer::start().await;
    let addr = server.addr;
    let json = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap_or_else(|_| panic!("{text}"));

    // A prompt that cannot run: ComfyUI's error, with each node's problems under its id.
    let broken = r#"{"prompt": {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "builtin:tiny-sdxl"}},
        "2": {"class_type": "EmptyLatentImage", "inputs": {"width": "wide", "height": 64, "batch_size": 1}},
        "3": {"class_type": "VAEDecode", "inputs": {"samples": ["2", 0], "vae": ["1", 2]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "x"}}}}"#;
    let (status, body) = http(addr, "POST", "/prompt", broken).await;
    let answer = json(&body);
    assert_eq!(status, 400, "{body}");
    assert_eq!(answer["error"]["type"], "prompt_outputs_failed_validation");
    assert_eq!(answer["node_errors"]["2"]["class_type"], "EmptyLatentImage", "{body}");
    let problem = &answer["node_errors"]["2"]["errors"][0];
    assert_eq!(problem["details"], "width", "{body}");
    assert!(problem["message"].as_str().unwrap().contains("expected"), "{body}");
    for (request, why) in [("not json", "not JSON"), (r#"{"client_id": "c"}"#, "No prompt")] {
        let (status, body) = http(addr, "POST", "/prompt", request).await;
        assert_eq!(
            (status, json(&body)["error"]["type"].as_str()),
            (400, Some("invalid_prompt"))
        );
        assert!(body.contains(why), "{body}");
    }
    // Nothing was queued; an unknown prompt has no history.
    let (_, queue) = http(addr, "GET", "/queue", "").await;
    assert_eq!(
        json(&queue),
        serde_json::json!({"queue_running": [], "queue_pending": []})
    );
    assert_eq!(http(addr, "GET", "/history/nope", "").await, (200, "{}".into()));

    // Uploads: a name taken gets ComfyUI's " (1)"; names cannot leave their folder.
    let png = std::fs::read("workflows/inputs/astronaut.png").unwrap();
    for expected in ["face.png", "face (1).png"] {
        let (content_type, body) = form("face.png", &png, &[]);
        let (status, answer) = http_with(addr, "POST", "/upload/image", &content_type, &body).await;
        assert_eq!(
            (status, json(&answer)["name"].as_str()),
            (200, Some(expected)),
            "{answer}"
        );
    }
    assert_eq!(std::fs::read(server.inputs.path().join("face (1).png")).unwrap(), png);
    let (content_type, body) = form("face.png", &png, &[("overwrite", "true")]);
    let (_, answer) = http_with(addr, "POST", "/upload/image", &content_type, &body).await;
    assert_eq!(json(&answer)["name"], "face.png");
    for (filename, fields) in [
        ("../evil.png", vec![]),
        (".hidden.png", vec![]),
        ("ok.png", vec![("subfolder", "../..")]),
        ("ok.png", vec![("type", "temp")]),
    ] {
        let (content_type, body) = form(filename, &png, &fields);
        let (status, answer) = http_with(addr, "POST", "/upload/image", &content_type, &body).await;
        assert_eq!(status, 400, "{filename} {fields:?}: {answer}");
    }
    // The upload is served back; names that leave the folder are refused, missing ones are 404.
    let (status, _) = http(addr, "GET", "/view?filename=face.png&type=input", "").await;
    assert_eq!(status, 200);
    for (query, expected) in [
        ("filename=..%2Fsecret.png&type=input", 400),
        ("filename=face.png&subfolder=..&type=input", 400),
        ("filename=missing.png&type=output", 404),
        ("filename=face.png&type=temp", 400),
    ] {
        let (status, body) = http(addr, "GET", &format!("/view?{query}"), "").await;
        assert_eq!(status, expected, "{query}: {body}");
    }
    // The node list in ComfyUI's shape: inputs by socket type, params as widgets.
    let (_, info) = http(addr, "GET", "/object_info/KSampler", "").await;
    let sampler = &json(&info)["KSampler"];
    assert_eq!(sampler["input"]["required"]["model"][0], "MODEL");
    assert_eq!(sampler["input"]["required"]["steps"][0], "INT");
    assert_eq!(sampler["input"]["required"]["steps"][1]["default"], 20);
    assert_eq!(sampler["output"], serde_json::json!(["LATENT"]));
    assert_eq!(sampler["output_node"], false);
    server.stop().await;
}

/// The next message on a ComfyUI websocket, as JSON; a binary frame as
/// `{"type": "binary", "data": {"event", "image_type", "width", "height"}}` (its header and its
/// image's size).
async fn next_message(socket: &mut warp::test::WsClient) -> serde_json::Value {
    let message = tokio::time::timeout(std::time::Duration::from_secs(60), socket.recv())
        .await
        .expect("a message within a minute")
        .unwrap();
    if message.is_binary() {
        let bytes = message.as_bytes();
        let word = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
        let picture = image::load_from_memory(&bytes[8..]).unwrap();
        return serde_json::json!({"type": "binary", "data": {
            "event": word(0), "image_type": word(4), "width": picture.width(), "height": picture.height()
        }});
    }
    serde_json::from_str(message.to_str().unwrap()).unwrap()
}

/// Messages up to and including the `executing` with no node that ends a prompt.
async fn until_prompt_ends(socket: &mut warp::test::WsClient) -> Vec<serde_json::Value> {
    let mut seen = Vec::new();
    loop {
        let message = next_message(socket).await;
        let ended = message["type"] == "executing" && message["data"]["node"].is_null();
        seen.push(message);
        if ended {
            return seen;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_websocket_tells_the_client_that_queued_what_comfyui_tells_it() {
    let (output, inputs, workflows) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let config = swapgraph::server::ServerConfig {
        devices: vec![swapgraph_node_api::DeviceSpec::Cpu],
        shared: None,
        vram_budget: swapgraph_node_api::VramBudget::Auto,
        files: swapgraph_node_api::FileRoots {
            outputs: output.path().to_path_buf(),
            inputs: inputs.path().to_path_buf(),
            ..Default::default()
        },
        workflows_dir: workflows.path().to_path_buf(),
        max_body_bytes: swapgraph::server::DEFAULT_MAX_BODY_BYTES,
        previews: true,
    };
    let (routes, executor) = swapgraph::server::app(swapgraph::exec::Engine::new(super::fixtures::packs()), config);
    tokio::spawn(executor);
    let connect = |path: &'static str| warp::test::ws().path(path).handshake(routes.clone());
    let (mut mine, mut other) = (
        connect("/ws?clientId=mine").await.unwrap(),
        connect("/ws?clientId=other").await.unwrap(),
    );
    let hello = next_message(&mut mine).await;
    assert_eq!(hello["type"], "status");
    assert_eq!(hello["data"]["sid"], "mine");
    assert_eq!(hello["data"]["status"]["exec_info"]["queue_remaining"], 0);
    next_message(&mut other).await;

    let prompt = std::fs::read_to_string("tests/cases/comfyui/txt2img_api.json").unwrap();
    let queue = |prompt: String| {
        let routes = routes.clone();
        async move {
            let body = format!(r#"{{"prompt": {prompt}, "client_id": "mine"}}"#);
            let response = warp::test::request()
                .method("POST")
                .path("/prompt")
                .body(body)
                .reply(&routes)
                .await;
            assert_eq!(response.status(), 200, "{:?}", response.body());
            serde_json::from_slice::<serde_json::Value>(response.body()).unwrap()["prompt_id"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let prompt_id = queue(prompt.clone()).await;
    let seen = until_prompt_ends(&mut mine).await;
    let kinds: Vec<&str> = seen.iter().map(|m| m["type"].as_str().unwrap()).collect();
    let first = |kind: &str| {
        kinds
            .iter()
            .position(|k| *k == kind)
            .unwrap_or_else(|| panic!("no {kind} in {kinds:?}"))
    };
    assert!(first("execution_start") < first("executing"), "{kinds:?}");
    assert!(
        first("executing") < first("progress") && first("progress") < first("executed"),
        "{kinds:?}"
    );
    assert!(first("executed") < first("execution_success"), "{kinds:?}");
    let executed = &seen[first("executed")]["data"];
    assert_eq!(executed["node"], "9");
    assert_eq!(executed["prompt_id"], prompt_id.as_str());
    assert_eq!(executed["output"]["images"][0]["filename"], "ComfyUI_00001.png");
    assert_eq!(executed["output"]["images"][0]["type"], "output");
    let progress = &seen[first("progress")]["data"];
    assert_eq!(
        (progress["node"].as_str(), progress["max"].as_u64()),
        (Some("3"), Some(8))
    );
    // A preview of each step, as ComfyUI's binary frames: a preview image (1), in PNG (2), a
    // pixel per latent of the 128x128 image.
    let previews: Vec<&serde_json::Value> = seen
        .iter()
        .filter(|m| m["type"] == "binary")
        .map(|m| &m["data"])
        .collect();
    assert_eq!(previews.len(), 8, "{kinds:?}");
    for preview in previews {
        assert_eq!(
            preview,
            &serde_json::json!({"event": 1, "image_type": 2, "width": 16, "height": 16})
        );
    }
    // The other client hears only the queue's status.
    loop {
        let message = next_message(&mut other).await;
        assert_eq!(message["type"], "status", "{message}");
        if message["data"]["status"]["exec_info"]["queue_remaining"] == 0 {
            break;
        }
    }
    // The history has the image by node, as ComfyUI's clients read it.
    let response = warp::test::request()
        .path(&format!("/history/{prompt_id}"))
        .reply(&routes)
        .await;
    let history: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
    let entry = &history[prompt_id.as_str()];
    assert_eq!(entry["status"]["status_str"], "success");
    assert_eq!(entry["outputs"]["9"]["images"][0]["filename"], "ComfyUI_00001.png");
    assert_eq!(entry["prompt"][1], prompt_id.as_str());

    // A node that fails while running: execution_error names it and says why.
    let failing = prompt.replace(
        r#""5": {"inputs": {"width": 128"#,
        r#""20": {"inputs": {"image": "missing.png"}, "class_type": "LoadImage"}, "21": {"inputs": {"pixels": ["20", 0], "vae": ["4", 2]}, "class_type": "VAEEncode"}, "5": {"inputs": {"width": 128"#,
    )
    .replace(r#""latent_image": ["5", 0]"#, r#""latent_image": ["21", 0]"#);
    assert_ne!(failing, prompt);
    let failed_id = queue(failing).await;
    let seen = until_prompt_ends(&mut mine).await;
    let error = seen
        .iter()
        .find(|m| m["type"] == "execution_error")
        .unwrap_or_else(|| panic!("no execution_error in {seen:?}"));
    assert_eq!(error["data"]["prompt_id"], failed_id.as_str());
    assert_eq!(error["data"]["node_id"], "20");
    assert_eq!(error["data"]["node_type"], "LoadImage");
    assert!(
        error["data"]["exception_message"]
            .as_str()
            .unwrap()
            .contains("missing.png"),
        "{error}"
    );
}
