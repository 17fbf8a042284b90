//! `sagert judge`: judges measured against human labels, and the judges the
//! evaluation commands build by name.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use sagert_backend::{ChatBackend, ModelRole, SamplingParams};
use sagert_config::{env, BudgetSection, EndpointConfig, EndpointKind, Overrides};
use sagert_encoders::embed::EmbedOptions;
use sagert_encoders::safety::{data as safety_data, SafetyClassifier};
use sagert_encoders::toxicity::{ToxicityOptions, ToxicityScorer};
use sagert_engine::{Ledger, Prices, RoleClient, Spent};
use sagert_eval::calibrate::{self, Calibration, Labelled};
use sagert_eval::judge::{
    ClassifierJudge, Judge, JudgeKind, LlmJudge, LlmTemplate, Question, RefusalKeywords, Sample,
    ToxicityJudge,
};
use sagert_store::Store;

use crate::backends::{embedded_backend, role_backend};
use crate::cli::{JudgeCalibrateArgs, JudgeCommand, JudgeListArgs};
use crate::cmd::{block_on, load_config, model_cache};

/// `sagert judge ...`
pub(crate) fn run(command: JudgeCommand) -> anyhow::Result<ExitCode> {
    match command {
        JudgeCommand::Calibrate(a) => calibrate(a),
        JudgeCommand::List(a) => list(a),
    }
}

/// The machine's cores, at most 8.
pub(crate) fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()).min(8)
}

/// The folder calibrations are stored in: `--dir`, else the cache's `judges/`.
pub(crate) fn judges_dir(dir: &Option<PathBuf>) -> PathBuf {
    match dir {
        Some(d) => d.clone(),
        None => {
            let models =
                sagert_models::ModelCache::default_root(std::env::var_os(env::CACHE_DIR).map(PathBuf::from));
            models.parent().map(|p| p.join("judges")).unwrap_or_else(|| PathBuf::from("judges"))
        }
    }
}

fn calibrate(args: JudgeCalibrateArgs) -> anyhow::Result<ExitCode> {
    let kinds: Vec<JudgeKind> = args.judge.iter().map(|j| j.parse()).collect::<Result<_, _>>()?;
    let dir = judges_dir(&args.dir);
    let threads = args.threads.unwrap_or_else(default_threads);
    let llm = ModelChoice {
        model: args.model.clone(),
        config: args.config.clone(),
        role: ModelRole::Judge,
        threads,
    };
    let mut results = Vec::new();
    for kind in kinds {
        let (labelled, labels) = labels(&args.labels, kind.question())?;
        let judge = build_judge(kind, threads, &llm, &dir.join("calls"))?;
        eprintln!("calibrating {} on {} labelled samples ({labels})", judge.name(), labelled.len());
        let calibration = block_on(calibrate::calibrate(judge.as_ref(), &labelled, &labels))??;
        let path = calibrate::store(&dir, &calibration)?;
        if !args.json {
            print_calibration(&calibration, &path);
        }
        results.push(calibration);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    }
    Ok(ExitCode::SUCCESS)
}

