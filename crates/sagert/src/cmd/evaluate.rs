//! `sagert eval` and `sagert redteam`: a model's responses to prompt sets,
//! judged, as rates per taxonomy category with bootstrap intervals.
//!
//! Every model call is cached in the run store of the output directory, so a
//! killed evaluation resumes where it stopped and a rerun asks nothing.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sagert_backend::{ChatBackend, ModelRole, Secret};
use sagert_config::RetrySection;
use sagert_engine::RoleClient;
use sagert_eval::benign::{self, BenignPrompt};
use sagert_eval::calibrate;
use sagert_eval::evaluate::{
    judge_all, rates, read_prompts, respond, score_values, verdict_values, write_items, CategoryRate,
    EvalPrompt, JudgedItem, RateOptions, RespondOptions,
};
use sagert_eval::judge::{Judge, JudgeKind, Question};
use sagert_eval::probe;
use sagert_eval::redteam::{self, RedTeamSummary};
use sagert_eval::results::{CellInfo, JudgeInfo, Level, ResultRow};
use sagert_eval::stats::Bootstrap;
use sagert_openai::{EndpointSettings, OpenAiBackend, RetryPolicy};
use sagert_taxonomy::Taxonomy;
use sha2::{Digest, Sha256};

use crate::cli::{EvalArgs, JudgeModelArgs, RedteamArgs};
use crate::cmd::block_on;
use crate::cmd::judge::{build_judge, cached_client, chat_client, default_threads, judges_dir, ModelChoice};

/// The judges of one evaluation: harm (on red-team responses), refusal (on
/// benign look-alikes) and, optionally, toxicity (on red-team responses).
pub(crate) struct Judges {
    pub harm: Box<dyn Judge>,
    pub refusal: Box<dyn Judge>,
    pub toxicity: Option<Box<dyn Judge>>,
}

impl Judges {
    pub(crate) fn build(
        harm: &str,
        refusal: &str,
        toxicity: bool,
        threads: usize,
        llm: &ModelChoice,
        store_dir: &Path,
    ) -> anyhow::Result<Judges> {
        let pick = |name: &str, question: Question, what: &str| -> anyhow::Result<Box<dyn Judge>> {
            let kind: JudgeKind = name.parse()?;
            if kind.question() != question {
                bail!("--{what}-judge {name} answers `{}`, not `{question}`", kind.question());
            }
            build_judge(kind, threads, llm, store_dir)
        };
        Ok(Judges {
            harm: pick(harm, Question::Harmful, "harm")?,
            refusal: pick(refusal, Question::Refusal, "refusal")?,
            toxicity: if toxicity {
                Some(build_judge(JudgeKind::Toxicity, threads, llm, store_dir)?)
            } else {
                None
            },
        })
    }
}

/// What every evaluation of one run shares: its judges, how responses are
/// asked for, how rates are computed, and whether progress bars are hidden.
pub(crate) struct EvalSettings<'a> {
    pub judges: &'a Judges,
    pub respond: RespondOptions,
    pub rates: RateOptions,
    pub quiet: bool,
}

/// The model LLM judges ask.
fn judge_choice(args: &JudgeModelArgs, threads: usize) -> ModelChoice {
    ModelChoice {
        model: args.judge_model.clone(),
        config: args.judge_config.clone(),
        role: ModelRole::Judge,
        threads,
    }
}

/// The judge's name and stored calibration, for result rows.
pub(crate) fn judge_info(judge: &dyn Judge) -> anyhow::Result<JudgeInfo> {
    let name = judge.name();
    let stored = calibrate::load(&judges_dir(&None), &name)?;
    Ok(JudgeInfo {
        accuracy: stored.as_ref().map(|c| c.agreement.accuracy),
        kappa: stored.as_ref().and_then(|c| c.agreement.kappa),
        name,
    })
}

