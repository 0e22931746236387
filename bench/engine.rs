//! Engine benchmarks: the cost of getting a large workflow ready to run (in the plain form, and
//! through the general YAML parser), and the engine's own overhead on a re-run where everything but the output node comes from the cache.
//!
//! Run with `cargo bench --bench engine`; figures go to BENCHMARKS.md.

use std::sync::Arc;
use swapgraph::exec::{Engine, EventSink, RunOptions};
use swapgraph_node_api::{Args, NodeDescriptor, NodeError, NodeType, Registry, RunContext, SocketType, Value};

fn main() {
    divan::main();
}

/// A workflow of `count` nodes: pairs of strings joined in a long chain, saved at the end.
fn generated_workflow(count: usize) -> String {
    let mut yaml = String::from(
        "version: 1\nname: generated\nnodes:\n  n0:\n    type: PrimitiveString\n    params: { value: start }\n",
    );
    for i in 1..count - 1 {
        yaml += &format!(
            "  n{i}:\n    type: StringConcatenate\n    inputs: {{ string_a: n{}.string }}\n    params: {{ string_b: \"{i}\", delimiter: \" \" }}\n    ui: {{ x: {i}, y: 0 }}\n",
            i - 1
        );
    }
    yaml += &format!(
        "  out:\n    type: Discard\n    inputs: {{ text: n{}.string }}\n",
        count - 2
    );
    yaml
}

/// An output node that does nothing, so the re-run measures the engine and not a disk.
struct Discard(NodeDescriptor);

impl NodeType for Discard {
    fn descriptor(&self) -> &NodeDescriptor {
        &self.0
    }

    fn run(&self, _: &Args, _: &RunContext) -> Result<Vec<Value>, NodeError> {
        Ok(Vec::new())
    }
}

fn registry() -> Registry {
    let mut registry = Registry::new();
    swapgraph_utils::register(&mut registry).unwrap();
    let discard = NodeDescriptor::new("Discard", "bench", "drops its input")
        .input("text", SocketType::STRING, "")
        .output_node();
    registry.register(Discard(discard)).unwrap();
    registry
}

#[divan::bench(args = [10_000])]
fn parse_validate_plan(bencher: divan::Bencher, count: usize) {
    let registry = registry();
    let yaml = generated_workflow(count);
    bencher.bench(|| {
        swapgraph::prepare("generated.yaml", yaml.as_bytes(), &[], &registry)
            .map(|plan| plan.steps.len())
            .unwrap()
    });
}

/// The same workflow with a block-scalar description, which the plain-form reader leaves to the
/// general YAML parser: what a file outside the plain form costs.
#[divan::bench(args = [10_000])]
fn parse_validate_plan_general_parser(bencher: divan::Bencher, count: usize) {
    let registry = registry();
    let yaml =
        generated_workflow(count).replacen("name: generated\n", "name: generated\ndescription: |\n  A chain.\n", 1);
    bencher.bench(|| {
        swapgraph::prepare("generated.yaml", yaml.as_bytes(), &[], &registry)
            .map(|plan| plan.steps.len())
            .unwrap()
    });
}

#[divan::bench(args = [20])]
fn cached_rerun(bencher: divan::Bencher, count: usize) {
    let engine = Arc::new(Engine::new(registry()));
    let plan = swapgraph::prepare(
        "generated.yaml",
        generated_workflow(count).as_bytes(),
        &[],
        engine.registry(),
    )
    .unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let options = RunOptions::default();
    runtime
        .block_on(engine.run(&plan, &options, &EventSink::discard()))
        .unwrap();
    bencher.bench(|| {
        let summary = runtime
            .block_on(engine.run(&plan, &options, &EventSink::discard()))
            .unwrap();
        assert_eq!(summary.cached, count - 1);
    });
}

/// The engine's own share of `parse_validate_plan`: validation and planning of a parsed workflow.
#[divan::bench(args = [10_000])]
fn validate_plan(bencher: divan::Bencher, count: usize) {
    let registry = registry();
    let workflow = swapgraph::workflow::parse(generated_workflow(count).as_bytes()).unwrap();
    bencher.bench(|| {
        let graph = swapgraph::validate::validate(&workflow, &registry).unwrap_or_else(|_| panic!("valid"));
        swapgraph::plan::Plan::new(graph, workflow.clone()).steps.len()
    });
}
