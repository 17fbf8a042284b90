//! The embedded inference backend of sagert: a GGUF model run in-process by
//! llama.cpp, behind the [`sagert_backend::ChatBackend`] and
//! [`sagert_backend::LogProbScorer`] traits.
//!
//! llama.cpp (through the `llama-cpp-2` bindings) does tokenization, forward
//! passes and the KV cache, nothing else. What decides what the model says is
//! ours, in Rust:
//!
//! - [`engine`]: a dedicated thread owns the llama.cpp context and runs
//!   **continuous batching**: concurrent requests share every forward pass (one
//!   token per decoding sequence in one batch, chunked prompt prefill in the rest
//!   of it), sequences finish and free their KV cells independently, and waiting
//!   requests are admitted while others are still decoding.
//! - [`sampler`]: greedy, temperature, top-k, top-p, min-p and repetition
//!   penalty, with a seeded generator per sequence, so a seed reproduces its
//!   output whatever else shares the batch.
//! - [`template`]: the model's own Jinja chat template from its GGUF metadata,
//!   rendered with minijinja as transformers does.
//! - [`constrained`]: JSON-schema constrained decoding with llguidance: the
//!   schema's grammar masks the logits before our sampler sees them, so output
//!   always parses ([`Capabilities::json_schema`] is `true`). The contract is
//!   `sagert-openai`'s: schema instructions in the system message, the check
//!   with [`sagert_backend::json`], one repair round, else
//!   [`BackendError::Structured`].
//! - Prefix reuse and streaming: see [`engine`].
//! - Log-prob scoring: the completion's tokens scored from the logits of the
//!   positions before them, in f64, batched with everything else. Checked against
//!   llama-cpp-python by `scripts/reference/llama_logprobs.py` and
//!   `tests/fixtures/logprobs_smollm2.json`.
//!
//! Defaults for what a [`SamplingParams`] leaves unset: temperature 1.0
//! (OpenAI's default; 0 is greedy), top-p 1.0, `max_tokens` until the sequence's
//! context is full, a fresh random seed. Top-k, min-p and the repetition penalty
//! are not in `SamplingParams`; they come from [`LlamaOptions`] and are off by
//! default.
//!
//! Generated text is detokenized without special tokens; a completion's token
//! count includes the end-of-generation token when it ended on one. With
//! `n > 1` the prompt is prefilled once and its KV copied to the other
//! sequences, so `prompt_tokens` counts it once. The `cuda` feature builds
//! llama.cpp with CUDA and [`LlamaOptions::gpu_layers`] offloads layers to the
//! GPU. llama.cpp's own logging is silenced.
//!
//! # Numerics
//!
//! Sampling never depends on the batch (per-sequence generators), but the logits
//! may: llama.cpp's CPU kernels for quantized weights quantize activations to 8
//! bits along paths that depend on the batch shape, and small models with
//! outlier activations (SmolLM2-135M at Q4_1) amplify that, so one completion's
//! log-prob can move by 1e-3 to 1e-1 nat with what shares its batches, and
//! greedy text can in rare cases diverge late. With F32 (or F16) weights and
//! [`LlamaOptions::kv_cache_f32`] the scorer agrees with llama-cpp-python to
//! ~2e-5 nat (`tests/llama.rs`). Flash attention is off by default because its
//! CPU kernel accumulates in f16 ([`LlamaOptions::flash_attention`]).
//!
//! The KV cache is f32 by default. With llama.cpp's f16 cache, attention runs
//! different kernels for a one-token batch and a whole prompt, and prefix reuse
//! (which feeds only a prompt's last token) then changed the greedy text of 4
//! of 12 short SmolLM2 prompts between a first and a repeated call; with the
//! f32 cache, 0 of 12. A repeated request gives the same answer, whatever the
//! cache held before. The f16 cache ([`LlamaOptions::kv_cache_f32`] `= false`)
//! halves KV memory at the price of that reproducibility.
//!
//! The model-backend traits live in `sagert-backend`; the HTTP backend beside
//! this one is `sagert-openai`; `sagert-engine` adds caching and budgets above
//! both.

pub mod constrained;
pub mod engine;
mod error;
pub mod sampler;
mod score;
mod structured;
pub mod template;
mod text;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Instant;

