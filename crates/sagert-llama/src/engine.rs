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
//!
//! # Prefix reuse
//!
//! With `LlamaOptions::prefix_cache` (the default) a finished sequence keeps
//! its KV cells, and the engine remembers which tokens they hold. A new job
//! starts from the longest prefix of its prompt already computed anywhere:
//!
//! - in a free slot: the job takes that slot and drops the cells past the
//!   shared prefix (`seq_rm`);
//! - in a busy or other free slot: its stream is copied to the job's slot
//!   (`seq_cp`, a whole-stream copy, since each sequence has its own stream) and
//!   trimmed;
//! - in a prompt that another job is still prefilling: when that would share at
//!   least [`WAIT_FOR_PREFIX`] more tokens than what is computed now, the job
//!   waits (its slot reserved) until the other job has fed the shared part, then
//!   copies it. SAGE sends one raw text with nine instructions at once; the
//!   text is computed once, not nine times.
//!
//! At least one prompt token is always fed (its logits start the generation),
//! and a score job reuses at most the tokens before its first scored position.
//! A free slot is taken for new work emptiest first, then least recently used.
//! The cache is exact: a reused cell holds the same token at the same position
//! with the same prefix, so the output is the same as without reuse (up to the
//! batch-shape numerics of quantized kernels, see the crate docs).
//!
//! # Streaming
//!
//! A generation may carry a channel; each choice's text is sent as it becomes
//! final (no longer a possible start of a stop string, whole characters), the
//! rest when the choice ends.
//!
//! # Constrained choices
//!
//! A generation may carry one [`Matcher`] per choice (a JSON schema compiled
//! by [`crate::constrained`]): its mask is applied to the logits before the
//! sampler sees them, each sampled token advances it, and the choice ends with
//! `stop` as soon as the grammar is complete. A matcher error ends that choice
//! with the reason `constraint: ...`; the others go on.

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

use crate::constrained::Matcher;
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
    /// Prompt tokens of admitted jobs (generation prompts, scored sequences
    /// up to their last context token).
    pub prompt_tokens: u64,
    /// Of those, tokens not decoded because their KV was reused from a cached
    /// or concurrent prefix.
    pub prompt_tokens_reused: u64,
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
    /// Reuse the KV of shared prompt prefixes (see the module docs).
    pub prefix_cache: bool,
}

/// Shortest shared prefix worth a `seq_cp` (copying a stream costs about as much
/// as decoding a few tokens).
const MIN_REUSE: usize = 16;

/// A job waits for another job's prefill only when that gains this many tokens
/// over what it can reuse at once.
pub const WAIT_FOR_PREFIX: usize = 64;

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

/// A piece of streamed text: choice `choice` of a generation continues with `text`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextDelta {
    /// The choice's index in the request.
    pub choice: usize,
    /// New text (whole characters).
    pub text: String,
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
    /// Where to stream text as it is generated, if anywhere.
    pub stream: Option<tokio::sync::mpsc::UnboundedSender<TextDelta>>,
    /// One grammar matcher per choice, or none (unconstrained).
    pub constraints: Vec<Matcher>,
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
    /// The choice's grammar, when constrained.
    matcher: Option<Matcher>,
}

/// Waiting for another job's prefill: `donor`'s sequence will hold the first
/// `upto` tokens of this job's prompt.
#[derive(Clone, Copy, Debug)]
struct Wait {
    donor: i32,
    upto: usize,
}

struct GenActive {
    job: GenerateJob,
    /// Prompt tokens in the first choice's sequence (fed or reused).
    fed: usize,
    wait: Option<Wait>,
    choices: Vec<ChoiceState>,
}

struct ScoreActive {
    job: ScoreJob,
    seq: i32,
    /// Tokens in the sequence (fed or reused); `tokens.len() - 1` of them are
    /// needed (the last one's logits would predict past the end).
    fed: usize,
    wait: Option<Wait>,
    logprobs: Vec<f64>,
    released: bool,
}

enum Active {
    Gen(GenActive),
    Score(ScoreActive),
}

