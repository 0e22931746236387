//! What the shared queue keeps about a job: the order in the work queue (what to run) and the
//! record in the key-value store (where it is, what it wrote, each attempt).

use crate::server::{JobInfo, JobState};
use serde::{Deserialize, Serialize};

/// A job as workers take it from the stream: everything needed to run it besides the models.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobOrder {
    /// The job's id, its record's key and its outputs' folder.
    pub id: u64,
    /// The workflow as YAML, checked by the server that took it.
    pub workflow: String,
    /// The input files it names, by content.
    pub inputs: Vec<InputFile>,
    /// The models it names (file or built-in names), for placing it on a worker holding them.
    pub models: Vec<String>,
    /// How many times it may be started before it fails.
    pub max_attempts: u32,
}

/// An input file a job reads, stored in the inputs object store under its SHA-256.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputFile {
    /// The param naming it.
    pub param: String,
    /// Its name in the workflow, relative to the input folder.
    pub name: String,
    /// The SHA-256 of its bytes, hex: its name in the object store.
    pub sha256: String,
}

/// A job's record: the job as the API shows it, and each time a worker started it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobRecord {
    /// The job.
    pub info: JobInfo,
    /// Each start, oldest first.
    #[serde(default)]
    pub attempts: Vec<Attempt>,
    /// Set when it was cancelled while running: a worker that starts it again stops at once.
    #[serde(default)]
    pub cancel_requested: bool,
}

/// One start of a job.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Attempt {
    /// The worker and device that started it.
    pub runner: String,
    /// Why it failed; `None` while it runs, or when its worker stopped without saying (killed,
    /// out of memory, machine gone).
    pub error: Option<String>,
}

impl JobRecord {
    /// Why the job failed after every attempt, one line each.
    pub fn reasons(&self) -> String {
        let lines: Vec<String> = self
            .attempts
            .iter()
            .enumerate()
            .map(|(index, attempt)| {
                let why = attempt
                    .error
                    .as_deref()
                    .unwrap_or("the worker stopped without finishing (killed, or out of memory, or gone)");
                format!("attempt {} on {}: {why}", index + 1, attempt.runner)
            })
            .collect();
        format!("the job failed {} time(s):\n{}", lines.len(), lines.join("\n"))
    }

    /// Ends the job as failed with every attempt's reason.
    pub fn fail(&mut self) {
        self.info.state = JobState::Failed;
        self.info.error = Some(self.reasons());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_job_names_each_attempt_and_why() {
        let mut record = JobRecord {
            info: JobInfo::queued(7, "job".into(), None),
            attempts: vec![
                Attempt {
                    runner: "a cpu".into(),
                    error: Some("node \"x\" failed".into()),
                },
                Attempt {
                    runner: "b cpu".into(),
                    error: None,
                },
            ],
            cancel_requested: false,
        };
        record.fail();
        assert_eq!(record.info.state, JobState::Failed);
        let error = record.info.error.unwrap();
        assert!(error.contains("failed 2 time(s)"), "{error}");
        assert!(error.contains("attempt 1 on a cpu: node \"x\" failed"), "{error}");
        assert!(error.contains("attempt 2 on b cpu: the worker stopped"), "{error}");
    }
}