use llama_cpp_2::llama_backend::LlamaBackend as LlamaRuntime;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use sagert_backend::{
    BackendError, BoxFuture, Capabilities, ChatBackend, ChatMessage, ChatRequest, ChatResponse, Choice,
    LogProbScorer, SamplingParams, ScoreRequest, ScoreResult, Usage,
};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::oneshot;

pub use constrained::{Grammars, Matcher};
use engine::{EngineConfig, GenerateJob, Job};
pub use engine::{EngineStats, TextDelta};
pub use error::LlamaError;
pub use sampler::SamplerConfig;
pub use score::TokenScores;
use template::ChatTemplate;

/// The most parallel sequences llama.cpp allows in one context (`LLAMA_MAX_SEQ`).
pub const MAX_SEQUENCES: usize = 256;

/// How to load and run a model.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaOptions {
    /// The id the backend reports (cache keys, reports).
    pub model_id: String,
    /// CPU threads for llama.cpp's forward passes.
    pub threads: usize,
    /// KV cache cells per sequence: prompt plus output must fit.
    pub context_per_sequence: u32,
    /// Sequences decoded in parallel (a request with `n` choices takes `n`).
    pub max_sequences: usize,
    /// Most tokens in one `llama_decode` batch (decoding tokens plus prefill).
    pub batch_tokens: u32,
    /// Default top-k for every request; 0 is off.
    pub top_k: usize,
    /// Default min-p for every request; 0.0 is off.
    pub min_p: f32,
    /// Default repetition penalty for every request; 1.0 is off.
    pub repetition_penalty: f32,
    /// Model layers offloaded to the GPU (needs the `cuda` feature); 0 runs on the CPU.
    pub gpu_layers: u32,
    /// llama.cpp's flash attention. Off by default: its CPU kernel accumulates in
    /// f16, which moves log-probs by up to ~1 nat over a 20-token completion
    /// (measured on SmolLM2 against the same model without it). Worth turning on
    /// with a GPU.
    pub flash_attention: bool,
    /// Keep the KV cache in f32 (the default) instead of llama.cpp's f16: twice
    /// the memory, and results that do not move with the cache's rounding or
    /// with prefix reuse (on SmolLM2-135M, f16 against f32 moves a 15-token
    /// log-prob sum by up to ~0.9 nat; see the crate docs on reproducibility).
    pub kv_cache_f32: bool,
    /// Reuse the KV cache of prompt prefixes computed before (a shared system
    /// prompt, one document under several instructions); see [`engine`]. The
    /// output is the same either way; off only to measure what it saves.
    pub prefix_cache: bool,
    /// Constrain a request's JSON schema by decoding: every token is sampled
    /// under the schema's grammar ([`constrained`]), so the output parses. Off,
    /// schemas are asked for in the prompt only (then checked, with one repair).
    pub constrained_decoding: bool,
}

impl Default for LlamaOptions {
    fn default() -> Self {
        LlamaOptions {
            model_id: "llama".into(),
            threads: 2,
            context_per_sequence: 2048,
            max_sequences: 8,
            batch_tokens: 512,
            top_k: 0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            gpu_layers: 0,
            flash_attention: false,
            kv_cache_f32: true,
            prefix_cache: true,
            constrained_decoding: true,
        }
    }
}

impl LlamaOptions {
    /// Check the options against each other; returns what is wrong.
    pub fn check(&self) -> Result<(), LlamaError> {
        let fail = |m: String| Err(LlamaError::Options(m));
        if self.threads == 0 {
            return fail("threads must be at least 1".into());
        }
        if !(1..=MAX_SEQUENCES).contains(&self.max_sequences) {
            return fail(format!("max_sequences must be in 1..={MAX_SEQUENCES}, got {}", self.max_sequences));
        }
        if self.context_per_sequence < 16 {
            return fail(format!(
                "context_per_sequence must be at least 16, got {}",
                self.context_per_sequence
            ));
        }
        if u64::from(self.context_per_sequence) * self.max_sequences as u64 > u64::from(i32::MAX as u32) {
            return fail("context_per_sequence * max_sequences is too large".into());
        }
        if (self.batch_tokens as usize) < self.max_sequences {
            return fail(format!(
                "batch_tokens ({}) must be at least max_sequences ({}): every decoding sequence needs a row in each batch",
                self.batch_tokens, self.max_sequences
            ));
        }
        self.sampler(&SamplingParams::default()).check().map_err(LlamaError::Options)
    }