/// The first `limit` prompts in a seeded order (a sample that does not
/// depend on the file's order), or all.
pub(crate) fn sample<T: Clone>(
    items: &[T],
    id: impl Fn(&T) -> &str,
    limit: Option<usize>,
    seed: u64,
) -> Vec<T> {
    let Some(limit) = limit.filter(|&l| l < items.len()) else {
        return items.to_vec();
    };
    let key = |t: &T| {
        let mut h = Sha256::new();
        h.update(seed.to_le_bytes());
        h.update(id(t).as_bytes());
        h.finalize()
    };
    let mut keyed: Vec<(_, usize)> = items.iter().enumerate().map(|(i, t)| (key(t), i)).collect();
    keyed.sort();
    let mut picked: Vec<usize> = keyed[..limit].iter().map(|&(_, i)| i).collect();
    picked.sort_unstable();
    picked.into_iter().map(|i| items[i].clone()).collect()
}

/// Responses to `prompts`, with a progress bar unless `quiet`.
pub(crate) fn responses(
    client: Arc<RoleClient>,
    prompts: &[EvalPrompt],
    options: &RespondOptions,
    what: &str,
    quiet: bool,
) -> anyhow::Result<Vec<Result<String, String>>> {
    let bar = progress(prompts.len() as u64, what, quiet);
    let tick = {
        let bar = bar.clone();
        move || bar.inc(1)
    };
    let out = block_on(respond(client, prompts, options, &tick))??;
    bar.finish_and_clear();
    let failed = out.iter().filter(|r| r.is_err()).count();
    if failed > 0 {
        eprintln!("{what}: {failed} of {} calls failed (left out of the rates)", out.len());
    }
    Ok(out)
}

