//! The command line, as clap derives it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use sagert_config::Overrides;

/// sagert: synthetic safety-alignment data from a harm taxonomy (the SAGE
/// process), preference alignment, and per-category safety evaluation.
#[derive(Debug, Parser)]
#[command(name = "sagert", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Every command.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a run configuration, or print a commented example.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Show, validate and map harm taxonomies.
    #[command(subcommand)]
    Taxonomy(TaxonomyCommand),
    /// Generate a SAGE dataset from a configuration: resumable, cached, validated, deduplicated.
    Generate(GenerateArgs),
    /// Write a generated run's dataset again, in one format, to a new place.
    Export(ExportArgs),
    /// Align a model on preference data (DPO, SimPO or ORPO, with LoRA): resumable, with sweeps.
    Align(AlignArgs),
    /// Import a public safety dataset (PKU-SafeRLHF, HH-RLHF, TRL, ALERT, AdvBench, HarmBench, ...) into sagert's formats.
    Import(ImportArgs),
    /// Judges of harm, refusal and toxicity: measure their agreement with human labels.
    #[command(subcommand)]
    Judge(JudgeCommand),
    /// Evaluate a model per harm category: harmful rate, toxicity and over-refusal, with 95% intervals.
    Eval(EvalArgs),
    /// Red-team a target (an endpoint or an embedded model): attack success per category and jailbreak type.
    Redteam(RedteamArgs),
    /// Run the comparative study: align a grid of datasets × sizes × methods, evaluate every cell, write the report.
    Study(StudyArgs),
    /// Run a JSONL file of prompts through one role, resumably and cached.
    Batch(BatchArgs),
    /// Show a run's calls, cache hits, tokens, cost and failures per role.
    Status(StatusArgs),
    /// List and fetch the models sagert knows.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Chat with a model: the embedded default, a known model, a GGUF file, or a role of a configuration.
    Chat(ChatArgs),
    /// Add MiniLM-L6 sentence embeddings to the rows of a JSONL file.
    Embed(EmbedArgs),
    /// Add the six Jigsaw toxicity scores to the rows of a JSONL file.
    Toxicity(ToxicityArgs),
    /// Add refusal and harmful probabilities and labels to the rows of a JSONL file.
    Classify(ClassifyArgs),
    /// Serve embedded models over an OpenAI-compatible HTTP API.
    Serve(ServeArgs),
}

/// `sagert chat`
#[derive(Debug, Args)]
pub struct ChatArgs {
    /// A known model name or a GGUF file, run by the embedded engine.
    #[arg(long, default_value = "smollm2-135m-instruct", conflicts_with = "config")]
    pub model: String,
    /// A run configuration: chat with one of its roles instead.
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// The role to chat with, with --config.
    #[arg(long, default_value = "target", requires = "config")]
    pub role: String,
    /// A system message for the conversation.
    #[arg(long)]
    pub system: Option<String>,
    /// Sampling temperature (0 is greedy).
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f32,
    /// Most new tokens per answer.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: u32,
    /// Seed for sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// CPU threads of the embedded engine.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
}

/// `sagert models ...`
#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// The known models and whether each is cached.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Fetch models into the cache (checksums verified); every known model when none is named.
    Fetch {
        /// Model names (see `sagert models list`).
        names: Vec<String>,
    },
    /// Convert a model between formats: a transformers directory (config.json,
    /// safetensors, tokenizer.json) becomes a GGUF file, a .gguf file becomes a
    /// transformers directory. Llama-family models (llama, mistral, qwen2).
    Convert {
        /// The model: a directory with config.json, or a .gguf file.
        src: PathBuf,
        /// Where to write: the .gguf file, or the (new or empty) directory.
        #[arg(long)]
        out: PathBuf,
        /// Weight type: f32, f16 or q8_0 for GGUF; f32, f16 or bf16 for safetensors.
        #[arg(long, default_value = "f32")]
        dtype: String,
        /// CPU threads of the conversion.
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
}

