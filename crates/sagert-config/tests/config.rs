//! Behaviour of configuration parsing, checks and precedence.

use std::collections::HashMap;
use std::path::PathBuf;

use sagert_backend::ModelRole;
use sagert_config::{load, parse, resolve, ConfigError, Overrides, RunConfig, EXAMPLE};

fn parse_err(src: &str) -> ConfigError {
    parse(src, "run.toml").expect_err("expected an error")
}

#[test]
fn example_parses_and_documents_every_section() {
    let c = parse(EXAMPLE, "example.toml").unwrap();
    assert_eq!(c.run.name, "example");
    assert_eq!(c.roles.len(), 5);
    assert_eq!(c.roles.get(ModelRole::Judge).unwrap().model, "gpt-4o-mini");
    assert_eq!(c.endpoints["openai"].api_key_env.as_deref(), Some("OPENAI_API_KEY"));
    assert_eq!(c.prices["gpt-4o-mini"].output_per_mtok, 0.60);
    assert_eq!(c.stages.extract.jailbreak_types.len(), 9);
    assert_eq!(c.budget.max_tokens, Some(20_000_000));
    assert_eq!(c.stages.validate.judge, sagert_config::JudgeKind::Llm);
    assert_eq!(c.stages.split.test_fraction, 0.2);
    assert_eq!(c.stages.export.formats.len(), 4);
}

#[test]
fn empty_file_gives_defaults() {
    let c = parse("", "run.toml").unwrap();
    assert_eq!(c, RunConfig::default());
    assert_eq!(c.stages.raw_text.formats.len(), 4);
    assert_eq!(c.retry.max_retries, 6);
}

