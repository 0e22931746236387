//! ComfyUI API-format workflows: ComfyUI's default text-to-image graph, exported with "Export
//! (API)", runs as it is, `swapgraph import` writes it as a workflow that keeps its ids and
//! titles, and a broken one is reported whole, by node id and title.

use super::fixtures::packs;
use super::workflows::run_in;
use std::process::Command;
use swapgraph_node_api::FileRoots;

const DEFAULT_GRAPH: &str = "tests/cases/comfyui/txt2img_api.json";

#[test]
fn comfyuis_default_graph_runs_and_imports_with_its_ids_and_titles() {
    let out = tempfile::tempdir().unwrap();
    let files = FileRoots {
        outputs: out.path().to_path_buf(),
        ..FileRoots::default()
    };
    let written = run_in(DEFAULT_GRAPH, &std::fs::read(DEFAULT_GRAPH).unwrap(), files);
    assert_eq!(written.len(), 1);
    assert!(written[0].ends_with("ComfyUI_00001.png"), "{written:?}");

    let yaml = out.path().join("txt2img.yaml");
    let status = Command::new(env!("CARGO_BIN_EXE_swapgraph"))
        .args(["import", DEFAULT_GRAPH, "-o"])
        .arg(&yaml)
        .status()
        .unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(&yaml).unwrap();
    let plan = swapgraph::prepare("txt2img.yaml", text.as_bytes(), &[], &packs()).unwrap();
    let order: Vec<String> = plan.summary().steps.iter().map(|step| step.id.clone()).collect();
    assert_eq!(order.len(), 7);
    for id in ["3", "4", "5", "6", "7", "8", "9"] {
        assert!(order.iter().any(|step| step == id), "node {id} kept: {order:?}");
    }
    assert!(
        text.contains("title: Load Checkpoint") && text.contains("model: 4.model"),
        "{text}"
    );
}

#[test]
fn every_problem_of_a_broken_export_is_reported_by_node() {
    let broken = r#"{
        "1": {"class_type": "KSamplerX", "inputs": {"model": ["2", 0]}, "_meta": {"title": "My sampler"}},
        "2": {"class_type": "CheckpointLoaderSimple", "inputs": {}},
        "3": {"class_type": "VAEDecode", "inputs": {"samples": ["9", 0], "vae": ["2", 7]}, "_meta": {"title": "Decode"}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0]}},
        "5": {"class_type": "IPAdapterAdvanced", "inputs": {"model": ["2", 0]}, "_meta": {"title": "IPAdapter"}}
    }"#;
    let Err(report) = swapgraph::prepare("broken.json", broken.as_bytes(), &[], &packs()) else {
        panic!("a broken export was accepted");
    };
    let text = report.to_string();
    for expected in [
        "unknown type \"KSamplerX\"",
        "node 3 (\"Decode\", VAEDecode), input \"samples\": links to node 9, which is not in the workflow",
        "input \"vae\": links to output 7 of node 2 (CheckpointLoaderSimple), which has 3 output(s)",
        "unknown type \"IPAdapterAdvanced\" (from the custom node pack ComfyUI_IPAdapter_plus, which swapgraph does not have)",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert!(text.starts_with("broken.json (imported)"), "{text}");
}