/// `sagert config ...`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a configuration file: syntax, unknown keys, values, taxonomy selection.
    Check {
        /// The TOML file.
        file: PathBuf,
    },
    /// Print a commented example configuration documenting every key.
    Example,
}

/// `sagert taxonomy ...`
#[derive(Debug, Subcommand)]
pub enum TaxonomyCommand {
    /// Print the taxonomy tree, or the part under a path prefix.
    Show {
        /// `crime`, `crime/cyber`, `crime_cyber` or a full leaf path; all when absent.
        prefix: Option<String>,
        /// A taxonomy file instead of the built-in one.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Include each node's description.
        #[arg(long, short = 'd')]
        descriptions: bool,
        /// Print JSON instead of a tree.
        #[arg(long)]
        json: bool,
    },
    /// Validate a taxonomy file: unique ids, no empty nodes, mappings that exist.
    Validate {
        /// The TOML file.
        file: PathBuf,
    },
    /// Counts per level and mapping coverage.
    Stats {
        /// A taxonomy file instead of the built-in one.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Map every sub-category onto another taxonomy.
    Map {
        /// The target taxonomy.
        #[arg(long, value_parser = ["pku", "harmbench", "mlcommons"])]
        to: String,
        /// A taxonomy file instead of the built-in one.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Flags that override configuration values (over environment variables, over the file).
#[derive(Debug, Clone, Default, Args)]
pub struct OverrideArgs {
    /// Run directory (overrides run.output_dir and SAGERT_OUTPUT_DIR).
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    /// Seed (overrides run.seed and SAGERT_SEED).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Most requests (overrides budget.max_requests and SAGERT_MAX_REQUESTS).
    #[arg(long, value_name = "N")]
    pub max_requests: Option<u64>,
    /// Most tokens (overrides budget.max_tokens and SAGERT_MAX_TOKENS).
    #[arg(long, value_name = "N")]
    pub max_tokens: Option<u64>,
    /// Most cost in US dollars (overrides budget.max_cost_usd and SAGERT_MAX_COST_USD).
    #[arg(long, value_name = "USD")]
    pub max_cost: Option<f64>,
}

impl OverrideArgs {
    /// As configuration overrides.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            output_dir: self.output_dir.clone(),
            seed: self.seed,
            max_requests: self.max_requests,
            max_tokens: self.max_tokens,
            max_cost_usd: self.max_cost,
        }
    }
}

/// `sagert generate`
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// The run configuration.
    #[arg(long, short = 'c')]
    pub config: PathBuf,
    /// Print the calls, tokens and cost the configuration implies, per stage, and stop.
    #[arg(long)]
    pub dry_run: bool,
    /// Write the built-in prompt templates into this directory and stop (a
    /// start for `[templates] dir` overrides).
    #[arg(long, value_name = "DIR")]
    pub print_templates: Option<PathBuf>,
    /// Machine logs: JSON progress lines on stderr and the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Configuration overrides.
    #[command(flatten)]
    pub overrides: OverrideArgs,
}

/// `sagert align`
#[derive(Debug, Args)]
pub struct AlignArgs {
    /// The alignment configuration (`align.toml`).
    #[arg(long, short = 'c')]
    pub config: PathBuf,
    /// Train on these datasets (names from `[data.datasets]`, or paths), one run
    /// each; with `--sizes`, the grid.
    #[arg(long, value_delimiter = ',')]
    pub datasets: Vec<String>,
    /// Train on nested, category-stratified subsets of these sizes, one run each.
    #[arg(long, value_delimiter = ',')]
    pub sizes: Vec<usize>,
    /// Use at most this many training pairs (overrides `data.limit`).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Stop after this many optimiser steps (overrides `train.max_steps`).
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// The run directory (overrides `run.output_dir`).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// CPU threads for the tensor work (overrides `train.threads`).
    #[arg(long)]
    pub threads: Option<usize>,
    /// The summary of each run as JSON on stdout; no progress bars.
    #[arg(long)]
    pub json: bool,
}

