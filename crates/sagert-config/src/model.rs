//! The configuration's types: one struct per TOML section.

use std::collections::BTreeMap;
use std::path::PathBuf;

use sagert_backend::ModelRole;
use serde::{Deserialize, Serialize};

/// A whole run, as one TOML file describes it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// Name, seed and output directory.
    pub run: RunSection,
    /// Hard limits on what the run may spend.
    pub budget: BudgetSection,
    /// How failed requests are retried.
    pub retry: RetrySection,
    /// Model servers, by name.
    pub endpoints: BTreeMap<String, EndpointConfig>,
    /// Which model plays which role, on which endpoints.
    pub roles: RolesSection,
    /// Prices per model id, for cost accounting and budgets.
    pub prices: BTreeMap<String, Price>,
    /// Which taxonomy, and which part of it.
    pub taxonomy: TaxonomySection,
    /// Settings of each generation stage.
    pub stages: StagesSection,
    /// Prompt template overrides.
    pub templates: TemplatesSection,
}

/// `[templates]`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TemplatesSection {
    /// A directory of template files (`expand.j2`, `extract.j2`, ...): each file
    /// there replaces the built-in template of the same name
    /// (`sagert generate --print-templates DIR` writes the built-in ones).
    pub dir: Option<PathBuf>,
}

/// `[run]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunSection {
    /// A label for reports and manifests.
    pub name: String,
    /// The seed every sampled call and every shuffle derives from.
    pub seed: u64,
    /// The run directory: the store, the outputs and the report go here.
    pub output_dir: PathBuf,
}

impl Default for RunSection {
    fn default() -> Self {
        RunSection { name: "sagert-run".into(), seed: 0, output_dir: PathBuf::from("runs/default") }
    }
}

/// `[budget]`: a run stops cleanly, with everything so far saved, before it
/// would exceed any of these. They count what the run directory has paid for
/// in all its sessions; answers from the call store are free.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetSection {
    /// Most model requests sent to backends.
    pub max_requests: Option<u64>,
    /// Most tokens, prompt plus completion.
    pub max_tokens: Option<u64>,
    /// Most cost in US dollars, from `[prices]`.
    pub max_cost_usd: Option<f64>,
}

/// `[retry]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetrySection {
    /// Retries after the first attempt, over all endpoints of a role.
    pub max_retries: u32,
    /// First backoff delay; it doubles each retry, with full jitter.
    pub base_delay_ms: u64,
    /// Longest backoff delay.
    pub max_delay_ms: u64,
}

impl Default for RetrySection {
    fn default() -> Self {
        RetrySection { max_retries: 6, base_delay_ms: 500, max_delay_ms: 60_000 }
    }
}

/// The kind of server an endpoint is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointKind {
    /// An OpenAI-compatible HTTP server: vLLM, Ollama, llama.cpp's server, OpenAI.
    #[default]
    Openai,
    /// A GGUF model run in-process by the embedded llama.cpp engine.
    Embedded,
}

/// How structured output is asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StructuredOutput {
    /// Send `response_format` with the JSON schema; if the server rejects it,
    /// fall back to `json_object`, then to prompting.
    #[default]
    Auto,
    /// Always send `response_format` with the JSON schema.
    JsonSchema,
    /// Send `response_format` of type `json_object` with the schema (llama.cpp's
    /// servers constrain decoding with it) and describe the schema in the prompt.
    JsonObject,
    /// Never send `response_format`: describe the schema in the prompt and
    /// parse tolerantly, with one repair round.
    Prompt,
}

/// The number type of an embedded engine's KV cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KvCacheType {
    /// 32-bit floats.
    #[default]
    F32,
    /// 16-bit floats.
    F16,
}

