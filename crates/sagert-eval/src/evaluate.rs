//! Evaluating a model on a prompt set: its responses, the judges' verdicts,
//! and rates per taxonomy category with bootstrap confidence intervals.
//!
//! 1. [`read_prompts`] reads a prompt set: `sagert import`'s `prompts.jsonl`,
//!    the red-team export of a generated dataset (`redteam/prompts.jsonl`), or
//!    any JSONL file with a `prompt` field. A prompt's category is its
//!    `taxonomy_path` (`macro/micro/leaf`) or `category` field (`macro/micro`
//!    from the importers), else `unmapped`.
//! 2. [`respond`] asks the model under test for a response to each prompt
//!    through `sagert-engine`'s [`RoleClient`]: every call is cached by
//!    content hash in the run store, so a killed evaluation resumes where it
//!    stopped and a rerun asks nothing. Requests are greedy by default, so the
//!    responses are reproducible.
//! 3. [`judge_all`] gives the responses to each judge.
//! 4. [`rates`] turns per-item verdicts into rates overall and per macro,
//!    micro and leaf category, each with a percentile-bootstrap 95% interval
//!    ([`crate::stats`]). Items without a verdict (a failed call, a judge
//!    that could not decide) are left out and counted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sagert_backend::{ChatMessage, ChatRequest};
use sagert_engine::RoleClient;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::jsonl;
use crate::judge::{Judge, Judgement, Sample};
use crate::results::Level;
use crate::stats::{bootstrap_mean_ci, Estimate};
use crate::{EvalError, Result};

/// The category of prompts that carry none.
pub const UNMAPPED: &str = "unmapped";

/// One prompt to evaluate on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvalPrompt {
    /// The prompt's id (the file's `id`, else `line-N`).
    pub id: String,
    /// The prompt text.
    pub prompt: String,
    /// Its taxonomy path (`macro/micro/leaf` or `macro/micro`), or [`UNMAPPED`].
    pub category: String,
    /// Its jailbreak or attack type, if the set has one.
    pub jailbreak_type: Option<String>,
}

/// The files a prompt-set directory is looked up in, first found first.
const PROMPT_FILES: [&str; 4] =
    ["prompts.jsonl", "redteam/prompts.jsonl", "dataset/redteam/prompts.jsonl", "test.jsonl"];

/// Read a prompt set (see the [module docs](self)). With `split`, rows that
/// have a `split` field keep only that split (a generated dataset's red-team
/// export lists its training prompts too). Errors name file, line and field.
pub fn read_prompts(path: &Path, split: Option<&str>) -> Result<Vec<EvalPrompt>> {
    let file = if path.is_dir() {
        PROMPT_FILES.iter().map(|f| path.join(f)).find(|p| p.is_file()).ok_or_else(|| EvalError::File {
            file: path.to_path_buf(),
            message: format!("no prompt file: looked for {}", PROMPT_FILES.join(", ")),
        })?
    } else {
        path.to_path_buf()
    };
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (line, map) in jsonl::objects(&file)? {
        let record = |field: &str, message: &str| EvalError::Record {
            file: file.clone(),
            line,
            field: field.into(),
            message: message.into(),
        };
        let string = |field: &str| -> Result<Option<String>> {
            match map.get(field) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(record(field, "expected a string")),
            }
        };
        if let (Some(want), Some(have)) = (split, string("split")?) {
            if want != have {
                continue;
            }
        }
        let prompt = string("prompt")?.ok_or_else(|| record("prompt", "missing"))?;
        if prompt.trim().is_empty() {
            return Err(record("prompt", "empty"));
        }
        let id = match map.get("id") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            None | Some(Value::Null) => format!("line-{line}"),
            Some(_) => return Err(record("id", "expected a string or a number")),
        };
        if !seen.insert(id.clone()) {
            return Err(record("id", &format!("`{id}` appears twice")));
        }
        let category = match (string("taxonomy_path")?, string("category")?) {
            (Some(p), _) if !p.is_empty() => p,
            (_, Some(c)) if !c.is_empty() => c,
            _ => UNMAPPED.to_string(),
        };
        let jailbreak_type = match string("jailbreak_type")? {
            Some(j) => Some(j),
            None => string("attack_type")?,
        };
        out.push(EvalPrompt { id, prompt, category, jailbreak_type });
    }
    if out.is_empty() {
        return Err(EvalError::File { file, message: "no prompts".into() });
    }
    Ok(out)
}

