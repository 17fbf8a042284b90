//! `sagert study`: the comparative study of `../shared/design/SAGE.md` §3.
//!
//! For each cell of the grid (see [`sagert_eval::study`]): align the base
//! model through `sagert-align` (resumable, one run per method × dataset ×
//! size, nested subsets), then evaluate the aligned GGUF on every metric:
//! harmful rate and toxicity on the red-team prompts, over-refusal on benign
//! look-alikes, capability (multiple choice, perplexity) and the bias probe.
//! Done cells are skipped; the rows of all cells go to `results.jsonl`,
//! `results.parquet` and a self-contained `report.html`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use sagert_align::{AlignConfig, Plan, Progress};
use sagert_backend::{ChatMessage, LogProbScorer, ModelRole, ScoreRequest};
use sagert_config::{EndpointConfig, EndpointKind};
use sagert_eval::evaluate::{read_prompts, CategoryRate, RateOptions, RespondOptions};
use sagert_eval::import::{self, ImportKind, ImportOptions};
use sagert_eval::results::{CellInfo, Level, ResultRow};
use sagert_eval::stats::Bootstrap;
use sagert_eval::study::{Cell, CellKind, StudyConfig};
use sagert_eval::{bbq, mc, results_io};
use sagert_llama::LlamaBackend;
use sagert_taxonomy::Taxonomy;

use crate::backends::embedded_backend;
use crate::cli::StudyArgs;
use crate::cmd::evaluate::{
    benign_prompts, evaluate_model, print_rows, probe_rows, sample, set_name, EvalSettings, Judges,
};
use crate::cmd::judge::{cached_client, default_threads, judges_dir, ModelChoice};
use crate::cmd::{block_on, model_cache};

