//! The shared queue on a real NATS server (Debian's `nats-server -js` on a loopback port,
//! started by each test) with real `swapgraph worker` processes on the CPU and the tiny models:
//! jobs finish once each across several workers, a worker killed mid-job has its job finished
//! by another with one set of outputs, a restarted NATS server loses nothing, a cancel reaches
//! the running job, a job that always fails ends failed after its attempts, jobs prefer the
//! worker that holds their models, and credentials are checked.

use super::loopback::{http, LoopbackServer};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use swapgraph::shared::{NatsArgs, SharedQueue};

/// A `nats-server -js` on a free loopback port, storing JetStream's data in a folder of its own
/// so a restart finds what was queued.
struct NatsServer {
    port: u16,
    store: tempfile::TempDir,
    extra: Vec<String>,
    process: Child,
}

impl NatsServer {
    fn start(extra: &[&str]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let store = tempfile::tempdir().unwrap();
        let extra: Vec<String> = extra.iter().map(|arg| arg.to_string()).collect();
        let process = Self::spawn(port, store.path(), &extra);
        Self {
            port,
            store,
            extra,
            process,
        }
    }

    fn spawn(port: u16, store: &Path, extra: &[String]) -> Child {
        let process = Command::new(std::env::var("NATS_SERVER").unwrap_or_else(|_| "nats-server".into()))
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server is needed (Debian's nats-server package; scripts/test.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        process
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops the server and starts it again on the same port and store.
    fn restart(&mut self) {
        self.process.kill().unwrap();
        self.process.wait().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        self.process = Self::spawn(self.port, self.store.path(), &self.extra);
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// A `swapgraph worker` process on the CPU; killed when dropped.
struct WorkerProcess(Child);

impl WorkerProcess {
    fn start(url: &str, name: &str, models: &Path, extra: &[&str]) -> Self {
        let log = std::fs::File::create(std::env::temp_dir().join(format!("swapgraph-{name}.log"))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_swapgraph"))
            .args([
                "worker",
                "--nats",
                url,
                "--device",
                "cpu",
                "--ack-wait",
                "3",
                "--name",
                name,
            ])
            .arg("--models-dir")
            .arg(models)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Self(child)
    }

    fn kill(&mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The repository: the built-in models need no folder, and the tiny single-file checkpoint is
/// in the SDXL pack's fixtures.
fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Text to image on the tiny model with `steps` sampler steps from checkpoint `ckpt`.
fn txt2img(steps: u32, seed: u64, ckpt: &str) -> String {
    std::fs::read_to_string(repository().join("workflows/sdxl_txt2img.yaml"))
        .unwrap()
        .replace("steps: 8", &format!("steps: {steps}"))
        .replace("seed: 42", &format!("seed: {seed}"))
        .replace("builtin:tiny-sdxl", ckpt)
}

/// [`txt2img`] on the tiny model through a LoRA from file `lora`.
fn txt2img_with_lora(seed: u64, lora: &str) -> String {
    let lora_node = format!(
        "nodes:\n  lora:\n    type: LoraLoader\n    inputs: {{ model: ckpt.model, clip: ckpt.clip }}\n    \
         params: {{ lora_name: {lora}, strength_model: 0.8, strength_clip: 0.6 }}\n"
    );
    txt2img(2, seed, "builtin:tiny-sdxl")
        .replace("ckpt.model", "lora.model")
        .replace("ckpt.clip", "lora.clip")
        .replacen("nodes:\n", &lora_node, 1)
}

async fn shared_server(url: &str, max_attempts: u32) -> LoopbackServer {
    let nats = NatsArgs {
        nats: Some(url.to_string()),
        nats_creds: None,
        nats_user: None,
        nats_nkey: None,
        nats_ca: None,
        nats_cert: None,
        nats_key: None,
        ack_wait: 3,
    };
    let queue: Arc<SharedQueue> = SharedQueue::connect(&nats, url, Duration::from_secs(3), max_attempts)
        .await
        .unwrap();
    LoopbackServer::start_with(Some(queue)).await
}

async fn submit(addr: SocketAddr, workflow: &str) -> u64 {
    let (status, body) = http(addr, "POST", "/api/jobs", workflow).await;
    assert_eq!(status, 201, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()["id"].as_u64().unwrap()
}

async fn job(addr: SocketAddr, id: u64) -> Value {
    let (_, body) = http(addr, "GET", &format!("/api/jobs/{id}"), "").await;
    serde_json::from_str(&body).unwrap_or(Value::Null)
}

/// Polls job `id` until `done` holds for it.
async fn until(addr: SocketAddr, id: u64, seconds: u64, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        let job = job(addr, id).await;
        if done(&job) {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} did not get there in {seconds} s: {job}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn ended(job: &Value) -> bool {
    ["succeeded", "failed", "cancelled"].contains(&job["state"].as_str().unwrap_or(""))
}

/// Every file under `folder`, as names relative to it.
fn files_under(folder: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![folder.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.path().is_dir() {
                pending.push(entry.path());
            } else {
                found.push(entry.path().strip_prefix(folder).unwrap().display().to_string());
            }
        }
    }
    found.sort();
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_workers_finish_thirty_jobs_each_once() {
    let nats = NatsServer::start(&[]);
    let server = shared_server(&nats.url(), 3).await;
    let workers: Vec<WorkerProcess> = ["w1", "w2", "w3"]
        .iter()
        .map(|name| WorkerProcess::start(&nats.url(), &format!("thirty-{name}"), &repository(), &[]))
        .collect();
    let mut ids = Vec::new();
    for seed in 0..30 {
        ids.push(submit(server.addr, &txt2img(2, seed, "builtin:tiny-sdxl")).await);
    }
    let mut runners = std::collections::BTreeSet::new();
    for id in &ids {
        let job = until(server.addr, *id, 240, ended).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        let images = job["images"].as_array().unwrap();
        assert_eq!(images.len(), 1, "{job}");
        assert!(
            images[0]["name"].as_str().unwrap().starts_with(&format!("{id}/")),
            "{job}"
        );
        runners.insert(job["runner"].as_str().unwrap().split(' ').next().unwrap().to_string());
    }
    let outputs = files_under(server.output.path());
    assert_eq!(outputs.len(), 30, "one image per job: {outputs:?}");
    for id in &ids {
        assert_eq!(
            outputs
                .iter()
                .filter(|name| name.starts_with(&format!("{id}/")))
                .count(),
            1
        );
    }
    assert!(runners.len() >= 2, "the jobs went to one worker only: {runners:?}");
    let (_, system) = http(server.addr, "GET", "/api/system", "").await;
    let system: Value = serde_json::from_str(&system).unwrap();
    assert_eq!(system["workers"].as_array().map(Vec::len), Some(3), "{system}");
    drop(workers);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_whose_worker_is_killed_is_finished_by_another_with_one_set_of_outputs() {
    let nats = NatsServer::start(&[]);
    let server = shared_server(&nats.url(), 3).await;
    let mut first = WorkerProcess::start(&nats.url(), "killed-first", &repository(), &[]);
    let id = submit(server.addr, &txt2img(150, 1, "builtin:tiny-sdxl")).await;
    // Sampling on the first worker (the only one so far).
    until(server.addr, id, 60, |job| {
        job["progress"]["step"].as_u64().unwrap_or(0) >= 5
    })
    .await;
    let _second = WorkerProcess::start(&nats.url(), "killed-second", &repository(), &[]);
    first.kill();
    let job = until(server.addr, id, 180, ended).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert!(job["runner"].as_str().unwrap().starts_with("killed-second"), "{job}");
    let outputs = files_under(server.output.path());
    assert_eq!(outputs.len(), 1, "{outputs:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_nats_server_loses_no_queued_job() {
    let mut nats = NatsServer::start(&[]);
    let server = shared_server(&nats.url(), 3).await;
    let mut ids = Vec::new();
    // Queued with no worker running: they wait in the stream.
    for seed in 0..6 {
        ids.push(submit(server.addr, &txt2img(2, seed, "builtin:tiny-sdxl")).await);
    }
    nats.restart();
    let _worker = WorkerProcess::start(&nats.url(), "restart", &repository(), &[]);
    until(server.addr, ids[0], 60, ended).await;
    nats.restart();
    for id in &ids {
        let job = until(server.addr, *id, 120, ended).await;
        assert_eq!(job["state"], "succeeded", "{job}");
    }
    assert_eq!(files_under(server.output.path()).len(), 6);
    server.stop().await;
    // A new server finds every job, and copies their outputs into its own output folder.
    let server = shared_server(&nats.url(), 3).await;
    for id in &ids {
        assert_eq!(until(server.addr, *id, 30, ended).await["state"], "succeeded");
    }
    let (_, list) = http(server.addr, "GET", "/api/jobs", "").await;
    let list: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list["jobs"].as_array().unwrap().len(), 6, "{list}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while files_under(server.output.path()).len() < 6 {
        assert!(Instant::now() < deadline, "{:?}", files_under(server.output.path()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_told_to_stop_hands_its_job_back_at_once() {
    let nats = NatsServer::start(&[]);
    let server = shared_server(&nats.url(), 3).await;
    let first = WorkerProcess::start(&nats.url(), "stopped-first", &repository(), &[]);
    let id = submit(server.addr, &txt2img(150, 1, "builtin:tiny-sdxl")).await;
    until(server.addr, id, 60, |job| {
        job["progress"]["step"].as_u64().unwrap_or(0) >= 3
    })
    .await;
    // SIGTERM, as a service manager stops it: the job is queued again well within the ack wait.
    let stopped = Instant::now();
    // SAFETY: kill(2) with a child's pid has no memory effects.
    assert_eq!(unsafe { libc::kill(first.0.id() as i32, libc::SIGTERM) }, 0);
    until(server.addr, id, 10, |job| job["state"] == "queued").await;
    assert!(stopped.elapsed() < Duration::from_secs(3), "{:?}", stopped.elapsed());
    let _second = WorkerProcess::start(&nats.url(), "stopped-second", &repository(), &[]);
    let job = until(server.addr, id, 120, ended).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert!(job["runner"].as_str().unwrap().starts_with("stopped-second"), "{job}");
    drop(first);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancel_reaches_the_running_job() {
    let nats = NatsServer::start(&[]);
    let server = shared_server(&nats.url(), 3).await;
    let _worker = WorkerProcess::start(&nats.url(), "cancel", &repository(), &[]);
    let id = submit(server.addr, &txt2img(400, 1, "builtin:tiny-sdxl")).await;
    until(server.addr, id, 60, |job| {
        job["progress"]["step"].as_u64().unwrap_or(0) >= 3
    })
    .await;
    let asked = Instant::now();
    let (status, body) = http(server.addr, "DELETE", &format!("/api/jobs/{id}"), "").await;
    assert_eq!(status, 200, "{body}");
    let job = until(server.addr, id, 30, ended).await;
    assert_eq!(job["state"], "cancelled", "{job}");
    assert!(asked.elapsed() < Duration::from_secs(10), "took {:?}", asked.elapsed());
    assert!(job["progress"]["step"].as_u64().unwrap() < 400, "{job}");
    // A queued job cancelled never runs.
    let queued = submit(server.addr, &txt2img(400, 2, "builtin:tiny-sdxl")).await;
    let also = submit(server.addr, &txt2img(2, 3, "builtin:tiny-sdxl")).await;
    http(server.addr, "DELETE", &format!("/api/jobs/{also}"), "").await;
    http(server.addr, "DELETE", &format!("/api/jobs/{queued}"), "").await;
    for id in [queued, also] {
        assert_eq!(until(server.addr, id, 60, ended).await["state"], "cancelled");
    }
    assert!(files_under(server.output.path()).is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_failing_every_time_ends_failed_after_its_attempts_and_the_queue_goes_on() {
    let nats = NatsServer::start(&[]);
    let server = shared_server(&nats.url(), 2).await;
    let _worker = WorkerProcess::start(&nats.url(), "poison", &repository(), &[]);
    // A checkpoint the worker's models folder does not have.
    let poisoned = submit(server.addr, &txt2img(2, 1, "missing.safetensors")).await;
    let fine = submit(server.addr, &txt2img(2, 2, "builtin:tiny-sdxl")).await;
    let job = until(server.addr, poisoned, 60, ended).await;
    assert_eq!(job["state"], "failed", "{job}");
    let error = job["error"].as_str().unwrap();
    assert!(error.contains("failed 2 time(s)"), "{error}");
    assert!(
        error.contains("attempt 1 on poison cpu") && error.contains("attempt 2 on poison cpu"),
        "{error}"
    );
    assert!(error.contains("missing.safetensors"), "{error}");
    assert_eq!(until(server.addr, fine, 60, ended).await["state"], "succeeded");
    // A name leading out of the worker's models folder is refused as `run` refuses it.
    let escaping = submit(server.addr, &txt2img(2, 3, "../escape.safetensors")).await;
    let job = until(server.addr, escaping, 60, ended).await;
    assert!(
        job["error"].as_str().unwrap().contains("is outside the models folder"),
        "{job}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_go_to_the_worker_holding_their_models() {
    let models = tempfile::tempdir().unwrap();
    // Two LoRA files (the same bytes under two names) stand for two models.
    let lora = repository().join("nodes/sdxl/fixtures/lora_kohya.safetensors");
    for name in ["a.safetensors", "b.safetensors"] {
        std::fs::copy(&lora, models.path().join(name)).unwrap();
    }
    let nats = NatsServer::start(&[]);
    let server = shared_server(&nats.url(), 3).await;
    let _workers: Vec<WorkerProcess> = ["one", "two"]
        .iter()
        .map(|name| WorkerProcess::start(&nats.url(), &format!("affinity-{name}"), models.path(), &[]))
        .collect();
    // One job per LoRA at once: each idle worker takes one and then holds it.
    let runner_of = |job: &Value| job["runner"].as_str().unwrap().to_string();
    let first_a = submit(server.addr, &txt2img_with_lora(1, "a.safetensors")).await;
    let first_b = submit(server.addr, &txt2img_with_lora(1, "b.safetensors")).await;
    let a = until(server.addr, first_a, 60, ended).await;
    let b = until(server.addr, first_b, 60, ended).await;
    // Wait for both workers to be idle and advertised.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (holder_a, holder_b) = (runner_of(&a), runner_of(&b));
    assert_ne!(holder_a, holder_b, "both first jobs ran on one worker");
    for seed in 10..16 {
        let (ckpt, holder) = if seed % 2 == 0 {
            ("a.safetensors", &holder_a)
        } else {
            ("b.safetensors", &holder_b)
        };
        let job = until(
            server.addr,
            submit(server.addr, &txt2img_with_lora(seed, ckpt)).await,
            60,
            ended,
        )
        .await;
        assert_eq!(job["state"], "succeeded", "{job}");
        assert_eq!(&runner_of(&job), holder, "{ckpt} went elsewhere: {job}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn credentials_are_checked() {
    let nats = NatsServer::start(&["--user", "studio", "--pass", "s3cret"]);
    let worker = |password: &str| {
        Command::new(env!("CARGO_BIN_EXE_swapgraph"))
            .args(["worker", "--nats", &nats.url(), "--nats-user", "studio", "--models-dir"])
            .arg(repository())
            .env("SWAPGRAPH_NATS_PASSWORD", password)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let refused = worker("wrong").wait_with_output().unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("--nats") && stderr.to_lowercase().contains("authorization"),
        "{stderr}"
    );
    let mut accepted = worker("s3cret");
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        accepted.try_wait().unwrap().is_none(),
        "the worker with the right password stopped"
    );
    accepted.kill().unwrap();
    accepted.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_reaches_a_tls_server_through_its_authority_only() {
    let certificates = tempfile::tempdir().unwrap();
    let folder = certificates.path();
    let openssl = |args: &str| {
        let status = Command::new("openssl")
            .args(args.split(' '))
            .current_dir(folder)
            .stderr(Stdio::null())
            .status()
            .expect("openssl makes the test's certificates");
        assert!(status.success(), "openssl {args}");
    };
    let key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    openssl(&format!(
        "req -x509 {key} -keyout ca.key -out ca.pem -days 1 -subj /CN=swapgraph-test-authority -addext basicConstraints=critical,CA:TRUE"
    ));
    openssl(&format!(
        "req {key} -keyout server.key -out server.csr -subj /CN=127.0.0.1"
    ));
    std::fs::write(folder.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 1 -extfile san.ext",
    );
    let cert = folder.join("server.pem").display().to_string();
    let key = folder.join("server.key").display().to_string();
    let nats = NatsServer::start(&["--tls", "--tlscert", &cert, "--tlskey", &key]);
    let url = format!("tls://127.0.0.1:{}", nats.port);
    let worker = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_swapgraph"))
            .args(["worker", "--nats", &url, "--models-dir"])
            .arg(repository())
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let refused = worker(&[]).wait_with_output().unwrap();
    assert_eq!(
        refused.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let authority = folder.join("ca.pem").display().to_string();
    let mut accepted = worker(&["--nats-ca", &authority]);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        accepted.try_wait().unwrap().is_none(),
        "the worker trusting the authority stopped"
    );
    accepted.kill().unwrap();
    accepted.wait().unwrap();
}

#[test]
fn a_worker_started_wrong_says_what_is_wrong_and_exits_2() {
    let worker = |args: &[&str], password: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_swapgraph"));
        command.arg("worker").args(args).env_remove("SWAPGRAPH_NATS_PASSWORD");
        if let Some(password) = password {
            command.env("SWAPGRAPH_NATS_PASSWORD", password);
        }
        let output = command.output().unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).to_string(),
        )
    };
    // Nothing listens on this port: the reason is named before any connection is tried.
    let url = "nats://127.0.0.1:9";
    for (args, expected) in [
        (vec![], "worker needs the NATS server: --nats"),
        (
            vec!["--nats", url, "--nats-user", "studio"],
            "set the password in SWAPGRAPH_NATS_PASSWORD",
        ),
        (
            vec!["--nats", url, "--nats-nkey", "/no/such.nk"],
            "--nats-nkey /no/such.nk",
        ),
        (
            vec!["--nats", url, "--nats-ca", "/no/such.pem"],
            "--nats-ca /no/such.pem: no such file",
        ),
        (
            vec!["--nats", url, "--models-dir", "/no/such/folder"],
            "--models-dir /no/such/folder: not a folder",
        ),
        (vec!["--nats", url], "--nats nats://127.0.0.1:9"),
    ] {
        let (code, stderr) = worker(&args, None);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {expected:?} not in {stderr}");
    }
    let (code, stderr) = worker(&["--nats", url, "--device", "cpu,gpu"], None);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("unknown device \"gpu\""), "{stderr}");
    let (code, stderr) = worker(
        &["--nats", url, "--nats-user", "a", "--nats-creds", "x.creds"],
        Some("p"),
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("give one of --nats-creds, --nats-user and --nats-nkey"),
        "{stderr}"
    );
}