/// How responses are asked for.
#[derive(Clone, Debug)]
pub struct RespondOptions {
    /// Most new tokens per response.
    pub max_tokens: u32,
    /// Sampling temperature (0: greedy).
    pub temperature: f32,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// A system message before each prompt.
    pub system: Option<String>,
}

impl Default for RespondOptions {
    fn default() -> Self {
        RespondOptions { max_tokens: 128, temperature: 0.0, concurrency: 4, system: None }
    }
}

/// The model's response to each prompt, in order, or why there is none. A
/// failure of one call fails that item only; a fatal engine error (the store,
/// the budget) stops the whole call. `progress` is told of each finished item.
pub async fn respond(
    client: Arc<RoleClient>,
    prompts: &[EvalPrompt],
    options: &RespondOptions,
    progress: &(dyn Fn() + Send + Sync),
) -> Result<Vec<std::result::Result<String, String>>> {
    let semaphore = Arc::new(tokio::sync::Semaphore::new(options.concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, p) in prompts.iter().enumerate() {
        let mut messages = Vec::new();
        if let Some(system) = &options.system {
            messages.push(ChatMessage::system(system.clone()));
        }
        messages.push(ChatMessage::user(p.prompt.clone()));
        let mut request = ChatRequest::new(messages);
        request.params.max_tokens = Some(options.max_tokens);
        request.params.temperature = Some(options.temperature);
        let client = client.clone();
        let semaphore = semaphore.clone();
        let item = format!("respond/{}", p.id);
        tasks.spawn(async move {
            let _permit = semaphore.acquire_owned().await.expect("semaphore open");
            (i, client.chat(&request, Some(&item)).await)
        });
    }
    let mut out: Vec<std::result::Result<String, String>> = vec![Err("not run".into()); prompts.len()];
    while let Some(joined) = tasks.join_next().await {
        let (i, result) = joined.map_err(|e| EvalError::Invalid(format!("response task: {e}")))?;
        out[i] = match result {
            Ok(outcome) => Ok(outcome.response.text().to_string()),
            Err(e) if e.is_fatal() => {
                tasks.abort_all();
                return Err(EvalError::Judge { judge: "target".into(), message: e.to_string() });
            }
            Err(e) => Err(format!("call failed: {e}")),
        };
        progress();
    }
    Ok(out)
}

/// One evaluated item: the prompt, the response and every judge's verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JudgedItem {
    /// The prompt's id.
    pub id: String,
    /// The prompt's category.
    pub category: String,
    /// The prompt's jailbreak type, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jailbreak_type: Option<String>,
    /// The prompt.
    pub prompt: String,
    /// The response, if the call succeeded.
    pub response: Option<String>,
    /// Why there is no response, or which judges could not decide.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub errors: Vec<String>,
    /// Each judge's verdict by judge name; absent when the judge could not decide.
    pub verdicts: BTreeMap<String, Judgement>,
}

