//! The `swapgraph` binary: commands, outputs and exit codes.

use std::path::Path;
use std::process::{Command, Output};

fn swapgraph(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_swapgraph"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn scratch(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(name).tempdir().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn node_descriptors_as_json_and_text() {
    let json = swapgraph(&["nodes", "--json"]);
    assert_eq!(json.status.code(), Some(0));
    let descriptors: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    insta::assert_json_snapshot!("nodes_json", descriptors);
    let listing = swapgraph(&["nodes"]);
    insta::assert_snapshot!("nodes_text", text(&listing.stdout));
    let one = swapgraph(&["nodes", "SaveTxt"]);
    assert_eq!(one.status.code(), Some(2));
    assert!(text(&one.stderr).contains("did you mean \"SaveText\"?"));
}

#[test]
fn run_writes_outputs_and_applies_overrides() {
    let out = scratch("swapgraph-cli-run");
    let dir = out.path().to_str().unwrap();
    let plain = swapgraph(&["run", "workflows/prompt_log.yaml", "--output-dir", dir]);
    assert_eq!(plain.status.code(), Some(0), "{}", text(&plain.stderr));
    let saved = out.path().join("prompts/prompt_00001.txt");
    assert_eq!(text(&plain.stdout).trim(), saved.display().to_string());
    assert_eq!(
        std::fs::read_to_string(&saved).unwrap(),
        "a portrait photo of an astronaut, studio lighting, 85mm"
    );
    let changed = swapgraph(&[
        "run",
        "workflows/prompt_log.yaml",
        "--output-dir",
        dir,
        "--set",
        "prompt.delimiter= | ",
        "--set",
        "style.value=oil painting",
        "--repeat",
        "2",
    ]);
    assert_eq!(changed.status.code(), Some(0), "{}", text(&changed.stderr));
    let second = std::fs::read_to_string(out.path().join("prompts/prompt_00002.txt")).unwrap();
    assert_eq!(second, "a portrait photo of an astronaut | oil painting");
    assert!(
        out.path().join("prompts/prompt_00003.txt").exists(),
        "--repeat runs the output node again"
    );
}

#[test]
fn run_logs_where_each_stage_of_an_image_took_its_time() {
    let out = scratch("swapgraph-cli-times");
    let run = Command::new(env!("CARGO_BIN_EXE_swapgraph"))
        .args(["run", "workflows/sdxl_txt2img.yaml", "--output-dir"])
        .arg(out.path())
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let log = text(&run.stderr);
    assert_eq!(run.status.code(), Some(0), "{log}");
    // Each stage's line, with a time that parses, for the nodes of the workflow file.
    let time_after = |line_start: &str, label: &str| -> f64 {
        let line = log
            .lines()
            .find(|line| line.contains(line_start) && line.contains(label))
            .unwrap_or_else(|| panic!("no {line_start:?} line with {label:?} in\n{log}"));
        let rest = &line[line.find(label).unwrap() + label.len()..];
        let number: String = rest.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
        number
            .parse()
            .unwrap_or_else(|_| panic!("no time after {label:?} in {line:?}"))
    };
    for prompt in ["pos: ", "neg: "] {
        assert!(time_after(prompt, "CLIP-L weights ready in ") >= 0.0);
        assert!(time_after(prompt, "bigG weights ready in ") >= 0.0);
        assert!(time_after(prompt, "encoded in ") > 0.0, "encoding takes time");
    }
    assert!(time_after("decode: ", "128x128 decoded whole in ") > 0.0);
    assert!(time_after("save: txt2img_00001.png", "PNG encoded in ") > 0.0);
    assert!(time_after("save: txt2img_00001.png", "written in ") >= 0.0);
}

