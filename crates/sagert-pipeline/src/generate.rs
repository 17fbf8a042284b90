//! `sagert generate` from end to end: the model stages, then dedup, balance,
//! split, export and the report.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use sagert_config::RunConfig;

use crate::assemble;
use crate::dedup::DedupSettings;
use crate::export::{self, ExportFormat};
use crate::record::{Dataset, Manifest, PairRecord};
use crate::report::{self, Diversity, RunReport, REPORT_META_KEY};
use crate::run::{self, Generation};
use crate::stages::STAGES;
use crate::PipelineError;

/// Prompts in the Self-BLEU sample.
pub const SELF_BLEU_SAMPLE: usize = 200;

/// What a generation run ended with.
#[derive(Debug)]
pub struct GenerateOutcome {
    /// The report (also written to `RUN_DIR/report.md`).
    pub report: RunReport,
    /// The dataset directory, unless the budget stopped the run first.
    pub dataset_dir: Option<PathBuf>,
}

/// Run the whole pipeline. `manifest` carries what the caller knows (config
/// hash, sagert version, taxonomy, models); splits and template hashes are
/// filled in here.
pub async fn generate(g: Generation, mut manifest: Manifest) -> Result<GenerateOutcome, PipelineError> {
    let config = g.config.clone();
    let store = g.store.clone();
    let progress = g.progress.clone();
    let judge = g.judge.clone();
    let leaves: Vec<String> = g.leaves.iter().map(|l| l.path.clone()).collect();
    manifest.template_hashes = g.templates.hashes();
    manifest.models.insert("judge".into(), judge.name());

    let generated = run::run_model_stages(g).await?;
    let mut report =
        RunReport { run_name: config.run.name.clone(), judge: judge.name(), ..RunReport::default() };
    let mut dataset_dir = None;

    if generated.stopped_by_budget.is_none() {
        let records = generated.records;
        let embeddings = embed_prompts(&judge, &records).await?;

        progress.add_total("dedup", records.len() as u64);
        let settings = DedupSettings {
            minhash_threshold: config.stages.dedup.minhash_threshold,
            num_perm: config.stages.dedup.num_perm as usize,
            embedding_threshold: config.stages.dedup.embedding_threshold,
        };
        let by_id: BTreeMap<String, usize> =
            records.iter().enumerate().map(|(i, r)| (r.id.clone(), i)).collect();
        let (kept, dedup_stats, removed) = assemble::dedup_records(records, &embeddings, &settings)?;
        record_drops(&store, "dedup", &removed)?;
        progress.inc_done("dedup", kept.len() as u64, 0);
        for r in &removed {
            progress.inc_failed("dedup", 1, &r.reason);
        }
        progress.add_total("balance", kept.len() as u64);
        let (balanced, over_quota) = assemble::balance(kept, config.stages.balance.per_cell, config.run.seed);
        record_drops(&store, "balance", &over_quota)?;
        progress.inc_done("balance", balanced.len() as u64, 0);
        for r in &over_quota {
            progress.inc_failed("balance", 1, &r.reason);
        }

        report.dedup = dedup_stats;
        report.balanced_out = over_quota.len() as u64;
        report.coverage = assemble::coverage(
            &balanced,
            &leaves,
            &config.stages.extract.jailbreak_types,
            config.stages.balance.per_cell,
        );
        report.diversity =
            diversity(&balanced, &by_id_after(&balanced, &embeddings, &by_id), config.run.seed);

        let (train, test) =
            assemble::split_by_topic(balanced, config.stages.split.test_fraction, config.run.seed);
        manifest.splits =
            [("train".to_string(), train.len() as u64), ("test".to_string(), test.len() as u64)].into();
        report.splits = manifest.splits.clone();
        let dataset = Dataset { name: config.run.name.clone(), train, test, manifest };
        let formats = export_formats(&config)?;
        let out = config.run.output_dir.join("dataset");
        progress.add_total("export", 1);
        let options = export::ExportOptions { license: config.stages.export.license.clone() };
        export::write_dataset_dir_with(&out, &dataset, &formats, &options)?;
        progress.inc_done("export", 1, 0);
        report.dataset_dir = Some(out.display().to_string());
        dataset_dir = Some(out);
    }
    progress.finish();
    report.stopped_by_budget = generated.stopped_by_budget;
    let (mut stages, failures) = report::stage_rows(&store, &STAGES)?;
    // Dedup, balance and export are not model steps: what they kept is the done count.
    if report.dataset_dir.is_some() {
        for row in &mut stages {
            row.done = match row.stage.as_str() {
                "dedup" => report.dedup.after,
                "balance" => report.dedup.after - report.balanced_out,
                "export" => 1,
                _ => continue,
            };
        }
    }
    report.stages = stages;
    report.failures = failures;
    report.roles = report::role_rows(&store)?;
    let json = serde_json::to_string(&report).map_err(|e| PipelineError::Invalid(format!("report: {e}")))?;
    store.set_meta(REPORT_META_KEY, &json)?;
    sagert_engine::io::write_atomic(
        &config.run.output_dir.join("report.md"),
        report.to_markdown().as_bytes(),
    )?;
    Ok(GenerateOutcome { report, dataset_dir })
}