/// `sagert export`
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The run directory of a finished `sagert generate`.
    pub run_dir: PathBuf,
    /// The format: trl (prompt/chosen/rejected), trl-chat (conversational),
    /// kto (unpaired, labelled) or redteam (prompts with categories only).
    #[arg(long, default_value = "trl")]
    pub format: String,
    /// The directory to write; replaced atomically if it exists.
    #[arg(long)]
    pub to: PathBuf,
}

/// `sagert batch`
#[derive(Debug, Args)]
pub struct BatchArgs {
    /// The run configuration (endpoints, roles, budgets).
    #[arg(long, short = 'c')]
    pub config: PathBuf,
    /// The role whose model answers.
    #[arg(long, default_value = "target")]
    pub role: String,
    /// JSONL input: one object per line with `prompt` or `messages`, optional `id` and `system`.
    #[arg(long, short = 'i')]
    pub input: PathBuf,
    /// JSONL output, written atomically at the end (default: RUN_DIR/batch.jsonl).
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
    /// A JSON schema file: every answer must be JSON that satisfies it.
    #[arg(long, value_name = "FILE")]
    pub schema: Option<PathBuf>,
    /// Most calls in flight (default: the sum of the role's endpoint concurrencies).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// No progress bar; print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Configuration overrides.
    #[command(flatten)]
    pub overrides: OverrideArgs,
}

/// `sagert status`
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The run directory.
    pub run_dir: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Input, output and threads of `sagert embed|toxicity|classify`.
#[derive(Debug, Args)]
pub struct EncodeIo {
    /// JSONL input: one object per line; its other fields are kept.
    #[arg(long, short = 'i', value_name = "FILE")]
    pub input: PathBuf,
    /// JSONL output, written atomically at the end.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub out: PathBuf,
    /// CPU threads (default: the available cores, at most 8).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// `sagert embed`
#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// The string field to embed; the output adds `embedding` (384 floats).
    #[arg(long, default_value = "text")]
    pub field: String,
    /// Input, output, threads.
    #[command(flatten)]
    pub io: EncodeIo,
}

/// `sagert toxicity`
#[derive(Debug, Args)]
pub struct ToxicityArgs {
    /// The string field to score; the output adds `toxicity` (six scores in [0, 1]).
    #[arg(long, default_value = "text")]
    pub field: String,
    /// Input, output, threads.
    #[command(flatten)]
    pub io: EncodeIo,
}

/// `sagert classify`
#[derive(Debug, Args)]
pub struct ClassifyArgs {
    /// The response field to classify; the output adds `safety`
    /// (`refusal`, `harmful`, `is_refusal`, `is_harmful`).
    #[arg(long, default_value = "response")]
    pub field: String,
    /// The prompt field, if the rows have one: heads that read the prompt too are used where shipped.
    #[arg(long)]
    pub prompt_field: Option<String>,
    /// Input, output, threads.
    #[command(flatten)]
    pub io: EncodeIo,
}

/// `sagert serve`
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A run configuration: serve its embedded endpoints.
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// With --config: serve only this embedded endpoint.
    #[arg(long, requires = "config")]
    pub endpoint: Option<String>,
    /// The known model to serve (see `sagert models list`), fetched on first use.
    #[arg(long, default_value = "smollm2-135m-instruct", conflicts_with_all = ["config", "model_path"])]
    pub model: String,
    /// A GGUF file to serve instead of a known model.
    #[arg(long, conflicts_with = "config")]
    pub model_path: Option<PathBuf>,
    /// The id clients ask for (default: the known model's name, the file's stem,
    /// or the model of the first role that uses the endpoint).
    #[arg(long)]
    pub model_id: Option<String>,
    /// CPU threads of the engine (default: the endpoint's, 2).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Sequences decoded together (default: the endpoint's concurrency, 8).
    #[arg(long)]
    pub sequences: Option<usize>,
    /// Context tokens per sequence: prompt plus answer (default: the endpoint's, 2048).
    #[arg(long)]
    pub context: Option<u32>,
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// The port to listen on; 0 picks a free one (printed on the first line of stdout).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
}

