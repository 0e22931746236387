//! Running plans: caching across runs, concurrency of independent branches, cancellation inside
//! long loops, failures, panics and misbehaving nodes, and the event stream.

use super::fixtures::{plan, registry, run, Probe, SINK};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use swapgraph::exec::{Engine, Event, RunError, RunOptions, RunSummary};
use swapgraph_node_api::{CancelToken, FileRoots};

fn options(parallelism: usize) -> RunOptions {
    RunOptions {
        parallelism,
        files: FileRoots {
            outputs: std::env::temp_dir().join("swapgraph-tests"),
            ..FileRoots::default()
        },
        ..RunOptions::default()
    }
}

fn chain(start: i64) -> String {
    format!(
        r#"
version: 1
nodes:
  start: {{ type: TestCount, params: {{ start: {start} }} }}
  double: {{ type: TestCount, inputs: {{ after: start.int }}, params: {{ start: 2, mode: multiply }} }}
  sink: {{ type: TestSink, inputs: {{ value: double.int }} }}
"#
    )
}

#[test]
fn an_optional_param_is_off_when_left_out_or_null_and_never_zero() {
    let engine = Engine::new(registry(&Arc::new(Probe::default())));
    let workflow = |times: &str| {
        format!(
            r#"
version: 1
nodes:
  start: {{ type: TestCount, params: {{ start: 3001 {times} }} }}
  sink: {{ type: TestSink, inputs: {{ value: start.int }} }}
"#
        )
    };
    for (times, expected) in [("", 3001), (", times: null", 3001), (", times: 3", 9003)] {
        let (result, _) = run(&engine, &plan(&workflow(times), engine.registry()), &options(1));
        result.unwrap();
        assert!(
            SINK.lock().unwrap().contains(&expected),
            "{times:?} should give {expected}"
        );
    }
    let report = swapgraph::prepare("zero.yaml", workflow(", times: 0").as_bytes(), &[], engine.registry())
        .err()
        .expect("0 is not a way to say off");
    assert_eq!(report.codes(), ["param-range"]);
    assert!(
        report
            .to_string()
            .contains("leave the param out (or give null) to turn it off"),
        "{report}"
    );
}

#[test]
fn unchanged_nodes_come_from_the_cache_and_changes_flow_downstream() {
    let probe = Arc::new(Probe::default());
    let engine = Engine::new(registry(&probe));
    let first = plan(&chain(1001), engine.registry());
    let (result, _) = run(&engine, &first, &options(2));
    assert_eq!(result.unwrap(), RunSummary { executed: 3, cached: 0 });
    let (result, events) = run(&engine, &first, &options(2));
    assert_eq!(
        result.unwrap(),
        RunSummary { executed: 1, cached: 2 },
        "only the output node reruns"
    );
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::NodeCached { node, .. } if node.as_str() == "start")));
    let changed = plan(&chain(1002), engine.registry());
    let (result, _) = run(&engine, &changed, &options(2));
    assert_eq!(
        result.unwrap(),
        RunSummary { executed: 3, cached: 0 },
        "a changed param reruns everything below it"
    );
    assert_eq!(probe.runs.load(Ordering::SeqCst), 7);
    let sunk = SINK.lock().unwrap().clone();
    assert_eq!(sunk.iter().filter(|&&v| v == 2002 || v == 2004).count(), 3);
}

#[test]
fn node_ids_do_not_matter_to_the_cache() {
    let probe = Arc::new(Probe::default());
    let engine = Engine::new(registry(&probe));
    run(&engine, &plan(&chain(1003), engine.registry()), &options(1))
        .0
        .unwrap();
    let renamed = r#"
version: 1
nodes:
  first: { type: TestCount, params: { start: 1003 } }
  twice: { type: TestCount, inputs: { after: first.int }, params: { mode: multiply, start: 2 } }
  out: { type: TestSink, inputs: { value: twice.int } }
"#;
    let (result, _) = run(&engine, &plan(renamed, engine.registry()), &options(1));
    assert_eq!(result.unwrap(), RunSummary { executed: 1, cached: 2 });
}