    /// The sampler settings for a request: its temperature and top-p (1.0 when
    /// unset), the options' top-k, min-p and repetition penalty.
    pub fn sampler(&self, params: &SamplingParams) -> SamplerConfig {
        SamplerConfig {
            temperature: params.temperature.unwrap_or(1.0),
            top_k: self.top_k,
            top_p: params.top_p.unwrap_or(1.0),
            min_p: self.min_p,
            repetition_penalty: self.repetition_penalty,
        }
    }
}

/// llama.cpp's process-wide state: initialised once, logs silenced.
fn runtime() -> Result<&'static LlamaRuntime, LlamaError> {
    static RUNTIME: OnceLock<Result<LlamaRuntime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let mut runtime = LlamaRuntime::init().map_err(|e| e.to_string())?;
            if std::env::var_os("SAGERT_LLAMA_LOGS").is_none() {
                runtime.void_logs();
            }
            Ok(runtime)
        })
        .as_ref()
        .map_err(|e| LlamaError::Init(e.clone()))
}

/// A GGUF model served in-process; see the [crate docs](crate).
pub struct LlamaBackend {
    options: LlamaOptions,
    path: PathBuf,
    model: Arc<LlamaModel>,
    template: Option<ChatTemplate>,
    add_bos: bool,
    jobs: Option<Sender<Job>>,
    engine: Option<JoinHandle<()>>,
    stats: Arc<Mutex<EngineStats>>,
    seeds: AtomicU64,
    /// The vocabulary's grammar tables, built on the first constrained request.
    grammars: OnceLock<Result<Grammars, String>>,
}

impl std::fmt::Debug for LlamaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlamaBackend").field("path", &self.path).field("options", &self.options).finish()
    }
}

impl LlamaBackend {
    /// Load the GGUF model at `path` and start its engine thread.
    ///
    /// A model without a chat template loads (it can still score plain text with
    /// [`LlamaBackend::score_text`]); chat calls on it fail with
    /// [`LlamaError::NoChatTemplate`].
    pub fn load(path: &Path, options: LlamaOptions) -> Result<LlamaBackend, LlamaError> {
        options.check()?;
        if !path.is_file() {
            return Err(LlamaError::ModelMissing { path: path.to_path_buf() });
        }
        let runtime = runtime()?;
        let params = LlamaModelParams::default().with_n_gpu_layers(options.gpu_layers);
        let model = LlamaModel::load_from_file(runtime, path, &params)
            .map_err(|e| LlamaError::Load { path: path.to_path_buf(), message: e.to_string() })?;
        let n_ctx_train = model.n_ctx_train();
        if n_ctx_train > 0 && options.context_per_sequence > n_ctx_train {
            return Err(LlamaError::Options(format!(
                "context_per_sequence {} exceeds the {n_ctx_train} tokens {} was trained on",
                options.context_per_sequence,
                path.display()
            )));
        }
        let vocab = model.vocab();
        let add_bos = vocab.should_add_bos();
        let special_text = |token: LlamaToken| {
            if token.0 < 0 {
                return String::new();
            }
            String::from_utf8_lossy(&vocab.token_to_piece(token, true, None)).into_owned()
        };
        let (bos, eos) = (special_text(vocab.bos()), special_text(vocab.eos()));
        let template = match model.meta_val_str("tokenizer.chat_template") {
            Ok(source) => Some(ChatTemplate::new(&source, &bos, &eos)?),
            Err(_) => None,
        };
        let model = Arc::new(model);
        let config = EngineConfig {
            threads: options.threads,
            context_per_sequence: options.context_per_sequence,
            max_sequences: options.max_sequences,
            batch_tokens: options.batch_tokens,
            flash_attention: options.flash_attention,
            kv_cache_f32: options.kv_cache_f32,
            prefix_cache: options.prefix_cache,
        };
        let stats = Arc::new(Mutex::new(EngineStats::default()));
        let (jobs, engine) = engine::spawn(runtime, Arc::clone(&model), config, path, Arc::clone(&stats))?;
        Ok(LlamaBackend {
            options,
            path: path.to_path_buf(),
            model,
            template,
            add_bos,
            jobs: Some(jobs),
            engine: Some(engine),
            stats,
            seeds: AtomicU64::new(0),
            grammars: OnceLock::new(),
        })
    }

    /// The options the backend was loaded with.
    pub fn options(&self) -> &LlamaOptions {
        &self.options
    }

