//! The engine thread: one llama.cpp context, continuous batching over many
//! requests.
//!
//! [`crate::LlamaBackend`] sends jobs over a channel; the thread owns the
//! context and its KV cache and answers each job on its own oneshot channel.
//! The context has `max_sequences` sequence slots (llama.cpp sequence ids, each
//! with its own KV stream of `context_per_sequence` cells). Each turn of the loop:
//!
//! 1. **intake**: new jobs join the waiting queue (the thread blocks only when
//!    it has nothing else to do); jobs whose caller went away are dropped, and
//!    their slots freed.
//! 2. **admit**: waiting jobs take free slots in arrival order (a generation
//!    with `n` choices takes `n` slots, a score takes one); a job that does not
//!    fit waits, and so do the jobs behind it.
//! 3. **batch**: one `llama_batch` gets the pending token of every decoding
//!    sequence (one each, logits on), then prompt tokens of admitted jobs in
//!    admission order until `batch_tokens` is reached (chunked prefill; logits
//!    only where they are needed: a prompt's last token, a scored position).
//! 4. **decode**: one `llama_decode` for all of it.
//! 5. **sample**: every row with logits is handled: at a prompt's end the
//!    prompt's KV is copied to the job's other choices (`seq_cp`) and every
//!    choice samples its first token; a decoding sequence samples its next one;
//!    a scored position gives a log-probability. A sequence finishes on an
//!    end-of-generation token or a stop string (`stop`) or at `max_tokens`
//!    (`length`); its KV cells are removed (`seq_rm`) and its slot is free for
//!    the next admission, while the others go on decoding.
//!
//! A failed `llama_decode` fails every job in flight (their KV state is no
//! longer known) and clears the cache; the engine goes on with the waiting jobs.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use llama_cpp_2::context::params::{KvCacheType, LlamaContextParams};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend as LlamaRuntime;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use sagert_backend::FinishReason;
use tokio::sync::oneshot;

use crate::error::LlamaError;
use crate::sampler::{log_softmax_at, Rng, Sampler, SamplerConfig, PENALTY_LAST_N};
use crate::text::TextOut;

/// Counters of the engine's work since the backend was loaded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// `llama_decode` calls (forward passes over one batch).
    pub decode_steps: u64,
    /// Tokens that went through `llama_decode`: prompt, scored and generated.
    pub tokens_decoded: u64,
    /// Tokens sampled (every generated token, end-of-generation tokens included).
    pub tokens_generated: u64,
    /// The most distinct sequences that shared one `llama_decode` call.
    pub max_batch_sequences: usize,
    /// Jobs admitted while other sequences were in the middle of generating
    /// (continuous, not static, batching).
    pub admitted_while_decoding: u64,
}

/// The engine's sizes, checked by [`crate::LlamaOptions`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct EngineConfig {
    pub threads: usize,
    pub context_per_sequence: u32,
    pub max_sequences: usize,
    pub batch_tokens: u32,
    pub flash_attention: bool,
    pub kv_cache_f32: bool,
}

/// `LLAMA_FLASH_ATTN_TYPE_DISABLED` and `_ENABLED` (`llama_flash_attn_type` is a C int).
const FLASH_ATTENTION: [i32; 2] = [0, 1];

/// One generated choice.
#[derive(Debug)]
pub(crate) struct GeneratedChoice {
    pub text: String,
    pub finish_reason: FinishReason,
    /// Sampled tokens, the end-of-generation token included.
    pub tokens: u64,
}

/// A generation: `n` choices of one prompt.
#[derive(Debug)]
pub(crate) struct GenerateJob {
    pub prompt: Vec<LlamaToken>,
    pub n: usize,
    /// At least 1, and small enough that prompt + output fit the sequence's context.
    pub max_tokens: usize,
    pub stop: Vec<String>,
    pub sampler: SamplerConfig,
    /// Choice `i` draws from `Rng::new(seed, i)`.
    pub seed: u64,
    pub reply: oneshot::Sender<Result<Vec<GeneratedChoice>, LlamaError>>,
}

