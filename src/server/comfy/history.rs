//! `/queue` and `/history` in ComfyUI's shapes, from the job queue's records.

use super::prompt::Submissions;
use crate::server::{JobInfo, JobState};
use serde_json::{json, Map, Value};

/// An image under the output folder as ComfyUI names files: file name, subfolder, folder type.
pub fn image_reference(name: &str) -> Value {
    let (subfolder, filename) = name.rsplit_once('/').unwrap_or(("", name));
    json!({ "filename": filename, "subfolder": subfolder, "type": "output" })
}

/// A queue entry: `[number, prompt_id, prompt, extra_data, outputs_to_execute]`.
fn queue_item(job: &JobInfo, submissions: &Submissions) -> Value {
    match submissions.get(job.id) {
        Some(submission) => json!([
            job.id,
            submission.prompt_id,
            submission.prompt,
            submission.extra_data,
            submission.outputs
        ]),
        None => json!([job.id, job.id.to_string(), {}, {}, []]),
    }
}

/// `GET /queue`: the running job and those waiting, in order.
pub fn queue(jobs: &[JobInfo], submissions: &Submissions) -> Value {
    let in_state = |state: JobState| -> Vec<Value> {
        jobs.iter()
            .filter(|job| job.state == state)
            .map(|job| queue_item(job, submissions))
            .collect()
    };
    json!({ "queue_running": in_state(JobState::Running), "queue_pending": in_state(JobState::Queued) })
}

/// One ended job's history entry: its prompt, its images by node, and how it ended.
fn entry(job: &JobInfo, submissions: &Submissions) -> Value {
    let mut outputs = Map::new();
    for image in &job.images {
        let node = outputs
            .entry(image.node.clone())
            .or_insert_with(|| json!({ "images": [] }));
        if let Some(images) = node["images"].as_array_mut() {
            images.push(image_reference(&image.name));
        }
    }
    let meta: Map<String, Value> = outputs
        .keys()
        .map(|node| (node.clone(), json!({ "node_id": node, "display_node": node })))
        .collect();
    let status = if job.state == JobState::Succeeded {
        "success"
    } else {
        "error"
    };
    json!({
        "prompt": queue_item(job, submissions),
        "outputs": outputs,
        "status": { "status_str": status, "completed": job.state == JobState::Succeeded, "messages": [] },
        "meta": meta,
    })
}

/// `GET /history`: every ended job by prompt id, the newest `max_items` when given.
pub fn history(jobs: &[JobInfo], submissions: &Submissions, max_items: Option<usize>) -> Value {
    let ended: Vec<&JobInfo> = jobs.iter().filter(|job| job.state.is_final()).collect();
    let skip = max_items.map_or(0, |most| ended.len().saturating_sub(most));
    let entries: Map<String, Value> = ended[skip..]
        .iter()
        .map(|job| (submissions.prompt_id(job.id), entry(job, submissions)))
        .collect();
    Value::Object(entries)
}

/// `GET /history/{prompt_id}`: that job's entry once it ended, else `{}`.
pub fn history_of(job: Option<&JobInfo>, submissions: &Submissions) -> Value {
    match job {
        Some(job) if job.state.is_final() => json!({ submissions.prompt_id(job.id): entry(job, submissions) }),
        _ => json!({}),
    }
}
