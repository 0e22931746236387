//! Node types made for tests: counting, sleeping, looping, failing and misbehaving nodes, added
//! to the real utility pack.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use swapgraph::exec::{Engine, Event, EventSink, RunError, RunOptions, RunSummary};
use swapgraph_node_api::{
    Args, DeviceNeed, NodeDescriptor, NodeError, NodeType, ParamKind, ParamSpec, Registry, Rehearsal, RunContext,
    SocketSpec, SocketType, Value,
};

/// A test pack's own socket type, which takes whole and real numbers as they are.
pub const NUMBER: SocketType = SocketType::new("NUMBER", "number");

/// Counts how often test nodes ran and how many ran at once.
#[derive(Default)]
pub struct Probe {
    pub runs: AtomicUsize,
    pub active: AtomicUsize,
    pub max_active: AtomicUsize,
}

type RunFn = dyn Fn(&Args, &RunContext, &Probe) -> Result<Vec<Value>, NodeError> + Send + Sync;

/// A node type defined by a descriptor and a closure; with `stand_in`, it stands in for its
/// work in a rehearsal: zero for its output, and `stand_in` MiB needed of the device (half
/// that at the least).
pub struct TestNode {
    descriptor: NodeDescriptor,
    probe: Arc<Probe>,
    run: Box<RunFn>,
    stand_in: Option<u64>,
}

impl NodeType for TestNode {
    fn descriptor(&self) -> &NodeDescriptor {
        &self.descriptor
    }

    fn run(&self, args: &Args, ctx: &RunContext) -> Result<Vec<Value>, NodeError> {
        self.probe.runs.fetch_add(1, Ordering::SeqCst);
        let now = self.probe.active.fetch_add(1, Ordering::SeqCst) + 1;
        self.probe.max_active.fetch_max(now, Ordering::SeqCst);
        let result = (self.run)(args, ctx, &self.probe);
        self.probe.active.fetch_sub(1, Ordering::SeqCst);
        result
    }

    fn rehearse(&self, args: &Args, ctx: &RunContext) -> Result<Rehearsal, NodeError> {
        let Some(mib) = self.stand_in else {
            return self.run(args, ctx).map(Rehearsal::Ran);
        };
        Ok(Rehearsal::StoodIn {
            outputs: vec![Value::Int(0)],
            need: Some(DeviceNeed {
                least: (mib << 20) / 2,
                unconstrained: mib << 20,
                detail: format!("{mib} MiB of test weights"),
            }),
        })
    }
}

fn int(name: &'static str, default: i64) -> ParamSpec {
    ParamSpec::new(
        name,
        ParamKind::Int {
            default: Some(default),
            min: 0,
            max: 100_000,
        },
        "",
    )
}

/// Every pack the binary registers.
pub fn packs() -> Registry {
    swapgraph::packs::registry().unwrap()
}