/// `sagert study -c study.toml`
pub(crate) fn run(args: StudyArgs) -> anyhow::Result<ExitCode> {
    let mut config = StudyConfig::from_file(&args.config)?;
    if let Some(out) = &args.output {
        config.study.output_dir = out.clone();
    }
    let out = config.study.output_dir.clone();
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    bind_definition(&out, &config)?;
    let threads = args.threads.unwrap_or_else(default_threads);
    // candle's kernels read the pool size from here; set before any tensor work.
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    let quiet = args.json || !std::io::IsTerminal::is_terminal(&std::io::stderr());
    let started = Instant::now();

    let base = base_model(&config.model.base)?;
    let redteam_path = redteam_prompts(&config, &out)?;
    let redteam = sample(
        &read_prompts(&redteam_path, config.eval.split.as_deref())?,
        |p| &p.id,
        config.eval.limit,
        config.study.seed,
    );
    let benign =
        sample(&benign_prompts(&config.eval.benign)?, |p| &p.id, config.eval.benign_limit, config.study.seed);
    let capability = match &config.eval.capability {
        Some(p) => {
            sample(&read_tasks(Path::new(p))?, |i| &i.id, config.eval.capability_limit, config.study.seed)
        }
        None => Vec::new(),
    };
    let bbq_items = match &config.eval.bbq {
        Some(p) => {
            let items = bbq::read_bbq(p)?;
            let keyed: Vec<(String, usize)> = items
                .iter()
                .enumerate()
                .map(|(n, i)| (format!("{}/{}", i.category, i.example_id), n))
                .collect();
            let picked = sample(&keyed, |k| &k.0, config.eval.bbq_limit, config.study.seed);
            picked.into_iter().map(|(_, n)| items[n].clone()).collect()
        }
        None => Vec::new(),
    };
    let perplexity_text = match &config.eval.perplexity {
        Some(p) => {
            Some(std::fs::read_to_string(p).with_context(|| format!("cannot read eval.perplexity {p}"))?)
        }
        None => None,
    };
    let judge_llm = ModelChoice {
        model: config.eval.judge_model.clone().unwrap_or_else(|| base.to_string_lossy().into_owned()),
        config: config.eval.judge_config.as_ref().map(PathBuf::from),
        role: ModelRole::Judge,
        threads,
    };
    let judges = Judges::build(
        &config.eval.harm_judge,
        &config.eval.refusal_judge,
        config.eval.toxicity,
        threads,
        &judge_llm,
        &out.join("judge"),
    )?;
    let respond_options =
        RespondOptions { max_tokens: config.eval.max_tokens, concurrency: 1, ..RespondOptions::default() };
    let rate_options =
        RateOptions { resamples: config.eval.resamples, seed: config.study.seed, ..RateOptions::default() };
    let set = set_name(&redteam_path);
    let settings = EvalSettings { judges: &judges, respond: respond_options, rates: rate_options, quiet };

    let cells = config.cells();
    eprintln!(
        "study `{}`: {} cells, {} red-team prompts ({set}), {} benign prompts, {} capability items",
        config.study.name,
        cells.len(),
        redteam.len(),
        benign.len(),
        capability.len()
    );
    let models = align_cells(&config, &cells, &base, &out, threads, quiet)?;
    let mut rows = Vec::new();
    for (i, cell) in cells.iter().enumerate() {
        let dir = cell.dir(&out);
        let results = dir.join("results.jsonl");
        if cell.is_done(&out) {
            eprintln!("[{}/{}] {}: done before, kept", i + 1, cells.len(), cell.name);
            rows.extend(results_io::read_results_jsonl(&results)?);
            continue;
        }
        eprintln!("[{}/{}] {}: evaluating {}", i + 1, cells.len(), cell.name, models[i].display());
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let info = cell_info(cell, &config);
        let backend = cell_backend(&models[i], &cell.name, threads)?;
        let client = cached_client(ModelRole::Target, backend.clone(), &dir)?;
        let mut cell_rows = evaluate_model(client.clone(), &info, &redteam, &set, &benign, &settings, &dir)?;
        if config.eval.bias_probe {
            cell_rows.extend(probe_rows(
                client.clone(),
                &info,
                &settings,
                config.eval.probe_templates,
                &dir,
            )?);
        }
        if !capability.is_empty() {
            cell_rows.extend(capability_rows(backend.as_ref(), &info, &capability, &settings.rates)?);
        }
        if !bbq_items.is_empty() {
            cell_rows.extend(bbq_rows(backend.as_ref(), &info, &bbq_items, &settings.rates)?);
        }
        if let Some(text) = &perplexity_text {
            cell_rows.extend(perplexity_rows(backend.as_ref(), &info, text)?);
        }
        results_io::write_results_jsonl(&results, &cell_rows)?;
        rows.extend(cell_rows);
    }
    attach_calibrations(&mut rows)?;
    results_io::write_results_jsonl(&out.join("results.jsonl"), &rows)?;
    results_io::write_results_parquet(&out.join("results.parquet"), &rows)?;
    let meta = sagert_eval::report::ReportMeta {
        study: config.study.name.clone(),
        base_models: vec![config.model.base.clone()],
        generated_at: utc_now(),
        sagert_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let html = sagert_eval::report::render_html(&rows, &meta);
    sagert_engine::io::write_atomic(&out.join("report.html"), html.as_bytes())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print_rows(&rows);
        println!("report: {} ({:.0} s)", out.join("report.html").display(), started.elapsed().as_secs_f64());
    }
    Ok(ExitCode::SUCCESS)
}

/// Each judged row gets its judge's current calibration: a judge calibrated
/// after its cells were evaluated shows its agreement in the next report.
fn attach_calibrations(rows: &mut [ResultRow]) -> anyhow::Result<()> {
    let dir = judges_dir(&None);
    let mut known = std::collections::BTreeMap::new();
    for row in rows.iter_mut() {
        let Some(judge) = row.judge.clone() else { continue };
        if !known.contains_key(&judge) {
            let c = sagert_eval::calibrate::load(&dir, &judge)?;
            known.insert(judge.clone(), c.map(|c| (c.agreement.accuracy, c.agreement.kappa)));
        }
        if let Some((accuracy, kappa)) = known[&judge] {
            row.judge_accuracy = Some(accuracy);
            row.judge_kappa = kappa;
        }
    }
    Ok(())
}