/// `[endpoints.NAME]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EndpointConfig {
    /// The kind of server.
    pub kind: EndpointKind,
    /// Base URL including `/v1`, e.g. `http://127.0.0.1:8080/v1` (`openai` only).
    pub base_url: String,
    /// Name of the environment variable that holds the API key. The key itself
    /// never appears in a config file, a log, the store or a report.
    pub api_key_env: Option<String>,
    /// Model name on this server, when it differs from the role's model id. For
    /// an `embedded` endpoint: the known model to load (`sagert models list`),
    /// fetched on first use; the role's model id when absent.
    pub model: Option<String>,
    /// `embedded` only: a model to load instead of a known one: a GGUF file,
    /// or a transformers directory (`config.json`, safetensors, `tokenizer.json`;
    /// the trainer's merged output) that is converted to GGUF once and cached.
    pub model_path: Option<PathBuf>,
    /// `embedded` only: CPU threads (default 2).
    pub threads: usize,
    /// `embedded` only: context tokens available to each sequence.
    pub context_per_sequence: u32,
    /// `embedded` only: model layers offloaded to the GPU (a build with the
    /// `cuda` feature); 0 runs on the CPU.
    pub gpu_layers: u32,
    /// `embedded` only: reuse the KV cache of shared prompt prefixes (a system
    /// prompt, one raw text under nine instructions). Default on.
    pub prefix_cache: bool,
    /// `embedded` only: the KV cache's number type. `f32` (the default) keeps
    /// answers independent of prefix reuse and batching; `f16` halves its memory.
    pub kv_cache: KvCacheType,
    /// Most requests in flight (for `embedded`: sequences decoded together).
    pub concurrency: usize,
    /// Requests per minute.
    pub requests_per_minute: Option<u32>,
    /// Tokens per minute (prompt plus completion).
    pub tokens_per_minute: Option<u64>,
    /// Per-attempt timeout for a whole request, in seconds.
    pub timeout_secs: f64,
    /// Connection timeout, in seconds.
    pub connect_timeout_secs: f64,
    /// How structured output is asked for.
    pub structured_output: StructuredOutput,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            kind: EndpointKind::Openai,
            base_url: String::new(),
            api_key_env: None,
            model: None,
            model_path: None,
            threads: 2,
            context_per_sequence: 2048,
            gpu_layers: 0,
            prefix_cache: true,
            kv_cache: KvCacheType::F32,
            concurrency: 8,
            requests_per_minute: None,
            tokens_per_minute: None,
            timeout_secs: 300.0,
            connect_timeout_secs: 10.0,
            structured_output: StructuredOutput::Auto,
        }
    }
}

/// `[roles]`: one optional subsection per [`ModelRole`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RolesSection {
    /// `[roles.expander]`
    pub expander: Option<RoleConfig>,
    /// `[roles.generator]`
    pub generator: Option<RoleConfig>,
    /// `[roles.safe_responder]`
    pub safe_responder: Option<RoleConfig>,
    /// `[roles.unsafe_responder]`
    pub unsafe_responder: Option<RoleConfig>,
    /// `[roles.judge]`
    pub judge: Option<RoleConfig>,
    /// `[roles.target]`
    pub target: Option<RoleConfig>,
}

impl RolesSection {
    /// The configuration of one role, if the file sets it.
    pub fn get(&self, role: ModelRole) -> Option<&RoleConfig> {
        match role {
            ModelRole::Expander => self.expander.as_ref(),
            ModelRole::Generator => self.generator.as_ref(),
            ModelRole::SafeResponder => self.safe_responder.as_ref(),
            ModelRole::UnsafeResponder => self.unsafe_responder.as_ref(),
            ModelRole::Judge => self.judge.as_ref(),
            ModelRole::Target => self.target.as_ref(),
        }
    }

    /// Mutable access to one role's slot.
    pub fn slot_mut(&mut self, role: ModelRole) -> &mut Option<RoleConfig> {
        match role {
            ModelRole::Expander => &mut self.expander,
            ModelRole::Generator => &mut self.generator,
            ModelRole::SafeResponder => &mut self.safe_responder,
            ModelRole::UnsafeResponder => &mut self.unsafe_responder,
            ModelRole::Judge => &mut self.judge,
            ModelRole::Target => &mut self.target,
        }
    }

    /// The roles that are set, in pipeline order.
    pub fn iter(&self) -> impl Iterator<Item = (ModelRole, &RoleConfig)> {
        ModelRole::ALL.into_iter().filter_map(|r| self.get(r).map(|c| (r, c)))
    }

    /// How many roles are set.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether no role is set.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `[roles.ROLE]`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoleConfig {
    /// The model id: it goes into cache keys, prices and reports.
    pub model: String,
    /// Names of `[endpoints]` serving this model; calls are balanced over them
    /// and fail over between them.
    pub endpoints: Vec<String>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Nucleus sampling mass.
    pub top_p: Option<f32>,
    /// Most new tokens per call.
    pub max_tokens: Option<u32>,
}