fn progress(total: u64, what: &str, quiet: bool) -> ProgressBar {
    let bar = ProgressBar::new(total);
    if quiet || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {elapsed} (eta {eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(what.to_string());
    bar
}

/// Benign look-alike prompts as evaluation prompts: the built-in set, a file, or none.
pub(crate) fn benign_prompts(spec: &str) -> anyhow::Result<Vec<EvalPrompt>> {
    let set: Vec<BenignPrompt> = match spec {
        "none" => return Ok(Vec::new()),
        "builtin" => benign::builtin(),
        path if path.ends_with(".csv") => benign::read_xstest(Path::new(path))?,
        path => benign::read_jsonl(Path::new(path))?,
    };
    Ok(set
        .into_iter()
        .filter(BenignPrompt::is_benign)
        .map(|b| EvalPrompt { id: b.id, prompt: b.prompt, category: b.category, jailbreak_type: None })
        .collect())
}

/// Evaluate one model: harmful rate and toxicity on `redteam`, over-refusal
/// on `benign`; returns the result rows and writes the judged items to `out`.
pub(crate) fn evaluate_model(
    client: Arc<RoleClient>,
    cell: &CellInfo,
    redteam: &[EvalPrompt],
    redteam_name: &str,
    benign: &[EvalPrompt],
    settings: &EvalSettings<'_>,
    out: &Path,
) -> anyhow::Result<Vec<ResultRow>> {
    let (judges, respond_options, rate_options, quiet) =
        (settings.judges, &settings.respond, &settings.rates, settings.quiet);
    let mut rows = Vec::new();
    if !redteam.is_empty() {
        let answers = responses(client.clone(), redteam, respond_options, "red-team", quiet)?;
        let mut list: Vec<&dyn Judge> = vec![judges.harm.as_ref()];
        if let Some(t) = &judges.toxicity {
            list.push(t.as_ref());
        }
        let items = block_on(judge_all(redteam, &answers, &list))??;
        write_items(&out.join("responses-redteam.jsonl"), &items)?;
        let harm = judge_info(judges.harm.as_ref())?;
        let r = rates(&verdict_values(&items, &harm.name), rate_options)?;
        rows.extend(cell.rows("harmful_rate", redteam_name, &r, Some(&harm)));
        if let Some(t) = &judges.toxicity {
            let info = judge_info(t.as_ref())?;
            let r = rates(&score_values(&items, &info.name), rate_options)?;
            rows.extend(cell.rows("toxicity", redteam_name, &r, Some(&info)));
        }
    }
    if !benign.is_empty() {
        let answers = responses(client, benign, respond_options, "benign", quiet)?;
        let items = block_on(judge_all(benign, &answers, &[judges.refusal.as_ref()]))??;
        write_items(&out.join("responses-benign.jsonl"), &items)?;
        let info = judge_info(judges.refusal.as_ref())?;
        let r = rates(&verdict_values(&items, &info.name), rate_options)?;
        rows.extend(cell.rows("over_refusal", "benign", &r, Some(&info)));
    }
    Ok(rows)
}

/// The counterfactual bias probe ([`sagert_eval::probe`]): the model answers
/// every template × group prompt, and the spread across groups of toxicity,
/// refusal and sentiment is measured per hate sub-category and overall
/// (metric `bias_gap`, eval set `probe-<score>`). `templates` keeps at most
/// that many templates per category.
pub(crate) fn probe_rows(
    client: Arc<RoleClient>,
    cell: &CellInfo,
    settings: &EvalSettings<'_>,
    templates: Option<usize>,
    out: &Path,
) -> anyhow::Result<Vec<ResultRow>> {
    let (judges, respond_options, rate_options, quiet) =
        (settings.judges, &settings.respond, &settings.rates, settings.quiet);
    let mut sets = probe::builtin_templates();
    if let Some(n) = templates {
        for set in &mut sets {
            set.templates.truncate(n);
        }
    }
    let prompts = probe::expand(&sets);
    let eval_prompts: Vec<EvalPrompt> = prompts
        .iter()
        .map(|p| EvalPrompt {
            id: p.id.clone(),
            prompt: p.prompt.clone(),
            category: p.category.clone(),
            jailbreak_type: None,
        })
        .collect();
    let answers = responses(client, &eval_prompts, respond_options, "bias probe", quiet)?;
    let mut list: Vec<&dyn Judge> = vec![judges.refusal.as_ref()];
    if let Some(t) = &judges.toxicity {
        list.push(t.as_ref());
    }
    let items = block_on(judge_all(&eval_prompts, &answers, &list))??;
    write_items(&out.join("responses-probe.jsonl"), &items)?;
    let bootstrap = Bootstrap {
        resamples: rate_options.resamples,
        confidence: rate_options.confidence,
        seed: rate_options.seed,
    };
    let mut scores: Vec<(&str, Option<JudgeInfo>, Vec<f64>)> = Vec::new();
    let refusal = judge_info(judges.refusal.as_ref())?;
    let by_judge = |name: &str| -> Vec<f64> {
        items.iter().map(|it| it.verdicts.get(name).map_or(f64::NAN, |j| j.score)).collect()
    };
    scores.push(("refusal", Some(refusal.clone()), by_judge(&refusal.name)));
    if let Some(t) = &judges.toxicity {
        let info = judge_info(t.as_ref())?;
        let values = by_judge(&info.name);
        scores.push(("toxicity", Some(info), values));
    }
    let sentiment: Vec<f64> = items
        .iter()
        .map(|it| it.response.as_deref().map_or(f64::NAN, sagert_eval::sentiment::sentiment))
        .collect();
    scores.push(("sentiment", None, sentiment));
    let mut rows = Vec::new();
    for (metric, judge, values) in scores {
        let mut rates = Vec::new();
        // Overall: every template of every category in one pool.
        let pooled: Vec<probe::ProbePrompt> =
            prompts.iter().map(|p| probe::ProbePrompt { category: "all".into(), ..p.clone() }).collect();
        for (level, set) in [(Level::Overall, &pooled), (Level::Micro, &prompts)] {
            match probe::disparity(set, &values, metric, &bootstrap) {
                Ok(results) => rates.extend(results.into_iter().map(|r| CategoryRate {
                    level,
                    category: r.category,
                    estimate: r.gap,
                })),
                Err(e) => eprintln!("bias probe, {metric}: {e}"),
            }
        }
        rows.extend(cell.rows("bias_gap", &format!("probe-{metric}"), &rates, judge.as_ref()));
    }
    Ok(rows)
}

/// Print the overall and macro-level rows as a table.
pub(crate) fn print_rows(rows: &[ResultRow]) {
    println!(
        "{:<14} {:<10} {:<24} {:>7} {:>17} {:>5}  judge",
        "metric", "level", "category", "value", "95% CI", "n"
    );
    for r in rows.iter().filter(|r| matches!(r.level, Level::Overall | Level::Macro)) {
        let judge = match (&r.judge, r.judge_kappa) {
            (Some(j), Some(k)) => format!("{j} (kappa {k:.2})"),
            (Some(j), None) => format!("{j} (uncalibrated)"),
            (None, _) => String::new(),
        };
        println!(
            "{:<14} {:<10} {:<24} {:>7.3} {:>17} {:>5}  {judge}",
            r.metric,
            r.level.name(),
            r.category,
            r.value,
            format!("[{:.3}, {:.3}]", r.lo, r.hi),
            r.n
        );
    }
}

/// `sagert eval`
pub(crate) fn eval(args: EvalArgs) -> anyhow::Result<ExitCode> {
    let threads = args.threads.unwrap_or_else(default_threads);
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let redteam = match &args.prompts {
        Some(p) => sample(&read_prompts(p, args.split.as_deref())?, |p| &p.id, args.limit, args.seed),
        None => Vec::new(),
    };
    let benign = sample(&benign_prompts(&args.benign)?, |p| &p.id, args.limit, args.seed);
    if redteam.is_empty() && benign.is_empty() && !args.bias_probe {
        bail!("nothing to evaluate: give --prompts, --benign builtin|FILE or --bias-probe");
    }
    let target = ModelChoice {
        model: args.model.clone(),
        config: args.config.clone(),
        role: ModelRole::Target,
        threads,
    };
    let client = chat_client(&target, &args.out, "target")?;
    let judge_model = judge_choice(&args.judge_model, threads);
    let judges = Judges::build(
        &args.harm_judge,
        &args.refusal_judge,
        !args.no_toxicity,
        threads,
        &judge_model,
        &args.out,
    )?;
    let cell = CellInfo {
        cell: args.name.clone(),
        base_model: client.model_id().to_string(),
        dataset: String::new(),
        size: 0,
        method: "none".into(),
    };
    let respond_options = RespondOptions {
        max_tokens: args.max_tokens,
        concurrency: args.concurrency,
        ..RespondOptions::default()
    };
    let rate_options = RateOptions { seed: args.seed, ..RateOptions::default() };
    let set_name = args.prompts.as_ref().map(|p| set_name(p)).unwrap_or_default();
    let settings =
        EvalSettings { judges: &judges, respond: respond_options, rates: rate_options, quiet: args.json };
    let mut rows = evaluate_model(client.clone(), &cell, &redteam, &set_name, &benign, &settings, &args.out)?;
    if args.bias_probe {
        rows.extend(probe_rows(client, &cell, &settings, None, &args.out)?);
    }
    sagert_eval::results_io::write_results_jsonl(&args.out.join("results.jsonl"), &rows)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print_rows(&rows);
        println!("results: {}", args.out.join("results.jsonl").display());
    }
    Ok(ExitCode::SUCCESS)
}

/// A prompt set's name for reports: its file or directory name.
pub(crate) fn set_name(path: &Path) -> String {
    let p = if path.file_name().is_some_and(|f| f == "prompts.jsonl") {
        path.parent().unwrap_or(path)
    } else {
        path
    };
    p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string())
}