/// Bind the output directory to the study's definition: a changed grid in
/// the same directory would mix cells of two studies.
fn bind_definition(out: &Path, config: &StudyConfig) -> anyhow::Result<()> {
    let path = out.join("study.json");
    let mut now = serde_json::to_vec_pretty(config)?;
    now.push(b'\n');
    match std::fs::read(&path) {
        // Compared as configurations, not bytes: keys a newer sagert adds take
        // their defaults when an older study.json lacks them.
        Ok(before) => match serde_json::from_slice::<StudyConfig>(&before) {
            Ok(b) if b == *config => Ok(()),
            _ => bail!(
                "{} holds a different study (see {}); use another study.output_dir (or --output), or delete it",
                out.display(),
                path.display()
            ),
        },
        Err(_) => Ok(sagert_engine::io::write_atomic(&path, &now)?),
    }
}

/// The base model's file or directory: a known name is fetched.
fn base_model(spec: &str) -> anyhow::Result<PathBuf> {
    let path = PathBuf::from(spec);
    if path.exists() {
        return Ok(path);
    }
    match sagert_models::known(spec) {
        Some(known) => Ok(model_cache()?.ensure(known.name)?.join(known.main_file())),
        None => bail!(
            "model.base `{spec}` is neither a file, a directory nor a known model (see `sagert models list`)"
        ),
    }
}

/// The red-team prompt file: `advbench` is fetched from PyRIT's package and
/// imported once into the study directory.
fn redteam_prompts(config: &StudyConfig, out: &Path) -> anyhow::Result<PathBuf> {
    if config.eval.prompts != "advbench" {
        return Ok(PathBuf::from(&config.eval.prompts));
    }
    let dir = out.join("prompts/advbench");
    if !dir.join("prompts.jsonl").is_file() {
        let source = model_cache()?.ensure("advbench")?.join("adv_bench.prompt");
        import::import(ImportKind::Advbench, &source, &dir, &ImportOptions::new(Taxonomy::builtin()))?;
    }
    Ok(dir.join("prompts.jsonl"))
}

/// Align every aligned cell (resuming runs that were interrupted); returns
/// each cell's model to evaluate, in cell order.
fn align_cells(
    config: &StudyConfig,
    cells: &[Cell],
    base: &Path,
    out: &Path,
    threads: usize,
    quiet: bool,
) -> anyhow::Result<Vec<PathBuf>> {
    let mut models: Vec<PathBuf> = cells
        .iter()
        .map(|c| match &c.kind {
            CellKind::Base => base.to_path_buf(),
            CellKind::Given { model } => PathBuf::from(model),
            CellKind::Aligned { .. } => PathBuf::new(),
        })
        .collect();
    let datasets = resolve_datasets(config, out)?;
    for (method, file) in &config.align.methods {
        let mut align = AlignConfig::from_file(Path::new(file))?;
        align.model.path = base.to_string_lossy().into_owned();
        align.run.output_dir = out.join("align").join(method);
        align.run.seed = config.study.seed;
        align.data.datasets = datasets.clone();
        align.train.threads = Some(threads);
        if align.export.gguf == "none" {
            align.export.gguf = "f16".into();
        }
        align.check().map_err(|m| anyhow::anyhow!("{file}: {m}"))?;
        let cache = model_cache()?.root().join("hf");
        let base_dir = sagert_align::base::prepare(base, &cache, |p| {
            eprintln!("dequantising {} to {} (once)", base.display(), p.display())
        })?;
        let plan = Plan {
            base_dir,
            datasets: datasets.keys().cloned().collect(),
            sizes: config.grid.sizes.clone(),
            progress: if quiet { Progress::Quiet } else { Progress::Bars },
        };
        for job in sagert_align::jobs(&align, &plan)? {
            let Some(i) = cells.iter().position(|c| match &c.kind {
                CellKind::Aligned { method: m, dataset, size } => {
                    m == method && job.train_name == *dataset && job.limit == Some(*size)
                }
                _ => false,
            }) else {
                bail!("alignment job {} matches no cell", job.run_dir.display());
            };
            let gguf = job.run_dir.join("export/model.gguf");
            if !(cells[i].is_done(out) || gguf.is_file() && job.run_dir.join("summary.json").is_file()) {
                eprintln!(
                    "aligning {} ({method}, {} pairs of {})",
                    cells[i].name,
                    job.limit.unwrap_or(0),
                    job.train_name
                );
                let summary = sagert_align::train(&job)
                    .with_context(|| format!("alignment run {}", job.run_dir.display()))?;
                if summary.exported.gguf.is_none() {
                    bail!("alignment run {} exported no GGUF", job.run_dir.display());
                }
            }
            models[i] = gguf;
        }
    }
    Ok(models)
}