    /// The model file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The engine's counters so far.
    pub fn stats(&self) -> EngineStats {
        *self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Render `messages` with the model's chat template, ending with the opening
    /// of the assistant's turn.
    pub fn render_chat(&self, messages: &[ChatMessage]) -> Result<String, LlamaError> {
        let template =
            self.template.as_ref().ok_or_else(|| LlamaError::NoChatTemplate { path: self.path.clone() })?;
        template.render(messages, true)
    }

    /// Token ids of `text` as the backend feeds it: special tokens written in
    /// the text (`<|im_start|>`) are parsed, and BOS is prepended when the
    /// model's metadata asks for it and the text does not already start with it.
    pub fn tokenize(&self, text: &str) -> Vec<u32> {
        self.tokens(text).into_iter().map(|t| t.0 as u32).collect()
    }

    fn tokens(&self, text: &str) -> Vec<LlamaToken> {
        let vocab = self.model.vocab();
        let mut tokens = vocab.tokenize(text.as_bytes(), false, true);
        let bos = vocab.bos();
        if self.add_bos && bos.0 >= 0 && tokens.first() != Some(&bos) {
            tokens.insert(0, bos);
        }
        tokens
    }

    /// The text of token ids, special tokens included (for diagnostics).
    pub fn detokenize(&self, tokens: &[u32]) -> String {
        let tokens: Vec<LlamaToken> = tokens.iter().map(|&t| LlamaToken(t as i32)).collect();
        String::from_utf8_lossy(&self.model.vocab().detokenize(&tokens, false, true)).into_owned()
    }

    fn send(&self, job: Job) -> Result<(), LlamaError> {
        let jobs = self
            .jobs
            .as_ref()
            .ok_or_else(|| LlamaError::EngineStopped("the backend is shutting down".into()))?;
        jobs.send(job).map_err(|_| LlamaError::EngineStopped("the engine thread is gone".into()))
    }

    /// The grammar tables of the model's vocabulary (built once, ~0.1 s for
    /// 49k tokens).
    fn grammars(&self) -> Result<&Grammars, LlamaError> {
        self.grammars
            .get_or_init(|| Grammars::new(Arc::clone(&self.model)).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| LlamaError::Invalid(e.clone()))
    }

    fn fresh_seed(&self) -> u64 {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(self.seeds.fetch_add(1, Ordering::Relaxed));
        hasher.finish()
    }

    /// Generate choices for `messages` (no schema handling): rendered with the
    /// chat template, sampled as `params` says. Returns the choices and usage.
    pub(crate) async fn generate(
        &self,
        messages: &[ChatMessage],
        params: &SamplingParams,
        stream: Option<UnboundedSender<TextDelta>>,
        schema: Option<&serde_json::Value>,
    ) -> Result<(Vec<Choice>, Usage), LlamaError> {
        let n = params.n as usize;
        if n == 0 || n > self.options.max_sequences {
            return Err(LlamaError::Invalid(format!(
                "n must be in 1..={} (max_sequences), got {n}",
                self.options.max_sequences
            )));
        }
        if params.max_tokens == Some(0) {
            return Err(LlamaError::Invalid("max_tokens must be at least 1".into()));
        }
        let sampler = self.options.sampler(params);
        sampler.check().map_err(LlamaError::Invalid)?;
        let constraints = match schema {
            Some(schema) => {
                let grammars = self.grammars()?;
                (0..n).map(|_| grammars.json_schema(schema)).collect::<Result<Vec<_>, _>>()?
            }
            None => Vec::new(),
        };
        let prompt = self.tokens(&self.render_chat(messages)?);
        let context = self.options.context_per_sequence as usize;
        if prompt.len() >= context {
            return Err(LlamaError::Invalid(format!(
                "the prompt has {} tokens, which leaves no room in the context of {context} tokens per sequence",
                prompt.len()
            )));
        }
        let max_tokens = params.max_tokens.map_or(usize::MAX, |m| m as usize).min(context - prompt.len());
        let prompt_tokens = prompt.len() as u64;
        let (reply, answer) = oneshot::channel();
        self.send(Job::Generate(GenerateJob {
            prompt,
            n,
            max_tokens,
            stop: params.stop.clone(),
            sampler,
            seed: params.seed.unwrap_or_else(|| self.fresh_seed()),
            stream,
            constraints,
            reply,
        }))?;
        let generated = answer
            .await
            .map_err(|_| LlamaError::EngineStopped("no answer from the engine thread".into()))??;
        let usage = Usage { prompt_tokens, completion_tokens: generated.iter().map(|c| c.tokens).sum() };
        let choices =
            generated.into_iter().map(|c| Choice { text: c.text, finish_reason: c.finish_reason }).collect();
        Ok((choices, usage))
    }

    /// Answer `request` as [`ChatBackend::chat`] does, sending each choice's
    /// text to `stream` as it is generated. The concatenated deltas of a choice
    /// are its text in the response. A request with a schema is answered whole
    /// (prompt-mode structured output may repair a choice), then streamed as
    /// one delta per choice.
    pub async fn chat_streaming(
        &self,
        request: &ChatRequest,
        stream: UnboundedSender<TextDelta>,
    ) -> Result<ChatResponse, BackendError> {
        if request.schema.is_some() {
            let response = self.chat_request(request, None).await?;
            for (choice, c) in response.choices.iter().enumerate() {
                let _ = stream.send(TextDelta { choice, text: c.text.clone() });
            }
            return Ok(response);
        }
        self.chat_request(request, Some(stream)).await
    }

    async fn chat_request(
        &self,
        request: &ChatRequest,
        stream: Option<UnboundedSender<TextDelta>>,
    ) -> Result<ChatResponse, BackendError> {
        let started = Instant::now();
        match &request.schema {
            Some(schema) => structured::chat(self, request, schema).await,
            None => {
                let (choices, usage) = self
                    .generate(&request.messages, &request.params, stream, None)
                    .await
                    .map_err(|e| e.into_backend_error(&self.options.model_id, started.elapsed()))?;
                Ok(ChatResponse { model: self.options.model_id.clone(), choices, usage })
            }
        }
    }
}

impl Drop for LlamaBackend {
    fn drop(&mut self) {
        // Closing the channel ends the engine loop once its work is done.
        self.jobs.take();
        if let Some(engine) = self.engine.take() {
            let _ = engine.join();
        }
    }
}

impl ChatBackend for LlamaBackend {
    fn model_id(&self) -> &str {
        &self.options.model_id
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { json_schema: self.options.constrained_decoding, logprobs: true }
    }

