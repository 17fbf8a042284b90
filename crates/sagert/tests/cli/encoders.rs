//! `sagert embed`, `sagert toxicity` and `sagert classify` on small JSONL
//! files of placeholder texts. The bad-input cases always run (input is
//! checked before any model loads); the others skip, with a printed reason,
//! when the model is not cached, except under CI, which fetches it.

use super::util::{cached, code, read_jsonl, run_in, text, Workspace};

const ROWS: &str = r#"{"id": "a", "text": "Have a nice day, placeholder friend.", "meta": {"n": 1}}
{"id": "b", "text": "A placeholder sentence about the weather."}

{"id": "c", "text": "", "extra": [1, 2]}
"#;

#[test]
fn embed_adds_unit_vectors_and_keeps_the_other_fields() {
    if !cached("minilm-l6") {
        return;
    }
    let ws = Workspace::new();
    ws.write("in.jsonl", ROWS);
    let out =
        run_in(ws.path(), &["embed", "--input", "in.jsonl", "--out", "out/emb.jsonl", "--threads", "1"]);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    let rows = read_jsonl(&ws.path().join("out/emb.jsonl"));
    assert_eq!(rows.len(), 3);
    assert_eq!(rows.iter().map(|r| r["id"].as_str().unwrap()).collect::<Vec<_>>(), ["a", "b", "c"]);
    assert_eq!(rows[0]["meta"]["n"], 1);
    assert_eq!(rows[2]["extra"], serde_json::json!([1, 2]));
    for row in &rows {
        let v: Vec<f64> = row["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        assert_eq!(v.len(), 384);
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-3, "{norm}");
    }
}

#[test]
fn toxicity_adds_six_scores() {
    if !cached("toxicity") {
        return;
    }
    let ws = Workspace::new();
    ws.write("in.jsonl", ROWS);
    let out = run_in(ws.path(), &["toxicity", "-i", "in.jsonl", "-o", "tox.jsonl", "--threads", "2"]);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    let rows = read_jsonl(&ws.path().join("tox.jsonl"));
    assert_eq!(rows.len(), 3);
    for row in &rows {
        let scores = row["toxicity"].as_object().unwrap();
        let labels: Vec<&str> = scores.keys().map(String::as_str).collect();
        for label in ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"] {
            assert!(labels.contains(&label), "{labels:?}");
            let s = scores[label].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&s), "{label} {s}");
        }
    }
    // A friendly placeholder is not toxic.
    assert!(rows[0]["toxicity"]["toxic"].as_f64().unwrap() < 0.5);
}

#[test]
fn classify_adds_probabilities_and_labels() {
    if !cached("minilm-l6") {
        return;
    }
    let ws = Workspace::new();
    ws.write(
        "in.jsonl",
        r#"{"id": 1, "prompt": "placeholder request", "response": "I'm sorry, but I can't help with that request."}
{"id": 2, "prompt": "placeholder question about gardens", "response": "Here is a placeholder answer about gardens: water the plants."}
"#,
    );
    for extra in [&["--prompt-field", "prompt"][..], &[]] {
        let mut args = vec!["classify", "-i", "in.jsonl", "-o", "cls.jsonl", "--threads", "2"];
        args.extend_from_slice(extra);
        let out = run_in(ws.path(), &args);
        assert_eq!(code(&out), 0, "{:?}", text(&out));
        let rows = read_jsonl(&ws.path().join("cls.jsonl"));
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1]["prompt"], "placeholder question about gardens");
        for row in &rows {
            let s = &row["safety"];
            for key in ["refusal", "harmful"] {
                let p = s[key].as_f64().unwrap();
                assert!((0.0..=1.0).contains(&p), "{key} {p}");
                assert_eq!(s[format!("is_{key}")].as_bool().unwrap(), p >= 0.5, "{s}");
            }
        }
        assert_eq!(rows[0]["safety"]["is_refusal"], true, "{extra:?}: {}", rows[0]);
    }
}

#[test]
fn bad_input_names_file_line_and_field_and_writes_nothing() {
    let ws = Workspace::new();
    let cases: [(&str, &[&str], &str, &[&str]); 5] = [
        ("embed", &[], "{\"text\": \"ok\"}\n{\"text\": \"cut\"\n", &["in.jsonl:2", "not valid JSON"]),
        (
            "toxicity",
            &["--field", "body"],
            "{\"body\": \"ok\"}\n\n{\"text\": \"x\"}\n",
            &["in.jsonl:3", "body", "missing"],
        ),
        ("embed", &[], "{\"text\": 7}\n", &["in.jsonl:1", "text", "must be a string"]),
        (
            "classify",
            &["--prompt-field", "prompt"],
            "{\"response\": \"r\", \"prompt\": null}\n",
            &["in.jsonl:1", "prompt"],
        ),
        ("classify", &[], "[\"response\"]\n", &["in.jsonl:1", "expected a JSON object"]),
    ];
    for (command, extra, input, needles) in cases {
        ws.write("in.jsonl", input);
        let mut args = vec![command, "--input", "in.jsonl", "--out", "out.jsonl"];
        args.extend_from_slice(extra);
        let out = run_in(ws.path(), &args);
        let (_, stderr) = text(&out);
        assert_eq!(code(&out), 2, "{command} {input:?}: {stderr}");
        for needle in needles {
            assert!(stderr.contains(needle), "{command} {input:?}: {stderr:?} lacks {needle:?}");
        }
        assert!(!ws.path().join("out.jsonl").exists(), "{command} wrote output on bad input");
    }
    let out = run_in(ws.path(), &["embed", "--input", "absent.jsonl", "--out", "out.jsonl"]);
    assert_eq!(code(&out), 2);
    assert!(text(&out).1.contains("absent.jsonl"), "{:?}", text(&out));
}
