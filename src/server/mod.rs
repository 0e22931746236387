//! `swapgraph serve`: the editor and the API from one binary. The editor's built assets are
//! embedded; the API runs workflows through the server's queue (its own devices, one executor
//! each, or a shared queue on NATS that workers take jobs from), and streams what happens on a
//! websocket.

mod api;
mod assets;
mod comfy;
mod events;
mod files;
mod import;
mod jobs;
mod local_queue;
mod placement;

pub use events::{Broadcast, ServerEvent};
pub use jobs::{seconds_now, CancelError, JobImage, JobInfo, JobProgress, JobState, Jobs, Submission};
pub use local_queue::{image_name, runner_names, ExecutorInfo, ExecutorOptions, LocalQueue};

use crate::exec::Engine;
use crate::plan::Plan;
use crate::shared::SharedQueue;
use crate::validate::ValidationReport;
use std::path::PathBuf;
use std::sync::Arc;
use swapgraph_node_api::FileRoots;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

/// What runs jobs beside the routes: the devices' executors, or the shared queue's relay.
pub type Runner = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'static>>;

/// The largest request body accepted, unless configured otherwise: far above any workflow.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 4 << 20;

/// Where the server finds and puts things.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The devices jobs run on, one executor each (unused with a shared queue).
    pub devices: Vec<swapgraph_node_api::DeviceSpec>,
    /// The shared queue on NATS jobs go to instead, when the server has one.
    pub shared: Option<Arc<SharedQueue>>,
    /// How much of each device's memory a job may use.
    pub vram_budget: swapgraph_node_api::VramBudget,
    /// The folders jobs read models and inputs from and write outputs to; `/api/images` serves
    /// only files inside the output folder.
    pub files: FileRoots,
    /// The folder `/api/workflows` reads and writes.
    pub workflows_dir: PathBuf,
    /// Requests with a larger body are refused (413).
    pub max_body_bytes: u64,
    /// Whether ComfyUI's websocket clients get previews of each step as binary frames (ComfyUI's
    /// `--preview-method`; off by default, as there, since some clients take binary frames for
    /// output images). The editor's event stream always carries them.
    pub previews: bool,
}

/// What every handler shares.
pub struct State {
    engine: Arc<Engine>,
    jobs: Jobs,
    events: Broadcast,
    output_dir: PathBuf,
    /// Where `/upload/image` puts images and `/view?type=input` reads them.
    input_dir: PathBuf,
    workflows_dir: PathBuf,
    max_body_bytes: u64,
    /// What ComfyUI's clients sent with the jobs they queued.
    submissions: comfy::Submissions,
    /// Whether ComfyUI's websocket clients get previews (see [`ServerConfig::previews`]).
    comfy_previews: bool,
}

impl State {
    fn prepare(&self, source: &str, bytes: &[u8]) -> Result<Plan, ValidationReport> {
        crate::prepare(source, bytes, &[], self.engine.registry())
    }
}

/// The whole server as one filter, and the future that must be spawned beside it to run jobs
/// (the devices' executors, or the shared queue's relay of job records and events). Tests
/// drive the filter with warp's test helpers.
pub fn app(engine: Engine, config: ServerConfig) -> (warp::filters::BoxedFilter<(Response,)>, Runner) {
    let engine = Arc::new(engine);
    let events = Broadcast::default();
    let (jobs, runner): (Jobs, Runner) = match &config.shared {
        Some(shared) => {
            let relay = Arc::clone(shared).relay(events.clone(), config.files.outputs.clone());
            (Jobs::Shared(Arc::clone(shared), config.files.clone()), Box::pin(relay))
        }
        None => {
            let options = ExecutorOptions {
                devices: config.devices.clone(),
                vram_budget: config.vram_budget,
                files: config.files.clone(),
            };
            let (queue, executors) = LocalQueue::new(engine.registry(), options, events.clone());
            (Jobs::Local(queue), Box::pin(executors))
        }
    };
    let state = Arc::new(State {
        engine,
        jobs,
        events,
        output_dir: config.files.outputs,
        input_dir: config.files.inputs,
        workflows_dir: config.workflows_dir,
        max_body_bytes: config.max_body_bytes,
        submissions: comfy::Submissions::default(),
        comfy_previews: config.previews,
    });
    let socket_state = Arc::clone(&state);
    let websocket = warp::path!("api" / "events")
        .and(warp::ws())
        .map(move |ws: warp::ws::Ws| {
            let state = Arc::clone(&socket_state);
            ws.on_upgrade(move |socket| {
                let snapshot = ServerEvent::Queue {
                    jobs: state.jobs.list(),
                };
                events::stream(socket, snapshot, state.events.subscribe())
            })
            .into_response()
        });
    let routes = websocket
        .or(api::routes(&state))
        .unify()
        .or(comfy::routes(&state))
        .unify()
        .or(assets::routes())
        .unify()
        .recover(|rejection| async move { Ok::<_, std::convert::Infallible>(rejected(&rejection)) })
        .unify()
        .boxed();
    (routes, runner)
}

/// Serves `app` on `listener` until `shutdown` completes.
pub async fn serve(
    engine: Engine,
    config: ServerConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let (routes, runner) = app(engine, config);
    let executor = tokio::spawn(runner);
    warp::serve(routes).incoming(listener).graceful(shutdown).run().await;
    executor.abort();
}

/// Requests no route took, as JSON errors.
fn rejected(rejection: &warp::Rejection) -> Response {
    if rejection.is_not_found() {
        api::error(StatusCode::NOT_FOUND, "no such route")
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        api::error(StatusCode::PAYLOAD_TOO_LARGE, "the request body is too large")
    } else if rejection.find::<warp::reject::LengthRequired>().is_some() {
        api::error(StatusCode::LENGTH_REQUIRED, "the request needs a content-length")
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        api::error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this route")
    } else {
        api::error(StatusCode::BAD_REQUEST, format!("bad request: {rejection:?}"))
    }
}