/// `sagert redteam`
pub(crate) fn redteam(args: RedteamArgs) -> anyhow::Result<ExitCode> {
    let threads = args.threads.unwrap_or_else(default_threads);
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let prompts =
        sample(&read_prompts(&args.prompts, args.split.as_deref())?, |p| &p.id, args.limit, args.seed);
    let client = if args.target.starts_with("http://") || args.target.starts_with("https://") {
        endpoint_client(&args)?
    } else {
        let choice =
            ModelChoice { model: args.target.clone(), config: None, role: ModelRole::Target, threads };
        chat_client(&choice, &args.out, "target")?
    };
    let judge_model = judge_choice(&args.judge_model, threads);
    let judge_kind: JudgeKind = args.judge.parse()?;
    if judge_kind.question() != Question::Harmful {
        bail!("--judge {} answers `{}`; red-teaming needs a harm judge", args.judge, judge_kind.question());
    }
    let judge = build_judge(judge_kind, threads, &judge_model, &args.out)?;
    let options = RespondOptions {
        max_tokens: args.max_tokens,
        concurrency: args.concurrency,
        ..RespondOptions::default()
    };
    let answers = responses(client, &prompts, &options, "attacks", args.json)?;
    let items: Vec<JudgedItem> = block_on(judge_all(&prompts, &answers, &[judge.as_ref()]))??;
    write_items(&args.out.join("responses.jsonl"), &items)?;
    let taxonomy = match &args.taxonomy {
        Some(p) => Taxonomy::from_path(p)?,
        None => Taxonomy::builtin(),
    };
    let rate_options = RateOptions { seed: args.seed, ..RateOptions::default() };
    let summary = redteam::summarise(&items, &judge.name(), &taxonomy, &rate_options)?;
    let info = judge_info(judge.as_ref())?;
    let mut json = serde_json::to_vec_pretty(&serde_json::json!({
        "target": args.target,
        "prompts": args.prompts,
        "judge": {"name": info.name, "accuracy": info.accuracy, "kappa": info.kappa},
        "summary": summary,
    }))?;
    json.push(b'\n');
    sagert_engine::io::write_atomic(&args.out.join("redteam.json"), &json)?;
    if args.json {
        println!("{}", String::from_utf8_lossy(&json));
    } else {
        print_redteam(&summary, &info);
        println!("details: {}", args.out.join("redteam.json").display());
    }
    Ok(ExitCode::SUCCESS)
}

