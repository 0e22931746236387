//! The HTTP API and the event websocket, through warp's test helpers: descriptors, validation,
//! the job queue with cancels, images and workflow files confined to their folders, body limits.

use super::fixtures::{packs, registry, Probe};
use super::loopback::{http, LoopbackServer};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use swapgraph::exec::Engine;
use swapgraph::server::{app, ServerConfig};
use swapgraph_node_api::FileRoots;
use warp::filters::BoxedFilter;
use warp::reply::Response;

struct TestServer {
    routes: BoxedFilter<(Response,)>,
    output: tempfile::TempDir,
    workflows: tempfile::TempDir,
}

fn server(registry: swapgraph_node_api::Registry) -> TestServer {
    server_on(registry, vec![swapgraph_node_api::DeviceSpec::Cpu])
}

/// A server with one executor per entry of `devices`.
fn server_on(registry: swapgraph_node_api::Registry, devices: Vec<swapgraph_node_api::DeviceSpec>) -> TestServer {
    let (output, workflows) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let config = ServerConfig {
        devices,
        shared: None,
        vram_budget: swapgraph_node_api::VramBudget::Auto,
        files: FileRoots {
            outputs: output.path().to_path_buf(),
            ..FileRoots::default()
        },
        workflows_dir: workflows.path().to_path_buf(),
        max_body_bytes: 64 * 1024,
        previews: false,
    };
    let (routes, executor) = app(Engine::new(registry), config);
    tokio::spawn(executor);
    TestServer {
        routes,
        output,
        workflows,
    }
}

async fn call(server: &TestServer, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let response = warp::test::request()
        .method(method)
        .path(path)
        .body(body)
        .reply(&server.routes)
        .await;
    let status = response.status().as_u16();
    let json = serde_json::from_slice(response.body()).unwrap_or(serde_json::Value::Null);
    (status, json)
}