impl Active {
    /// The sequence being prefilled, the tokens it needs in its KV before
    /// logits are wanted, how many it has, and its wait.
    fn prefill(&mut self) -> (i32, &[LlamaToken], &mut usize, &mut Option<Wait>) {
        match self {
            Active::Gen(g) => (g.choices[0].seq, &g.job.prompt, &mut g.fed, &mut g.wait),
            Active::Score(s) => (s.seq, &s.job.tokens[..s.job.tokens.len() - 1], &mut s.fed, &mut s.wait),
        }
    }
}

/// The most tokens of `prompt` a job may take from a cache: one prompt token
/// is always fed (its logits start the generation), and a score job needs
/// logits from its first scored position on.
fn reuse_cap(job: &Job) -> usize {
    match job {
        Job::Generate(g) => g.prompt.len() - 1,
        Job::Score(s) => s.scored_from - 1,
    }
}

fn job_prompt(job: &Job) -> &[LlamaToken] {
    match job {
        Job::Generate(g) => &g.prompt,
        Job::Score(s) => &s.tokens[..s.tokens.len() - 1],
    }
}

/// Length of the common prefix of `a` and `b`.
fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// What one sequence slot's KV holds.
#[derive(Clone, Debug, Default)]
struct Slot {
    /// The tokens at positions `0..tokens.len()` (decoded, or added to the
    /// batch being built).
    tokens: Vec<LlamaToken>,
    /// When the slot was last released (for least-recently-used eviction).
    released_at: u64,
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
    /// Free sequence ids (their KV may hold a reusable prefix).
    free: Vec<i32>,
    slots: Vec<Slot>,
    /// Release counter, for `Slot::released_at`.
    clock: u64,
    waiting: VecDeque<Job>,
    active: Vec<Active>,
    rows: Vec<(i32, Row)>,
    piece: Vec<u8>,
    /// Scratch logits for masking a constrained choice's row.
    masked: Vec<f32>,
    /// Counters not yet added to `stats`.
    pending_stats: EngineStats,
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
            free: (0..config.max_sequences as i32).collect(),
            slots: vec![Slot::default(); config.max_sequences],
            clock: 0,
            waiting: VecDeque::new(),
            active: Vec::new(),
            rows: Vec::new(),
            piece: Vec::new(),
            masked: Vec::new(),
            pending_stats: EngineStats::default(),
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
                self.clock += 1;
                release_all(&mut self.ctx, &mut self.free, &mut self.slots, self.clock, active, &self.config);
            }
        }
        self.active.retain(|a| !is_released(a));
    }

    /// Take the free slot `seq` out of the free list.
    fn take_slot(&mut self, seq: i32) {
        let at = self.free.iter().position(|&s| s == seq).expect("the slot is free");
        self.free.swap_remove(at);
    }

    /// Take a free slot for new work: empty first, then least recently used;
    /// its cells are dropped.
    fn take_fresh_slot(&mut self) -> i32 {
        let slots = &self.slots;
        let at = (0..self.free.len())
            .min_by_key(|&i| {
                let slot = &slots[self.free[i] as usize];
                (!slot.tokens.is_empty(), slot.released_at, self.free[i])
            })
            .expect("admission checked the free slots");
        let seq = self.free.swap_remove(at);
        self.clear_slot(seq);
        seq
    }

    fn clear_slot(&mut self, seq: i32) {
        if !self.slots[seq as usize].tokens.is_empty() {
            // Removing a whole sequence cannot fail; the id is in range.
            let _ = self.ctx.clear_kv_cache_seq(Some(seq as u32), None, None);
            self.slots[seq as usize].tokens.clear();
        }
    }

    /// Make `seq` hold the first `len` tokens of `from`'s KV: trimmed in place
    /// when `from == seq`, else copied and trimmed.
    fn reuse(&mut self, from: i32, seq: i32, len: usize) {
        if from != seq {
            // Each sequence has its own stream: llama.cpp copies whole streams.
            self.ctx.kv_cache_seq_cp(from, seq, None, None).expect("no positions given");
            self.slots[seq as usize].tokens = self.slots[from as usize].tokens.clone();
        }
        let slot = &mut self.slots[seq as usize];
        if slot.tokens.len() > len {
            let _ = self.ctx.clear_kv_cache_seq(Some(seq as u32), Some(len as u32), None);
            slot.tokens.truncate(len);
        }
    }

    /// The sequence whose KV holds the longest prefix of
    /// `prompt`, at most `cap` tokens, and that length. Free slots win ties (no
    /// copy needed).
    fn best_prefix(&self, prompt: &[LlamaToken], cap: usize) -> Option<(i32, usize)> {
        (0..self.slots.len() as i32)
            .map(|seq| (seq, common_prefix(&self.slots[seq as usize].tokens, prompt).min(cap)))
            .filter(|&(_, len)| len > 0)
            .max_by_key(|&(seq, len)| (len, self.free.contains(&seq), -seq))
    }

    /// A job still prefilling whose prompt shares more of `prompt` than is
    /// computed anywhere: its sequence and the shared length.
    fn prefilling_donor(&mut self, prompt: &[LlamaToken], cap: usize) -> Option<(i32, usize)> {
        self.active
            .iter_mut()
            .filter_map(|active| {
                let (seq, theirs, fed, wait) = active.prefill();
                // A waiting job is no donor: chains of waits are not worth it.
                if wait.is_some() || *fed >= theirs.len() {
                    return None;
                }
                Some((seq, common_prefix(theirs, prompt).min(cap)))
            })
            .max_by_key(|&(seq, len)| (len, -seq))
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
            self.pending_stats.admitted_while_decoding += u64::from(decoding);
            let prompt_len = job_prompt(&job).len();
            self.pending_stats.prompt_tokens += prompt_len as u64;

            // The first sequence and what it starts with.
            let (seq, fed, wait) =
                if self.config.prefix_cache { self.place(&job) } else { (self.take_fresh_slot(), 0, None) };
            self.pending_stats.prompt_tokens_reused += fed as u64;
            let active = match job {
                Job::Generate(mut job) => {
                    let mut matchers = std::mem::take(&mut job.constraints).into_iter();
                    let tail = &job.prompt[job.prompt.len().saturating_sub(PENALTY_LAST_N)..];
                    let history: Vec<u32> = tail.iter().map(|t| t.0 as u32).collect();
                    let mut seqs = vec![seq];
                    seqs.extend((1..job.n).map(|_| self.take_fresh_slot()));
                    let choices = seqs
                        .into_iter()
                        .enumerate()
                        .map(|(i, seq)| ChoiceState {
                            seq,
                            sampler: Sampler::new(job.sampler.clone(), Rng::new(job.seed, i as u64)),
                            text: TextOut::new(&job.stop),
                            history: history.clone(),
                            generated: 0,
                            pos: job.prompt.len() as i32,
                            pending: None,
                            finish: None,
                            released: false,
                            matcher: matchers.next(),
                        })
                        .collect();
                    Active::Gen(GenActive { job, fed, wait, choices })
                }
                Job::Score(job) => {
                    Active::Score(ScoreActive { seq, job, fed, wait, logprobs: Vec::new(), released: false })
                }
            };
            self.active.push(active);
        }
    }

    /// Pick the first sequence of `job`, reusing the longest computed prefix of
    /// its prompt; returns the sequence, the tokens it already holds, and a wait
    /// when another job's prefill will soon hold more.
    fn place(&mut self, job: &Job) -> (i32, usize, Option<Wait>) {
        let prompt = job_prompt(job).to_vec();
        let cap = reuse_cap(job);
        let best = self.best_prefix(&prompt, cap);
        let seq = match best {
            Some((from, len)) if len >= MIN_REUSE && self.free.contains(&from) => {
                self.take_slot(from);
                self.reuse(from, from, len);
                from
            }
            Some((from, len)) if len >= MIN_REUSE => {
                let seq = self.take_fresh_slot();
                self.reuse(from, seq, len);
                seq
            }
            _ => self.take_fresh_slot(),
        };
        let fed = self.slots[seq as usize].tokens.len();
        let wait = match self.prefilling_donor(&prompt, cap) {
            Some((donor, upto)) if upto >= fed + WAIT_FOR_PREFIX => Some(Wait { donor, upto }),
            _ => None,
        };
        (seq, fed, wait)
    }

    /// Resolve the waits whose donors have fed what was waited for (or stopped
    /// prefilling): copy the shared prefix, and prefill the rest as usual.
    fn resolve_waits(&mut self) {
        for a in 0..self.active.len() {
            let (seq, prompt, fed, wait) = self.active[a].prefill();
            let Some(Wait { donor, upto }) = *wait else { continue };
            let (fed_now, prompt_head) = (*fed, prompt[..upto].to_vec());
            let computed = common_prefix(&self.slots[donor as usize].tokens, &prompt_head);
            let donor_busy = self.active.iter().enumerate().any(|(i, other)| {
                i != a
                    && match other {
                        Active::Gen(g) => g.choices[0].seq == donor && g.fed < g.job.prompt.len(),
                        Active::Score(s) => s.seq == donor && s.fed + 1 < s.job.tokens.len(),
                    }
            });
            if computed < upto && donor_busy {
                continue;
            }
            let (_, _, fed, wait) = self.active[a].prefill();
            *wait = None;
            if computed >= fed_now + MIN_REUSE {
                *fed = computed;
                self.reuse(donor, seq, computed);
                self.pending_stats.prompt_tokens_reused += (computed - fed_now) as u64;
            }
        }
    }

    /// Build one batch, decode it, handle its logits, retire what finished.
    fn step(&mut self) {
        if self.config.prefix_cache {
            self.resolve_waits();
        }
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
                    self.slots[choice.seq as usize].tokens.push(token);
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
                Active::Gen(gen) if gen.wait.is_none() && gen.fed < gen.job.prompt.len() => {
                    let seq = gen.choices[0].seq;
                    let end = gen.job.prompt.len().min(gen.fed + budget);
                    for pos in gen.fed..end {
                        let last = pos + 1 == gen.job.prompt.len();
                        if last {
                            self.rows.push((self.batch.n_tokens(), Row::PromptEnd { active: a }));
                        }
                        self.batch.add(gen.job.prompt[pos], pos as i32, &[seq], last).expect("within budget");
                    }
                    self.slots[seq as usize].tokens.extend_from_slice(&gen.job.prompt[gen.fed..end]);
                    budget -= end - gen.fed;
                    gen.fed = end;
                    sequences += 1;
                }
                Active::Score(score) if score.wait.is_none() && score.fed + 1 < score.job.tokens.len() => {
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
                    self.slots[score.seq as usize]
                        .tokens
                        .extend_from_slice(&score.job.tokens[score.fed..end]);
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
            let pending = std::mem::take(&mut self.pending_stats);
            stats.decode_steps += 1;
            stats.tokens_decoded += tokens as u64;
            stats.tokens_generated += generated;
            stats.max_batch_sequences = stats.max_batch_sequences.max(sequences);
            stats.admitted_while_decoding += pending.admitted_while_decoding;
            stats.prompt_tokens += pending.prompt_tokens;
            stats.prompt_tokens_reused += pending.prompt_tokens_reused;
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
                        self.slots[choice.seq as usize].tokens = self.slots[first as usize].tokens.clone();
                    }
                    let logits = self.ctx.get_logits_ith(index);
                    for (c, choice) in gen.choices.iter_mut().enumerate() {
                        if let Some(token) = sample(choice, logits, &mut self.masked) {
                            accept(self.model, &mut self.piece, &gen.job, c, choice, token);
                        }
                    }
                }
                Row::Token { active, choice: c } => {
                    let Active::Gen(gen) = &mut self.active[active] else {
                        unreachable!("row kinds match jobs")
                    };
                    let choice = &mut gen.choices[c];
                    choice.pos += 1;
                    let logits = self.ctx.get_logits_ith(index);
                    if let Some(token) = sample(choice, logits, &mut self.masked) {
                        accept(self.model, &mut self.piece, &gen.job, c, choice, token);
                    }
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
                            self.clock += 1;
                            release(
                                &mut self.ctx,
                                &mut self.free,
                                &mut self.slots,
                                self.clock,
                                choice.seq,
                                &self.config,
                            );
                            choice.released = true;
                        }
                    }
                }
                Active::Score(score) => {
                    if score.fed + 1 >= score.job.tokens.len() && !score.released {
                        self.clock += 1;
                        release(
                            &mut self.ctx,
                            &mut self.free,
                            &mut self.slots,
                            self.clock,
                            score.seq,
                            &self.config,
                        );
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
                    let stream = gen.job.stream;
                    let choices = gen
                        .choices
                        .into_iter()
                        .enumerate()
                        .map(|(i, c)| {
                            let emitted = c.text.emitted();
                            let text = c.text.into_string();
                            if let Some(stream) = &stream {
                                if text.len() > emitted {
                                    let _ = stream
                                        .send(TextDelta { choice: i, text: text[emitted..].to_string() });
                                }
                            }
                            GeneratedChoice {
                                text,
                                finish_reason: c.finish.unwrap_or(FinishReason::Stop),
                                tokens: c.generated,
                            }
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
            self.clock += 1;
            release_all(
                &mut self.ctx,
                &mut self.free,
                &mut self.slots,
                self.clock,
                &mut active,
                &self.config,
            );
            let job = match active {
                Active::Gen(g) => Job::Generate(g.job),
                Active::Score(s) => Job::Score(s.job),
            };
            job.fail(error.clone());
        }
        self.ctx.clear_kv_cache();
        for slot in &mut self.slots {
            slot.tokens.clear();
        }
    }
}

/// Record a sampled token of choice `c`: finish on end-of-generation, a stop
/// string or the token limit, else queue it for the next batch; stream text
/// that became final.
fn accept(
    model: &LlamaModel,
    piece: &mut Vec<u8>,
    job: &GenerateJob,
    c: usize,
    choice: &mut ChoiceState,
    token: u32,
) {
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
        return;
    }
    if let Some(stream) = &job.stream {
        if let Some(text) = choice.text.take_ready() {
            let _ = stream.send(TextDelta { choice: c, text });
        }
    }
    if let Some(matcher) = &mut choice.matcher {
        if let Err(e) = matcher.consume(token.0 as u32) {
            choice.finish = Some(FinishReason::Other(format!("constraint: {e}")));
            return;
        }
        if matcher.is_finished() {
            choice.finish = Some(FinishReason::Stop);
            return;
        }
    }
    if choice.generated as usize >= job.max_tokens {
        choice.finish = Some(FinishReason::Length);
    } else {
        choice.history.push(token.0 as u32);
        choice.pending = Some(token);
    }
}

