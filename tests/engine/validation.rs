//! Validation reports of broken workflows: one case file per kind of problem under
//! `tests/cases/invalid`, each starting with `# expect: code, code...`, the codes the report
//! must hold in order. The full report text is snapshot-tested.

use super::fixtures::{registry, Probe};
use std::sync::Arc;
use swapgraph::workflow::{Override, MAX_WORKFLOW_BYTES};

#[test]
fn each_broken_workflow_reports_its_problems() {
    let registry = registry(&Arc::new(Probe::default()));
    insta::glob!("../cases/invalid", "*.yaml", |path| {
        let bytes = std::fs::read(path).unwrap();
        let header = String::from_utf8_lossy(&bytes[..bytes.iter().position(|&b| b == b'\n').unwrap()]).to_string();
        let expected: Vec<&str> = header
            .strip_prefix("# expect: ")
            .expect("case starts with # expect:")
            .split(", ")
            .collect();
        let name = path.file_name().unwrap().to_string_lossy();
        let report = match swapgraph::prepare(&name, &bytes, &[], &registry) {
            Ok(_) => panic!("{name} should be invalid"),
            Err(report) => report,
        };
        assert_eq!(report.codes(), expected, "{name}:\n{report}");
        insta::assert_snapshot!(report.to_string());
    });
}

#[test]
fn a_pack_socket_type_takes_the_types_it_accepts_and_no_others() {
    let registry = registry(&Arc::new(Probe::default()));
    let workflow = |source: &str| {
        format!(
            "version: 1\nnodes:\n  count: {{ type: TestCount, params: {{ start: 1 }} }}\n  \
             text: {{ type: PrimitiveString, params: {{ value: a }} }}\n  \
             sink: {{ type: TestNumberSink, inputs: {{ value: {source} }} }}\n"
        )
    };
    swapgraph::prepare("int.yaml", workflow("count.int").as_bytes(), &[], &registry)
        .unwrap_or_else(|report| panic!("NUMBER accepts INT: {report}"));
    let report = swapgraph::prepare("string.yaml", workflow("text.string").as_bytes(), &[], &registry)
        .err()
        .expect("NUMBER does not accept STRING");
    assert_eq!(report.codes(), ["socket-type-mismatch"]);
}

#[test]
fn reports_serialize_with_code_node_field_and_position() {
    let registry = registry(&Arc::new(Probe::default()));
    let bytes = std::fs::read("tests/cases/invalid/many-problems.yaml").unwrap();
    let report = swapgraph::prepare("many-problems.yaml", &bytes, &[], &registry)
        .err()
        .unwrap();
    insta::assert_json_snapshot!(report);
}

#[test]
fn overrides_are_validated_with_the_workflow() {
    let registry = registry(&Arc::new(Probe::default()));
    let bytes = std::fs::read("workflows/prompt_log.yaml").unwrap();
    let overrides: Vec<Override> = ["prompt.delimter=x", "sav.text=y", "prompt.string_a=5"]
        .iter()
        .enumerate()
        .map(|(i, text)| Override::parse(text, i + 1).unwrap())
        .collect();
    let report = swapgraph::prepare("prompt_log.yaml", &bytes, &overrides, &registry)
        .err()
        .unwrap();
    assert_eq!(report.codes(), ["unknown-param", "override-unknown-node"]);
    insta::assert_snapshot!(report.to_string());
}

#[test]
fn oversized_workflows_are_refused_before_parsing() {
    let registry = registry(&Arc::new(Probe::default()));
    let bytes = vec![b' '; MAX_WORKFLOW_BYTES as usize + 1];
    let report = swapgraph::prepare("big.yaml", &bytes, &[], &registry).err().unwrap();
    assert_eq!(report.codes(), ["too-large"]);
}
