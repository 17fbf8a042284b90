//! `sagert embed`, `sagert toxicity` and `sagert classify`: the small offline
//! encoders over a JSONL file.
//!
//! Each reads JSONL (one object per line, blank lines skipped), takes a string
//! field of every row, and writes the rows back with their other fields
//! unchanged and one field added (replaced if present): `embedding` (the 384
//! floats of MiniLM-L6), `toxicity` (the six Jigsaw scores), or `safety`
//! (`refusal` and `harmful` probabilities, and the labels `is_refusal` and
//! `is_harmful` at 0.5). The whole input is checked before any model loads:
//! a malformed line, a missing or non-string field is an error naming the
//! file, the line and the field, and no output is written. The output is
//! written atomically at the end. Models are fetched on first use.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sagert_encoders::embed::{EmbedOptions, Embedder};
use sagert_encoders::safety::SafetyClassifier;
use sagert_encoders::toxicity::{ToxicityOptions, ToxicityScorer};
use sagert_engine::io::{read_text, write_atomic};
use sagert_engine::EngineError;
use serde_json::{json, Map, Value};

use crate::cli::{ClassifyArgs, EmbedArgs, EncodeIo, ToxicityArgs};
use crate::cmd::model_cache;
use sagert_backend::json::kind;

/// Rows encoded per step of the progress bar.
const CHUNK: usize = 256;

/// Most threads by default: candle gains little past this on one machine.
const MAX_DEFAULT_THREADS: usize = 8;

pub(crate) fn embed(args: EmbedArgs) -> anyhow::Result<ExitCode> {
    let rows = read_rows(&args.io.input, &args.field, None)?;
    let threads = threads(&args.io);
    let dir = model_cache()?.ensure("minilm-l6")?;
    let embedder = Embedder::load(&dir, EmbedOptions { threads, batch_size: 32 })
        .with_context(|| format!("cannot load the MiniLM embedder from {}", dir.display()))?;
    encode(&args.io, "embed", "embedding", rows, |texts, _| {
        Ok(embedder.embed(texts)?.iter().map(|v| short_floats(v)).collect())
    })
}

pub(crate) fn toxicity(args: ToxicityArgs) -> anyhow::Result<ExitCode> {
    let rows = read_rows(&args.io.input, &args.field, None)?;
    let threads = threads(&args.io);
    let dir = model_cache()?.ensure("toxicity")?;
    let scorer = ToxicityScorer::load_with(&dir, ToxicityOptions { threads, batch_size: 128 })
        .with_context(|| format!("cannot load the toxicity scorer from {}", dir.display()))?;
    encode(&args.io, "toxicity", "toxicity", rows, |texts, _| {
        Ok(scorer.score(texts)?.into_iter().map(|s| json!(s)).collect())
    })
}

pub(crate) fn classify(args: ClassifyArgs) -> anyhow::Result<ExitCode> {
    let rows = read_rows(&args.io.input, &args.field, args.prompt_field.as_deref())?;
    let threads = threads(&args.io);
    let dir = model_cache()?.ensure("minilm-l6")?;
    let classifier = SafetyClassifier::load(&dir, EmbedOptions { threads, batch_size: 32 })
        .with_context(|| format!("cannot load the safety classifier over {}", dir.display()))?;
    encode(&args.io, "classify", "safety", rows, |texts, prompts| {
        Ok(classifier
            .classify(texts, prompts)?
            .into_iter()
            .map(|s| {
                json!({
                    "refusal": s.refusal, "harmful": s.harmful,
                    "is_refusal": s.is_refusal(), "is_harmful": s.is_harmful(),
                })
            })
            .collect())
    })
}

/// One input row: the object, the text, and the prompt when asked for.
struct Row {
    object: Map<String, Value>,
    text: String,
    prompt: Option<String>,
}

/// The thread count: the flag, else the cores this process may use (at most
/// [`MAX_DEFAULT_THREADS`]).
fn threads(io: &EncodeIo) -> usize {
    io.threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_DEFAULT_THREADS)
    })
}

/// Reads every row, checking `field` (and `prompt_field`) is a string in each.
fn read_rows(path: &Path, field: &str, prompt_field: Option<&str>) -> anyhow::Result<Vec<Row>> {
    let file = path.display().to_string();
    let text = read_text(path)?;
    let bad = |line: usize, field: &str, message: String| EngineError::Input {
        file: file.clone(),
        line,
        field: field.to_string(),
        message,
    };
    let string_field = |obj: &Map<String, Value>, line: usize, name: &str| match obj.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        None => Err(bad(line, name, "missing".into())),
        Some(other) => Err(bad(line, name, format!("must be a string, is {}", kind(other)))),
    };
    let mut rows = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let value: Value =
            serde_json::from_str(raw).map_err(|e| bad(line, "-", format!("not valid JSON: {e}")))?;
        let Value::Object(object) = value else {
            return Err(bad(line, "-", format!("expected a JSON object, found {}", kind(&value))).into());
        };
        let text = string_field(&object, line, field)?;
        let prompt = prompt_field.map(|p| string_field(&object, line, p)).transpose()?;
        rows.push(Row { object, text, prompt });
    }
    Ok(rows)
}

/// A JSON array of `v`, each float written as its shortest f32 form (not as
/// the f64 it widens to, which would take twice the digits).
fn short_floats(v: &[f32]) -> Value {
    Value::Array(
        v.iter()
            .map(|x| {
                let shortest: f64 = x.to_string().parse().expect("a float's Display parses");
                serde_json::Number::from_f64(shortest).map_or(Value::Null, Value::Number)
            })
            .collect(),
    )
}

/// Runs `f` over the rows in chunks, adds its values as field `key`, and
/// writes the output atomically; `command` names the progress bar and summary.
fn encode(
    io: &EncodeIo,
    command: &str,
    key: &str,
    rows: Vec<Row>,
    f: impl Fn(&[&str], Option<&[&str]>) -> anyhow::Result<Vec<Value>>,
) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let bar = progress_bar(rows.len() as u64, command);
    let mut out = Vec::new();
    for chunk in rows.chunks(CHUNK) {
        let texts: Vec<&str> = chunk.iter().map(|r| r.text.as_str()).collect();
        // Every row has a prompt or none has (read_rows checks them all).
        let prompts: Option<Vec<&str>> = chunk.iter().map(|r| r.prompt.as_deref()).collect();
        let values = f(&texts, prompts.as_deref())?;
        for (row, value) in chunk.iter().zip(values) {
            let mut object = row.object.clone();
            object.insert(key.to_string(), value);
            serde_json::to_writer(&mut out, &Value::Object(object))?;
            out.push(b'\n');
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    write_atomic(&io.out, &out)?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{command}: {} rows in {secs:.1} s ({:.1} rows/s); wrote {}",
        rows.len(),
        rows.len() as f64 / secs.max(1e-9),
        io.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
fn progress_bar(total: u64, prefix: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{prefix} {bar:30} {pos}/{len} {per_sec} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(prefix.to_string());
    bar
}