#[test]
fn processes_saving_together_keep_every_output() {
    let out = scratch("swapgraph-cli-race");
    let dir = out.path().to_str().unwrap();
    let processes = 8;
    let runs: Vec<_> = (0..processes)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_swapgraph"))
                .args(["run", "workflows/prompt_log.yaml", "--output-dir", dir])
                .args(["--set", &format!("style.value=run {i}")])
                .env("RUST_LOG", "warn")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut printed: Vec<String> = Vec::new();
    for run in runs {
        let output = run.wait_with_output().unwrap();
        assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
        printed.push(text(&output.stdout).trim().to_string());
    }
    let mut styles: Vec<String> = printed
        .iter()
        .map(|path| {
            std::fs::read_to_string(path)
                .unwrap()
                .rsplit(", ")
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    styles.sort();
    let expected: Vec<String> = (0..processes).map(|i| format!("run {i}")).collect();
    assert_eq!(styles, expected, "each process's file holds its own text");
    let files = std::fs::read_dir(out.path().join("prompts")).unwrap().count();
    assert_eq!(
        files, processes,
        "one file per process, nothing overwritten or left over"
    );
}

#[test]
fn exit_codes_tell_failures_apart() {
    let invalid = swapgraph(&["run", "tests/cases/invalid/many-problems.yaml"]);
    assert_eq!(invalid.status.code(), Some(3));
    assert!(
        text(&invalid.stderr).contains("5 problems found; nothing was run"),
        "{}",
        text(&invalid.stderr)
    );

    let missing = swapgraph(&["validate", "no/such/workflow.yaml"]);
    assert_eq!(missing.status.code(), Some(3));
    assert!(text(&missing.stderr).contains("cannot read workflow no/such/workflow.yaml"));

    assert_eq!(
        swapgraph(&["run", "workflows/prompt_log.yaml", "--device", "tpu"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        swapgraph(&["run", "workflows/prompt_log.yaml", "--repeat", "0"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(swapgraph(&["frobnicate"]).status.code(), Some(2));

    let out = scratch("swapgraph-cli-fail");
    let blocker = out.path().join("file");
    std::fs::write(&blocker, "not a folder").unwrap();
    let failed = swapgraph(&[
        "run",
        "workflows/prompt_log.yaml",
        "--output-dir",
        blocker.to_str().unwrap(),
    ]);
    assert_eq!(failed.status.code(), Some(1), "{}", text(&failed.stderr));
    assert!(text(&failed.stderr).contains("node \"save\" (SaveText) failed: cannot create folder"));
}

#[test]
fn validate_prints_the_plan_or_the_report() {
    let valid = swapgraph(&["validate", "workflows/prompt_log.yaml"]);
    assert_eq!(valid.status.code(), Some(0));
    assert_eq!(
        text(&valid.stdout).trim(),
        "workflows/prompt_log.yaml is valid; 4 nodes run in this order: subject, style, prompt, save"
    );
    let json = swapgraph(&["validate", "--json", "tests/cases/invalid/cycle.yaml"]);
    assert_eq!(json.status.code(), Some(3));
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    insta::assert_json_snapshot!("validate_cycle_json", report);
    assert!(!Path::new("output").join("never").exists());
}

#[test]
fn blockswap_presets_apply_to_every_blockswap_node() {
    let out = scratch("swapgraph-cli-preset");
    let dir = out.path().to_str().unwrap();
    let preset = out.path().join("preset.json");
    std::fs::write(
        &preset,
        r#"{"enable_blockswap": true, "blockswap_blocks": 3, "blockswap_debug": true}"#,
    )
    .unwrap();
    let run = swapgraph(&[
        "run",
        "workflows/sdxl_blockswap.yaml",
        "--output-dir",
        dir,
        "--input-dir",
        dir,
        "--set-type",
        "BlockSwap.preset=preset.json",
    ]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));

    let set = format!("BlockSwap.preset={}", preset.display());
    let outside = swapgraph(&[
        "run",
        "workflows/sdxl_blockswap.yaml",
        "--output-dir",
        dir,
        "--set-type",
        &set,
    ]);
    assert_eq!(outside.status.code(), Some(1));
    assert!(
        text(&outside.stderr).contains("preset \"") && text(&outside.stderr).contains("is outside the input folder"),
        "{}",
        text(&outside.stderr)
    );

    std::fs::write(&preset, r#"{"blockswap_blocks": 2, "blockswap_upp": true}"#).unwrap();
    let bad = swapgraph(&[
        "run",
        "workflows/sdxl_blockswap.yaml",
        "--output-dir",
        dir,
        "--input-dir",
        dir,
        "--blockswap-preset",
        preset.to_str().unwrap(),
    ]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad.stderr).contains("unknown key \"blockswap_upp\""),
        "{}",
        text(&bad.stderr)
    );

    let typo = swapgraph(&[
        "validate",
        "workflows/sdxl_blockswap.yaml",
        "--set-type",
        "BlockSwp.preset=x",
    ]);
    assert_eq!(typo.status.code(), Some(3));
    assert!(
        text(&typo.stderr).contains("did you mean \"BlockSwap\"?"),
        "{}",
        text(&typo.stderr)
    );
}

#[test]
fn doctor_checks_the_cpu_and_says_what_it_cannot_measure() {
    let json = swapgraph(&["doctor", "--device", "cpu", "--json"]);
    assert_eq!(json.status.code(), Some(0), "{}", text(&json.stderr));
    let diagnosis: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let checks = diagnosis["checks"].as_array().unwrap();
    let status = |name: &str| {
        checks
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| c["status"].as_str().unwrap().to_string())
    };
    assert_eq!(status("BlockSwap round trip").as_deref(), Some("pass"), "{diagnosis}");
    assert_eq!(status("page-locked memory").as_deref(), Some("skip"));
    assert_eq!(diagnosis["recommendations"], serde_json::json!([]));
    assert_eq!(diagnosis["weights"], "f32", "the CPU's dtype");
    let eight_bit = swapgraph(&["doctor", "--device", "cpu", "--json", "--weight-dtype", "fp8_e4m3fn"]);
    let diagnosis: serde_json::Value = serde_json::from_slice(&eight_bit.stdout).unwrap();
    assert!(diagnosis["weights"].as_str().unwrap().starts_with("fp8"), "{diagnosis}");
    let blocks = swapgraph(&["doctor", "--device", "cpu", "--json", "--weight-dtype", "q4_k"]);
    let diagnosis: serde_json::Value = serde_json::from_slice(&blocks.stdout).unwrap();
    assert!(
        diagnosis["weights"].as_str().unwrap().starts_with("Q4_K blocks"),
        "{diagnosis}"
    );

    let out = scratch("swapgraph-doctor");
    let preset = out.path().join("preset.json");
    let write = swapgraph(&["doctor", "--device", "cpu", "--write-preset", preset.to_str().unwrap()]);
    assert_eq!(write.status.code(), Some(1));
    assert!(
        text(&write.stderr).contains("no recommendation to write"),
        "{}",
        text(&write.stderr)
    );
    assert!(text(&write.stdout).contains("PASS  BlockSwap round trip"));
    assert!(!preset.exists());
}

#[test]
fn doctor_checks_a_workflow_as_run_would_and_names_what_is_wrong_with_it() {
    let checked = swapgraph(&[
        "doctor",
        "--device",
        "cpu",
        "--json",
        "--workflow",
        "workflows/instantid_blockswap.yaml",
        "--set",
        "latent.width=256",
    ]);
    assert_eq!(checked.status.code(), Some(0), "{}", text(&checked.stderr));
    let report: serde_json::Value = serde_json::from_slice(&checked.stdout).unwrap();
    let workflow = &report["workflow"];
    assert_eq!(
        workflow["stopped"],
        serde_json::Value::Null,
        "every node rehearsed: {workflow}"
    );
    assert_eq!(
        workflow["budget_bytes"],
        serde_json::Value::Null,
        "no budget on the CPU"
    );
    assert_eq!(workflow["fits"], true);

    let bad_set = swapgraph(&[
        "doctor",
        "--device",
        "cpu",
        "--workflow",
        "workflows/instantid_blockswap.yaml",
        "--set",
        "sample.steps=0",
    ]);
    assert_eq!(bad_set.status.code(), Some(1));
    let stderr = text(&bad_set.stderr);
    assert!(stderr.contains("sample") && stderr.contains("steps"), "{stderr}");

    let no_folder = swapgraph(&[
        "doctor",
        "--device",
        "cpu",
        "--workflow",
        "workflows/instantid_blockswap.yaml",
        "--models-dir",
        "workflows/missing-folder",
    ]);
    assert_eq!(no_folder.status.code(), Some(1));
    assert!(
        text(&no_folder.stderr).contains("--models-dir workflows/missing-folder: not a folder"),
        "{}",
        text(&no_folder.stderr)
    );

    let missing = swapgraph(&["doctor", "--device", "cpu", "--workflow", "workflows/missing.yaml"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        text(&missing.stderr).contains("workflows/missing.yaml"),
        "{}",
        text(&missing.stderr)
    );
}