/// Polls a job until it has ended.
async fn finished(server: &TestServer, id: u64) -> serde_json::Value {
    for _ in 0..600 {
        let (_, job) = call(server, "GET", &format!("/api/jobs/{id}"), "").await;
        if ["succeeded", "failed", "cancelled"].contains(&job["state"].as_str().unwrap_or("")) {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("job {id} did not finish");
}

/// A workflow whose middle node is `node_type` with `param`.
fn waiting(node_type: &str, param: &str) -> String {
    format!(
        "version: 1\nnodes:\n  a: {{ type: PrimitiveInt, params: {{ value: 1 }} }}\n  \
         s: {{ type: {node_type}, inputs: {{ value: a.int }}, params: {{ {param} }} }}\n  \
         out: {{ type: TestSink, inputs: {{ value: s.int }} }}\n"
    )
}

/// Sleeps `ms` milliseconds in one go.
fn sleeper(ms: u64) -> String {
    waiting("TestSleep", &format!("ms: {ms}"))
}

/// Loops `steps` milliseconds, reporting progress and checking cancellation each step.
fn looper(steps: u64) -> String {
    waiting("TestLoop", &format!("steps: {steps}"))
}

#[tokio::test]
async fn the_system_route_names_the_device_and_its_memory() {
    let server = server(packs());
    let (status, system) = call(&server, "GET", "/api/system", "").await;
    assert_eq!(status, 200);
    let device = serde_json::json!({
        "device": "cpu", "name": "CPU", "memory": null,
        "runner": "cpu", "running": null, "jobs_taken": 0, "holds": [],
    });
    let mut expected = device.clone();
    expected["devices"] = serde_json::json!([device]);
    assert_eq!(system, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_device_runs_a_job_of_its_own_at_once() {
    let probe = Arc::new(Probe::default());
    let cpu = swapgraph_node_api::DeviceSpec::Cpu;
    let server = server_on(registry(&probe), vec![cpu, cpu]);
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (status, job) = call(&server, "POST", "/api/jobs", &sleeper(600)).await;
        assert_eq!(status, 201, "{job}");
        ids.push(job["id"].as_u64().unwrap());
    }
    // Both run at once: one executor each.
    let started = std::time::Instant::now();
    loop {
        let (_, list) = call(&server, "GET", "/api/jobs", "").await;
        let running = list["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|job| job["state"] == "running")
            .count();
        if running == 2 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "never both running: {list}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, system) = call(&server, "GET", "/api/system", "").await;
    let devices = system["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 2, "{system}");
    assert!(devices.iter().all(|device| device["running"].is_u64()), "{system}");
    let mut runners: Vec<String> = Vec::new();
    for id in ids {
        let job = finished(&server, id).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        runners.push(job["runner"].as_str().unwrap().into());
    }
    runners.sort();
    assert_eq!(runners, ["cpu/1", "cpu/2"]);
}

#[tokio::test]
async fn descriptors_and_validation_reports_are_the_clis() {
    let server = server(packs());
    let (status, nodes) = call(&server, "GET", "/api/nodes", "").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["type_name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"KSampler") && names.contains(&"BlockSwap"));
    assert_eq!(names.len(), packs().descriptors().count());
    let (status, sockets) = call(&server, "GET", "/api/sockets", "").await;
    assert_eq!(status, 200);
    let control_net = sockets
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "CONTROL_NET")
        .expect("the SDXL pack registers CONTROL_NET");
    assert!(control_net["colour"].as_str().unwrap().starts_with('#'));
    assert_eq!(sockets.as_array().unwrap().len(), packs().sockets().count());

    let valid = std::fs::read_to_string("workflows/sdxl_blockswap.yaml").unwrap();
    let (status, report) = call(&server, "POST", "/api/validate", &valid).await;
    assert_eq!((status, report["valid"].as_bool()), (200, Some(true)));
    assert!(report["plan"]["steps"].as_array().unwrap().len() >= 7);

    let broken = valid
        .replace("steps: 8", "steps: 0")
        .replace("sampler_name: euler", "sampler_name: eular");
    let (status, report) = call(&server, "POST", "/api/validate", &broken).await;
    assert_eq!((status, report["valid"].as_bool()), (200, Some(false)));
    let errors = report["report"]["errors"].as_array().unwrap();
    let fields: Vec<(&str, &str)> = errors
        .iter()
        .map(|e| (e["node"].as_str().unwrap(), e["field"].as_str().unwrap()))
        .collect();
    assert_eq!(fields, vec![("sample", "steps"), ("sample", "sampler_name")]);
    assert!(
        errors[1]["message"].as_str().unwrap().contains("euler"),
        "a did-you-mean"
    );

    let (status, report) = call(&server, "POST", "/api/jobs", "version: 1\nnodes: [unclosed").await;
    assert_eq!(status, 400, "a malformed submission is the client's fault");
    assert_eq!(report["report"]["errors"][0]["code"], "yaml-syntax");
}

#[tokio::test]
async fn jobs_run_in_order_and_write_images_the_api_serves() {
    let server = server(packs());
    let workflow = std::fs::read_to_string("workflows/sdxl_txt2img.yaml")
        .unwrap()
        .replace("steps: 8", "steps: 2");
    let (status, job) = call(&server, "POST", "/api/jobs", &workflow).await;
    assert_eq!(status, 201, "{job}");
    let job = finished(&server, job["id"].as_u64().unwrap()).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let image = job["images"][0]["name"].as_str().unwrap();
    let response = warp::test::request()
        .path(&format!("/api/images/{image}"))
        .reply(&server.routes)
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "image/png");
    assert_eq!(
        response.body().as_ref(),
        std::fs::read(server.output.path().join(image)).unwrap()
    );
    let (_, list) = call(&server, "GET", "/api/jobs", "").await;
    assert_eq!(list["jobs"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn queued_and_running_jobs_can_be_cancelled_and_a_failure_stays_in_its_job() {
    let probe = Arc::new(Probe::default());
    let server = server(registry(&probe));
    let (_, first) = call(&server, "POST", "/api/jobs", &sleeper(400)).await;
    let (_, second) = call(&server, "POST", "/api/jobs", &sleeper(10)).await;
    let failing = "version: 1\nnodes:\n  a: { type: PrimitiveInt, params: { value: 1 } }\n  \
                   f: { type: TestFail, inputs: { value: a.int } }\n  out: { type: TestSink, inputs: { value: f.int } }\n";
    let (_, third) = call(&server, "POST", "/api/jobs", failing).await;
    let (_, fourth) = call(&server, "POST", "/api/jobs", &sleeper(10)).await;
    let (first, second) = (first["id"].as_u64().unwrap(), second["id"].as_u64().unwrap());
    let (status, cancelled) = call(&server, "DELETE", &format!("/api/jobs/{second}"), "").await;
    assert_eq!((status, cancelled["state"].as_str()), (200, Some("cancelled")));
    assert_eq!(finished(&server, first).await["state"], "succeeded");
    assert_eq!(finished(&server, second).await["state"], "cancelled");
    let failed = finished(&server, third["id"].as_u64().unwrap()).await;
    assert_eq!(failed["state"], "failed");
    assert!(failed["error"].as_str().unwrap().contains("failed on purpose"));
    assert_eq!(
        finished(&server, fourth["id"].as_u64().unwrap()).await["state"],
        "succeeded"
    );

    let (status, _) = call(&server, "DELETE", &format!("/api/jobs/{first}"), "").await;
    assert_eq!(status, 409, "a finished job cannot be cancelled");
    let (status, _) = call(&server, "DELETE", "/api/jobs/999", "").await;
    assert_eq!(status, 404);
    let (status, _) = call(&server, "GET", "/api/jobs/abc", "").await;
    assert_eq!(status, 400);

    let (_, running) = call(&server, "POST", "/api/jobs", &looper(100_000)).await;
    let running = running["id"].as_u64().unwrap();
    // The job reports the looping node's progress while it runs.
    let progress = loop {
        let (_, job) = call(&server, "GET", &format!("/api/jobs/{running}"), "").await;
        if job["progress"]["step"].as_u64().unwrap_or(0) >= 1 {
            break job["progress"].clone();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(
        (progress["node"].as_str(), progress["total"].as_u64()),
        (Some("s"), Some(100_000))
    );
    call(&server, "DELETE", &format!("/api/jobs/{running}"), "").await;
    assert_eq!(finished(&server, running).await["state"], "cancelled");
}

#[tokio::test]
async fn workflow_files_round_trip_and_names_cannot_escape() {
    let server = server(packs());
    let text = std::fs::read_to_string("workflows/sdxl_txt2img.yaml").unwrap();
    let (status, _) = call(&server, "PUT", "/api/workflows/mine.yaml", &text).await;
    assert_eq!(status, 200);
    let response = warp::test::request()
        .path("/api/workflows/mine.yaml")
        .reply(&server.routes)
        .await;
    assert_eq!(response.body().as_ref(), text.as_bytes());
    let (_, list) = call(&server, "GET", "/api/workflows", "").await;
    assert_eq!(list["workflows"], serde_json::json!(["mine.yaml"]));

    for bad in ["..%2Fescape.yaml", ".hidden.yaml", "notes.txt", "a%20b.yaml"] {
        let (status, body) = call(&server, "PUT", &format!("/api/workflows/{bad}"), &text).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (status, body) = call(&server, "PUT", "/api/workflows/broken.yaml", "nodes: [1, 2").await;
    assert_eq!(status, 400);
    assert_eq!(body["report"]["errors"][0]["code"], "yaml-syntax");
    assert!(!server.workflows.path().join("broken.yaml").exists(), "nothing written");

    let (status, _) = call(&server, "GET", "/api/workflows/missing.yaml", "").await;
    assert_eq!(status, 404);
    let big = "#".repeat(65 * 1024);
    let (status, _) = call(&server, "PUT", "/api/workflows/big.yaml", &big).await;
    assert_eq!(status, 413);

    std::fs::write(server.output.path().parent().unwrap().join("secret.png"), b"x").ok();
    for (path, expected) in [
        ("/api/images/..%2Fsecret.png", 400),
        ("/api/images/missing.png", 404),
        ("/api/nothing", 404),
    ] {
        let (status, body) = call(&server, "GET", path, "").await;
        assert_eq!(status, expected, "{path}: {body}");
        assert!(body["error"].is_string());
    }
    assert!(Path::new(&server.output.path()).is_dir());
}

#[tokio::test]
async fn the_event_socket_streams_the_queue_and_run_progress() {
    let probe = Arc::new(Probe::default());
    let server = server(registry(&probe));
    let mut socket = warp::test::ws()
        .path("/api/events")
        .handshake(server.routes.clone())
        .await
        .unwrap();
    let snapshot: serde_json::Value = serde_json::from_str(socket.recv().await.unwrap().to_str().unwrap()).unwrap();
    assert_eq!(snapshot["kind"], "queue");
    let (status, job) = call(&server, "POST", "/api/jobs", &looper(5)).await;
    assert_eq!(status, 201, "{job}");
    let mut seen = Vec::new();
    loop {
        let message = socket.recv().await.unwrap();
        let event: serde_json::Value = serde_json::from_str(message.to_str().unwrap()).unwrap();
        if event["kind"] == "run" {
            assert_eq!(event["job"], job["id"]);
            seen.push(event["event"].as_str().unwrap().to_string());
            if event["event"] == "run_finished" {
                break;
            }
        }
    }
    for expected in [
        "run_started",
        "node_started",
        "progress",
        "node_finished",
        "run_finished",
    ] {
        assert!(seen.iter().any(|e| e == expected), "no {expected} in {seen:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_load_every_request_is_answered_and_every_job_accounted_for() {
    let server = LoopbackServer::start().await;
    let addr = server.addr;
    let started = std::time::Instant::now();
    let job = std::fs::read_to_string("workflows/sdxl_txt2img.yaml")
        .unwrap()
        .replace("steps: 8", "steps: 2")
        .replace("width: 128, height: 128", "width: 64, height: 64");
    let mut ids = Vec::new();
    for _ in 0..20 {
        let (status, body) = http(addr, "POST", "/api/jobs", &job).await;
        assert_eq!(status, 201, "{body}");
        ids.push(
            serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"]
                .as_u64()
                .unwrap(),
        );
    }
    let cancelled: Vec<u64> = ids.iter().copied().skip(4).step_by(5).collect();
    let validate = std::fs::read_to_string("workflows/instantid_blockswap.yaml").unwrap();
    // Four of the clients cancel queued jobs while the rest validate.
    let clients: Vec<_> = (0..200)
        .map(|i| {
            let (validate, cancel) = (validate.clone(), cancelled.get(i).copied());
            tokio::spawn(async move {
                let t = std::time::Instant::now();
                let (status, body) = match cancel {
                    Some(id) => http(addr, "DELETE", &format!("/api/jobs/{id}"), "").await,
                    None => http(addr, "POST", "/api/validate", &validate).await,
                };
                (status, body, t.elapsed())
            })
        })
        .collect();
    // A cancel may reach a job that already ran; the server then says so and
    // the job must stay succeeded.
    let mut latencies = Vec::new();
    let mut ran_before_cancel = Vec::new();
    for (i, client) in clients.into_iter().enumerate() {
        let (status, body, elapsed) = client.await.unwrap();
        match cancelled.get(i) {
            Some(&id) if status == 409 && body.contains("already ended") => ran_before_cancel.push(id),
            _ => assert!(status == 200, "{status}: {body}"),
        }
        latencies.push(elapsed);
    }
    let mut states = Vec::new();
    for id in &ids {
        let state = loop {
            let (_, body) = http(addr, "GET", &format!("/api/jobs/{id}"), "").await;
            let job: serde_json::Value = serde_json::from_str(&body).unwrap();
            if ["succeeded", "failed", "cancelled"].contains(&job["state"].as_str().unwrap()) {
                break job["state"].as_str().unwrap().to_string();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        states.push(state);
    }
    server.stop().await;
    for (id, state) in ids.iter().zip(&states) {
        let expected = if cancelled.contains(id) && !ran_before_cancel.contains(id) {
            "cancelled"
        } else {
            "succeeded"
        };
        assert_eq!(state, expected, "job {id}");
    }
    latencies.sort();
    eprintln!(
        "load: 20 jobs ({} cancelled) and 200 concurrent validations in {:.1} s; validation latency p50 {:.0} ms, max {:.0} ms",
        cancelled.len(),
        started.elapsed().as_secs_f64(),
        latencies[100].as_secs_f64() * 1e3,
        latencies[199].as_secs_f64() * 1e3
    );
}

#[tokio::test]
async fn import_turns_what_is_dropped_into_workflow_yaml_and_names_what_it_cannot() {
    let server = server(packs());
    let import = |name: &'static str, body: Vec<u8>| {
        let routes = server.routes.clone();
        async move {
            let response = warp::test::request()
                .method("POST")
                .path(&format!("/api/import?name={name}"))
                .body(body)
                .reply(&routes)
                .await;
            (
                response.status().as_u16(),
                String::from_utf8_lossy(response.body()).into_owned(),
            )
        }
    };
    let comfy = std::fs::read("tests/cases/comfyui/txt2img_editor.json").unwrap();
    let (status, yaml) = import("txt2img.json", comfy).await;
    assert_eq!(status, 200, "{yaml}");
    assert!(yaml.contains("type: KSampler"), "{yaml}");
    let (status, body) = import("notes.txt", b"just: [some, text".to_vec()).await;
    assert_eq!(status, 400);
    assert!(body.contains("notes.txt is not a workflow"), "{body}");
    // A PNG without a workflow in it.
    let mut bare = std::io::Cursor::new(Vec::new());
    image::RgbImage::new(2, 2)
        .write_to(&mut bare, image::ImageFormat::Png)
        .unwrap();
    let (status, body) = import("bare.png", bare.into_inner()).await;
    assert_eq!(status, 400);
    assert!(body.contains("bare.png carries no workflow"), "{body}");
}