/// The log-probabilities of `tokens[scored_from..]`, each given the tokens
/// before it (`1 <= scored_from < tokens.len()`).
#[derive(Debug)]
pub(crate) struct ScoreJob {
    pub tokens: Vec<LlamaToken>,
    pub scored_from: usize,
    pub reply: oneshot::Sender<Result<Vec<f64>, LlamaError>>,
}

#[derive(Debug)]
pub(crate) enum Job {
    Generate(GenerateJob),
    Score(ScoreJob),
}

impl Job {
    fn slots(&self) -> usize {
        match self {
            Job::Generate(job) => job.n,
            Job::Score(_) => 1,
        }
    }

    fn is_cancelled(&self) -> bool {
        match self {
            Job::Generate(job) => job.reply.is_closed(),
            Job::Score(job) => job.reply.is_closed(),
        }
    }

    fn fail(self, error: LlamaError) {
        // A caller that went away does not need the answer.
        match self {
            Job::Generate(job) => drop(job.reply.send(Err(error))),
            Job::Score(job) => drop(job.reply.send(Err(error))),
        }
    }
}

/// Start the engine thread for `model`; returns once its context exists.
pub(crate) fn spawn(
    runtime: &'static LlamaRuntime,
    model: Arc<LlamaModel>,
    config: EngineConfig,
    path: &Path,
    stats: Arc<Mutex<EngineStats>>,
) -> Result<(Sender<Job>, JoinHandle<()>), LlamaError> {
    let (jobs, inbox) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::channel();
    let context_tokens = config.context_per_sequence * config.max_sequences as u32;
    let handle = std::thread::Builder::new()
        .name("sagert-llama-engine".into())
        .spawn(move || {
            let threads = i32::try_from(config.threads).unwrap_or(i32::MAX);
            let params = LlamaContextParams::default()
                .with_n_ctx(NonZeroU32::new(context_tokens))
                .with_n_batch(config.batch_tokens)
                .with_n_ubatch(config.batch_tokens)
                .with_n_seq_max(config.max_sequences as u32)
                .with_n_threads(threads)
                .with_n_threads_batch(threads)
                .with_kv_unified(false)
                .with_flash_attention_policy(FLASH_ATTENTION[usize::from(config.flash_attention)]);
            let params = if config.kv_cache_f32 {
                params.with_type_k(KvCacheType::F32).with_type_v(KvCacheType::F32)
            } else {
                params
            };
            let ctx = match model.new_context(runtime, params) {
                Ok(ctx) => ctx,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(()));
            Engine::new(&model, ctx, config, stats).run(&inbox);
        })
        .map_err(|e| LlamaError::Init(format!("cannot start the engine thread: {e}")))?;
    let context_error = |message: String| LlamaError::Context {
        path: path.to_path_buf(),
        context_tokens,
        sequences: config.max_sequences,
        message,
    };
    match ready_rx.recv() {
        Ok(Ok(())) => Ok((jobs, handle)),
        Ok(Err(message)) => {
            let _ = handle.join();
            Err(context_error(message))
        }
        Err(_) => {
            let _ = handle.join();
            Err(context_error("the engine thread ended while creating the context".into()))
        }
    }
}

/// One choice of a generation in flight.
struct ChoiceState {
    seq: i32,
    sampler: Sampler,
    text: TextOut,
    /// The prompt's last tokens and the output, for the repetition penalty.
    history: Vec<u32>,
    generated: u64,
    /// Where the next fed token goes (tokens in this sequence's KV).
    pos: i32,
    /// The sampled token to feed in the next batch.
    pending: Option<LlamaToken>,
    finish: Option<FinishReason>,
    released: bool,
}

struct GenActive {
    job: GenerateJob,
    /// Prompt tokens fed into the first choice's sequence.
    fed: usize,
    choices: Vec<ChoiceState>,
}

struct ScoreActive {
    job: ScoreJob,
    seq: i32,
    /// Tokens fed; `tokens.len() - 1` of them are needed (the last one's logits
    /// would predict past the end).
    fed: usize,
    logprobs: Vec<f64>,
    released: bool,
}

enum Active {
    Gen(GenActive),
    Score(ScoreActive),
}

/// What a batch row with logits is for.
#[derive(Clone, Copy)]
enum Row {
    /// The last prompt token of generation `active`.
    PromptEnd { active: usize },
    /// The fed token of a decoding choice.
    Token { active: usize, choice: usize },
    /// Position `pos` of score `active`: its logits score `tokens[pos + 1]`.
    Score { active: usize, pos: usize },
}

