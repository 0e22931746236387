//! Arbitrary bytes as a workflow file: parse, validate against every shipped node type, plan,
//! and render the report. Every input must end in a plan or a report; a panic, a hang past
//! libFuzzer's `-timeout` or memory past its `-rss_limit_mb` is a finding.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use swapgraph_node_api::Registry;

static REGISTRY: OnceLock<Registry> = OnceLock::new();

fuzz_target!(|bytes: &[u8]| {
    let registry = REGISTRY.get_or_init(|| swapgraph::packs::registry().expect("the shipped packs register"));
    match swapgraph::prepare("fuzz.yaml", bytes, &[], registry) {
        Ok(plan) => drop(plan.summary()),
        Err(report) => drop(report.to_string()),
    }
});