/// The binary's packs plus the test nodes, all sharing `probe`.
pub fn registry(probe: &Arc<Probe>) -> Registry {
    let mut registry = packs();
    registry
        .register_socket(
            SocketSpec::new(NUMBER, "#000000", "A number of either kind.")
                .accepting(&[SocketType::INT, SocketType::FLOAT]),
        )
        .unwrap();
    let mut add_node = |descriptor: NodeDescriptor, run: Box<RunFn>, stand_in: Option<u64>| {
        registry
            .register(TestNode {
                descriptor,
                probe: Arc::clone(probe),
                run,
                stand_in,
            })
            .unwrap();
    };
    for (name, mib) in [("TestHeavy", 600), ("TestHeavier", 1400)] {
        add_node(
            NodeDescriptor::new(name, "test", "ten times its input, on the device")
                .input("value", SocketType::INT, "")
                .uses_device()
                .output(SocketType::INT, ""),
            Box::new(|args, _, _| Ok(vec![Value::Int(10 * args.param::<i64>("value")?)])),
            Some(mib),
        );
    }
    let mut add = |descriptor: NodeDescriptor, run: Box<RunFn>| add_node(descriptor, run, None);
    add(
        NodeDescriptor::new(
            "TestCount",
            "test",
            "start (+ after) or start * after, times `times` if given",
        )
        .optional_input("after", SocketType::INT, "")
        .param(int("start", 0))
        .param(ParamSpec::new(
            "mode",
            ParamKind::Choice {
                default: Some("add"),
                choices: vec!["add", "multiply"],
            },
            "",
        ))
        .param(
            ParamSpec::new(
                "times",
                ParamKind::Int {
                    default: None,
                    min: 1,
                    max: 100,
                },
                "",
            )
            .optional(),
        )
        .output(SocketType::INT, ""),
        Box::new(|args, _, _| {
            let start = args.param::<i64>("start")?;
            let after = args.param::<Option<i64>>("after")?.unwrap_or(0);
            let result = if &*args.param::<Arc<str>>("mode")? == "add" {
                start + after
            } else {
                start * after
            };
            let times = args.param::<Option<i64>>("times")?.unwrap_or(1);
            Ok(vec![Value::Int(result * times)])
        }),
    );
    add(
        NodeDescriptor::new("TestSleep", "test", "sleeps, then outputs its input")
            .input("value", SocketType::INT, "")
            .param(int("ms", 50))
            .output(SocketType::INT, ""),
        Box::new(|args, _, _| {
            std::thread::sleep(Duration::from_millis(args.param::<u64>("ms")?));
            Ok(vec![args.value("value")?.clone()])
        }),
    );
    add(
        NodeDescriptor::new(
            "TestDeviceSleep",
            "test",
            "sleeps on the device, then outputs its input",
        )
        .input("value", SocketType::INT, "")
        .param(int("ms", 50))
        .uses_device()
        .output(SocketType::INT, ""),
        Box::new(|args, _, _| {
            std::thread::sleep(Duration::from_millis(args.param::<u64>("ms")?));
            Ok(vec![args.value("value")?.clone()])
        }),
    );
    add(
        NodeDescriptor::new(
            "TestLoop",
            "test",
            "counts to steps, one ms a step, checking cancellation",
        )
        .input("value", SocketType::INT, "")
        .param(int("steps", 10))
        .output(SocketType::INT, ""),
        Box::new(|args, ctx, _| {
            let steps = args.param::<u64>("steps")?;
            for step in 1..=steps {
                ctx.check_cancelled()?;
                std::thread::sleep(Duration::from_millis(1));
                ctx.progress(step, steps);
            }
            Ok(vec![args.value("value")?.clone()])
        }),
    );
    add(
        NodeDescriptor::new("TestFail", "test", "always fails")
            .input("value", SocketType::INT, "")
            .output(SocketType::INT, ""),
        Box::new(|_, _, _| Err(NodeError::msg("the test node failed on purpose"))),
    );
    add(
        NodeDescriptor::new("TestPanic", "test", "always panics")
            .input("value", SocketType::INT, "")
            .output(SocketType::INT, ""),
        Box::new(|_, _, _| panic!("boom")),
    );
    add(
        NodeDescriptor::new("TestWrongOutputs", "test", "returns a STRING where it declares an INT")
            .input("value", SocketType::INT, "")
            .output(SocketType::INT, ""),
        Box::new(|_, _, _| Ok(vec![Value::string("not a number")])),
    );
    add(
        NodeDescriptor::new("TestSink", "test", "an output node that records its input")
            .input("value", SocketType::INT, "")
            .output_node(),
        Box::new(|args, _, _| {
            SINK.lock().unwrap().push(args.param::<i64>("value")?);
            Ok(vec![])
        }),
    );
    add(
        NodeDescriptor::new("TestNumberSink", "test", "an output node taking any number")
            .input("value", NUMBER, "")
            .output_node(),
        Box::new(|_, _, _| Ok(vec![])),
    );
    registry
}

/// Values received by `TestSink` nodes, across tests; tests filter by their own values.
pub static SINK: Mutex<Vec<i64>> = Mutex::new(Vec::new());

/// Plans workflow text against `registry`, panicking with the report if it is invalid.
pub fn plan(yaml: &str, registry: &Registry) -> swapgraph::plan::Plan {
    swapgraph::prepare("test.yaml", yaml.as_bytes(), &[], registry).unwrap_or_else(|report| panic!("{report}"))
}

/// Runs a plan to the end, returning the result and every event in order.
pub fn run(
    engine: &Engine,
    plan: &swapgraph::plan::Plan,
    options: &RunOptions,
) -> (Result<RunSummary, RunError>, Vec<Event>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (sink, mut receiver) = EventSink::channel();
        let result = engine.run(plan, options, &sink).await;
        drop(sink);
        let mut events = Vec::new();
        while let Some(event) = receiver.recv().await {
            events.push(event);
        }
        (result, events)
    })
}