/// The embeddings of the balanced records, in their order.
fn by_id_after(
    records: &[PairRecord],
    embeddings: &[Vec<f32>],
    by_id: &BTreeMap<String, usize>,
) -> Vec<Vec<f32>> {
    if embeddings.is_empty() {
        return Vec::new();
    }
    records.iter().map(|r| embeddings[by_id[&r.id]].clone()).collect()
}

/// The configured export formats, with `trl` always among them: it holds
/// every provenance column, and `sagert export` re-exports from it.
pub fn export_formats(config: &RunConfig) -> Result<Vec<ExportFormat>, PipelineError> {
    let mut formats = config
        .stages
        .export
        .formats
        .iter()
        .map(|f| {
            f.parse::<ExportFormat>()
                .map_err(|e| PipelineError::Invalid(format!("stages.export.formats: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if !formats.contains(&ExportFormat::Trl) {
        formats.insert(0, ExportFormat::Trl);
    }
    Ok(formats)
}

/// MiniLM embeddings of every record's prompt (dedup and diversity read them).
async fn embed_prompts(
    judge: &Arc<crate::judge::Judge>,
    records: &[PairRecord],
) -> Result<Vec<Vec<f32>>, PipelineError> {
    if records.is_empty() {
        return Ok(Vec::new());
    }
    let classifier = judge.classifier().clone();
    let prompts: Vec<String> = records.iter().map(|r| r.prompt.clone()).collect();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
        classifier.embedder().embed(&refs)
    })
    .await
    .map_err(|e| PipelineError::Invalid(format!("embedding task: {e}")))?
    .map_err(|e| PipelineError::Encoder { what: "embedder", message: e.to_string() })
}

/// Record deliberately removed pairs as dropped items of `stage`, in one
/// transaction.
fn record_drops(
    store: &sagert_store::Store,
    stage: &str,
    removed: &[assemble::Removed],
) -> Result<(), PipelineError> {
    let items: Vec<sagert_store::WorkItem> = removed
        .iter()
        .map(|r| {
            let mut item = sagert_store::WorkItem::pending(stage, &r.id, serde_json::Value::Null);
            item.state = sagert_store::ItemState::Dropped;
            item.error = Some(r.reason.clone());
            item
        })
        .collect();
    store.put_items(&items)?;
    Ok(())
}

/// Diversity of the final prompts; `embeddings` in the records' order.
fn diversity(records: &[PairRecord], embeddings: &[Vec<f32>], seed: u64) -> Diversity {
    use crate::metrics;
    let prompts: Vec<&str> = records.iter().map(|r| r.prompt.as_str()).collect();
    let mut by_leaf: BTreeMap<String, Vec<Vec<f32>>> = BTreeMap::new();
    for (r, e) in records.iter().zip(embeddings) {
        by_leaf.entry(r.taxonomy_path.clone()).or_default().push(e.clone());
    }
    Diversity {
        distinct_1: metrics::distinct_n(&prompts, 1),
        distinct_2: metrics::distinct_n(&prompts, 2),
        self_bleu: metrics::self_bleu(&prompts, SELF_BLEU_SAMPLE, seed),
        self_bleu_sample: prompts.len().min(SELF_BLEU_SAMPLE) as u64,
        embedding_distance: by_leaf
            .into_iter()
            .map(|(k, v)| (k, metrics::mean_pairwise_cosine_distance(&v)))
            .collect(),
    }
}
