//! `/ws?clientId=`: the server's events as ComfyUI's websocket messages. Every client hears the
//! queue's `status`; a job's own messages (`execution_start`, `execution_cached`, `executing`,
//! `progress`, `executed`, `execution_success`, `execution_error`, `execution_interrupted`) go
//! to the client that queued it, or to every client when it named none, and so do the sampler's
//! previews, as ComfyUI's binary frames (event 1, a preview image; image type 2, PNG).

use super::history::image_reference;
use super::prompt::Submissions;
use crate::exec::Event;
use crate::server::{JobInfo, JobState, ServerEvent};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

/// One client's view of the server: what it has been told of each job.
pub struct Translator {
    client: String,
    /// Jobs whose start it was told of (or that were running when it connected).
    started: HashSet<u64>,
    /// Jobs whose end it was told of (or that had ended when it connected).
    ended: HashSet<u64>,
    /// The node that failed in each job, and its type.
    failed: HashMap<u64, (String, String)>,
}

/// `{"type": kind, "data": data}`.
fn message(kind: &str, data: Value) -> Value {
    json!({ "type": kind, "data": data })
}

/// Milliseconds since the Unix epoch, as ComfyUI stamps its messages.
fn timestamp() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// ComfyUI's `status` message: how many jobs are queued or running.
pub fn status(jobs: &[JobInfo], client: Option<&str>) -> Value {
    let remaining = jobs.iter().filter(|job| !job.state.is_final()).count();
    let mut data = json!({ "status": { "exec_info": { "queue_remaining": remaining } } });
    if let Some(client) = client {
        data["sid"] = client.into();
    }
    message("status", data)
}

impl Translator {
    /// A client `client` that connected when the queue held `jobs`.
    pub fn new(client: String, jobs: &[JobInfo]) -> Self {
        let seen = |state: fn(JobState) -> bool| jobs.iter().filter(|job| state(job.state)).map(|job| job.id).collect();
        Self {
            client,
            started: seen(|state| state != JobState::Queued),
            ended: seen(JobState::is_final),
            failed: HashMap::new(),
        }
    }

    /// Whether this client hears `job`'s own messages.
    fn hears(&self, job: &JobInfo) -> bool {
        job.client_id.as_deref().is_none_or(|client| client == self.client)
    }

    /// ComfyUI's messages for `event`, in order.
    pub fn translate(
        &mut self,
        event: &ServerEvent,
        submissions: &Submissions,
        job_of: impl Fn(u64) -> Option<JobInfo>,
    ) -> Vec<Value> {
        match event {
            ServerEvent::Queue { jobs } => {
                let mut messages = Vec::new();
                for job in jobs {
                    if self.hears(job) {
                        messages.extend(self.changes(job, submissions));
                    }
                }
                messages.push(status(jobs, None));
                messages
            }
            ServerEvent::Run { job, event, image, .. } => match job_of(*job) {
                Some(info) if self.hears(&info) => {
                    let prompt_id = submissions.prompt_id(*job);
                    self.run_event(*job, &prompt_id, event, image.as_deref())
                        .into_iter()
                        .collect()
                }
                _ => Vec::new(),
            },
        }
    }

    /// ComfyUI's binary preview frame for `event` when it is a preview of a job this client
    /// hears: the event type (1) and the image type (2, PNG), each a big-endian u32, then the
    /// PNG.
    pub fn preview_frame(&self, event: &ServerEvent, job_of: impl Fn(u64) -> Option<JobInfo>) -> Option<Vec<u8>> {
        let ServerEvent::Run {
            job,
            event: Event::Preview { width, height, rgb, .. },
            ..
        } = event
        else {
            return None;
        };
        job_of(*job).filter(|info| self.hears(info))?;
        let picture = image::RgbImage::from_raw(*width, *height, rgb.to_vec())?;
        let mut png = std::io::Cursor::new(Vec::new());
        picture.write_to(&mut png, image::ImageFormat::Png).ok()?;
        Some([&1u32.to_be_bytes()[..], &2u32.to_be_bytes(), png.get_ref()].concat())
    }

    /// The start or end of `job`, when this client has not been told of it yet.
    fn changes(&mut self, job: &JobInfo, submissions: &Submissions) -> Vec<Value> {
        let prompt_id = submissions.prompt_id(job.id);
        let mut messages = Vec::new();
        if job.state != JobState::Queued && self.started.insert(job.id) {
            messages.push(message(
                "execution_start",
                json!({ "prompt_id": prompt_id, "timestamp": timestamp() }),
            ));
        }
        if !job.state.is_final() || !self.ended.insert(job.id) {
            return messages;
        }
        let (node_id, node_type) = self
            .failed
            .remove(&job.id)
            .map_or((Value::Null, Value::Null), |(node, kind)| (node.into(), kind.into()));
        messages.push(match job.state {
            JobState::Succeeded => message("execution_success", json!({ "prompt_id": prompt_id, "timestamp": timestamp() })),
            JobState::Cancelled => message(
                "execution_interrupted",
                json!({ "prompt_id": prompt_id, "node_id": node_id, "node_type": node_type, "executed": [], "timestamp": timestamp() }),
            ),
            _ => message(
                "execution_error",
                json!({
                    "prompt_id": prompt_id,
                    "node_id": node_id,
                    "node_type": node_type,
                    "executed": [],
                    "exception_message": job.error.clone().unwrap_or_default(),
                    "exception_type": "swapgraph.NodeError",
                    "traceback": [],
                    "current_inputs": {},
                    "current_outputs": {},
                    "timestamp": timestamp(),
                }),
            ),
        });
        messages.push(message(
            "executing",
            json!({ "node": null, "display_node": null, "prompt_id": prompt_id }),
        ));
        messages
    }

    /// The message for one run event of `job`, if ComfyUI has one.
    fn run_event(&mut self, job: u64, prompt_id: &str, event: &Event, image: Option<&str>) -> Option<Value> {
        Some(match event {
            Event::NodeStarted { node, .. } => message(
                "executing",
                json!({ "node": node.to_string(), "display_node": node.to_string(), "prompt_id": prompt_id }),
            ),
            Event::NodeCached { node, .. } => message(
                "execution_cached",
                json!({ "nodes": [node.to_string()], "prompt_id": prompt_id, "timestamp": timestamp() }),
            ),
            Event::Progress { node, step, total } => message(
                "progress",
                json!({ "value": step, "max": total, "prompt_id": prompt_id, "node": node.to_string() }),
            ),
            Event::OutputWritten { node, .. } => message(
                "executed",
                json!({
                    "node": node.to_string(),
                    "display_node": node.to_string(),
                    "output": { "images": [image_reference(image?)] },
                    "prompt_id": prompt_id,
                }),
            ),
            Event::NodeFailed { node, node_type, .. } => {
                self.failed.insert(job, (node.to_string(), node_type.to_string()));
                return None;
            }
            _ => return None,
        })
    }
}