/// `sagert import`
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// What the input is: pku-saferlhf, hh-rlhf, trl, pyrit-harm (preference
    /// pairs: writes `<split>.jsonl`; pyrit-harm pairs the responses of PyRIT's
    /// human-scored harm CSVs, a directory of them or one file), alert,
    /// advbench, harmbench, prompts (red-team prompts: writes `prompts.jsonl`).
    pub kind: String,
    /// The input file (JSONL, JSONL.gz, Parquet, CSV, or PyRIT's YAML for
    /// advbench) or a dataset directory.
    pub path: PathBuf,
    /// The output directory; its files are written only once the whole input is valid.
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// The split name of the output file of preference kinds.
    #[arg(long, default_value = "train")]
    pub split: String,
    /// PKU-SafeRLHF: keep only pairs with exactly one safe response.
    #[arg(long)]
    pub only_one_safe: bool,
    /// HH-RLHF: the subset name (harmless-base, helpful-base, ...), when the path does not tell.
    #[arg(long)]
    pub subset: Option<String>,
    /// `prompts`: which input fields hold what, e.g. `prompt=goal,category=harm,id=key`.
    #[arg(long)]
    pub fields: Option<String>,
    /// Import at most this many records (in input order).
    #[arg(long)]
    pub limit: Option<usize>,
    /// A taxonomy file to map categories onto instead of the built-in one.
    #[arg(long)]
    pub taxonomy: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `sagert judge ...`
#[derive(Debug, Subcommand)]
pub enum JudgeCommand {
    /// Measure judges against held-out human labels (accuracy, Cohen's kappa,
    /// confusion matrix) and store the result with the judge.
    Calibrate(JudgeCalibrateArgs),
    /// List the stored calibrations.
    List(JudgeListArgs),
}