struct Engine<'m> {
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    batch: LlamaBatch<'static>,
    config: EngineConfig,
    free: Vec<i32>,
    waiting: VecDeque<Job>,
    active: Vec<Active>,
    rows: Vec<(i32, Row)>,
    piece: Vec<u8>,
    /// Admissions while others decoded, not yet added to `stats`.
    admitted_while_decoding: u64,
    stats: Arc<Mutex<EngineStats>>,
}

impl<'m> Engine<'m> {
    fn new(
        model: &'m LlamaModel,
        ctx: LlamaContext<'m>,
        config: EngineConfig,
        stats: Arc<Mutex<EngineStats>>,
    ) -> Self {
        Engine {
            model,
            ctx,
            batch: LlamaBatch::new(config.batch_tokens as usize, 1),
            config,
            // Popped from the end: sequence 0 first.
            free: (0..config.max_sequences as i32).rev().collect(),
            waiting: VecDeque::new(),
            active: Vec::new(),
            rows: Vec::new(),
            piece: Vec::new(),
            admitted_while_decoding: 0,
            stats,
        }
    }

    fn run(mut self, inbox: &Receiver<Job>) {
        loop {
            if self.active.is_empty() && self.waiting.is_empty() {
                match inbox.recv() {
                    Ok(job) => self.waiting.push_back(job),
                    Err(_) => return,
                }
            }
            loop {
                match inbox.try_recv() {
                    Ok(job) => self.waiting.push_back(job),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        if self.active.is_empty() && self.waiting.is_empty() {
                            return;
                        }
                        break;
                    }
                }
            }
            self.drop_cancelled();
            self.admit();
            self.step();
        }
    }

    fn drop_cancelled(&mut self) {
        self.waiting.retain(|job| !job.is_cancelled());
        for active in &mut self.active {
            let cancelled = match active {
                Active::Gen(g) => g.job.reply.is_closed(),
                Active::Score(s) => s.job.reply.is_closed(),
            };
            if cancelled {
                release_all(&mut self.ctx, &mut self.free, active);
            }
        }
        self.active.retain(|a| !is_released(a));
    }

    fn admit(&mut self) {
        while let Some(job) = self.waiting.front() {
            if job.slots() > self.config.max_sequences {
                // Never admissible (callers check this): answer instead of waiting forever.
                let message = format!(
                    "a job needs {} sequences; the engine has {}",
                    job.slots(),
                    self.config.max_sequences
                );
                if let Some(job) = self.waiting.pop_front() {
                    job.fail(LlamaError::Invalid(message));
                }
                continue;
            }
            if job.slots() > self.free.len() {
                break;
            }
            let Some(job) = self.waiting.pop_front() else { break };
            let decoding = self.active.iter().any(|a| match a {
                Active::Gen(g) => g.choices.iter().any(|c| c.pending.is_some()),
                Active::Score(_) => false,
            });
            self.admitted_while_decoding += u64::from(decoding);
            let active = match job {
                Job::Generate(job) => {
                    let tail = &job.prompt[job.prompt.len().saturating_sub(PENALTY_LAST_N)..];
                    let history: Vec<u32> = tail.iter().map(|t| t.0 as u32).collect();
                    let choices = (0..job.n)
                        .map(|i| ChoiceState {
                            seq: self.free.pop().expect("admission checked the free slots"),
                            sampler: Sampler::new(job.sampler.clone(), Rng::new(job.seed, i as u64)),
                            text: TextOut::new(&job.stop),
                            history: history.clone(),
                            generated: 0,
                            pos: job.prompt.len() as i32,
                            pending: None,
                            finish: None,
                            released: false,
                        })
                        .collect();
                    Active::Gen(GenActive { job, fed: 0, choices })
                }
                Job::Score(job) => Active::Score(ScoreActive {
                    seq: self.free.pop().expect("admission checked the free slots"),
                    job,
                    fed: 0,
                    logprobs: Vec::new(),
                    released: false,
                }),
            };
            self.active.push(active);
        }
    }

    /// Build one batch, decode it, handle its logits, retire what finished.
    fn step(&mut self) {
        self.batch.clear();
        self.rows.clear();
        let mut sequences = 0;
        // Decoding sequences first: one token each.
        for (a, active) in self.active.iter().enumerate() {
            let Active::Gen(gen) = active else { continue };
            for (c, choice) in gen.choices.iter().enumerate() {
                if let Some(token) = choice.pending {
                    self.rows.push((self.batch.n_tokens(), Row::Token { active: a, choice: c }));
                    self.batch
                        .add(token, choice.pos, &[choice.seq], true)
                        .expect("batch sized for every sequence");
                    sequences += 1;
                }
            }
        }
        // Then prompts, chunked to fill the batch.
        let mut budget = self.config.batch_tokens as usize - self.batch.n_tokens() as usize;
        for (a, active) in self.active.iter_mut().enumerate() {
            if budget == 0 {
                break;
            }
            match active {
                Active::Gen(gen) if gen.fed < gen.job.prompt.len() => {
                    let seq = gen.choices[0].seq;
                    let end = gen.job.prompt.len().min(gen.fed + budget);
                    for pos in gen.fed..end {
                        let last = pos + 1 == gen.job.prompt.len();
                        if last {
                            self.rows.push((self.batch.n_tokens(), Row::PromptEnd { active: a }));
                        }
                        self.batch.add(gen.job.prompt[pos], pos as i32, &[seq], last).expect("within budget");
                    }
                    budget -= end - gen.fed;
                    gen.fed = end;
                    sequences += 1;
                }
                Active::Score(score) if score.fed + 1 < score.job.tokens.len() => {
                    let needed = score.job.tokens.len() - 1;
                    let end = needed.min(score.fed + budget);
                    for pos in score.fed..end {
                        let wanted = pos + 1 >= score.job.scored_from;
                        if wanted {
                            self.rows.push((self.batch.n_tokens(), Row::Score { active: a, pos }));
                        }
                        self.batch
                            .add(score.job.tokens[pos], pos as i32, &[score.seq], wanted)
                            .expect("within budget");
                    }
                    budget -= end - score.fed;
                    score.fed = end;
                    sequences += 1;
                }
                _ => {}
            }
        }
        let tokens = self.batch.n_tokens() as usize;
        if tokens == 0 {
            return;
        }
        if let Err(e) = self.ctx.decode(&mut self.batch) {
            self.fail_all(LlamaError::Decode { tokens, sequences, message: e.to_string() });
            return;
        }
        let generated_before = self.generated_total();
        self.handle_rows();
        let generated = self.generated_total() - generated_before;
        {
            let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
            stats.decode_steps += 1;
            stats.tokens_decoded += tokens as u64;
            stats.tokens_generated += generated;
            stats.max_batch_sequences = stats.max_batch_sequences.max(sequences);
            stats.admitted_while_decoding += std::mem::take(&mut self.admitted_while_decoding);
        }
        self.retire();
    }

    fn generated_total(&self) -> u64 {
        self.active
            .iter()
            .map(|a| match a {
                Active::Gen(g) => g.choices.iter().map(|c| c.generated).sum(),
                Active::Score(_) => 0,
            })
            .sum()
    }

    fn handle_rows(&mut self) {
        let rows = std::mem::take(&mut self.rows);
        for &(index, row) in &rows {
            match row {
                Row::PromptEnd { active } => {
                    let Active::Gen(gen) = &mut self.active[active] else {
                        unreachable!("row kinds match jobs")
                    };
                    let first = gen.choices[0].seq;
                    for choice in &gen.choices[1..] {
                        // Full-range copy: each sequence has its own KV stream.
                        self.ctx.kv_cache_seq_cp(first, choice.seq, None, None).expect("no positions given");
                    }
                    let logits = self.ctx.get_logits_ith(index);
                    for choice in &mut gen.choices {
                        let token = choice.sampler.sample(logits, &choice.history);
                        accept(self.model, &mut self.piece, gen.job.max_tokens, choice, token);
                    }
                }
                Row::Token { active, choice } => {
                    let Active::Gen(gen) = &mut self.active[active] else {
                        unreachable!("row kinds match jobs")
                    };
                    let choice = &mut gen.choices[choice];
                    choice.pos += 1;
                    let logits = self.ctx.get_logits_ith(index);
                    let token = choice.sampler.sample(logits, &choice.history);
                    accept(self.model, &mut self.piece, gen.job.max_tokens, choice, token);
                }
                Row::Score { active, pos } => {
                    let Active::Score(score) = &mut self.active[active] else {
                        unreachable!("row kinds match jobs")
                    };
                    let next = score.job.tokens[pos + 1].0 as u32;
                    score.logprobs.push(log_softmax_at(self.ctx.get_logits_ith(index), next));
                }
            }
        }
        self.rows = rows;
    }

    /// Free the slots of finished sequences and answer finished jobs.
    fn retire(&mut self) {
        for active in &mut self.active {
            match active {
                Active::Gen(gen) => {
                    for choice in &mut gen.choices {
                        if choice.finish.is_some() && !choice.released {
                            release(&mut self.ctx, &mut self.free, choice.seq);
                            choice.released = true;
                        }
                    }
                }
                Active::Score(score) => {
                    if score.fed + 1 >= score.job.tokens.len() && !score.released {
                        release(&mut self.ctx, &mut self.free, score.seq);
                        score.released = true;
                    }
                }
            }
        }
        let (done, running): (Vec<Active>, Vec<Active>) =
            std::mem::take(&mut self.active).into_iter().partition(is_released);
        self.active = running;
        for active in done {
            match active {
                Active::Gen(gen) => {
                    let choices = gen
                        .choices
                        .into_iter()
                        .map(|c| GeneratedChoice {
                            text: c.text.into_string(),
                            finish_reason: c.finish.unwrap_or(FinishReason::Stop),
                            tokens: c.generated,
                        })
                        .collect();
                    let _ = gen.job.reply.send(Ok(choices));
                }
                Active::Score(score) => {
                    let _ = score.job.reply.send(Ok(score.logprobs));
                }
            }
        }
    }

    fn fail_all(&mut self, error: LlamaError) {
        for mut active in std::mem::take(&mut self.active) {
            release_all(&mut self.ctx, &mut self.free, &mut active);
            let job = match active {
                Active::Gen(g) => Job::Generate(g.job),
                Active::Score(s) => Job::Score(s.job),
            };
            job.fail(error.clone());
        }
        self.ctx.clear_kv_cache();
    }
}

