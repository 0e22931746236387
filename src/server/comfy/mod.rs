//! ComfyUI's HTTP API beside swapgraph's own, so that tools written for ComfyUI drive swapgraph
//! as they drive ComfyUI: `POST /prompt` (an API-format workflow, queued as a job), `GET`/`POST
//! /queue`, `POST /interrupt`, `GET /history[/{prompt_id}]`, `GET /view`, `POST /upload/image`,
//! `GET /object_info[/{class}]`, `GET /system_stats`, `GET /embeddings` and the `/ws?clientId=`
//! websocket with ComfyUI's messages. Jobs are the same jobs `/api/jobs` lists.

mod history;
mod messages;
mod object_info;
mod prompt;
mod uploads;

pub use prompt::Submissions;

use super::api::{error, file_error};
use super::files::FileError;
use super::State;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use warp::http::StatusCode;
use warp::reply::{json, with_status, Reply, Response};
use warp::ws::{Message, WebSocket};
use warp::Filter;

/// The largest image `/upload/image` takes.
const MAX_UPLOAD_BYTES: u64 = 64 << 20;

fn with_state(state: &Arc<State>) -> impl Filter<Extract = (Arc<State>,), Error = std::convert::Infallible> + Clone {
    let state = Arc::clone(state);
    warp::any().map(move || Arc::clone(&state))
}

/// Every route of ComfyUI's API.
pub fn routes(state: &Arc<State>) -> warp::filters::BoxedFilter<(Response,)> {
    let get = |path: &'static str| {
        warp::path(path)
            .and(warp::path::end())
            .and(warp::get())
            .and(with_state(state))
    };
    let post_json = |path: &'static str| {
        warp::path(path)
            .and(warp::path::end())
            .and(warp::post())
            .and(with_state(state))
            .and(warp::body::content_length_limit(state.max_body_bytes))
            .and(warp::body::bytes())
    };
    let submit =
        post_json("prompt").then(|state: Arc<State>, body: bytes::Bytes| async move { submit(&state, &body).await });
    let queue = get("queue")
        .map(|state: Arc<State>| json(&history::queue(&state.jobs.list(), &state.submissions)).into_response());
    let edit_queue =
        post_json("queue").then(|state: Arc<State>, body: bytes::Bytes| async move { edit_queue(&state, &body).await });
    let interrupt = warp::path("interrupt")
        .and(warp::path::end())
        .and(warp::post())
        .and(with_state(state))
        .and(warp::body::content_length_limit(state.max_body_bytes))
        .and(warp::body::bytes())
        .then(|state: Arc<State>, body: bytes::Bytes| async move { interrupt(&state, &body).await });
    let all_history = get("history").and(warp::query::<HashMap<String, String>>()).map(
        |state: Arc<State>, query: HashMap<String, String>| {
            let most = query.get("max_items").and_then(|n| n.parse().ok());
            json(&history::history(&state.jobs.list(), &state.submissions, most)).into_response()
        },
    );
    let one_history = warp::path!("history" / String)
        .and(warp::get())
        .and(with_state(state))
        .map(|prompt_id: String, state: Arc<State>| {
            let job = state.submissions.job(&prompt_id).and_then(|id| state.jobs.get(id));
            json(&history::history_of(job.as_ref(), &state.submissions)).into_response()
        });
    let view = get("view")
        .and(warp::query::<HashMap<String, String>>())
        .map(|state: Arc<State>, query: HashMap<String, String>| view(&state, &query));
    let upload = warp::path!("upload" / "image")
        .and(warp::post())
        .and(with_state(state))
        .and(warp::multipart::form().max_length(MAX_UPLOAD_BYTES))
        .then(|state: Arc<State>, form: warp::multipart::FormData| async move { upload(&state, form).await });
    let object_info = get("object_info").map(|state: Arc<State>| {
        let nodes: serde_json::Map<String, Value> = state
            .engine
            .registry()
            .descriptors()
            .map(|node| (node.type_name.to_string(), object_info::describe(node)))
            .collect();
        json(&nodes).into_response()
    });
    let one_object_info = warp::path!("object_info" / String)
        .and(warp::get())
        .and(with_state(state))
        .map(|class: String, state: Arc<State>| {
            let nodes: serde_json::Map<String, Value> = state
                .engine
                .registry()
                .descriptors()
                .filter(|node| node.type_name == class)
                .map(|node| (node.type_name.to_string(), object_info::describe(node)))
                .collect();
            json(&nodes).into_response()
        });
    let system_stats = get("system_stats").then(|state: Arc<State>| async move {
        match super::api::system_report(&state.jobs).await {
            Ok(report) => json(&system_stats(&report)).into_response(),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        }
    });
    let embeddings = warp::path("embeddings")
        .and(warp::path::end())
        .and(warp::get())
        .map(|| json(&Vec::<String>::new()).into_response());
    let websocket = warp::path("ws")
        .and(warp::path::end())
        .and(warp::ws())
        .and(warp::query::<HashMap<String, String>>())
        .and(with_state(state))
        .map(|ws: warp::ws::Ws, query: HashMap<String, String>, state: Arc<State>| {
            let client = query
                .get("clientId")
                .cloned()
                .unwrap_or_else(|| format!("swapgraph-{}", state.jobs.list().len()));
            ws.on_upgrade(move |socket| stream(socket, client, state))
                .into_response()
        });
    submit
        .or(queue)
        .unify()
        .or(edit_queue)
        .unify()
        .or(interrupt)
        .unify()
        .or(all_history)
        .unify()
        .or(one_history)
        .unify()
        .or(view)
        .unify()
        .or(upload)
        .unify()
        .or(object_info)
        .unify()
        .or(one_object_info)
        .unify()
        .or(system_stats)
        .unify()
        .or(embeddings)
        .unify()
        .or(websocket)
        .unify()
        .boxed()
}

