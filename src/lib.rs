//! swapgraph: a node-graph workflow engine for diffusion models.
//!
//! The binary around the engine ([`swapgraph_engine`], re-exported here): the command line
//! ([`cli`]), the server with the browser editor ([`server`]), the list of node packs it ships
//! ([`packs`]), the check before a run on a GPU ([`preflight`]), and the shared queue on NATS
//! that servers and workers on many machines use ([`shared`]). The engine never names a node type; the packs register theirs.

// Validation errors and HTTP responses travel in `Err` once per failure, never on a hot path, so
// their size does not matter.
#![allow(clippy::result_large_err)]

pub mod cli;
pub mod job_run;
pub mod packs;
pub mod preflight;
pub mod server;
pub mod shared;

pub use swapgraph_engine::{exec, plan, prepare, validate, workflow};
