//! `sagert generate` and `sagert export`

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use sagert_backend::ModelRole;
use sagert_config::{JudgeKind, RejectedSource, RunConfig};
use sagert_encoders::embed::EmbedOptions;
use sagert_encoders::safety::SafetyClassifier;
use sagert_engine::estimate::{estimate, render_estimate};
use sagert_engine::Prices;
use sagert_pipeline::export::{read_pairs_jsonl, write_dataset_dir_with, ExportFormat, ExportOptions};
use sagert_pipeline::generate::generate;
use sagert_pipeline::judge::Judge;
use sagert_pipeline::progress::{ProgressMode, StageProgress};
use sagert_pipeline::record::{Dataset, Manifest};
use sagert_pipeline::run::{Generation, Limited, Roles};
use sagert_pipeline::stages::{LeafInfo, STAGES};
use sagert_pipeline::templates::Templates;
use sagert_store::Store;
use sha2::{Digest, Sha256};

use crate::backends::{ledger, role_client, role_concurrency};
use crate::cli::{ExportArgs, GenerateArgs};
use crate::cmd::{block_on, load_config, model_cache, selected_taxonomy};
use crate::exit;

/// The store's metadata key for the hash of what defines a generation.
const GENERATION_HASH_KEY: &str = "generate_definition_hash";

pub(crate) fn run(args: GenerateArgs) -> anyhow::Result<ExitCode> {
    if let Some(dir) = &args.print_templates {
        for path in Templates::write_builtin(dir)? {
            println!("{}", path.display());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let loaded = load_config(&args.config, &args.overrides.overrides())?;
    let (tax, leaf_count) = selected_taxonomy(&loaded)?;
    let config = loaded.config.clone();
    if args.dry_run {
        let e = estimate(&config, leaf_count as u64, &Prices(config.prices.clone()));
        if args.json {
            println!("{}", serde_json::to_string_pretty(&e)?);
        } else {
            print!("{}", render_estimate(&e));
        }
        return Ok(ExitCode::SUCCESS);
    }

    let needs_unsafe = config.stages.responses.rejected_source == RejectedSource::UnsafeResponder;
    let mut needed = vec![ModelRole::Expander, ModelRole::Generator, ModelRole::SafeResponder];
    if needs_unsafe {
        needed.push(ModelRole::UnsafeResponder);
    }
    if config.stages.validate.judge == JudgeKind::Llm {
        needed.push(ModelRole::Judge);
    }
    let missing: Vec<String> =
        needed.iter().filter(|r| config.roles.get(**r).is_none()).map(|r| format!("[roles.{r}]")).collect();
    if !missing.is_empty() {
        bail!("{}: generation needs {}", loaded.file, missing.join(", "));
    }

    let all_leaves: Vec<LeafInfo> = tax.leaves().map(|l| LeafInfo::new(&l)).collect();
    let selected: Vec<LeafInfo> = if config.taxonomy.select.is_empty() {
        all_leaves.clone()
    } else {
        let mut paths = std::collections::BTreeSet::new();
        for prefix in &config.taxonomy.select {
            paths.extend(tax.select(prefix)?.iter().map(|l| l.path()));
        }
        all_leaves.iter().filter(|l| paths.contains(&l.path)).cloned().collect()
    };
    let templates = Arc::new(
        Templates::with_overrides(config.templates.dir.as_deref())
            .context("cannot load the prompt templates")?,
    );

    let run_dir = config.run.output_dir.clone();
    let store = Arc::new(Store::open(&run_dir)?);
    let definition = definition_hash(&config, &templates)?;
    match store.meta(GENERATION_HASH_KEY)? {
        Some(old) if old != definition => bail!(
            "{} holds a generation of a different configuration (stages, roles, taxonomy, seed or \
             templates changed); resuming it would mix the two. Use a new run.output_dir, or delete the \
             old run directory",
            run_dir.display()
        ),
        Some(_) => {}
        None => store.set_meta(GENERATION_HASH_KEY, &definition)?,
    }

    let ledger = ledger(&config, &store)?;
    let limited = |role: ModelRole| -> anyhow::Result<Limited> {
        let client = role_client(&config, role, store.clone(), ledger.clone())?;
        Ok(Limited::new(client, role_concurrency(&config, role)))
    };
    let roles = Roles {
        expander: limited(ModelRole::Expander)?,
        generator: limited(ModelRole::Generator)?,
        safe_responder: limited(ModelRole::SafeResponder)?,
        unsafe_responder: if needs_unsafe { Some(limited(ModelRole::UnsafeResponder)?) } else { None },
    };
    let judge_client = match config.stages.validate.judge {
        JudgeKind::Llm => Some(role_client(&config, ModelRole::Judge, store.clone(), ledger.clone())?),
        JudgeKind::Classifier => None,
    };
    let minilm = model_cache()?.ensure("minilm-l6")?;
    // The embedded engine's threads do the heavy work; the classifier's
    // batches are a few texts each.
    let classifier = SafetyClassifier::load(&minilm, EmbedOptions { threads: 1, batch_size: 32 })
        .with_context(|| format!("cannot load the safety classifier over {}", minilm.display()))?;
    let judge = Judge::new(
        config.stages.validate.clone(),
        Arc::new(classifier),
        judge_client,
        templates.clone(),
        &all_leaves,
    )?;

    let mut models = std::collections::BTreeMap::new();
    for (role, rc) in config.roles.iter() {
        models.insert(role.to_string(), rc.model.clone());
    }
    let manifest = Manifest {
        run_name: config.run.name.clone(),
        sagert_version: env!("CARGO_PKG_VERSION").to_string(),
        config_hash: definition,
        models,
        seed: config.run.seed,
        taxonomy: format!("{} {}", tax.name, tax.version).trim().to_string(),
        ..Manifest::default()
    };
    let progress =
        StageProgress::new(&STAGES, if args.json { ProgressMode::Json } else { ProgressMode::Bars });
    let generation = Generation {
        config: config.clone(),
        leaves: selected,
        roles,
        judge: Arc::new(judge),
        templates,
        store: store.clone(),
        progress,
    };
    let outcome = block_on(generate(generation, manifest))??;
    let report = &outcome.report;
    let failed: u64 = report.stages.iter().map(|s| s.failed).sum();
    if args.json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        let spent = ledger.spent();
        eprintln!(
            "generate: {} pairs ({}); {} requests, {} tokens, ${:.4} spent in this run directory",
            report.splits.values().sum::<u64>(),
            report.splits.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", "),
            spent.requests,
            spent.tokens,
            spent.cost_usd
        );
        if failed > 0 {
            eprintln!(
                "generate: {failed} items failed; run the same command again to retry them (see the report)"
            );
        }
        if let Some(reason) = &report.stopped_by_budget {
            eprintln!("generate: stopped by the budget: {reason}; run the same command with a larger budget to go on");
        }
        if let Some(dir) = &outcome.dataset_dir {
            eprintln!("generate: wrote {}", dir.display());
        }
        eprintln!("generate: report {}", run_dir.join("report.md").display());
    }
    Ok(ExitCode::from(if report.stopped_by_budget.is_some() {
        exit::BUDGET
    } else if failed > 0 {
        exit::SOME_FAILED
    } else {
        exit::OK
    }))
}

