//! Reading a configuration file: syntax and unknown keys with the key's path and
//! line, then the checks that need the whole file.

use std::collections::BTreeSet;
use std::path::Path;

use crate::error::{ConfigError, Problem};
use crate::model::{EndpointKind, RunConfig, EXPORT_FORMATS, JAILBREAK_TYPES, RAW_TEXT_FORMATS};

/// A configuration with the text it came from, so that later checks (the
/// taxonomy selection, say) can point at a line too.
#[derive(Clone, Debug)]
pub struct LoadedConfig {
    /// The parsed configuration, overrides applied.
    pub config: RunConfig,
    /// The file name as given, or `<defaults>` when there was no file.
    pub file: String,
    /// The file's text (empty for defaults).
    pub source: String,
}

impl LoadedConfig {
    /// The 1-based line of a dotted key path in the source (`roles.judge.model`,
    /// `taxonomy.select.2`), or 0 when it is not in the file.
    pub fn line_of(&self, key_path: &str) -> usize {
        locate(&self.source, key_path)
    }
}

/// Read and parse a configuration file.
pub fn read_file(path: &Path) -> Result<(RunConfig, String), ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Io { path: path.to_path_buf(), source })?;
    let source = String::from_utf8(bytes)
        .map_err(|e| ConfigError::Utf8 { path: path.to_path_buf(), offset: e.utf8_error().valid_up_to() })?;
    let config = parse(&source, &path.display().to_string())?;
    Ok((config, source))
}

/// Parse a configuration from text; `file` names it in errors.
pub fn parse(source: &str, file: &str) -> Result<RunConfig, ConfigError> {
    let de = toml::Deserializer::new(source);
    let config: RunConfig = serde_path_to_error::deserialize(de).map_err(|err| {
        let mut key = err.path().to_string();
        let inner = err.into_inner();
        let message = inner.message().trim().to_string();
        if let Some(field) = unknown_field(&message) {
            // serde_path_to_error usually ends the path with the unknown key already.
            if !(key == field || key.ends_with(&format!(".{field}"))) {
                key = if key == "." || key.is_empty() { field.to_string() } else { format!("{key}.{field}") };
            }
        }
        if key == "." {
            key = "-".into();
        }
        let line = match inner.span() {
            Some(span) => line_at(source, span.start),
            None => locate(source, &key),
        };
        ConfigError::Parse { file: file.to_string(), line, key, message }
    })?;
    let problems = check(&config, source);
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::Invalid { file: file.to_string(), problems })
    }
}

/// The field name in serde's "unknown field `x`, expected ..." message.
fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

