//! Rehearsals: the check before a run, in which nodes with heavy device work stand in for it and
//! say what it needs, while light work is done once and reused by the run.

use super::fixtures::{plan, registry, run, Probe, SINK};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use swapgraph::exec::{Engine, RunOptions, RunSummary};
use swapgraph_node_api::WorkflowNeed;

const MIB: u64 = 1 << 20;

fn heavy_chain(start: i64, after_first: &str) -> String {
    format!(
        r#"
version: 1
nodes:
  start: {{ type: TestCount, params: {{ start: {start} }} }}
  first: {{ type: TestHeavy, inputs: {{ value: start.int }} }}
  between: {{ type: {after_first}, inputs: {{ value: first.int }} }}
  second: {{ type: TestHeavier, inputs: {{ value: between.int }} }}
  sink: {{ type: TestSink, inputs: {{ value: second.int }} }}
"#
    )
}

fn stages(need: &WorkflowNeed) -> Vec<(&str, u64, u64)> {
    need.stages
        .iter()
        .map(|stage| {
            (
                stage.node.as_str(),
                stage.need.least / MIB,
                stage.need.unconstrained / MIB,
            )
        })
        .collect()
}

#[test]
fn heavy_nodes_stand_in_light_ones_run_once_and_nothing_is_saved() {
    let probe = Arc::new(Probe::default());
    let engine = Engine::new(registry(&probe));
    let plan = plan(&heavy_chain(4101, "TestSleep"), engine.registry());
    let options = RunOptions::default();

    let need = engine.rehearse(&plan, &options);
    assert_eq!(need.stopped, None);
    assert_eq!(stages(&need), [("first", 300, 600), ("second", 700, 1400)]);
    assert_eq!(need.largest().map(|stage| stage.node.as_str()), Some("second"));
    let spent: Vec<&str> = need.spent.iter().map(|node| node.node.as_str()).collect();
    assert_eq!(
        spent,
        ["start", "first", "between", "second"],
        "the output node is not timed"
    );
    assert!(
        need.spent[2].millis >= 50,
        "the sleeping node's time: {:?}",
        need.spent[2]
    );
    assert_eq!(
        probe.runs.load(Ordering::SeqCst),
        2,
        "start and the node between the stand-ins ran; the heavy nodes and the output node did not"
    );

    let (result, _) = run(&engine, &plan, &options);
    assert_eq!(
        result.unwrap(),
        RunSummary { executed: 4, cached: 1 },
        "the run reuses start, and recomputes what followed a stand-in"
    );
    assert!(
        SINK.lock().unwrap().contains(&410_100),
        "the run's result is computed from real values"
    );
}

#[test]
fn a_node_that_cannot_be_rehearsed_ends_the_rehearsal_with_the_stages_before_it() {
    let engine = Engine::new(registry(&Arc::new(Probe::default())));
    let plan = plan(&heavy_chain(4102, "TestFail"), engine.registry());
    let need = engine.rehearse(&plan, &RunOptions::default());
    assert_eq!(stages(&need), [("first", 300, 600)]);
    let stopped = need.stopped.expect("the failing node stops it");
    assert!(
        stopped.contains("\"between\" (TestFail)") && stopped.contains("failed on purpose"),
        "{stopped}"
    );
}