/// SHA-256 over what defines a generation's items: the seed, taxonomy
/// selection, roles (models and sampling), stage settings and templates. The
/// budget, retries and endpoints may change between sessions.
fn definition_hash(config: &RunConfig, templates: &Templates) -> anyhow::Result<String> {
    let value = serde_json::json!({
        "seed": config.run.seed,
        "taxonomy": config.taxonomy,
        "roles": config.roles,
        "stages": config.stages,
        "templates": templates.hashes(),
    });
    Ok(hex::encode(Sha256::digest(serde_json::to_vec(&value)?)))
}

pub(crate) fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let format: ExportFormat = args.format.parse().map_err(|e| anyhow::anyhow!("--format: {e}"))?;
    let dataset_dir = args.run_dir.join("dataset");
    let manifest_path = dataset_dir.join("manifest.json");
    let text = std::fs::read_to_string(&manifest_path).with_context(|| {
        format!(
            "cannot read {}: is {} the directory of a finished `sagert generate`?",
            manifest_path.display(),
            args.run_dir.display()
        )
    })?;
    let manifest: Manifest = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a sagert manifest", manifest_path.display()))?;
    let train = read_pairs_jsonl(&dataset_dir.join("trl/train.jsonl"))?;
    let test = read_pairs_jsonl(&dataset_dir.join("trl/test.jsonl"))?;
    let dataset = Dataset { name: manifest.run_name.clone(), train, test, manifest };
    let license = read_license(&dataset_dir).unwrap_or_else(|| sagert_config::ExportStage::default().license);
    let summary = write_dataset_dir_with(&args.to, &dataset, &[format], &ExportOptions { license })?;
    for (name, rows) in &summary.rows {
        eprintln!("export: {name}: {rows} rows");
    }
    eprintln!("export: wrote {}", args.to.display());
    Ok(ExitCode::SUCCESS)
}

/// The `license:` of a dataset card's front matter.
fn read_license(dir: &std::path::Path) -> Option<String> {
    let card = std::fs::read_to_string(dir.join("README.md")).ok()?;
    card.lines()
        .take_while(|l| !l.is_empty())
        .find_map(|l| l.strip_prefix("license:").map(|v| v.trim().to_string()))
}