/// Record a sampled token: finish on end-of-generation, a stop string or the
/// token limit, else queue it for the next batch.
fn accept(model: &LlamaModel, piece: &mut Vec<u8>, max_tokens: usize, choice: &mut ChoiceState, token: u32) {
    choice.generated += 1;
    choice.pending = None;
    let token = LlamaToken(token as i32);
    let vocab = model.vocab();
    if vocab.is_eog(token) {
        choice.finish = Some(FinishReason::Stop);
        return;
    }
    piece.clear();
    vocab.token_to_piece_into(token, piece, false, None);
    if choice.text.push(piece) {
        choice.finish = Some(FinishReason::Stop);
    } else if choice.generated as usize >= max_tokens {
        choice.finish = Some(FinishReason::Length);
    } else {
        choice.history.push(token.0 as u32);
        choice.pending = Some(token);
    }
}

fn release(ctx: &mut LlamaContext<'_>, free: &mut Vec<i32>, seq: i32) {
    // Removing a whole sequence cannot fail; the id is in range by construction.
    let _ = ctx.clear_kv_cache_seq(Some(seq as u32), None, None);
    free.push(seq);
}

fn release_all(ctx: &mut LlamaContext<'_>, free: &mut Vec<i32>, active: &mut Active) {
    match active {
        Active::Gen(gen) => {
            for choice in &mut gen.choices {
                if !choice.released {
                    release(ctx, free, choice.seq);
                    choice.released = true;
                }
                choice.finish.get_or_insert(FinishReason::Other("cancelled".into()));
            }
        }
        Active::Score(score) => {
            if !score.released {
                release(ctx, free, score.seq);
                score.released = true;
            }
        }
    }
}

fn is_released(active: &Active) -> bool {
    match active {
        Active::Gen(gen) => gen.choices.iter().all(|c| c.released),
        Active::Score(score) => score.released,
    }
}