fn print_redteam(s: &RedTeamSummary, judge: &JudgeInfo) {
    let calibration = match (judge.accuracy, judge.kappa) {
        (Some(a), Some(k)) => format!("accuracy {a:.2}, kappa {k:.2} on human labels"),
        (Some(a), None) => format!("accuracy {a:.2} on human labels"),
        _ => "uncalibrated: run `sagert judge calibrate`".into(),
    };
    println!("judge: {} ({calibration})", s.judge);
    println!("attacks judged: {} (not judged: {})", s.judged, s.unjudged);
    println!(
        "sub-categories jailbroken at least once: {} of {} ({} tested)",
        s.micro.jailbroken, s.micro.total, s.micro.tested
    );
    println!(
        "leaves jailbroken at least once: {} of {} ({} tested)",
        s.leaves.jailbroken, s.leaves.total, s.leaves.tested
    );
    let show = |title: &str, rates: &[sagert_eval::evaluate::CategoryRate], level: Option<Level>| {
        println!("\nattack success rate {title}:");
        for r in rates.iter().filter(|r| level.is_none_or(|l| r.level == l)) {
            let e = &r.estimate;
            println!("  {:<32} {:>6.3} [{:.3}, {:.3}]  n={}", r.category, e.value, e.lo, e.hi, e.n);
        }
    };
    show("overall", &s.by_category, Some(Level::Overall));
    show("by jailbreak type", &s.by_jailbreak, None);
    show("by sub-category", &s.by_category, Some(Level::Micro));
}

/// A client of an OpenAI-compatible endpoint, cached in the output's run store.
fn endpoint_client(args: &RedteamArgs) -> anyhow::Result<Arc<RoleClient>> {
    let Some(model) = &args.target_model else {
        bail!("--target {} is an endpoint: give its model with --target-model", args.target);
    };
    let mut s = EndpointSettings::new("target", args.target.clone());
    if let Some(var) = &args.api_key_env {
        match std::env::var(var) {
            Ok(v) if !v.is_empty() => s.api_key = Some(Secret::new(v)),
            _ => bail!("--api-key-env {var}: the variable is not set"),
        }
    }
    s.concurrency = args.concurrency.max(1);
    let retry_config = RetrySection::default();
    let retry = RetryPolicy {
        max_retries: retry_config.max_retries,
        base_delay: std::time::Duration::from_millis(retry_config.base_delay_ms),
        max_delay: std::time::Duration::from_millis(retry_config.max_delay_ms),
    };
    let backend: Arc<dyn ChatBackend> = Arc::new(OpenAiBackend::new(model.clone(), vec![s], retry)?);
    cached_client(ModelRole::Target, backend, &args.out)
}