fn list(args: JudgeListArgs) -> anyhow::Result<ExitCode> {
    let dir = judges_dir(&args.dir);
    let mut found = Vec::new();
    if dir.is_dir() {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        paths.sort();
        for p in paths {
            let bytes = std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()))?;
            let c: Calibration = serde_json::from_slice(&bytes)
                .with_context(|| format!("{}: not a calibration", p.display()))?;
            found.push(c);
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&found)?);
        return Ok(ExitCode::SUCCESS);
    }
    if found.is_empty() {
        println!("no calibrated judges in {} (run `sagert judge calibrate`)", dir.display());
    }
    println!("{:<40} {:<9} {:>5} {:>8} {:>7}  labels", "judge", "question", "n", "accuracy", "kappa");
    for c in &found {
        let a = &c.agreement;
        println!(
            "{:<40} {:<9} {:>5} {:>8.3} {:>7}  {}",
            c.judge,
            c.question.name(),
            a.n,
            a.accuracy,
            a.kappa.map_or("n/a".into(), |k| format!("{k:.3}")),
            c.labels
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn print_calibration(c: &Calibration, path: &Path) {
    let a = &c.agreement;
    println!("{} ({}), {} labelled samples from {}", c.judge, c.question, a.n + c.unjudged, c.labels);
    if c.unjudged > 0 {
        println!("  not judged: {} (left out)", c.unjudged);
    }
    println!(
        "  accuracy {:.3}   Cohen's kappa {}   precision {:.3}   recall {:.3}   F1 {:.3}",
        a.accuracy,
        a.kappa.map_or("n/a".into(), |k| format!("{k:.3}")),
        a.precision,
        a.recall,
        a.f1
    );
    println!("  confusion (rows: human, columns: judge; negative, positive):");
    for (label, row) in ["human no ", "human yes"].iter().zip(&a.confusion) {
        println!("    {label}  {}", row.iter().map(|n| format!("{n:>6}")).collect::<String>());
    }
    println!("  stored in {}", path.display());
}

/// The labelled samples `spec` names, for a judge of `question`: a JSONL
/// file, or `pyrit-refusal` / `pyrit-harm` (the held-out part of PyRIT's
/// human-labelled scorer data, which the offline classifier was not trained on).
fn labels(spec: &str, question: Question) -> anyhow::Result<(Vec<Labelled>, String)> {
    let pyrit = match spec {
        "pyrit-refusal" => Some(Question::Refusal),
        "pyrit-harm" => Some(Question::Harmful),
        _ => None,
    };
    let Some(set) = pyrit else {
        let path = Path::new(spec);
        if !path.exists() {
            bail!("--labels {spec}: no such file (or use `pyrit-refusal` / `pyrit-harm`)");
        }
        return Ok((calibrate::read_labels(path)?, path.display().to_string()));
    };
    if set != question && !(question == Question::Toxic && set == Question::Harmful) {
        bail!("--labels {spec} labels {} but this judge answers `{question}`", set.name());
    }
    let dir = model_cache()?.ensure("pyrit-scorer-evals")?;
    let examples = match set {
        Question::Refusal => safety_data::load_refusal(&dir)?,
        _ => safety_data::load_harm(&dir)?,
    };
    let split = safety_data::split(&examples, safety_data::HELD_OUT_FRACTION, safety_data::SPLIT_SEED);
    let labelled = split
        .held_out
        .iter()
        .map(|&i| {
            let e = &examples[i];
            Labelled {
                sample: Sample::new(e.prompt.clone(), e.response.clone()),
                label: e.label,
                origin: e.origin.clone(),
            }
        })
        .collect();
    let name = format!(
        "{spec}: held-out {:.0}% of pyrit==1.1.0 scorer_evals (split seed {})",
        safety_data::HELD_OUT_FRACTION * 100.0,
        safety_data::SPLIT_SEED
    );
    Ok((labelled, name))
}

/// Where a chat model comes from: the embedded `model` (a known name, a GGUF
/// file or a transformers directory), or `role` of the run configuration `config`.
#[derive(Clone, Debug)]
pub(crate) struct ModelChoice {
    pub model: String,
    pub config: Option<PathBuf>,
    pub role: ModelRole,
    pub threads: usize,
}

/// A cached client of the chosen model; calls are cached in the run store of
/// `store_dir`, under `name` for the embedded engine's endpoint.
pub(crate) fn chat_client(
    choice: &ModelChoice,
    store_dir: &Path,
    name: &str,
) -> anyhow::Result<Arc<RoleClient>> {
    let backend: Arc<dyn ChatBackend> = match &choice.config {
        Some(path) => {
            let loaded = load_config(path, &Overrides::default())?;
            role_backend(&loaded.config, choice.role)?
        }
        None => {
            let path = Path::new(&choice.model);
            let is_file = choice.model.ends_with(".gguf") || path.is_file() || path.is_dir();
            let ep = EndpointConfig {
                kind: EndpointKind::Embedded,
                model_path: is_file.then(|| choice.model.clone().into()),
                threads: choice.threads,
                concurrency: 1,
                ..EndpointConfig::default()
            };
            embedded_backend(name, &ep, &choice.model)?
        }
    };
    cached_client(choice.role, backend, store_dir)
}

/// A client of `backend` for `role` whose calls are cached in the run store
/// of `dir`: greedy and seeded unless a request says otherwise, no budget.
pub(crate) fn cached_client(
    role: ModelRole,
    backend: Arc<dyn ChatBackend>,
    dir: &Path,
) -> anyhow::Result<Arc<RoleClient>> {
    let store = Arc::new(Store::open(dir)?);
    let ledger = Arc::new(Ledger::new(BudgetSection::default(), Prices::default(), Spent::default()));
    let defaults = SamplingParams { temperature: Some(0.0), seed: Some(0), ..SamplingParams::default() };
    Ok(Arc::new(RoleClient::new(role, backend, store, ledger, defaults)))
}

/// The judge of `kind`; LLM judges ask `llm` and cache their calls in `store_dir`.
pub(crate) fn build_judge(
    kind: JudgeKind,
    threads: usize,
    llm: &ModelChoice,
    store_dir: &Path,
) -> anyhow::Result<Box<dyn Judge>> {
    Ok(match kind {
        JudgeKind::RefusalKeywords => Box::new(RefusalKeywords::default()),
        JudgeKind::ClassifierRefusal | JudgeKind::ClassifierHarm => {
            let dir = model_cache()?.ensure("minilm-l6")?;
            let classifier = SafetyClassifier::load(&dir, EmbedOptions { threads, batch_size: 32 })
                .with_context(|| format!("cannot load the safety classifier from {}", dir.display()))?;
            Box::new(ClassifierJudge::new(Arc::new(classifier), kind.question())?)
        }
        JudgeKind::Toxicity => {
            let dir = model_cache()?.ensure("toxicity")?;
            let scorer = ToxicityScorer::load_with(&dir, ToxicityOptions { threads, batch_size: 128 })
                .with_context(|| format!("cannot load the toxicity scorer from {}", dir.display()))?;
            Box::new(ToxicityJudge::new(Arc::new(scorer)))
        }
        JudgeKind::LlmLlamaGuard | JudgeKind::LlmHarmBench => {
            let template = if kind == JudgeKind::LlmLlamaGuard {
                LlmTemplate::LlamaGuard
            } else {
                LlmTemplate::HarmBench
            };
            Box::new(LlmJudge::new(chat_client(llm, store_dir, "judge")?, template))
        }
    })
}