/// `[prices.MODEL]`, in US dollars per million tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Price {
    /// Per million prompt tokens.
    pub input_per_mtok: f64,
    /// Per million completion tokens.
    pub output_per_mtok: f64,
}

impl Price {
    /// The cost of a call with these token counts.
    pub fn cost(&self, prompt_tokens: u64, completion_tokens: u64) -> f64 {
        (prompt_tokens as f64 * self.input_per_mtok + completion_tokens as f64 * self.output_per_mtok) / 1e6
    }
}

/// `[taxonomy]`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TaxonomySection {
    /// A taxonomy file in sagert's format; the built-in one when absent.
    pub path: Option<PathBuf>,
    /// Path prefixes to generate for (`crime`, `crime/cyber`,
    /// `crime/cyber/account_takeover`); all leaves when empty.
    pub select: Vec<String>,
}

/// `[stages]`: one subsection per generation stage.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StagesSection {
    /// Leaves into topics.
    pub expand: ExpandStage,
    /// Topics into seed instructions.
    pub seed_instructions: SeedInstructionsStage,
    /// Topics into long-form raw text.
    pub raw_text: RawTextStage,
    /// Raw text into queries of each jailbreak type.
    pub extract: ExtractStage,
    /// Queries rewritten over epochs.
    pub diversify: DiversifyStage,
    /// Chosen and rejected responses.
    pub responses: ResponsesStage,
    /// Judge checks and regeneration.
    pub validate: ValidateStage,
    /// Exact and near-duplicate removal.
    pub dedup: DedupStage,
    /// Per-cell quotas.
    pub balance: BalanceStage,
    /// The train/test split.
    pub split: SplitStage,
    /// The dataset directory.
    pub export: ExportStage,
}

/// `[stages.expand]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExpandStage {
    /// Expansion rounds per leaf; each round sees the topics so far.
    pub rounds: u32,
    /// New topics asked for per leaf and round.
    pub topics_per_round: u32,
}

impl Default for ExpandStage {
    fn default() -> Self {
        ExpandStage { rounds: 2, topics_per_round: 4 }
    }
}

/// `[stages.seed_instructions]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SeedInstructionsStage {
    /// Seed instructions per topic.
    pub per_topic: u32,
}

impl Default for SeedInstructionsStage {
    fn default() -> Self {
        SeedInstructionsStage { per_topic: 3 }
    }
}

/// The four raw-text task formats of SAGE.
pub const RAW_TEXT_FORMATS: [&str; 4] = ["blog", "article", "book_summary", "social_media_post"];

/// `[stages.raw_text]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawTextStage {
    /// Formats to write, from [`RAW_TEXT_FORMATS`].
    pub formats: Vec<String>,
    /// Documents per topic and format.
    pub samples_per_topic: u32,
}

impl Default for RawTextStage {
    fn default() -> Self {
        RawTextStage {
            formats: RAW_TEXT_FORMATS.iter().map(|s| s.to_string()).collect(),
            samples_per_topic: 1,
        }
    }
}

/// The nine jailbreak types of SAGE's query extraction.
pub const JAILBREAK_TYPES: [&str; 9] = [
    "direct",
    "biased",
    "toxic_completion",
    "fictional_scenario",
    "role_play",
    "story_writing",
    "coding_task",
    "subtask_decomposition",
    "constrained_situation",
];

/// `[stages.extract]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExtractStage {
    /// Jailbreak types to extract, from [`JAILBREAK_TYPES`].
    pub jailbreak_types: Vec<String>,
    /// Queries per raw text and type.
    pub per_type: u32,
}

impl Default for ExtractStage {
    fn default() -> Self {
        ExtractStage { jailbreak_types: JAILBREAK_TYPES.iter().map(|s| s.to_string()).collect(), per_type: 1 }
    }
}

/// `[stages.diversify]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiversifyStage {
    /// Rewriting epochs; each adds one rewritten query per query.
    pub epochs: u32,
}

impl Default for DiversifyStage {
    fn default() -> Self {
        DiversifyStage { epochs: 1 }
    }
}