#[test]
fn unknown_key_names_path_and_line() {
    let src = "[run]\nseed = 1\n\n[roles.judge]\nmodel = \"m\"\nendpoints = []\ntemprature = 0.5\n";
    match parse_err(src) {
        ConfigError::Parse { file, line, key, message } => {
            assert_eq!(file, "run.toml");
            assert_eq!(key, "roles.judge.temprature");
            assert_eq!(line, 7, "{message}");
            assert!(message.contains("unknown field `temprature`"), "{message}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn unknown_top_level_section_and_role() {
    match parse_err("[runn]\nseed = 1\n") {
        ConfigError::Parse { key, line, .. } => {
            assert_eq!(key, "runn");
            assert_eq!(line, 1);
        }
        other => panic!("unexpected {other:?}"),
    }
    match parse_err("[endpoints.a]\nbase_url = \"http://x/v1\"\n\n[roles.critic]\nmodel = \"m\"\n") {
        ConfigError::Parse { message, line, .. } => {
            assert!(message.contains("critic"), "{message}");
            assert_eq!(line, 4);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn wrong_type_and_syntax_errors_have_lines() {
    match parse_err("[run]\nseed = \"forty\"\n") {
        ConfigError::Parse { key, line, .. } => {
            assert_eq!(key, "run.seed");
            assert_eq!(line, 2);
        }
        other => panic!("unexpected {other:?}"),
    }
    match parse_err("[run]\nseed = 1\nseed = 2\n") {
        ConfigError::Parse { line, .. } => assert_eq!(line, 3),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn cross_field_problems_are_all_collected_with_lines() {
    let src = r#"
[endpoints.a]
base_url = "ftp://nope"
concurrency = 0
api_key_env = "sk-live-abc"

[roles.judge]
model = ""
endpoints = ["a", "missing"]
temperature = 3.5

[stages.extract]
jailbreak_types = ["direct", "telepathy"]

[stages.dedup]
minhash_threshold = 1.5
"#;
    let err = parse_err(src);
    let ConfigError::Invalid { file, problems } = &err else { panic!("unexpected {err:?}") };
    assert_eq!(file, "run.toml");
    let find = |key: &str| {
        problems.iter().find(|p| p.key == key).unwrap_or_else(|| panic!("no problem for {key}: {problems:?}"))
    };
    assert_eq!(find("endpoints.a.base_url").line, 3);
    assert_eq!(find("endpoints.a.concurrency").line, 4);
    assert_eq!(find("endpoints.a.api_key_env").line, 5);
    assert_eq!(find("roles.judge.model").line, 8);
    assert_eq!(find("roles.judge.endpoints.1").line, 9);
    assert!(find("roles.judge.endpoints.1").message.contains("`missing`"));
    assert_eq!(find("roles.judge.temperature").line, 10);
    assert_eq!(find("stages.extract.jailbreak_types.1").line, 13);
    assert_eq!(find("stages.dedup.minhash_threshold").line, 16);
    assert_eq!(problems.len(), 8, "{problems:?}");
    // The display lists every problem, one per line.
    assert_eq!(err.to_string().lines().count(), 9);
}

#[test]
fn generation_settings_are_checked_with_their_lines() {
    let src = r#"[stages.validate]
judge = "llm"
harm_threshold = 2.0

[stages.split]
test_fraction = 1.0

[stages.export]
formats = ["trl", "csv"]
"#;
    let err = parse_err(src);
    let ConfigError::Invalid { problems, .. } = &err else { panic!("unexpected {err:?}") };
    let find = |key: &str| {
        problems.iter().find(|p| p.key == key).unwrap_or_else(|| panic!("no problem for {key}: {problems:?}"))
    };
    assert!(find("stages.validate.judge").message.contains("[roles.judge]"));
    assert_eq!(find("stages.validate.harm_threshold").line, 3);
    assert_eq!(find("stages.split.test_fraction").line, 6);
    assert!(find("stages.export.formats.1").message.contains("`csv`"));
    assert_eq!(problems.len(), 4, "{problems:?}");
    assert!(parse("[stages.validate]\njudge = \"oracle\"\n", "run.toml").is_err());
}

#[test]
fn precedence_cli_over_env_over_file_over_defaults() {
    let file =
        parse("[run]\nseed = 1\noutput_dir = \"from-file\"\n[budget]\nmax_requests = 10\n", "f").unwrap();
    let env = Overrides {
        seed: Some(2),
        output_dir: Some("from-env".into()),
        max_tokens: Some(99),
        ..Default::default()
    };
    let cli = Overrides { seed: Some(3), ..Default::default() };
    let c = resolve(file, &env, &cli);
    assert_eq!(c.run.seed, 3, "cli wins");
    assert_eq!(c.run.output_dir, PathBuf::from("from-env"), "env over file");
    assert_eq!(c.budget.max_requests, Some(10), "file where nothing overrides");
    assert_eq!(c.budget.max_tokens, Some(99));
    assert_eq!(c.budget.max_cost_usd, None, "default");
}

#[test]
fn env_overrides_parse_with_clear_errors() {
    let vars: HashMap<&str, &str> = [("SAGERT_SEED", "7"), ("SAGERT_MAX_COST_USD", "1.5")].into();
    let o = Overrides::from_env(|k| vars.get(k).map(|v| v.to_string())).unwrap();
    assert_eq!(o.seed, Some(7));
    assert_eq!(o.max_cost_usd, Some(1.5));

    let err = Overrides::from_env(|k| (k == "SAGERT_MAX_REQUESTS").then(|| "lots".to_string())).unwrap_err();
    assert_eq!(
        err.to_string(),
        "environment variable SAGERT_MAX_REQUESTS: cannot parse `lots` as an unsigned integer"
    );
    assert!(Overrides::from_env(|k| (k == "SAGERT_MAX_COST_USD").then(|| "-1".to_string())).is_err());
}

#[test]
fn load_reads_file_then_env_then_cli() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.toml");
    std::fs::write(&path, "[run]\nseed = 5\n").unwrap();
    let cli = Overrides { max_requests: Some(4), ..Default::default() };
    let loaded = load(Some(&path), |k| (k == "SAGERT_SEED").then(|| "6".to_string()), &cli).unwrap();
    assert_eq!(loaded.config.run.seed, 6);
    assert_eq!(loaded.config.budget.max_requests, Some(4));
    assert_eq!(loaded.line_of("run.seed"), 2);

    std::fs::write(&path, b"[run]\nname = \"\xff\"\n").unwrap();
    let err = load(Some(&path), |_| None, &Overrides::default()).unwrap_err();
    assert!(matches!(err, ConfigError::Utf8 { .. }), "{err:?}");
    let err = load(Some(&dir.path().join("absent.toml")), |_| None, &Overrides::default()).unwrap_err();
    assert!(err.to_string().starts_with("cannot read config"), "{err}");
}

#[test]
fn embedded_endpoints_need_no_url_and_reject_http_settings() {
    let ok = parse(
        "[endpoints.local]\nkind = \"embedded\"\nmodel = \"smollm2-135m-instruct\"\nthreads = 2\n\
         [roles.target]\nmodel = \"smollm2-135m-instruct\"\nendpoints = [\"local\"]\n",
        "run.toml",
    )
    .unwrap();
    assert_eq!(ok.endpoints["local"].kind, sagert_config::EndpointKind::Embedded);
    assert_eq!(ok.endpoints["local"].context_per_sequence, 2048);

    let err = parse_err(
        "[endpoints.local]\nkind = \"embedded\"\nbase_url = \"http://x/v1\"\nthreads = 0\n\
         [endpoints.remote]\nbase_url = \"http://y/v1\"\nmodel_path = \"m.gguf\"\n",
    );
    let ConfigError::Invalid { problems, .. } = err else { panic!("{err:?}") };
    let keys: Vec<(&str, usize)> = problems.iter().map(|p| (p.key.as_str(), p.line)).collect();
    assert_eq!(
        keys,
        [("endpoints.local.base_url", 3), ("endpoints.local.threads", 4), ("endpoints.remote.model_path", 7)]
    );
}