/// The nodes a run computed rather than took from the cache.
fn started(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::NodeStarted { node, .. } => Some(node.to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_file_changed_on_disk_is_read_again() {
    let inputs = tempfile::tempdir().unwrap();
    let outputs = tempfile::tempdir().unwrap();
    let face = inputs.path().join("face.png");
    let paint = |rgb: [u8; 3]| image::RgbImage::from_pixel(4, 4, image::Rgb(rgb)).save(&face).unwrap();
    let saved_red = |run: usize| {
        let saved = outputs.path().join(format!("seen/linked_{run:05}.png"));
        image::open(saved).unwrap().to_rgb8().get_pixel(0, 0).0[0]
    };
    let workflow = r#"
version: 1
nodes:
  literal: { type: LoadImage, params: { image: face.png } }
  name: { type: PrimitiveString, params: { value: face.png } }
  linked: { type: LoadImage, inputs: { image: name.string } }
  show: { type: PreviewImage, inputs: { images: literal.image } }
  save: { type: SaveImage, inputs: { images: linked.image }, params: { filename_prefix: seen/linked } }
"#;
    let engine = Engine::new(registry(&Arc::new(Probe::default())));
    let plan = plan(workflow, engine.registry());
    let options = RunOptions {
        files: FileRoots {
            inputs: inputs.path().to_path_buf(),
            outputs: outputs.path().to_path_buf(),
            ..FileRoots::default()
        },
        ..options(2)
    };
    paint([200, 0, 0]);
    let (result, _) = run(&engine, &plan, &options);
    result.unwrap();
    let (result, events) = run(&engine, &plan, &options);
    result.unwrap();
    assert_eq!(started(&events), ["show", "save"], "unchanged: both loaders cached");
    paint([10, 0, 0]);
    let (result, events) = run(&engine, &plan, &options);
    result.unwrap();
    let mut rerun = started(&events);
    rerun.sort();
    assert_eq!(
        rerun,
        ["linked", "literal", "save", "show"],
        "the changed file is read again"
    );
    assert_eq!((saved_red(2), saved_red(3)), (200, 10));
}

fn two_branches(ms: u64) -> String {
    two_branches_of(ms, "TestSleep", "TestSleep")
}

/// Two independent branches sleeping `ms` in nodes of types `a` and `b`.
fn two_branches_of(ms: u64, a: &str, b: &str) -> String {
    format!(
        r#"
version: 1
nodes:
  a: {{ type: TestCount, params: {{ start: 1 }} }}
  b: {{ type: TestCount, params: {{ start: 2 }} }}
  sleep_a: {{ type: {a}, inputs: {{ value: a.int }}, params: {{ ms: {ms} }} }}
  sleep_b: {{ type: {b}, inputs: {{ value: b.int }}, params: {{ ms: {ms} }} }}
  sink_a: {{ type: TestSink, inputs: {{ value: sleep_a.int }} }}
  sink_b: {{ type: TestSink, inputs: {{ value: sleep_b.int }} }}
"#
    )
}

#[test]
fn independent_branches_run_concurrently_up_to_the_limit() {
    for (parallelism, expected) in [(1, 1), (2, 2)] {
        let probe = Arc::new(Probe::default());
        let engine = Engine::new(registry(&probe));
        run(
            &engine,
            &plan(&two_branches(150), engine.registry()),
            &options(parallelism),
        )
        .0
        .unwrap();
        assert_eq!(
            probe.max_active.load(Ordering::SeqCst),
            expected,
            "parallelism {parallelism}"
        );
    }
}

#[test]
fn nodes_that_use_the_device_run_one_at_a_time_beside_others() {
    for (a, b, overlap) in [
        ("TestDeviceSleep", "TestDeviceSleep", false),
        ("TestDeviceSleep", "TestSleep", true),
    ] {
        let engine = Engine::new(registry(&Arc::new(Probe::default())));
        let workflow = two_branches_of(100, a, b);
        let (result, events) = run(&engine, &plan(&workflow, engine.registry()), &options(4));
        result.unwrap();
        let position = |wanted: &dyn Fn(&Event) -> bool| events.iter().position(wanted).unwrap();
        let first_finished =
            position(&|e| matches!(e, Event::NodeFinished { node, .. } if node.as_str().starts_with("sleep")));
        let second_started = events
            .iter()
            .rposition(|e| matches!(e, Event::NodeStarted { node, .. } if node.as_str().starts_with("sleep")))
            .unwrap();
        assert_eq!(second_started < first_finished, overlap, "{a} beside {b}: {events:?}");
    }
}

#[test]
fn cancelling_stops_a_long_loop_within_a_step() {
    let probe = Arc::new(Probe::default());
    let engine = Engine::new(registry(&probe));
    let looping = plan(
        r#"
version: 1
nodes:
  start: { type: TestCount }
  loop: { type: TestLoop, inputs: { value: start.int }, params: { steps: 100000 } }
  sink: { type: TestSink, inputs: { value: loop.int } }
"#,
        engine.registry(),
    );
    let options = options(2);
    let cancel: CancelToken = options.cancel.clone();
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        cancel.cancel();
    });
    let clock = Instant::now();
    let (result, events) = run(&engine, &looping, &options);
    canceller.join().unwrap();
    assert!(matches!(result, Err(RunError::Cancelled)), "{result:?}");
    assert!(clock.elapsed() < Duration::from_secs(5), "took {:?}", clock.elapsed());
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Progress { total: 100000, .. })));
    assert!(matches!(
        events.last(),
        Some(Event::RunFinished {
            cancelled: true,
            failed: false,
            ..
        })
    ));
}

