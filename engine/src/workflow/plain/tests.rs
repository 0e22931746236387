//! Tests of the plain reader: the shipped forms it reads, what it hands to the general parser, and
//! that both readers agree wherever the plain one reads a text.

use super::*;
use crate::workflow::load::parse_general;
use proptest::prelude::*;

/// Reads `text` both ways; when the plain reader accepts it, the general parser must read the
/// same document.
fn agree(text: &str) -> bool {
    let Some(plain) = read(text) else { return false };
    match parse_general(text) {
        Ok(general) => assert_eq!(plain, general, "for:\n{text}"),
        Err(error) => panic!("plain reader accepted what the general parser refuses ({error}):\n{text}"),
    }
    true
}

#[test]
fn reads_the_editor_and_generated_forms() {
    let editor = "version: 1\nname: \"A → B\"\nnodes:\n  ckpt:\n    type: CheckpointLoaderSimple\n    params:\n      ckpt_name: builtin:tiny-sdxl\n    ui:\n      x: 0\n      y: -20.5\n  pos:\n    type: CLIPTextEncode\n    title: 'It''s positive'\n    inputs:\n      clip: ckpt.clip\n    params:\n      text: \"a photo, ünïcode\"\n    enabled: false\n";
    assert!(agree(editor));
    let generated = "version: 1\nname: generated\nnodes:\n  n0:\n    type: PrimitiveString\n    params: { value: start }\n  n1:\n    type: StringConcatenate\n    inputs: { string_a: n0.string }\n    params: { string_b: \"1\", delimiter: \" \" }\n    ui: { x: 1, y: 0 }\n";
    assert!(agree(generated));
    let commented = "# header\nversion: 1 # format\n\nnodes:\n   a:   # the loader\n      type: X\n      params: {n: 3, f: 0.25, b: true, s: a b:c, q: 'x' }\n    # between\n   b:\n      type: Y\n";
    assert!(agree(commented));
}

#[test]
fn the_shipped_workflows_read_alike() {
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../workflows")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(
                agree(&text),
                "the plain reader left {} to the general parser",
                path.display()
            );
        }
    }
}

#[test]
fn leaves_everything_else_to_the_general_parser() {
    let node = |rest: &str| format!("version: 1\nnodes:\n  a:\n    type: X\n{rest}");
    for text in [
        node("    params: { v: null }\n"),
        node("    params: { v: ~ }\n"),
        node("    params: { v: 1e3 }\n"),
        node("    params: { v: 007 }\n"),
        node("    params: { v: .5 }\n"),
        node("    params: { v: 0x10 }\n"),
        node("    params: { v: \"a\\nb\" }\n"),
        node("    params: { v: [1, 2] }\n"),
        node("    params:\n      v: |\n        text\n"),
        node("    params:\n      v: a\n        continued\n"),
        node("    params: { v: &x 1 }\n"),
        node("    params: { v: !!str 1 }\n"),
        node("    type: Y\n"),
        node("    colour: red\n"),
        node("    enabled: True\n"),
        node("    ui: { x: 1 }\n"),
        node("    inputs:\n"),
        node("\tparams: {}\n"),
        "version: 1\nnodes:\n  3:\n    type: X\n".to_string(),
        "version: 1\nnodes: {}\n".to_string(),
        "version: 1\n".to_string(),
        "version: 1\r\nnodes:\r\n  a:\r\n    type: X\r\n".to_string(),
        "---\nversion: 1\nnodes:\n  a:\n    type: X\n".to_string(),
    ] {
        assert!(read(&text).is_none(), "read:\n{text}");
    }
}

fn key() -> impl Strategy<Value = String> {
    "[a-z_][a-z0-9_-]{0,6}"
}

fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "-?[0-9]{1,4}",
        2 => "-?[0-9]{1,3}\\.[0-9]{1,3}",
        1 => "(true|false|True|yes|no|null|Null|~|y|n|inf|nan|NaN|\\.inf|Infinity|e5)",
        3 => "[a-zA-Z_/][a-zA-Z0-9 _./:,+=();~^-]{0,12}",
        2 => "\"[ !#-\\[\\]-~é→ü]{0,10}\"",
        2 => "'([ -&(-~é→ü]|''){0,10}'",
        1 => "\"[^\"\\\\\\n\\r]{0,4}\"",
    ]
}

/// One to three `key: value` entries as a flow mapping on the key's line, or as a block
/// under it.
fn mapping(name: &'static str, entry: BoxedStrategy<(String, String)>) -> impl Strategy<Value = String> {
    mapping_of(name, proptest::collection::vec(entry, 1..4))
}

