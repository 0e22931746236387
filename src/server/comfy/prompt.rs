//! `POST /prompt`: an API-format workflow queued as a job, and ComfyUI's error shape for one
//! that cannot run (`node_errors` by node id, with the class and each problem).

use crate::validate::ValidationReport;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

/// What a ComfyUI client sent with a job, kept for `/queue` and `/history`.
#[derive(Clone, Debug)]
pub struct Submission {
    /// The id the client knows the job by.
    pub prompt_id: String,
    /// The API-format workflow.
    pub prompt: Value,
    /// The client's `extra_data`, returned as given.
    pub extra_data: Value,
    /// The ids of the workflow's output nodes.
    pub outputs: Vec<String>,
}

/// The submissions of jobs queued through `/prompt`, by job id.
#[derive(Default)]
pub struct Submissions(Mutex<HashMap<u64, Submission>>);

impl Submissions {
    /// Records `submission` for job `job`.
    pub fn insert(&self, job: u64, submission: Submission) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(job, submission);
    }

    /// Job `job`'s submission, if it came through `/prompt`.
    pub fn get(&self, job: u64) -> Option<Submission> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).get(&job).cloned()
    }

    /// The id a ComfyUI client knows job `job` by: its own, or the job's number.
    pub fn prompt_id(&self, job: u64) -> String {
        self.get(job)
            .map_or_else(|| job.to_string(), |submission| submission.prompt_id)
    }

    /// The job a ComfyUI client's prompt id names.
    pub fn job(&self, prompt_id: &str) -> Option<u64> {
        let submissions = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        submissions
            .iter()
            .find(|(_, submission)| submission.prompt_id == prompt_id)
            .map(|(job, _)| *job)
            .or_else(|| prompt_id.parse().ok().filter(|job| !submissions.contains_key(job)))
    }
}

/// A `/prompt` body taken apart: the workflow, the client, its own prompt id and extra data.
#[derive(Debug)]
pub struct PromptRequest {
    /// The API-format workflow.
    pub prompt: Map<String, Value>,
    /// Whose events these are.
    pub client_id: Option<String>,
    /// The prompt id the client chose, if it did.
    pub prompt_id: Option<String>,
    /// Returned as given in `/queue` and `/history`.
    pub extra_data: Value,
}

/// Reads a `/prompt` body.
///
/// # Errors
/// ComfyUI's `invalid_prompt` error body naming what is wrong.
pub fn read_request(body: &[u8]) -> Result<PromptRequest, Value> {
    let invalid = |message: &str, details: String| {
        json!({
            "error": { "type": "invalid_prompt", "message": message, "details": details, "extra_info": {} },
            "node_errors": {},
        })
    };
    let request: Value =
        serde_json::from_slice(body).map_err(|e| invalid("The request body is not JSON", e.to_string()))?;
    let text = |key: &str| request.get(key).and_then(Value::as_str).map(str::to_string);
    let prompt = match request.get("prompt") {
        Some(Value::Object(prompt)) => prompt.clone(),
        Some(_) => return Err(invalid("\"prompt\" must be an object of nodes", String::new())),
        None => {
            return Err(invalid(
                "No prompt provided",
                "the body needs a \"prompt\" object".into(),
            ))
        }
    };
    Ok(PromptRequest {
        prompt,
        client_id: text("client_id"),
        prompt_id: text("prompt_id"),
        extra_data: request.get("extra_data").cloned().unwrap_or_else(|| json!({})),
    })
}

/// ComfyUI's body for a workflow that failed validation: every problem that belongs to a node
/// under its id (with the node's class from `prompt`), the rest in the message's details.
pub fn validation_failure(report: &ValidationReport, prompt: &Map<String, Value>) -> Value {
    let mut node_errors = Map::new();
    let mut general = Vec::new();
    for error in &report.errors {
        let location = error.location();
        let Some(node) = location.node else {
            general.push(error.to_string());
            continue;
        };
        let class_type = prompt
            .get(&node)
            .and_then(|n| n.get("class_type"))
            .cloned()
            .unwrap_or(Value::Null);
        let entry = node_errors
            .entry(node)
            .or_insert_with(|| json!({ "errors": [], "dependent_outputs": [], "class_type": class_type }));
        if let Some(errors) = entry["errors"].as_array_mut() {
            errors.push(json!({
                "type": error.code(),
                "message": error.to_string(),
                "details": location.field.unwrap_or_default(),
                "extra_info": {},
            }));
        }
    }
    json!({
        "error": {
            "type": "prompt_outputs_failed_validation",
            "message": "Prompt outputs failed validation",
            "details": general.join("\n"),
            "extra_info": {},
        },
        "node_errors": node_errors,
    })
}