#[test]
fn an_editor_format_workflow_runs_with_its_widgets_reroutes_and_primitives_read() {
    const EDITOR_GRAPH: &str = "tests/cases/comfyui/txt2img_editor.json";
    let bytes = std::fs::read(EDITOR_GRAPH).unwrap();
    let plan = swapgraph::prepare(EDITOR_GRAPH, &bytes, &[], &packs()).unwrap_or_else(|report| panic!("{report}"));
    let steps = plan.summary().steps;
    let sampler = steps.iter().find(|step| step.id == "3").unwrap();
    assert_eq!(sampler.inputs["model"], "4.model");
    let decode = steps.iter().find(|step| step.id == "8").unwrap();
    assert_eq!(decode.inputs["vae"], "4.vae", "followed through the reroute");
    assert!(steps
        .iter()
        .all(|step| step.id != "2" && step.id != "10" && step.id != "11"));

    let (imported, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let yaml = imported.path().join("editor.yaml");
    let status = Command::new(env!("CARGO_BIN_EXE_swapgraph"))
        .args(["import", EDITOR_GRAPH, "-o"])
        .arg(&yaml)
        .status()
        .unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(&yaml).unwrap();
    for expected in ["seed: 42", "steps: 8", "sampler_name: euler", "denoise: 1", "x: 863.0"] {
        assert!(text.contains(expected), "{expected} in:\n{text}");
    }
    assert!(!text.contains("randomize"), "the seed's control is no param:\n{text}");
    let files = FileRoots {
        outputs: out.path().to_path_buf(),
        ..FileRoots::default()
    };
    assert_eq!(run_in(EDITOR_GRAPH, &bytes, files).len(), 1);
}

#[test]
fn import_writes_bypassed_nodes_disabled_and_refuses_what_is_not_a_comfyui_workflow() {
    let dir = tempfile::tempdir().unwrap();
    let editor = std::fs::read_to_string("tests/cases/comfyui/txt2img_editor.json").unwrap();
    let bypassed = editor.replace("\"order\": 3, \"mode\": 0", "\"order\": 3, \"mode\": 4");
    assert_ne!(bypassed, editor);
    let file = dir.path().join("bypassed.json");
    std::fs::write(&file, bypassed).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_swapgraph"))
        .arg("import")
        .arg(&file)
        .output()
        .unwrap();
    let yaml = String::from_utf8(output.stdout).unwrap();
    let node = &yaml[yaml.find("\"7\":").expect("node 7 is kept")..];
    let node = &node[..node[1..].find("\n  \"").map_or(node.len(), |end| end + 1)];
    assert!(node.contains("enabled: false"), "{node}");

    let output = Command::new(env!("CARGO_BIN_EXE_swapgraph"))
        .args(["import", "workflows/sdxl_txt2img.yaml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    let error = String::from_utf8(output.stderr).unwrap();
    assert!(error.contains("is not a ComfyUI workflow"), "{error}");
}

#[test]
fn import_keeps_groups_and_collapsed_nodes_and_the_workflow_still_runs() {
    let dir = tempfile::tempdir().unwrap();
    let editor: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string("tests/cases/comfyui/txt2img_editor.json").unwrap()).unwrap();
    let mut editor = editor;
    editor["groups"] =
        serde_json::json!([{ "title": "Sampling", "bounding": [800, 100, 520, 410], "color": "#3f789e" }]);
    let sampler = editor["nodes"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|node| node["id"] == 3)
        .unwrap();
    sampler["flags"] = serde_json::json!({ "collapsed": true });
    let file = dir.path().join("grouped.json");
    std::fs::write(&file, editor.to_string()).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_swapgraph"))
        .arg("import")
        .arg(&file)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let yaml = String::from_utf8(output.stdout).unwrap();
    for expected in ["groups:", "title: Sampling", "width: 520", "3f789e", "collapsed: true"] {
        assert!(yaml.contains(expected), "{expected} in:\n{yaml}");
    }
    let plan = swapgraph::prepare("grouped.yaml", yaml.as_bytes(), &[], &packs()).unwrap_or_else(|r| panic!("{r}"));
    // The workflow the run embeds in its images keeps them too.
    let again = plan.workflow_yaml();
    assert!(
        again.contains("title: Sampling") && again.contains("collapsed: true"),
        "{again}"
    );
}

/// The pixels of the image `swapgraph run WORKFLOW --set-type ... --output-dir` saves.
fn image_from_run(workflow: &std::path::Path, models: &str) -> Vec<u8> {
    let out = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_swapgraph"))
        .arg("run")
        .arg(workflow)
        .args(["--set-type", models, "--output-dir"])
        .arg(out.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let saved = String::from_utf8(output.stdout).unwrap();
    image::open(saved.lines().next().unwrap().trim())
        .unwrap()
        .to_rgb8()
        .into_raw()
}

#[test]
fn a_comfyui_workflow_and_its_import_give_the_same_image_with_their_models_mapped() {
    let dir = tempfile::tempdir().unwrap();
    let models = "CheckpointLoaderSimple.ckpt_name=builtin:tiny-sdxl";
    for case in [DEFAULT_GRAPH, "tests/cases/comfyui/txt2img_editor.json"] {
        // As published: the model a ComfyUI user has, which --set-type maps to a built-in one.
        let published = std::fs::read_to_string(case)
            .unwrap()
            .replace("builtin:tiny-sdxl", "sd_xl_base_1.0.safetensors");
        assert!(published.contains("sd_xl_base_1.0.safetensors"), "{case}");
        let json = dir.path().join("published.json");
        std::fs::write(&json, published).unwrap();
        let yaml = dir.path().join("published.yaml");
        let status = Command::new(env!("CARGO_BIN_EXE_swapgraph"))
            .arg("import")
            .arg(&json)
            .arg("-o")
            .arg(&yaml)
            .status()
            .unwrap();
        assert!(status.success());
        assert!(
            image_from_run(&json, models) == image_from_run(&yaml, models),
            "{case}: the JSON and its import saved different images"
        );
    }
}