fn mapping_of(
    name: &'static str,
    entries: impl Strategy<Value = Vec<(String, String)>>,
) -> impl Strategy<Value = String> {
    (entries, any::<bool>(), 1..4usize).prop_map(move |(entries, flow, indent)| {
        if flow {
            let body: Vec<_> = entries.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            format!("{name}: {{ {} }}\n", body.join(", "))
        } else {
            let pad = " ".repeat(indent);
            let body: String = entries.iter().map(|(k, v)| format!("{pad}{k}: {v}\n")).collect();
            format!("{name}:\n{body}")
        }
    })
}

fn node() -> impl Strategy<Value = Vec<String>> {
    let number = prop_oneof!["-?[0-9]{1,4}", "-?[0-9]{1,3}\\.[0-9]{1,3}"];
    let text = prop_oneof![6 => "[A-Za-z][A-Za-z0-9_]{0,10}", 1 => scalar()];
    let link = prop_oneof![6 => "[a-z][a-z0-9_]{0,5}\\.[a-z_]{1,6}", 1 => scalar()];
    (
        text.clone(),
        proptest::option::of(text),
        proptest::option::of(mapping("inputs", (key(), link).boxed())),
        proptest::option::of(mapping("params", (key(), scalar()).boxed())),
        proptest::option::of(mapping_of(
            "ui",
            (number.clone(), number, any::<bool>()).prop_map(|(x, y, swap)| {
                let entries = [("x".to_string(), x), ("y".to_string(), y)];
                if swap {
                    entries.into_iter().rev().collect()
                } else {
                    entries.to_vec()
                }
            }),
        )),
        proptest::option::of(prop_oneof![8 => Just("true"), 8 => Just("false"), 1 => Just("yes")]),
    )
        .prop_map(|(type_name, title, inputs, params, ui, enabled)| {
            let mut fields = vec![format!("type: {type_name}\n")];
            fields.extend(title.map(|t| format!("title: {t}\n")));
            fields.extend(inputs);
            fields.extend(params);
            fields.extend(ui);
            fields.extend(enabled.map(|e| format!("enabled: {e}\n")));
            fields
        })
        .prop_shuffle()
}

fn document() -> impl Strategy<Value = String> {
    (
        proptest::collection::vec((key(), node()), 1..4),
        1..4usize,
        1..4usize,
        proptest::option::of(scalar()),
        "(| # note|\n|\n  # note\n)",
    )
        .prop_map(|(nodes, outer, inner, name, gap)| {
            let mut text = String::from("version: 1\n");
            text.extend(name.map(|n| format!("name: {n}\n")));
            text.push_str("nodes:\n");
            for (id, fields) in nodes {
                text += &format!("{}{id}:{gap}\n", " ".repeat(outer));
                for field in fields {
                    for line in field.lines() {
                        text += &format!("{}{line}\n", " ".repeat(outer + inner));
                    }
                }
            }
            text
        })
}

/// Up to three edits of characters that mean something in YAML.
fn mutated() -> impl Strategy<Value = String> {
    let edit = (
        any::<prop::sample::Index>(),
        0..3u8,
        prop::sample::select(vec![
            ' ', ':', '#', '{', '}', ',', '\'', '"', '\n', '-', '&', '*', '!', '|', '>', '?', '[', '\\', '.', '0', 'a',
            'é', '\t', '\u{85}',
        ]),
    );
    (document(), proptest::collection::vec(edit, 0..4)).prop_map(|(text, edits)| {
        let mut chars: Vec<char> = text.chars().collect();
        for (index, kind, c) in edits {
            let i = index.index(chars.len());
            match kind {
                0 => chars.insert(i, c),
                1 => chars[i] = c,
                _ => drop(chars.remove(i)),
            }
        }
        chars.into_iter().collect()
    })
}

/// Runs `agree` on `cases` texts from `strategy`; the share the plain reader took.
fn acceptance(strategy: impl Strategy<Value = String>, cases: u32) -> f64 {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(cases));
    let accepted = std::cell::Cell::new(0);
    runner
        .run(&strategy, |text| {
            accepted.set(accepted.get() + usize::from(agree(&text)));
            Ok(())
        })
        .unwrap();
    let share = accepted.get() as f64 / f64::from(cases);
    eprintln!("the plain reader took {share:.2}");
    share
}

#[test]
fn agrees_with_the_general_parser() {
    let share = acceptance(document(), 2000);
    assert!(share > 0.25, "the plain reader took only {share:.2} of plain documents");
}

#[test]
fn agrees_with_the_general_parser_after_edits() {
    let share = acceptance(mutated(), 4000);
    assert!(
        share > 0.05,
        "the plain reader took only {share:.2} of edited documents"
    );
}