/// 1-based line of a byte offset.
pub(crate) fn line_at(source: &str, offset: usize) -> usize {
    source.as_bytes()[..offset.min(source.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

/// 1-based line where a dotted key path is defined, or 0.
pub(crate) fn locate(source: &str, key_path: &str) -> usize {
    let Ok(doc) = toml_edit::ImDocument::parse(source) else { return 0 };
    let mut item: &toml_edit::Item = doc.as_item();
    let mut line = 0;
    for segment in key_path.split('.').filter(|s| !s.is_empty()) {
        if let Some(table) = item.as_table_like() {
            let Some((key, next)) = table.get_key_value(segment) else { break };
            if let Some(span) = key.span() {
                line = line_at(source, span.start);
            }
            item = next;
        } else if let (Some(array), Ok(index)) = (item.as_array(), segment.parse::<usize>()) {
            let Some(value) = array.get(index) else { break };
            if let Some(span) = value.span() {
                line = line_at(source, span.start);
            }
            break;
        } else {
            break;
        }
    }
    line
}

/// Checks across fields. Every problem is collected.
fn check(config: &RunConfig, source: &str) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut bad = |key: String, message: String| {
        let line = locate(source, &key);
        problems.push(Problem { line, key, message });
    };

    for (name, ep) in &config.endpoints {
        let at = |field: &str| format!("endpoints.{name}.{field}");
        match ep.kind {
            EndpointKind::Openai => {
                if !(ep.base_url.starts_with("http://") || ep.base_url.starts_with("https://")) {
                    bad(at("base_url"), format!("must be an http:// or https:// URL, got `{}`", ep.base_url));
                }
                if ep.model_path.is_some() {
                    bad(at("model_path"), "is for `kind = \"embedded\"` endpoints only".into());
                }
            }
            EndpointKind::Embedded => {
                if !ep.base_url.is_empty() {
                    bad(at("base_url"), "an embedded endpoint runs in-process: leave base_url out".into());
                }
                if ep.api_key_env.is_some() {
                    bad(at("api_key_env"), "an embedded endpoint needs no API key".into());
                }
                if ep.threads == 0 {
                    bad(at("threads"), "must be at least 1".into());
                }
                if ep.context_per_sequence < 64 {
                    bad(at("context_per_sequence"), "must be at least 64 tokens".into());
                }
            }
        }
        if ep.concurrency == 0 {
            bad(at("concurrency"), "must be at least 1".into());
        }
        if !(ep.timeout_secs.is_finite() && ep.timeout_secs > 0.0) {
            bad(at("timeout_secs"), "must be a positive number of seconds".into());
        }
        if !(ep.connect_timeout_secs.is_finite() && ep.connect_timeout_secs > 0.0) {
            bad(at("connect_timeout_secs"), "must be a positive number of seconds".into());
        }
        if ep.requests_per_minute == Some(0) {
            bad(at("requests_per_minute"), "must be at least 1 (leave it out for no limit)".into());
        }
        if ep.tokens_per_minute == Some(0) {
            bad(at("tokens_per_minute"), "must be at least 1 (leave it out for no limit)".into());
        }
        if let Some(var) = &ep.api_key_env {
            let valid = !var.is_empty()
                && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !var.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                bad(at("api_key_env"), format!("`{var}` is not an environment variable name (put the variable's NAME here, never the key)"));
            }
        }
    }

    for (role, rc) in config.roles.iter() {
        let at = |field: &str| format!("roles.{role}.{field}");
        if rc.model.trim().is_empty() {
            bad(at("model"), "is required: the model id this role uses".into());
        }
        if rc.endpoints.is_empty() {
            bad(at("endpoints"), "names no endpoint".into());
        }
        for (i, ep) in rc.endpoints.iter().enumerate() {
            if !config.endpoints.contains_key(ep) {
                let known: Vec<&str> = config.endpoints.keys().map(String::as_str).collect();
                bad(
                    format!("roles.{role}.endpoints.{i}"),
                    format!("no endpoint named `{ep}` (defined: {})", list_or_none(&known)),
                );
            }
        }
        let mut seen = BTreeSet::new();
        for ep in &rc.endpoints {
            if !seen.insert(ep) {
                bad(at("endpoints"), format!("names `{ep}` twice"));
            }
        }
        if let Some(t) = rc.temperature {
            if !(0.0..=2.0).contains(&t) {
                bad(at("temperature"), format!("must be between 0 and 2, got {t}"));
            }
        }
        if let Some(p) = rc.top_p {
            if !(p > 0.0 && p <= 1.0) {
                bad(at("top_p"), format!("must be in (0, 1], got {p}"));
            }
        }
        if rc.max_tokens == Some(0) {
            bad(at("max_tokens"), "must be at least 1".into());
        }
    }

    for (model, price) in &config.prices {
        for (field, v) in
            [("input_per_mtok", price.input_per_mtok), ("output_per_mtok", price.output_per_mtok)]
        {
            if !(v.is_finite() && v >= 0.0) {
                bad(format!("prices.{model}.{field}"), format!("must be a non-negative number, got {v}"));
            }
        }
    }
    if let Some(c) = config.budget.max_cost_usd {
        if !(c.is_finite() && c >= 0.0) {
            bad("budget.max_cost_usd".into(), format!("must be a non-negative number, got {c}"));
        }
    }

    let st = &config.stages;
    if st.expand.rounds == 0 {
        bad("stages.expand.rounds".into(), "must be at least 1".into());
    }
    if st.expand.topics_per_round == 0 {
        bad("stages.expand.topics_per_round".into(), "must be at least 1".into());
    }
    check_subset(&mut bad, "stages.raw_text.formats", &st.raw_text.formats, &RAW_TEXT_FORMATS);
    check_subset(&mut bad, "stages.extract.jailbreak_types", &st.extract.jailbreak_types, &JAILBREAK_TYPES);
    if st.extract.per_type == 0 {
        bad("stages.extract.per_type".into(), "must be at least 1".into());
    }
    if st.responses.chosen_candidates == 0 {
        bad("stages.responses.chosen_candidates".into(), "must be at least 1".into());
    }
    if st.responses.rejected_candidates == 0 {
        bad("stages.responses.rejected_candidates".into(), "must be at least 1".into());
    }
    let rate = st.validate.expected_failure_rate;
    if !(0.0..1.0).contains(&rate) {
        bad("stages.validate.expected_failure_rate".into(), format!("must be in [0, 1), got {rate}"));
    }
    for (key, v) in [
        ("stages.dedup.minhash_threshold", st.dedup.minhash_threshold),
        ("stages.dedup.embedding_threshold", st.dedup.embedding_threshold),
    ] {
        if !(v > 0.0 && v <= 1.0) {
            bad(key.into(), format!("must be in (0, 1], got {v}"));
        }
    }
    for (key, v) in [
        ("stages.validate.harm_threshold", st.validate.harm_threshold),
        ("stages.validate.query_harm_threshold", st.validate.query_harm_threshold),
        ("stages.validate.harm_margin", st.validate.harm_margin),
    ] {
        if !(0.0..=1.0).contains(&v) {
            bad(key.into(), format!("must be in [0, 1], got {v}"));
        }
    }
    if st.validate.category_top_k == 0 {
        bad("stages.validate.category_top_k".into(), "must be at least 1".into());
    }
    if st.validate.judge == crate::model::JudgeKind::Llm && config.roles.judge.is_none() {
        bad("stages.validate.judge".into(), "is `llm`, but there is no [roles.judge]".into());
    }
    if !(1..=1024).contains(&st.dedup.num_perm) {
        bad("stages.dedup.num_perm".into(), format!("must be in 1..=1024, got {}", st.dedup.num_perm));
    }
    let tf = st.split.test_fraction;
    if !(0.0..1.0).contains(&tf) {
        bad("stages.split.test_fraction".into(), format!("must be in [0, 1), got {tf}"));
    }
    check_subset(&mut bad, "stages.export.formats", &st.export.formats, &EXPORT_FORMATS);
    if st.balance.per_cell == Some(0) {
        bad("stages.balance.per_cell".into(), "must be at least 1 (leave it out for no cap)".into());
    }
    problems
}

fn check_subset(bad: &mut impl FnMut(String, String), key: &str, values: &[String], allowed: &[&str]) {
    if values.is_empty() {
        bad(key.into(), format!("is empty; choose from: {}", allowed.join(", ")));
    }
    let mut seen = BTreeSet::new();
    for (i, v) in values.iter().enumerate() {
        if !allowed.contains(&v.as_str()) {
            bad(format!("{key}.{i}"), format!("unknown value `{v}`; choose from: {}", allowed.join(", ")));
        } else if !seen.insert(v) {
            bad(format!("{key}.{i}"), format!("`{v}` is listed twice"));
        }
    }
}

fn list_or_none(items: &[&str]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}
