//! The REST API under `/api`: node descriptors, the device, validation, jobs, images and workflow
//! files.
//! Every error is JSON `{"error": ...}` (plus the validation report where there is one) with a
//! status that says whose fault it was.

use super::files::{self, FileError};
use super::jobs::{CancelError, Submission};
use super::{Jobs, State};
use std::sync::Arc;
use swapgraph_model::{candle_device, device_info, device_memory};
use swapgraph_node_api::{DeviceSpec, NodeError};
use warp::http::StatusCode;
use warp::reply::{json, with_status, Reply, Response};
use warp::Filter;

/// A JSON error reply.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    with_status(json(&serde_json::json!({ "error": message.into() })), status).into_response()
}

/// A file error as a JSON reply with the status that says whose fault it was.
pub(super) fn file_error(e: FileError) -> Response {
    let status = match e {
        FileError::BadName(_) => StatusCode::BAD_REQUEST,
        FileError::NotFound(_) => StatusCode::NOT_FOUND,
        FileError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, e.to_string())
}

/// A request body as text, within the size limit.
fn body(state: &Arc<State>) -> impl Filter<Extract = (bytes::Bytes,), Error = warp::Rejection> + Clone {
    warp::body::content_length_limit(state.max_body_bytes).and(warp::body::bytes())
}

fn with_state(state: &Arc<State>) -> impl Filter<Extract = (Arc<State>,), Error = std::convert::Infallible> + Clone {
    let state = Arc::clone(state);
    warp::any().map(move || Arc::clone(&state))
}

/// `POST /api/{name}` with a workflow in the body: the state and the body.
fn post_workflow(
    state: &Arc<State>,
    name: &'static str,
) -> impl Filter<Extract = (Arc<State>, bytes::Bytes), Error = warp::Rejection> + Clone {
    warp::path("api")
        .and(warp::path(name))
        .and(warp::path::end())
        .and(warp::post())
        .and(with_state(state))
        .and(body(state))
}

/// `POST /api/import`'s query: the dropped file's name, for messages.
#[derive(serde::Deserialize)]
struct ImportQuery {
    name: Option<String>,
}