/// `POST /prompt`: validates the workflow and queues it, or answers ComfyUI's error body.
async fn submit(state: &Arc<State>, body: &[u8]) -> Response {
    let request = match prompt::read_request(body) {
        Ok(request) => request,
        Err(problem) => return with_status(json(&problem), StatusCode::BAD_REQUEST).into_response(),
    };
    let workflow = serde_json::to_vec(&request.prompt).unwrap_or_default();
    let plan = match state.prepare("prompt", &workflow) {
        Ok(plan) => plan,
        Err(report) => {
            let problem = prompt::validation_failure(&report, &request.prompt);
            return with_status(json(&problem), StatusCode::BAD_REQUEST).into_response();
        }
    };
    let outputs = request
        .prompt
        .iter()
        .filter(|(_, node)| {
            node.get("class_type")
                .and_then(Value::as_str)
                .and_then(|class| state.engine.registry().get(class))
                .is_some_and(|node_type| node_type.descriptor().is_output)
        })
        .map(|(id, _)| id.clone())
        .collect();
    let name = plan.name().unwrap_or("prompt").to_string();
    // The submission is recorded under the job's id before the job can start, so its events
    // already carry the client's prompt id.
    let submission = super::Submission {
        plan,
        name,
        client_id: request.client_id.clone(),
    };
    let queued = state.jobs.submit(submission, |id| {
        state.submissions.insert(
            id,
            prompt::Submission {
                prompt_id: request.prompt_id.clone().unwrap_or_else(|| id.to_string()),
                prompt: serde_json::Value::Object(request.prompt.clone()),
                extra_data: request.extra_data.clone(),
                outputs,
            },
        );
    });
    let job = match queued.await {
        Ok(job) => job,
        Err(problem) => return error(StatusCode::SERVICE_UNAVAILABLE, problem),
    };
    let prompt_id = state.submissions.prompt_id(job.id);
    json(&json!({ "prompt_id": prompt_id, "number": job.id, "node_errors": {} })).into_response()
}

/// `POST /queue`: `{"clear": true}` cancels every queued job, `{"delete": [prompt ids]}` those.
async fn edit_queue(state: &Arc<State>, body: &[u8]) -> Response {
    let request: Value = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("the body is not JSON: {e}")),
    };
    let queued = |job: &&super::JobInfo| job.state == super::JobState::Queued;
    if request.get("clear").and_then(Value::as_bool) == Some(true) {
        for job in state.jobs.list().iter().filter(queued) {
            let _ = state.jobs.cancel(job.id).await;
        }
    }
    for prompt_id in request.get("delete").and_then(Value::as_array).into_iter().flatten() {
        let Some(job) = prompt_id.as_str().and_then(|id| state.submissions.job(id)) else {
            continue;
        };
        if state.jobs.get(job).as_ref().is_some_and(|job| queued(&job)) {
            let _ = state.jobs.cancel(job).await;
        }
    }
    warp::reply().into_response()
}

/// `POST /interrupt`: stops the running job (only the one named, when the body names a
/// `prompt_id`) after its current step.
async fn interrupt(state: &Arc<State>, body: &[u8]) -> Response {
    let only = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|request| request.get("prompt_id").and_then(Value::as_str).map(str::to_string))
        .and_then(|prompt_id| state.submissions.job(&prompt_id));
    for job in state.jobs.list() {
        if job.state == super::JobState::Running && only.is_none_or(|id| id == job.id) {
            let _ = state.jobs.cancel(job.id).await;
        }
    }
    warp::reply().into_response()
}