/// The datasets' paths: `pyrit-harm` is PyRIT's human-scored harm data,
/// fetched with the pyrit==1.1.0 wheel and imported once into the study.
fn resolve_datasets(
    config: &StudyConfig,
    out: &Path,
) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let mut resolved = std::collections::BTreeMap::new();
    for (name, spec) in &config.datasets {
        let path = if spec == "pyrit-harm" {
            let dir = out.join("datasets/pyrit-harm");
            if !dir.join("train.jsonl").is_file() {
                let source = model_cache()?.ensure("pyrit-scorer-evals")?.join("harm");
                let kind: ImportKind = "pyrit-harm".parse()?;
                import::import(kind, &source, &dir, &ImportOptions::new(Taxonomy::builtin()))?;
            }
            dir.to_string_lossy().into_owned()
        } else {
            spec.clone()
        };
        resolved.insert(name.clone(), path);
    }
    Ok(resolved)
}

fn cell_info(cell: &Cell, config: &StudyConfig) -> CellInfo {
    let (dataset, size, method) = match &cell.kind {
        CellKind::Base => (String::new(), 0, "none".to_string()),
        CellKind::Aligned { method, dataset, size } => (dataset.clone(), *size as u64, method.clone()),
        CellKind::Given { .. } => (cell.name.clone(), 0, "given".to_string()),
    };
    CellInfo { cell: cell.name.clone(), base_model: config.model.base.clone(), dataset, size, method }
}

/// The embedded engine of one cell's model (a GGUF, a known name or a
/// transformers directory), under an endpoint name of its own.
fn cell_backend(model: &Path, cell: &str, threads: usize) -> anyhow::Result<Arc<LlamaBackend>> {
    let spec = model.to_string_lossy().into_owned();
    let ep = EndpointConfig {
        kind: EndpointKind::Embedded,
        model_path: model.exists().then(|| model.to_path_buf()),
        threads,
        concurrency: 1,
        ..EndpointConfig::default()
    };
    embedded_backend(&format!("study-{cell}"), &ep, &spec)
}

/// `acc` and `acc_norm` of the multiple-choice items: each choice's
/// continuation is scored as the assistant's answer to the item's prompt,
/// under the model's chat template.
fn capability_rows(
    scorer: &dyn LogProbScorer,
    cell: &CellInfo,
    items: &[mc::McItem],
    options: &RateOptions,
) -> anyhow::Result<Vec<ResultRow>> {
    let asks: Vec<(String, Vec<String>)> = items
        .iter()
        .map(|i| {
            (i.prompt.clone(), (0..i.choices.len()).map(|c| i.continuation(c).expect("in range")).collect())
        })
        .collect();
    let logprobs = choice_logprobs(scorer, &asks)?;
    let scores: Vec<Vec<mc::ChoiceScore>> = asks
        .iter()
        .zip(&logprobs)
        .map(|((_, conts), lps)| conts.iter().zip(lps).map(|(c, &lp)| mc::ChoiceScore::new(lp, c)).collect())
        .collect();
    let bootstrap =
        Bootstrap { resamples: options.resamples, confidence: options.confidence, seed: options.seed };
    let result = mc::score(items, &scores, &bootstrap)?;
    let overall = |e: &sagert_eval::stats::Estimate| CategoryRate {
        level: Level::Overall,
        category: "all".into(),
        estimate: *e,
    };
    let mut rows = cell.rows("acc", "capability", &[overall(&result.acc)], None);
    rows.extend(cell.rows("acc_norm", "capability", &[overall(&result.acc_norm)], None));
    Ok(rows)
}

/// A multiple-choice task file: sagert's MC JSONL, or MMLU's rows.
fn read_tasks(path: &Path) -> anyhow::Result<Vec<mc::McItem>> {
    match mc::read_mc(path) {
        Ok(items) => Ok(items),
        Err(mc_error) => mc::read_mmlu(path).map_err(|_| anyhow::Error::from(mc_error)),
    }
}