/// All `/api` routes.
pub fn routes(state: &Arc<State>) -> warp::filters::BoxedFilter<(Response,)> {
    let api = warp::path("api");
    let nodes = api
        .and(warp::path("nodes"))
        .and(warp::path::end())
        .and(warp::get())
        .and(with_state(state))
        .map(|state: Arc<State>| {
            let descriptors: Vec<_> = state.engine.registry().descriptors().collect();
            json(&descriptors).into_response()
        });
    let sockets = api
        .and(warp::path("sockets"))
        .and(warp::path::end())
        .and(warp::get())
        .and(with_state(state))
        .map(|state: Arc<State>| {
            let sockets: Vec<_> = state.engine.registry().sockets().collect();
            json(&sockets).into_response()
        });
    let validate = post_workflow(state, "validate").map(|state: Arc<State>, bytes: bytes::Bytes| {
        match state.prepare("workflow", &bytes) {
            Ok(plan) => json(&serde_json::json!({ "valid": true, "plan": plan.summary() })).into_response(),
            Err(report) => json(&serde_json::json!({ "valid": false, "report": report })).into_response(),
        }
    });
    let submit = post_workflow(state, "jobs").then(|state: Arc<State>, bytes: bytes::Bytes| async move {
        match state.prepare("workflow", &bytes) {
            Ok(plan) => {
                let name = plan.name().unwrap_or("workflow").to_string();
                let submission = Submission {
                    plan,
                    name,
                    client_id: None,
                };
                match state.jobs.submit(submission, |_| {}).await {
                    Ok(job) => with_status(json(&job), StatusCode::CREATED).into_response(),
                    Err(problem) => error(StatusCode::SERVICE_UNAVAILABLE, problem),
                }
            }
            Err(report) => with_status(
                json(&serde_json::json!({
                    "error": format!("the workflow is invalid: {} problem(s)", report.errors.len()),
                    "report": report,
                })),
                StatusCode::BAD_REQUEST,
            )
            .into_response(),
        }
    });
    let list_jobs = api
        .and(warp::path("jobs"))
        .and(warp::path::end())
        .and(warp::get())
        .and(with_state(state))
        .map(|state: Arc<State>| json(&serde_json::json!({ "jobs": state.jobs.list() })).into_response());
    let job = api
        .and(warp::path("jobs"))
        .and(warp::path::param::<String>())
        .and(warp::path::end());
    let get_job = job
        .and(warp::get())
        .and(with_state(state))
        .map(|id: String, state: Arc<State>| match parse_id(&id) {
            Ok(id) => match state.jobs.get(id) {
                Some(job) => json(&job).into_response(),
                None => error(StatusCode::NOT_FOUND, format!("job {id} not found")),
            },
            Err(reply) => reply,
        });
    let cancel_job = job
        .and(warp::delete())
        .and(with_state(state))
        .then(|id: String, state: Arc<State>| async move {
            match parse_id(&id) {
                Ok(id) => match state.jobs.cancel(id).await {
                    Ok(job) => json(&job).into_response(),
                    Err(CancelError::Unknown) => error(StatusCode::NOT_FOUND, format!("job {id} not found")),
                    Err(CancelError::Finished(state)) => error(
                        StatusCode::CONFLICT,
                        format!(
                            "job {id} already ended ({})",
                            serde_json::to_value(state).unwrap_or_default()
                        ),
                    ),
                    Err(CancelError::Unreachable(problem)) => error(StatusCode::SERVICE_UNAVAILABLE, problem),
                },
                Err(reply) => reply,
            }
        });
    let image = api
        .and(warp::path("images"))
        .and(warp::path::tail())
        .and(warp::get())
        .and(with_state(state))
        .map(|tail: warp::path::Tail, state: Arc<State>| {
            let name = percent_encoding::percent_decode_str(tail.as_str())
                .decode_utf8_lossy()
                .to_string();
            match files::image_path(&state.output_dir, &name).and_then(|path| {
                std::fs::read(&path).map_err(|e| FileError::Io(format!("cannot read image \"{name}\": {e}")))
            }) {
                Ok(bytes) => warp::http::Response::builder()
                    .header("content-type", content_type(&name))
                    .header("cache-control", "no-cache")
                    .body(bytes.into())
                    .unwrap_or_else(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "cannot build the response")),
                Err(e) => file_error(e),
            }
        });
    let list_workflows = api
        .and(warp::path("workflows"))
        .and(warp::path::end())
        .and(warp::get())
        .and(with_state(state))
        .map(|state: Arc<State>| match files::list_workflows(&state.workflows_dir) {
            Ok(names) => json(&serde_json::json!({ "workflows": names })).into_response(),
            Err(e) => file_error(e),
        });
    let workflow = api
        .and(warp::path("workflows"))
        .and(warp::path::param::<String>())
        .and(warp::path::end());
    let get_workflow = workflow
        .and(warp::get())
        .and(with_state(state))
        .map(|name: String, state: Arc<State>| {
            match files::workflow_path(&state.workflows_dir, &name)
                .and_then(|path| std::fs::read(&path).map_err(|_| FileError::NotFound(format!("workflow \"{name}\""))))
            {
                Ok(bytes) => warp::http::Response::builder()
                    .header("content-type", "application/yaml; charset=utf-8")
                    .body(bytes.into())
                    .unwrap_or_else(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "cannot build the response")),
                Err(e) => file_error(e),
            }
        });
    let put_workflow = workflow.and(warp::put()).and(with_state(state)).and(body(state)).map(
        |name: String, state: Arc<State>, bytes: bytes::Bytes| {
            let path = match files::workflow_path(&state.workflows_dir, &name) {
                Ok(path) => path,
                Err(e) => return file_error(e),
            };
            // Work in progress may be incomplete, but it must be a workflow document.
            if let Err(e) = crate::workflow::parse(&bytes) {
                let report = crate::validate::ValidationReport::new(name.clone(), vec![e]);
                return with_status(
                    json(
                        &serde_json::json!({ "error": format!("{name} is not a workflow document"), "report": report }),
                    ),
                    StatusCode::BAD_REQUEST,
                )
                .into_response();
            }
            match files::write_atomically(&path, &bytes) {
                Ok(()) => json(&serde_json::json!({ "saved": name })).into_response(),
                Err(e) => file_error(e),
            }
        },
    );
    let system = api
        .and(warp::path("system"))
        .and(warp::path::end())
        .and(warp::get())
        .and(with_state(state))
        .then(|state: Arc<State>| async move {
            match system_report(&state.jobs).await {
                Ok(report) => json(&report).into_response(),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
            }
        });
    let import = api
        .and(warp::path("import"))
        .and(warp::query::<ImportQuery>())
        .and(warp::path::end())
        .and(warp::post())
        .and(with_state(state))
        .and(body(state))
        .map(|query: ImportQuery, state: Arc<State>, bytes: bytes::Bytes| {
            let name = query.name.unwrap_or_else(|| "the dropped file".to_string());
            match super::import::workflow_yaml(&name, &bytes, state.engine.registry()) {
                Ok(yaml) => warp::http::Response::builder()
                    .header("content-type", "application/yaml; charset=utf-8")
                    .body(yaml.into())
                    .unwrap_or_else(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "cannot build the response")),
                Err(problem) => error(StatusCode::BAD_REQUEST, problem),
            }
        });
    nodes
        .or(sockets)
        .unify()
        .or(import)
        .unify()
        .or(system)
        .unify()
        .or(validate)
        .unify()
        .or(submit)
        .unify()
        .or(list_jobs)
        .unify()
        .or(get_job)
        .unify()
        .or(cancel_job)
        .unify()
        .or(image)
        .unify()
        .or(list_workflows)
        .unify()
        .or(get_workflow)
        .unify()
        .or(put_workflow)
        .unify()
        .boxed()
}