/// `GET /view?filename=&subfolder=&type=`: an image of the output (or input) folder.
fn view(state: &Arc<State>, query: &HashMap<String, String>) -> Response {
    let text = |key: &str| query.get(key).map_or("", String::as_str);
    let found = uploads::folder(text("type"), &state.input_dir, &state.output_dir).and_then(|folder| {
        let name = uploads::relative_name(text("subfolder"), text("filename"))?;
        let path = super::files::image_path(folder, &name)?;
        std::fs::read(&path).map_err(|e| FileError::Io(format!("cannot read \"{name}\": {e}")))
    });
    match found {
        Ok(bytes) => warp::http::Response::builder()
            .header("content-type", super::api::content_type(text("filename")))
            .body(bytes.into())
            .unwrap_or_else(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "cannot build the response")),
        Err(e) => file_error(e),
    }
}

/// `POST /upload/image` (multipart: `image`, and optionally `subfolder`, `type`, `overwrite`):
/// saves the image in the input folder (or the output folder for `type=output`).
async fn upload(state: &Arc<State>, form: warp::multipart::FormData) -> Response {
    let parts = match uploads::read_form(form).await {
        Ok(parts) => parts,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("cannot read the form: {e}")),
    };
    let field = |key: &str| {
        parts
            .iter()
            .find(|part| part.name == key)
            .map(|part| String::from_utf8_lossy(&part.bytes).into_owned())
    };
    let Some((filename, image)) = parts
        .iter()
        .find(|part| part.name == "image")
        .and_then(|part| Some((part.filename.as_deref()?, &part.bytes)))
    else {
        return error(StatusCode::BAD_REQUEST, "the form needs an \"image\" file");
    };
    let kind = field("type").unwrap_or_else(|| "input".into());
    let subfolder = field("subfolder").unwrap_or_default();
    let overwrite = matches!(field("overwrite").as_deref(), Some("true" | "1"));
    let saved = uploads::folder(&kind, &state.input_dir, &state.output_dir).and_then(|folder| {
        let name = uploads::relative_name(&subfolder, filename)?;
        let (path, used) = uploads::upload_target(folder, &name, overwrite);
        uploads::save(&path, image)?;
        Ok(used)
    });
    match saved {
        Ok(name) => json(&json!({ "name": name, "subfolder": subfolder, "type": kind })).into_response(),
        Err(e) => file_error(e),
    }
}

/// `GET /system_stats` in ComfyUI's shape, from the device reports of `/api/system` (none for
/// a shared queue, whose devices are the workers').
fn system_stats(report: &Value) -> Value {
    let devices: Vec<Value> = report["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(index, device)| {
            let memory = &device["memory"];
            json!({
                "name": device["name"],
                "type": if memory.is_null() { "cpu" } else { "cuda" },
                "index": index,
                "vram_total": memory["total"].as_u64().unwrap_or(0),
                "vram_free": memory["free"].as_u64().unwrap_or(0),
                "torch_vram_total": memory["reserved"].as_u64().unwrap_or(0),
                "torch_vram_free": memory["reserved"].as_u64().unwrap_or(0).saturating_sub(memory["allocated"].as_u64().unwrap_or(0)),
            })
        })
        .collect();
    json!({
        "system": {
            "os": std::env::consts::OS,
            "ram_total": swapgraph_node_api::host_total_bytes(),
            "ram_free": swapgraph_node_api::host_available_bytes(),
            "comfyui_version": concat!("swapgraph ", env!("CARGO_PKG_VERSION")),
            "python_version": "",
            "pytorch_version": "",
            "embedded_python": false,
            "argv": std::env::args().collect::<Vec<_>>(),
        },
        "devices": devices,
    })
}

/// Streams ComfyUI's messages to one websocket client, starting with the queue's status, until
/// it disconnects.
async fn stream(socket: WebSocket, client: String, state: Arc<State>) {
    let (mut outgoing, mut incoming) = socket.split();
    let mut events = state.events.subscribe();
    let jobs = state.jobs.list();
    let mut translator = messages::Translator::new(client.clone(), &jobs);
    let text = |message: &Value| Message::text(message.to_string());
    if outgoing
        .send(text(&messages::status(&jobs, Some(&client))))
        .await
        .is_err()
    {
        return;
    }
    loop {
        tokio::select! {
            received = events.recv() => match received {
                Ok(event) => {
                    let frame = state
                        .comfy_previews
                        .then(|| translator.preview_frame(&event, |job| state.jobs.get(job)))
                        .flatten();
                    if let Some(frame) = frame {
                        if outgoing.send(Message::binary(frame)).await.is_err() {
                            return;
                        }
                    }
                    for message in translator.translate(&event, &state.submissions, |job| state.jobs.get(job)) {
                        if outgoing.send(text(&message)).await.is_err() {
                            return;
                        }
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
            message = incoming.next() => match message {
                Some(Ok(message)) if !message.is_close() => {}
                _ => return,
            },
        }
    }
}
