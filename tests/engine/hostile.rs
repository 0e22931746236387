//! Hostile input: whatever the bytes, parsing and validation end quickly with a report and
//! never panic.

use super::fixtures::{registry, Probe};
use proptest::prelude::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use swapgraph_node_api::Registry;

fn check(bytes: &[u8], registry: &Registry) -> Vec<&'static str> {
    match swapgraph::prepare("fuzz.yaml", bytes, &[], registry) {
        Ok(_) => Vec::new(),
        Err(report) => report.codes(),
    }
}

fn refused_quickly(bytes: &[u8]) -> Vec<&'static str> {
    let registry = registry(&Arc::new(Probe::default()));
    let clock = Instant::now();
    let codes = check(bytes, &registry);
    assert!(clock.elapsed() < Duration::from_secs(2), "took {:?}", clock.elapsed());
    codes
}

#[test]
fn alias_bombs_are_refused() {
    let mut bomb = String::from("version: 1\na0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let p = i - 1;
        bomb += &format!("a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n");
    }
    bomb += "nodes:\n  n:\n    type: SaveText\n    params: { text: hello, filename_prefix: *a11 }\n";
    assert_eq!(refused_quickly(bomb.as_bytes()), ["yaml-syntax"]);
}

#[test]
fn deep_nesting_is_refused() {
    let deep = format!("version: 1\nnodes: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
    assert_eq!(refused_quickly(deep.as_bytes()), ["yaml-syntax"]);
    let deep_params = format!(
        "version: 1\nnodes:\n  n:\n    type: SaveText\n    params: {{ text: {}{} }}\n",
        "{a: ".repeat(5_000),
        "}".repeat(5_000)
    );
    assert_eq!(refused_quickly(deep_params.as_bytes()), ["yaml-syntax"]);
}

#[test]
fn a_long_line_of_values_is_read_in_linear_time() {
    let entries = vec!["k: \"é\""; 100_000].join(", ");
    let yaml = format!("version: 1\nnodes:\n  n:\n    type: SaveText\n    params: {{ {entries} }}\n");
    let clock = Instant::now();
    let workflow = swapgraph::workflow::parse(yaml.as_bytes()).unwrap();
    assert!(clock.elapsed() < Duration::from_secs(2), "took {:?}", clock.elapsed());
    let (_, node) = &workflow.nodes.0[0];
    let last = &node.value.params.0.last().unwrap().1;
    assert_eq!(last.at.to_string(), format!("5:{}", 18 + 8 * 99_999));
}

#[test]
fn huge_numbers_and_odd_scalars_are_reported_not_trusted() {
    let yaml = "version: 1\nnodes:\n  n:\n    type: PrimitiveInt\n    params: { value: 1e400 }\n  s:\n    type: SaveText\n    params: { text: .nan }\n";
    let codes = refused_quickly(yaml.as_bytes());
    assert!(
        codes.iter().all(|c| ["yaml-syntax", "param-type"].contains(c)),
        "{codes:?}"
    );
    assert!(!codes.is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let registry = registry(&Arc::new(Probe::default()));
        let _ = check(&bytes, &registry);
    }

    #[test]
    fn workflow_shaped_text_never_panics(
        lines in proptest::collection::vec(
            prop_oneof![
                Just("version: 1".to_string()),
                Just("nodes:".to_string()),
                "  [a-z_.]{1,8}:".prop_map(String::from),
                "    type: (SaveText|PrimitiveInt|StringConcatenate|TestSink|[A-Za-z]{1,10})".prop_map(String::from),
                "    inputs: \\{ [a-z_]{1,8}: [a-z_]{1,6}\\.[a-z_]{1,6} \\}".prop_map(String::from),
                "    params: \\{ [a-z_]{1,8}: [-0-9a-z.\"]{0,8} \\}".prop_map(String::from),
                "    enabled: (true|false|yes|1)".prop_map(String::from),
                "[ -~]{0,20}".prop_map(String::from),
            ],
            0..24,
        )
    ) {
        let registry = registry(&Arc::new(Probe::default()));
        let _ = check(lines.join("\n").as_bytes(), &registry);
    }
}