/// Sample the next token of `choice` from its logits row, masked by its
/// grammar when it has one. `None` when the grammar failed (the choice is
/// then finished with the reason).
fn sample(choice: &mut ChoiceState, logits: &[f32], masked: &mut Vec<f32>) -> Option<u32> {
    let Some(matcher) = &mut choice.matcher else {
        return Some(choice.sampler.sample(logits, &choice.history));
    };
    masked.clear();
    masked.extend_from_slice(logits);
    if let Err(e) = matcher.mask_logits(masked) {
        choice.pending = None;
        choice.finish = Some(FinishReason::Other(format!("constraint: {e}")));
        return None;
    }
    Some(choice.sampler.sample(masked, &choice.history))
}

/// Free `seq`; with the prefix cache its cells stay for reuse.
fn release(
    ctx: &mut LlamaContext<'_>,
    free: &mut Vec<i32>,
    slots: &mut [Slot],
    clock: u64,
    seq: i32,
    config: &EngineConfig,
) {
    let slot = &mut slots[seq as usize];
    if !config.prefix_cache {
        // Removing a whole sequence cannot fail; the id is in range by construction.
        let _ = ctx.clear_kv_cache_seq(Some(seq as u32), None, None);
        slot.tokens.clear();
    }
    slot.released_at = clock;
    free.push(seq);
}

fn release_all(
    ctx: &mut LlamaContext<'_>,
    free: &mut Vec<i32>,
    slots: &mut [Slot],
    clock: u64,
    active: &mut Active,
    config: &EngineConfig,
) {
    match active {
        Active::Gen(gen) => {
            for choice in &mut gen.choices {
                if !choice.released {
                    release(ctx, free, slots, clock, choice.seq, config);
                    choice.released = true;
                }
                choice.finish.get_or_insert(FinishReason::Other("cancelled".into()));
            }
        }
        Active::Score(score) => {
            if !score.released {
                release(ctx, free, slots, clock, score.seq, config);
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
