//! A finished run's summary: `summary.json`, `summary.md` with the loss and
//! reward curves (`loss.svg`, `rewards.svg`), and `manifest.json` (what was
//! trained on what, with which seeds, by which version).

use std::path::Path;

use serde_json::json;

use crate::error::{AlignError, Result};
use crate::plot::{line_chart, Series};
use crate::train::{EvalMetrics, StepMetrics, TrainJob, TrainSummary};

/// The step metrics logged in `path` (`metrics.jsonl`), with the line of any
/// unreadable entry named.
pub fn read_metrics(path: &Path) -> Result<Vec<StepMetrics>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(path).map_err(AlignError::io(path))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| AlignError::data(path, i + 1, "-", e.to_string())))
        .collect()
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    sagert_engine::io::write_atomic(path, bytes)
        .map_err(|e| AlignError::Io { path: path.into(), source: std::io::Error::other(e.to_string()) })
}

/// Write the summary, charts and manifest of a run into its directory.
pub fn write(
    job: &TrainJob,
    summary: &TrainSummary,
    history: &[StepMetrics],
    definition: &str,
) -> Result<()> {
    let dir = &job.run_dir;
    let points = |f: fn(&StepMetrics) -> f64| -> Vec<(f64, f64)> {
        history.iter().map(|m| (m.step as f64, f(m))).collect()
    };
    let loss = points(|m| m.loss);
    let eval_loss: Vec<(f64, f64)> =
        history.iter().filter_map(|m| m.eval.as_ref().map(|e| (m.step as f64, e.loss))).collect();
    let mut loss_series = vec![Series { name: "train loss", points: &loss }];
    if !eval_loss.is_empty() {
        loss_series.push(Series { name: "held-out loss", points: &eval_loss });
    }
    write_file(&dir.join("loss.svg"), line_chart("Loss", "step", "loss", &loss_series).as_bytes())?;
    let (chosen, rejected, margin, acc) = (
        points(|m| m.rewards_chosen),
        points(|m| m.rewards_rejected),
        points(|m| m.reward_margin),
        points(|m| m.reward_accuracy),
    );
    let rewards = line_chart(
        "Rewards",
        "step",
        "reward",
        &[
            Series { name: "chosen", points: &chosen },
            Series { name: "rejected", points: &rejected },
            Series { name: "margin", points: &margin },
            Series { name: "accuracy", points: &acc },
        ],
    );
    write_file(&dir.join("rewards.svg"), rewards.as_bytes())?;

    let json = serde_json::to_vec_pretty(summary).expect("summary serialises");
    write_file(&dir.join("summary.json"), &json)?;
    write_file(&dir.join("summary.md"), to_markdown(summary).as_bytes())?;

    let manifest = json!({
        "sagert_version": env!("CARGO_PKG_VERSION"),
        "definition": definition,
        "base_model": job.base_dir.display().to_string(),
        "model_path": job.config.model.path,
        "dataset": { "name": job.train_name, "path": job.train.display().to_string(), "split": job.config.data.split },
        "eval_dataset": job.eval.as_ref().map(|p| p.display().to_string()),
        "limit": job.limit,
        "pairs": summary.pairs,
        "seed": job.seed,
        "sample_seed": job.sample_seed,
        "objective": job.config.objective,
        "lora": (!job.config.train.full_finetune).then_some(&job.config.lora),
        "train": job.config.train,
        "steps": summary.steps,
        "eval_before": summary.eval_before,
        "eval_after": summary.eval_after,
        "exported": summary.exported,
    });
    write_file(&dir.join("manifest.json"), &serde_json::to_vec_pretty(&manifest).expect("json"))
}

fn eval_row(name: &str, m: &EvalMetrics) -> String {
    format!(
        "| {name} | {} | {:.4} | {:.3} | {:.4} | {:.3} | {:.2} | {:.2} |\n",
        m.pairs,
        m.loss,
        m.reward_accuracy,
        m.reward_margin,
        m.preference_accuracy,
        m.logps_chosen,
        m.logps_rejected
    )
}

/// The summary as Markdown.
pub fn to_markdown(s: &TrainSummary) -> String {
    let mut out = format!(
        "# Alignment run\n\n- objective: {}\n- training pairs: {} ({} truncated), held-out pairs: {}\n\
         - steps: {}{}\n- trainable parameters: {}\n- reference log-probs: {} computed, {} from the cache\n\
         - training throughput: {:.0} tokens/s\n- wall time: {:.1} s\n\n",
        s.objective,
        s.pairs,
        s.truncated,
        s.eval_pairs,
        s.steps,
        s.resumed_from.map(|r| format!(" (resumed from step {r})")).unwrap_or_default(),
        s.trainable_parameters,
        s.ref_logps_computed,
        s.ref_logps_cached,
        s.train_tokens_per_s,
        s.seconds,
    );
    if s.eval_before.is_some() || s.eval_after.is_some() {
        out.push_str(
            "## Held-out\n\n| when | pairs | loss | reward accuracy | reward margin | preference accuracy | \
             logps chosen | logps rejected |\n|---|---|---|---|---|---|---|---|\n",
        );
        if let Some(m) = &s.eval_before {
            out.push_str(&eval_row("before", m));
        }
        if let Some(m) = &s.eval_after {
            out.push_str(&eval_row("after", m));
        }
        out.push_str(
            "\nPreference accuracy: the share of pairs whose chosen answer has the higher mean token \
             log-probability under the model (needs no reference model).\n\n",
        );
    }
    if let Some(m) = &s.final_step {
        out.push_str(&format!(
            "## Last step\n\nloss {:.4}, reward accuracy {:.2}, margin {:.4}, lr {:.3e}, grad norm {:.3}\n\n",
            m.loss, m.reward_accuracy, m.reward_margin, m.lr, m.grad_norm
        ));
    }
    out.push_str("![loss](loss.svg)\n\n![rewards](rewards.svg)\n\n## Exports\n\n");
    let e = &s.exported;
    for (name, path) in [("PEFT adapter", &e.adapter), ("merged model", &e.merged), ("GGUF", &e.gguf)] {
        if let Some(p) = path {
            out.push_str(&format!("- {name}: `{}`\n", p.display()));
        }
    }
    out
}