/// What runs the jobs: for the server's own queue each device with its memory, the job running
/// there and the models it holds (the first device's figures also at the top level, as before
/// there were several); for a shared queue the workers that advertise themselves.
///
/// # Errors
/// Why a device could not be asked.
pub(super) async fn system_report(jobs: &Jobs) -> Result<serde_json::Value, String> {
    let queue = match jobs {
        Jobs::Local(queue) => queue,
        Jobs::Shared(queue, _) => return Ok(serde_json::json!({ "workers": queue.workers().await? })),
    };
    let executors = queue.executors();
    let mut devices = Vec::new();
    for executor in executors {
        let device = executor.device;
        let mut report = tokio::task::spawn_blocking(move || device_report(device))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        report["runner"] = executor.runner.into();
        report["running"] = executor.running.into();
        report["jobs_taken"] = executor.jobs_taken.into();
        report["holds"] = executor.holds.into();
        devices.push(report);
    }
    let mut report = devices.first().cloned().unwrap_or_default();
    report["devices"] = devices.into();
    Ok(report)
}

/// A device and its memory: what the memory pool holds (`allocated`, `reserved`,
/// `peak_allocated`) and the whole device (`free`, `total`), in bytes; `null` on the CPU.
fn device_report(device: DeviceSpec) -> Result<serde_json::Value, NodeError> {
    let candle = candle_device(device)?;
    let memory = device_memory(&candle).map(|m| {
        serde_json::json!({
            "allocated": m.allocated,
            "reserved": m.reserved,
            "peak_allocated": m.peak_allocated,
            "free": m.free,
            "total": m.total,
        })
    });
    let name = device_info(&candle).map_or_else(|| "CPU".to_string(), |info| info.name);
    Ok(serde_json::json!({ "device": device.to_string(), "name": name, "memory": memory }))
}

fn parse_id(text: &str) -> Result<u64, Response> {
    text.parse()
        .map_err(|_| error(StatusCode::BAD_REQUEST, format!("job id \"{text}\" is not a number")))
}

pub(super) fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next().map(str::to_ascii_lowercase).as_deref() {
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("webp") => "image/webp",
        _ => "application/octet-stream",
    }
}
