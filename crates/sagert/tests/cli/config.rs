//! `sagert config`, `generate --dry-run` and `status` errors.

use super::util::{code, run_in, text, Workspace};

#[test]
fn example_is_valid_and_checks_clean() {
    let ws = Workspace::new();
    let out = run_in(ws.path(), &["config", "example"]);
    assert_eq!(code(&out), 0);
    let (example, _) = text(&out);
    assert!(example.contains("[roles.judge]"));
    ws.write("example.toml", &example);
    let out = run_in(ws.path(), &["config", "check", "example.toml"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stderr}");
    assert!(stdout.starts_with("example.toml: ok (3 endpoint(s), roles: expander, generator, safe_responder, unsafe_responder, judge,"), "{stdout}");
}

#[test]
fn unknown_key_fails_with_file_line_and_key() {
    let ws = Workspace::new();
    ws.write(
        "run.toml",
        "[run]\nseed = 1\n\n[roles.judge]\nmodel = \"m\"\nendpoints = []\ntemprature = 0.5\n",
    );
    let out = run_in(ws.path(), &["config", "check", "run.toml"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 2);
    assert!(stdout.is_empty());
    assert!(
        stderr.starts_with("error: run.toml:7: roles.judge.temprature: unknown field `temprature`"),
        "{stderr}"
    );
}

#[test]
fn unknown_taxonomy_selection_names_the_line() {
    let ws = Workspace::new();
    ws.write("run.toml", "[taxonomy]\nselect = [\n  \"crime\",\n  \"crime/notacategory\",\n]\n");
    let out = run_in(ws.path(), &["config", "check", "run.toml"]);
    let (_, stderr) = text(&out);
    assert_eq!(code(&out), 2);
    assert!(stderr.contains("run.toml:4: taxonomy.select[1]"), "{stderr}");
    assert!(stderr.contains("notacategory"), "{stderr}");
}

#[test]
fn env_and_flag_precedence_reach_the_command() {
    let ws = Workspace::new();
    ws.write("run.toml", "[budget]\nmax_requests = 100000\n");
    // A dry run over the whole taxonomy with a tiny request budget from the environment...
    let out = super::util::sagert()
        .current_dir(ws.path())
        .env("SAGERT_MAX_REQUESTS", "10")
        .args(["generate", "--dry-run", "-c", "run.toml"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stderr}");
    assert!(stdout.contains("exceed max_requests = 10"), "{stdout}");
    // ...and the flag over the environment.
    let out = super::util::sagert()
        .current_dir(ws.path())
        .env("SAGERT_MAX_REQUESTS", "10")
        .args(["generate", "--dry-run", "-c", "run.toml", "--max-requests", "20"])
        .output()
        .unwrap();
    assert!(text(&out).0.contains("exceed max_requests = 20"));
    let out = super::util::sagert()
        .current_dir(ws.path())
        .env("SAGERT_MAX_REQUESTS", "ten")
        .args(["generate", "--dry-run", "-c", "run.toml"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 2);
    assert!(text(&out).1.contains("SAGERT_MAX_REQUESTS"));
}

#[test]
fn dry_run_prints_calls_per_stage() {
    let ws = Workspace::new();
    ws.write(
        "run.toml",
        "[taxonomy]\nselect = [\"crime/cyber\"]\n[stages.expand]\nrounds = 1\ntopics_per_round = 1\n\
         [stages.raw_text]\nformats = [\"blog\"]\n[stages.diversify]\nepochs = 0\n",
    );
    let out = run_in(ws.path(), &["generate", "--dry-run", "-c", "run.toml", "--json"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stderr}");
    let e: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let leaves = e["leaves"].as_u64().unwrap();
    assert!(leaves >= 6, "crime/cyber has leaves: {leaves}");
    assert_eq!(e["topics"], leaves);
    assert_eq!(e["queries"], leaves * 9);
    let stages: Vec<&str> =
        e["stages"].as_array().unwrap().iter().map(|s| s["stage"].as_str().unwrap()).collect();
    assert_eq!(
        stages,
        ["expand", "seed_instructions", "raw_text", "extract", "diversify", "chosen", "rejected", "validate"]
    );

    // Without roles a real run stops before it creates anything.
    let out = run_in(ws.path(), &["generate", "-c", "run.toml"]);
    assert_eq!(code(&out), 2);
    assert!(text(&out).1.contains("[roles.expander]"), "{}", text(&out).1);
    assert!(!ws.path().join("runs").exists(), "no run directory for a configuration that cannot run");
}

#[test]
fn status_of_a_directory_without_a_run_is_an_error() {
    let ws = Workspace::new();
    let out = run_in(ws.path(), &["status", "."]);
    assert_eq!(code(&out), 2);
    assert!(text(&out).1.starts_with("error: "));
    assert!(!ws.path().join("sagert.sqlite").exists(), "status must not create a store");
}