/// Log-probabilities of each choice as the assistant's answer to `prompt`,
/// under the model's chat template: one list per item.
fn choice_logprobs(
    scorer: &dyn LogProbScorer,
    items: &[(String, Vec<String>)],
) -> anyhow::Result<Vec<Vec<f64>>> {
    let requests: Vec<ScoreRequest> = items
        .iter()
        .flat_map(|(prompt, choices)| {
            choices.iter().map(move |c| ScoreRequest {
                prompt: vec![ChatMessage::user(prompt.clone())],
                completion: c.clone(),
            })
        })
        .collect();
    let results = block_on(scorer.score(&requests))??;
    let mut next = results.iter();
    Ok(items
        .iter()
        .map(|(_, choices)| {
            choices.iter().map(|_| next.next().expect("one result per request").sum_logprob).collect()
        })
        .collect())
}

/// BBQ: the most likely of each item's three answers (lm-evaluation-harness's
/// choice by log-likelihood), scored with BBQ's accuracy and bias scores,
/// each with a bootstrap interval over items.
fn bbq_rows(
    scorer: &dyn LogProbScorer,
    cell: &CellInfo,
    items: &[bbq::BbqItem],
    options: &RateOptions,
) -> anyhow::Result<Vec<ResultRow>> {
    let asks: Vec<(String, Vec<String>)> = items
        .iter()
        .map(|i| {
            (format!("{} {}", i.context, i.question), i.answers.iter().map(|a| format!(" {a}")).collect())
        })
        .collect();
    let logprobs = choice_logprobs(scorer, &asks)?;
    let answers: Vec<usize> = logprobs
        .iter()
        .map(|lp| lp.iter().enumerate().fold(0, |best, (i, &v)| if v > lp[best] { i } else { best }))
        .collect();
    let bootstrap =
        Bootstrap { resamples: options.resamples, confidence: options.confidence, seed: options.seed };
    let mut rows = Vec::new();
    for (metric, estimate) in bbq::score_with_intervals(items, &answers, &bootstrap)? {
        let rate = CategoryRate { level: Level::Overall, category: "all".into(), estimate };
        rows.extend(cell.rows(metric, "bbq", &[rate], None));
    }
    Ok(rows)
}

/// Perplexity of a held-out benign text, paragraph by paragraph, each scored
/// as an assistant turn after a fixed request; the interval is a bootstrap
/// over paragraphs of the per-token log-likelihood.
fn perplexity_rows(
    scorer: &dyn LogProbScorer,
    cell: &CellInfo,
    text: &str,
) -> anyhow::Result<Vec<ResultRow>> {
    let paragraphs: Vec<&str> = text.split("\n\n").map(str::trim).filter(|p| !p.is_empty()).collect();
    if paragraphs.is_empty() {
        bail!("eval.perplexity: the text has no paragraphs");
    }
    let requests: Vec<ScoreRequest> = paragraphs
        .iter()
        .map(|p| ScoreRequest {
            prompt: vec![ChatMessage::user("Write a paragraph.")],
            completion: p.to_string(),
        })
        .collect();
    let results = block_on(scorer.score(&requests))??;
    let nll: f64 = results.iter().map(|r| -r.sum_logprob).sum();
    let tokens: usize = results.iter().map(|r| r.tokens as usize).sum();
    let value = mc::perplexity(nll, tokens)?;
    // Interval: bootstrap the mean per-token NLL over paragraphs (token-weighted
    // means per resample would need a ratio bootstrap; paragraphs are similar in length).
    let per: Vec<f64> = results.iter().map(|r| -r.mean_logprob).collect();
    let e = sagert_eval::stats::bootstrap_mean_ci(&per, 2000, 0.95, 0)?;
    let estimate =
        sagert_eval::stats::Estimate { value, lo: e.lo.exp(), hi: e.hi.exp(), n: paragraphs.len() };
    Ok(cell.rows(
        "perplexity",
        "benign-text",
        &[CategoryRate { level: Level::Overall, category: "all".into(), estimate }],
        None,
    ))
}

/// The current UTC time as `YYYY-MM-DD HH:MM UTC`.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02} UTC", rest / 3600, rest % 3600 / 60)
}
