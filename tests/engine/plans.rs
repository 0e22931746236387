//! The execution plan of every example workflow, and planning rules: bypass, unused nodes,
//! file order.

use super::fixtures::{plan, registry, Probe};
use std::sync::Arc;

#[test]
fn every_example_workflow_plans() {
    let registry = registry(&Arc::new(Probe::default()));
    insta::glob!("../../workflows", "*.yaml", |path| {
        let bytes = std::fs::read(path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy();
        let plan = swapgraph::prepare(&name, &bytes, &[], &registry).unwrap_or_else(|report| panic!("{report}"));
        insta::assert_yaml_snapshot!(plan.summary());
    });
}

#[test]
fn bypassed_nodes_pass_on_their_first_input_of_the_output_type() {
    let registry = registry(&Arc::new(Probe::default()));
    let plan = plan(
        r#"
version: 1
nodes:
  start: { type: TestCount, params: { start: 2 } }
  slow: { type: TestSleep, inputs: { value: start.int }, enabled: false }
  slower: { type: TestSleep, inputs: { value: slow.int }, enabled: false }
  sink: { type: TestSink, inputs: { value: slower.int } }
"#,
        &registry,
    );
    let summary = plan.summary();
    insta::assert_yaml_snapshot!(summary, @r#"
    steps:
      - id: start
        type: TestCount
      - id: sink
        type: TestSink
        inputs:
          value: start.int
    bypassed:
      - slow
      - slower
    "#);
}

#[test]
fn nodes_that_feed_no_output_do_not_run_and_order_follows_the_file() {
    let registry = registry(&Arc::new(Probe::default()));
    let plan = plan(
        r#"
version: 1
nodes:
  z: { type: TestCount, params: { start: 1 } }
  dangling: { type: TestSleep, inputs: { value: z.int } }
  a: { type: TestCount, params: { start: 2 } }
  sink_a: { type: TestSink, inputs: { value: a.int } }
  sink_z: { type: TestSink, inputs: { value: z.int } }
"#,
        &registry,
    );
    let order: Vec<String> = plan.summary().steps.into_iter().map(|s| s.id).collect();
    assert_eq!(order, ["z", "a", "sink_a", "sink_z"]);
    assert_eq!(
        plan.unused.iter().map(|id| id.as_str()).collect::<Vec<_>>(),
        ["dangling"]
    );
}