fn failing(kind: &str) -> String {
    format!(
        r#"
version: 1
nodes:
  start: {{ type: TestCount }}
  bad: {{ type: {kind}, inputs: {{ value: start.int }} }}
  loop: {{ type: TestLoop, inputs: {{ value: start.int }}, params: {{ steps: 100000 }} }}
  sink_bad: {{ type: TestSink, inputs: {{ value: bad.int }} }}
  sink_loop: {{ type: TestSink, inputs: {{ value: loop.int }} }}
"#
    )
}

#[test]
fn a_failing_node_fails_the_run_names_itself_and_stops_its_siblings() {
    for (kind, message) in [
        ("TestFail", "the test node failed on purpose"),
        ("TestPanic", "the node panicked: boom"),
        ("TestWrongOutputs", "this is a bug in its node pack"),
    ] {
        let probe = Arc::new(Probe::default());
        let engine = Engine::new(registry(&probe));
        let clock = Instant::now();
        let (result, events) = run(&engine, &plan(&failing(kind), engine.registry()), &options(2));
        match result {
            Err(RunError::NodeFailed { node, node_type, error }) => {
                assert_eq!((node.as_str(), node_type), ("bad", kind));
                assert!(error.contains(message), "{error}");
            }
            other => panic!("{kind}: {other:?}"),
        }
        assert!(
            clock.elapsed() < Duration::from_secs(5),
            "{kind}: siblings were not stopped"
        );
        assert!(matches!(events.last(), Some(Event::RunFinished { failed: true, .. })));
        let failed = events.iter().filter(|e| matches!(e, Event::NodeFailed { .. })).count();
        assert_eq!(failed, 1, "{kind}: only the failing node is reported");
    }
}

#[test]
fn linked_param_values_are_checked_against_the_param_range() {
    let probe = Arc::new(Probe::default());
    let engine = Engine::new(registry(&probe));
    let linked = plan(
        r#"
version: 1
nodes:
  big: { type: PrimitiveInt, params: { value: 200000 } }
  count: { type: TestCount, inputs: { start: big.int } }
  sink: { type: TestSink, inputs: { value: count.int } }
"#,
        engine.registry(),
    );
    let error = run(&engine, &linked, &options(1)).0.unwrap_err().to_string();
    assert_eq!(
        error,
        "node \"count\" (TestCount) failed: argument \"start\": 200000 is outside the range 0 to 100000"
    );
}

#[test]
fn events_bracket_the_run_and_each_node() {
    let probe = Arc::new(Probe::default());
    let engine = Engine::new(registry(&probe));
    let (_, events) = run(&engine, &plan(&chain(1005), engine.registry()), &options(2));
    assert!(matches!(events.first(), Some(Event::RunStarted { steps: 3 })));
    assert!(matches!(
        events.last(),
        Some(Event::RunFinished {
            executed: 3,
            cancelled: false,
            failed: false,
            ..
        })
    ));
    for id in ["start", "double", "sink"] {
        let started = events
            .iter()
            .position(|e| matches!(e, Event::NodeStarted { node, .. } if node.as_str() == id));
        let finished = events
            .iter()
            .position(|e| matches!(e, Event::NodeFinished { node, .. } if node.as_str() == id));
        assert!(started.unwrap() < finished.unwrap(), "{id}");
    }
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Memory { node: None, report } if report.title == "process")));
}