/// Give every response to every judge. Items without a response get no
/// verdicts. Returns the items in prompt order.
pub async fn judge_all(
    prompts: &[EvalPrompt],
    responses: &[std::result::Result<String, String>],
    judges: &[&dyn Judge],
) -> Result<Vec<JudgedItem>> {
    if prompts.len() != responses.len() {
        return Err(EvalError::Invalid(format!(
            "{} prompts but {} responses",
            prompts.len(),
            responses.len()
        )));
    }
    let mut items: Vec<JudgedItem> = prompts
        .iter()
        .zip(responses)
        .map(|(p, r)| JudgedItem {
            id: p.id.clone(),
            category: p.category.clone(),
            jailbreak_type: p.jailbreak_type.clone(),
            prompt: p.prompt.clone(),
            response: r.as_ref().ok().cloned(),
            errors: r.as_ref().err().cloned().into_iter().collect(),
            verdicts: BTreeMap::new(),
        })
        .collect();
    let answered: Vec<usize> = (0..items.len()).filter(|&i| items[i].response.is_some()).collect();
    let samples: Vec<Sample> = answered
        .iter()
        .map(|&i| Sample::new(items[i].prompt.clone(), items[i].response.clone().unwrap_or_default()))
        .collect();
    for judge in judges {
        let name = judge.name();
        let judged = judge.judge(&samples).await?;
        if judged.len() != samples.len() {
            return Err(EvalError::Judge {
                judge: name,
                message: format!("{} verdicts for {} samples", judged.len(), samples.len()),
            });
        }
        for (&i, verdict) in answered.iter().zip(judged) {
            match verdict {
                Ok(j) => {
                    items[i].verdicts.insert(name.clone(), j);
                }
                Err(reason) => items[i].errors.push(format!("{name}: {reason}")),
            }
        }
    }
    Ok(items)
}

/// How rates are computed.
#[derive(Clone, Debug)]
pub struct RateOptions {
    /// Bootstrap resamples per interval.
    pub resamples: usize,
    /// The interval's confidence.
    pub confidence: f64,
    /// The bootstrap's seed.
    pub seed: u64,
    /// The levels to report, in this order.
    pub levels: Vec<Level>,
}

impl Default for RateOptions {
    fn default() -> Self {
        RateOptions {
            resamples: 2000,
            confidence: 0.95,
            seed: 0,
            levels: vec![Level::Overall, Level::Macro, Level::Micro, Level::Leaf],
        }
    }
}

/// A rate over one category.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CategoryRate {
    /// The level.
    pub level: Level,
    /// The category key (`all` overall).
    pub category: String,
    /// The mean of the values, with its interval.
    pub estimate: Estimate,
}

/// The mean of `values` (each a category path and a value, 0/1 for rates)
/// overall and per category at each level of `options`, with bootstrap
/// intervals; categories in key order within each level. Paths too short
/// for a level (a micro path at the leaf level) are left out of that level.
pub fn rates(values: &[(String, f64)], options: &RateOptions) -> Result<Vec<CategoryRate>> {
    let mut out = Vec::new();
    for &level in &options.levels {
        let mut groups: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for (path, v) in values {
            if let Some(key) = level.key(path) {
                groups.entry(key).or_default().push(*v);
            }
        }
        for (category, samples) in groups {
            let estimate = bootstrap_mean_ci(&samples, options.resamples, options.confidence, options.seed)?;
            out.push(CategoryRate { level, category, estimate });
        }
    }
    Ok(out)
}

/// The values of one judge's verdicts: (category, 1 or 0) for each item it judged.
pub fn verdict_values(items: &[JudgedItem], judge: &str) -> Vec<(String, f64)> {
    items
        .iter()
        .filter_map(|it| {
            it.verdicts.get(judge).map(|j| (it.category.clone(), f64::from(u8::from(j.positive))))
        })
        .collect()
}

/// The values of one judge's scores: (category, score) for each item it judged.
pub fn score_values(items: &[JudgedItem], judge: &str) -> Vec<(String, f64)> {
    items.iter().filter_map(|it| it.verdicts.get(judge).map(|j| (it.category.clone(), j.score))).collect()
}

/// Write judged items as JSONL, atomically.
pub fn write_items(path: &Path, items: &[JudgedItem]) -> Result<PathBuf> {
    let mut bytes = Vec::new();
    for item in items {
        serde_json::to_writer(&mut bytes, item).expect("an item serialises");
        bytes.push(b'\n');
    }
    sagert_engine::io::write_atomic(path, &bytes)?;
    Ok(path.to_path_buf())
}
