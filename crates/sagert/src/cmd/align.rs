//! `sagert align`: preference alignment of a model, one run or a sweep.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use sagert_align::{AlignConfig, Plan, Progress};

use crate::cli::AlignArgs;
use crate::cmd::model_cache;

/// The base model's path: a registry name is fetched (if needed) to its GGUF.
fn model_path(spec: &str, config_file: &Path) -> anyhow::Result<PathBuf> {
    let path = PathBuf::from(spec);
    if path.exists() {
        return Ok(path);
    }
    match sagert_models::known(spec) {
        Some(known) => Ok(model_cache()?.ensure(known.name)?.join(known.main_file())),
        None => anyhow::bail!(
            "{}: model.path `{spec}` is neither a file, a directory nor a known model (see `sagert models list`)",
            config_file.display()
        ),
    }
}

pub(crate) fn run(args: AlignArgs) -> anyhow::Result<ExitCode> {
    let mut config = AlignConfig::from_file(&args.config)?;
    if let Some(limit) = args.limit {
        config.data.limit = Some(limit);
    }
    if let Some(steps) = args.max_steps {
        config.train.max_steps = Some(steps);
    }
    if let Some(out) = &args.output {
        config.run.output_dir = out.clone();
    }
    if let Some(threads) = args.threads {
        config.train.threads = Some(threads);
    }
    config.check().map_err(|m| anyhow::anyhow!("{}: {m}", args.config.display()))?;
    if let Some(threads) = config.train.threads {
        // candle's CPU kernels and gemm read the rayon pool size from here; set
        // before any tensor work starts.
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    }

    let model = model_path(&config.model.path, &args.config)?;
    let cache = model_cache()?.root().join("hf");
    let base_dir = sagert_align::base::prepare(&model, &cache, |out| {
        if !args.json {
            eprintln!("dequantising {} to {} (once)", model.display(), out.display());
        }
    })
    .with_context(|| format!("cannot prepare the base model {}", model.display()))?;

    let progress = if args.json || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        Progress::Quiet
    } else {
        Progress::Bars
    };
    let plan = Plan { base_dir, datasets: args.datasets.clone(), sizes: args.sizes.clone(), progress };
    let jobs = sagert_align::jobs(&config, &plan)?;
    let grid = jobs.len() > 1;
    for (i, job) in jobs.iter().enumerate() {
        if grid && !args.json {
            eprintln!(
                "[{}/{}] {} ({} pairs max) -> {}",
                i + 1,
                jobs.len(),
                job.train_name,
                job.limit.map_or("all".to_string(), |n| n.to_string()),
                job.run_dir.display()
            );
        }
        let summary =
            sagert_align::train(job).with_context(|| format!("alignment run {}", job.run_dir.display()))?;
        if args.json {
            println!("{}", serde_json::to_string(&summary)?);
        } else {
            print_summary(&summary);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_summary(s: &sagert_align::TrainSummary) {
    println!(
        "{}: {} on {} pairs, {} steps{}, {:.0} tokens/s, {:.0} s",
        s.run_dir.display(),
        s.objective,
        s.pairs,
        s.steps,
        s.resumed_from.map(|r| format!(" (resumed at {r})")).unwrap_or_default(),
        s.train_tokens_per_s,
        s.seconds
    );
    if let (Some(b), Some(a)) = (&s.eval_before, &s.eval_after) {
        println!(
            "  held-out ({} pairs): reward accuracy {:.3} -> {:.3}, preference accuracy {:.3} -> {:.3}, loss {:.4} -> {:.4}",
            a.pairs, b.reward_accuracy, a.reward_accuracy, b.preference_accuracy, a.preference_accuracy, b.loss, a.loss
        );
    }
    for (name, path) in
        [("adapter", &s.exported.adapter), ("merged", &s.exported.merged), ("gguf", &s.exported.gguf)]
    {
        if let Some(p) = path {
            println!("  {name}: {}", p.display());
        }
    }
    println!("  summary: {}", s.run_dir.join("summary.md").display());
}