/// Where the rejected response comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectedSource {
    /// Sampled from the `unsafe_responder` role.
    #[default]
    UnsafeResponder,
    /// The raw text the query was mined from, cut to the responder's length.
    RawText,
}

/// `[stages.responses]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResponsesStage {
    /// Candidates sampled for the chosen response; the judge keeps the safest
    /// one that is not an over-refusal (rejection sampling).
    pub chosen_candidates: u32,
    /// Candidates sampled for the rejected response; the judge keeps the most
    /// harmful one.
    pub rejected_candidates: u32,
    /// Where the rejected response comes from.
    pub rejected_source: RejectedSource,
}

impl Default for ResponsesStage {
    fn default() -> Self {
        ResponsesStage {
            chosen_candidates: 2,
            rejected_candidates: 1,
            rejected_source: RejectedSource::default(),
        }
    }
}

/// Which judge validates items.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JudgeKind {
    /// The offline classifier (MiniLM embeddings + logistic refusal and harm
    /// heads): no model calls, no `judge` role needed.
    #[default]
    Classifier,
    /// The `judge` role, asked for a structured verdict.
    Llm,
}

/// `[stages.validate]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ValidateStage {
    /// The judge.
    pub judge: JudgeKind,
    /// Times a failed item's responses are regenerated before it is dropped.
    pub max_regenerations: u32,
    /// Expected share of items that fail validation once, for estimates.
    pub expected_failure_rate: f64,
    /// Classifier judge: a response whose harm probability reaches this is unsafe.
    pub harm_threshold: f64,
    /// Classifier judge: a query whose harm probability reaches this is harmful.
    pub query_harm_threshold: f64,
    /// Classifier judge: a query is in its leaf when the leaf is among the
    /// taxonomy's `category_top_k` leaves nearest to it (embedding cosine).
    pub category_top_k: u32,
    /// Classifier judge: a chosen refusal shorter than this many words is an
    /// over-refusal (it refuses and offers nothing).
    pub min_helpful_words: u32,
    /// Classifier judge: a rejected response below `harm_threshold` still
    /// counts as unsafe when its harm probability exceeds the chosen one's by
    /// this much and it refuses no more than the chosen one (the pair is
    /// ordered the right way).
    pub harm_margin: f64,
}

impl Default for ValidateStage {
    fn default() -> Self {
        ValidateStage {
            judge: JudgeKind::Classifier,
            max_regenerations: 2,
            expected_failure_rate: 0.2,
            harm_threshold: 0.5,
            query_harm_threshold: 0.5,
            category_top_k: 10,
            min_helpful_words: 15,
            harm_margin: 0.1,
        }
    }
}

/// `[stages.dedup]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DedupStage {
    /// MinHash-LSH Jaccard threshold for near duplicates, in (0, 1].
    pub minhash_threshold: f64,
    /// Embedding cosine threshold for near duplicates, in (0, 1].
    pub embedding_threshold: f64,
    /// MinHash permutations.
    pub num_perm: u32,
}

impl Default for DedupStage {
    fn default() -> Self {
        DedupStage { minhash_threshold: 0.8, embedding_threshold: 0.95, num_perm: 128 }
    }
}

/// `[stages.balance]`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BalanceStage {
    /// Most items per leaf and jailbreak type; no cap when absent.
    pub per_cell: Option<u32>,
}

/// `[stages.split]`: train/test by topic, so that test topics are unseen in train.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SplitStage {
    /// Share of each leaf's topics that go to the test split, in [0, 1).
    pub test_fraction: f64,
}

impl Default for SplitStage {
    fn default() -> Self {
        SplitStage { test_fraction: 0.2 }
    }
}

/// The dataset formats an export can write.
pub const EXPORT_FORMATS: [&str; 4] = ["trl", "trl-chat", "kto", "redteam"];

/// `[stages.export]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExportStage {
    /// Formats written into `RUN_DIR/dataset`, from [`EXPORT_FORMATS`].
    pub formats: Vec<String>,
    /// The license field of the dataset card.
    pub license: String,
}

impl Default for ExportStage {
    fn default() -> Self {
        ExportStage {
            formats: EXPORT_FORMATS.iter().map(|s| s.to_string()).collect(),
            license: "cc-by-nc-4.0".into(),
        }
    }
}