/// `sagert judge calibrate`
#[derive(Debug, Args)]
pub struct JudgeCalibrateArgs {
    /// The judges: refusal-keywords, classifier-refusal, classifier-harm,
    /// toxicity, llm-llama-guard, llm-harmbench (comma-separated).
    #[arg(long, short = 'j', value_delimiter = ',', required = true)]
    pub judge: Vec<String>,
    /// The human labels: a JSONL file of {prompt, response, label}, or
    /// `pyrit-refusal` / `pyrit-harm` (the held-out part of PyRIT's labelled
    /// scorer data, which the offline classifier was not trained on).
    #[arg(long, short = 'l')]
    pub labels: String,
    /// LLM judges: a known model name or a GGUF file, run by the embedded engine.
    #[arg(long, default_value = "smollm2-135m-instruct", conflicts_with = "config")]
    pub model: String,
    /// LLM judges: a run configuration whose `judge` role to use instead.
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// CPU threads of the in-process models.
    #[arg(long)]
    pub threads: Option<usize>,
    /// The folder of calibrations (default: `~/.cache/sagert/judges`, or under $SAGERT_CACHE_DIR).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Print the calibrations as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `sagert judge list`
#[derive(Debug, Args)]
pub struct JudgeListArgs {
    /// The folder of calibrations (default as for `calibrate`).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `sagert eval`
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The model under test: a known model name, a GGUF file or an exported
    /// (merged) model directory, run by the embedded engine.
    #[arg(long, default_value = "smollm2-135m-instruct", conflicts_with = "config")]
    pub model: String,
    /// A run configuration: evaluate its `target` role instead (any backend).
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Red-team prompts (harmful rate, toxicity): `prompts.jsonl` from `sagert
    /// import`, a generated dataset's red-team export, or a JSONL file with `prompt`.
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// Keep only prompts of this split where the set has a `split` field.
    #[arg(long, default_value = "test")]
    pub split: Option<String>,
    /// Benign look-alike prompts for over-refusal: `builtin`, an XSTest CSV, a JSONL file, or `none`.
    #[arg(long, default_value = "builtin")]
    pub benign: String,
    /// The harm judge (see `sagert judge calibrate --help`).
    #[arg(long, default_value = "classifier-harm")]
    pub harm_judge: String,
    /// The refusal judge, for over-refusal.
    #[arg(long, default_value = "refusal-keywords")]
    pub refusal_judge: String,
    /// Skip the toxicity scores.
    #[arg(long)]
    pub no_toxicity: bool,
    /// Also run the counterfactual bias probe (identity terms of the hate sub-categories).
    #[arg(long)]
    pub bias_probe: bool,
    /// The model of LLM judges.
    #[command(flatten)]
    pub judge_model: JudgeModelArgs,
    /// At most this many prompts of each set (a seeded sample).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Most new tokens per response.
    #[arg(long, default_value_t = 128)]
    pub max_tokens: u32,
    /// Responses in flight at once.
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// The seed of the sample and the bootstrap.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The model's name in the results.
    #[arg(long, default_value = "model")]
    pub name: String,
    /// CPU threads of the in-process models.
    #[arg(long)]
    pub threads: Option<usize>,
    /// The output directory: results, judged responses and the call cache.
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// Print the result rows as JSON; no progress bars.
    #[arg(long)]
    pub json: bool,
}

/// `sagert redteam`
#[derive(Debug, Args)]
pub struct RedteamArgs {
    /// The target: an OpenAI-compatible base URL (`http://host:port/v1`), or a
    /// known model name or GGUF file run by the embedded engine.
    #[arg(long)]
    pub target: String,
    /// The model name to ask the endpoint for.
    #[arg(long)]
    pub target_model: Option<String>,
    /// The environment variable that holds the endpoint's API key.
    #[arg(long)]
    pub api_key_env: Option<String>,
    /// The attack prompts (as for `sagert eval --prompts`).
    #[arg(long)]
    pub prompts: PathBuf,
    /// Keep only prompts of this split where the set has a `split` field.
    #[arg(long)]
    pub split: Option<String>,
    /// The harm judge that decides whether an attack succeeded.
    #[arg(long, default_value = "classifier-harm")]
    pub judge: String,
    /// The model of LLM judges.
    #[command(flatten)]
    pub judge_model: JudgeModelArgs,
    /// A taxonomy file for the coverage counts instead of the built-in one.
    #[arg(long)]
    pub taxonomy: Option<PathBuf>,
    /// At most this many prompts (a seeded sample).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Most new tokens per response.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: u32,
    /// Attacks in flight at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// The seed of the sample and the bootstrap.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// CPU threads of the in-process models.
    #[arg(long)]
    pub threads: Option<usize>,
    /// The output directory: the summary, judged responses and the call cache.
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// Print the summary as JSON; no progress bars.
    #[arg(long)]
    pub json: bool,
}

/// `sagert study`
#[derive(Debug, Args)]
pub struct StudyArgs {
    /// The study configuration (`study.toml`).
    #[arg(long, short = 'c')]
    pub config: PathBuf,
    /// The output directory (overrides `study.output_dir`).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// CPU threads for alignment and the in-process models.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print the result rows as JSON; no progress bars.
    #[arg(long)]
    pub json: bool,
}

/// Where an LLM judge's model comes from (`sagert eval`, `sagert redteam`).
#[derive(Debug, Args)]
pub struct JudgeModelArgs {
    /// LLM judges: the embedded judge model (a known name or a GGUF file).
    #[arg(long, default_value = "smollm2-135m-instruct", conflicts_with = "judge_config")]
    pub judge_model: String,
    /// LLM judges: a run configuration whose `judge` role to use.
    #[arg(long)]
    pub judge_config: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        // clap checks unique names, conflicts and defaults only when a command is built.
        super::Cli::command().debug_assert();
    }
}