    fn chat<'a>(&'a self, request: &'a ChatRequest) -> BoxFuture<'a, Result<ChatResponse, BackendError>> {
        Box::pin(self.chat_request(request, None))
    }
}

impl LogProbScorer for LlamaBackend {
    fn model_id(&self) -> &str {
        &self.options.model_id
    }

    fn score<'a>(
        &'a self,
        requests: &'a [ScoreRequest],
    ) -> BoxFuture<'a, Result<Vec<ScoreResult>, BackendError>> {
        Box::pin(async move {
            let started = Instant::now();
            self.score_chat(requests)
                .await
                .map_err(|e| e.into_backend_error(&self.options.model_id, started.elapsed()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_options_check_and_map_requests() {
        let options = LlamaOptions::default();
        assert!(options.check().is_ok());
        let sampler = options.sampler(&SamplingParams::default());
        assert_eq!(sampler.temperature, 1.0);
        assert_eq!(sampler.top_p, 1.0);
        let params = SamplingParams { temperature: Some(0.0), top_p: Some(0.9), ..SamplingParams::default() };
        let sampler = LlamaOptions { top_k: 40, ..options }.sampler(&params);
        assert_eq!((sampler.temperature, sampler.top_p, sampler.top_k), (0.0, 0.9, 40));
    }

    #[test]
    fn bad_options_say_what_is_wrong() {
        let check = |o: LlamaOptions| o.check().unwrap_err().to_string();
        assert!(check(LlamaOptions { threads: 0, ..LlamaOptions::default() }).contains("threads"));
        assert!(check(LlamaOptions { max_sequences: 0, ..LlamaOptions::default() }).contains("max_sequences"));
        assert!(check(LlamaOptions { batch_tokens: 4, ..LlamaOptions::default() }).contains("batch_tokens"));
        assert!(check(LlamaOptions { min_p: 2.0, ..LlamaOptions::default() }).contains("min_p"));
    }

    #[test]
    fn missing_model_file_is_reported_with_its_path() {
        let e =
            LlamaBackend::load(Path::new("/nonexistent/model.gguf"), LlamaOptions::default()).unwrap_err();
        assert!(
            matches!(&e, LlamaError::ModelMissing { path } if path == Path::new("/nonexistent/model.gguf"))
        );
    }
}
