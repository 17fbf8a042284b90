//! The generation run: items flow through the stages concurrently, each
//! item's state in the run store.
//!
//! Every unit of model work is a *step* with a stable id (`stage`, `item_id`):
//!
//! | stage | item id | output |
//! |---|---|---|
//! | `expand` | `LEAF#rR` (round R) | new topics |
//! | `seed_instructions` | `TOPIC` = `LEAF#tK` | instructions |
//! | `raw_text` | `TOPIC/FORMAT/S` = `RAW` | a document |
//! | `extract` | `RAW/TYPE` | queries |
//! | `diversify` | `RAW/TYPE/qI/eE` = `PAIR` | the rewritten query |
//! | `responses` | `PAIR@A` (attempt A) | chosen and rejected, judged |
//! | `validate` | `PAIR` | the verdicts and the pair, or the drop reason |
//!
//! A step that is done in the store is not run again: its output is read back.
//! A step whose call failed for good (the server, the network) is *failed* and
//! tried again by the next run. A step whose answer is unusable (malformed
//! even after repair, too short, a repeat) or that failed validation is
//! *dropped*: the same request with the same seed would answer the same, so
//! it is not retried.
//! A step killed while running is simply run again, and the calls it had
//! completed are answered by the call store, free. Each request carries a seed
//! derived from the run seed and the item id, so a resumed run asks exactly
//! the questions the first one did.
//!
//! Each leaf, topic, raw text and query is its own task, so a stage never
//! waits for the previous one to finish everywhere; the number of requests in
//! flight is bounded per role by the configured endpoint concurrency.
//! Records are sorted by id before dedup, balance and split, so the output does
//! not depend on completion order.

use std::future::Future;
use std::sync::{Arc, Mutex};

use sagert_backend::{BackendError, ChatRequest, ChatResponse};
use sagert_config::{RejectedSource, RunConfig};
use sagert_engine::{EngineError, RoleClient};
use sagert_store::{ItemState, Store, WorkItem};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::catalog;
use crate::judge::{CandidateScore, Judge, JudgeError};
use crate::progress::StageProgress;
use crate::record::{PairRecord, Verdicts};
use crate::stages::{self, LeafInfo};
use crate::templates::Templates;
use crate::PipelineError;

/// A role's client and the bound on its requests in flight.
#[derive(Clone)]
pub struct Limited {
    /// The cached, metered client.
    pub client: Arc<RoleClient>,
    /// Permits: the role's endpoint concurrency.
    pub permits: Arc<Semaphore>,
}

impl Limited {
    /// `client` with at most `concurrency` requests in flight.
    pub fn new(client: Arc<RoleClient>, concurrency: usize) -> Limited {
        Limited { client, permits: Arc::new(Semaphore::new(concurrency.max(1))) }
    }
}

/// The model roles the generation uses.
#[derive(Clone)]
pub struct Roles {
    /// Leaves into topics.
    pub expander: Limited,
    /// Seed instructions, raw text, extraction, diversification.
    pub generator: Limited,
    /// Chosen responses.
    pub safe_responder: Limited,
    /// Rejected responses (not needed when they come from the raw text).
    pub unsafe_responder: Option<Limited>,
}

/// Tokens and calls a step used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepUsage {
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Model calls made (answered by a backend or by the store).
    pub calls: u64,
    /// Of those, answered by the call store.
    pub cached_calls: u64,
}

/// A step's payload in the store.
#[derive(Serialize, Deserialize)]
struct Payload<T> {
    output: Option<T>,
    usage: StepUsage,
}

/// Why a step gave no output.
#[derive(Debug)]
pub(crate) enum StepError {
    /// The item failed; a later run tries it again.
    Item(String),
    /// The item is deliberately left out (it failed validation).
    Drop(String),
    /// The budget is spent: the item is left pending for a later run.
    Stopped,
    /// The run cannot go on.
    Fatal(PipelineError),
}

impl From<JudgeError> for StepError {
    fn from(e: JudgeError) -> Self {
        match e {
            JudgeError::Item(r) => StepError::Item(format!("judge: {r}")),
            JudgeError::Fatal(PipelineError::Engine(EngineError::Backend(BackendError::Budget(_)))) => {
                StepError::Stopped
            }
            JudgeError::Fatal(f) => StepError::Fatal(f),
        }
    }
}

/// A failed call: `Ok(reason)` when only the item fails, `Err` when the run
/// cannot go on (the store failed, the budget is spent).
pub(crate) fn classify_call_error(e: EngineError) -> Result<String, PipelineError> {
    match e {
        e if e.is_fatal() => Err(PipelineError::Engine(e)),
        EngineError::Backend(b @ BackendError::Structured { .. }) => {
            Ok(format!("malformed structured output: {b}"))
        }
        other => Ok(format!("call failed: {other}")),
    }
}

/// A seed for one request: the run seed, the item and the purpose, hashed;
/// 31 bits, which every server accepts.
pub fn derive_seed(run_seed: u64, item: &str, purpose: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(run_seed.to_le_bytes());
    h.update(item.as_bytes());
    h.update([0]);
    h.update(purpose.as_bytes());
    let d = h.finalize();
    u64::from_le_bytes(d[..8].try_into().expect("8 bytes")) & 0x7fff_ffff
}

/// Everything a generation run needs, built by the caller (the `sagert`
/// binary builds backends and loads encoders; this crate does not).
pub struct Generation {
    /// The run's configuration.
    pub config: RunConfig,
    /// The selected leaves, in taxonomy order.
    pub leaves: Vec<LeafInfo>,
    /// The model roles.
    pub roles: Roles,
    /// The judge.
    pub judge: Arc<Judge>,
    /// The prompt templates.
    pub templates: Arc<Templates>,
    /// The run store.
    pub store: Arc<Store>,
    /// Progress lines.
    pub progress: StageProgress,
}

/// What the model stages produced.
#[derive(Debug, Default)]
pub struct Generated {
    /// Every pair that passed validation, sorted by id.
    pub records: Vec<PairRecord>,
    /// Set when the budget stopped the run: what is missing stays pending.
    pub stopped_by_budget: Option<String>,
}

struct Ctx {
    g: Generation,
    models: Models,
    stop: Mutex<Option<String>>,
}

struct Models {
    expander: String,
    generator: String,
    safe: String,
    rejected: String,
    judge: String,
}

/// Run the model stages (expand … validate) for every selected leaf.
pub async fn run_model_stages(g: Generation) -> Result<Generated, PipelineError> {
    for stage in ["expand", "seed_instructions", "raw_text", "extract", "diversify", "responses", "validate"]
    {
        g.store.requeue_running(stage)?;
    }
    let models = Models {
        expander: g.roles.expander.client.model_id().to_string(),
        generator: g.roles.generator.client.model_id().to_string(),
        safe: g.roles.safe_responder.client.model_id().to_string(),
        rejected: match (&g.config.stages.responses.rejected_source, &g.roles.unsafe_responder) {
            (RejectedSource::RawText, _) => "raw_text".to_string(),
            (RejectedSource::UnsafeResponder, Some(l)) => l.client.model_id().to_string(),
            (RejectedSource::UnsafeResponder, None) => {
                return Err(PipelineError::Invalid(
                    "rejected responses come from the unsafe_responder role, which is not configured \
                     ([roles.unsafe_responder], or stages.responses.rejected_source = \"raw_text\")"
                        .into(),
                ))
            }
        },
        judge: g.judge.name(),
    };
    let leaves = g.leaves.clone();
    let rounds = u64::from(g.config.stages.expand.rounds);
    g.progress.add_total("expand", leaves.len() as u64 * rounds);
    let ctx = Arc::new(Ctx { g, models, stop: Mutex::new(None) });
    let mut tasks = JoinSet::new();
    for leaf in leaves {
        tasks.spawn(ctx.clone().leaf(leaf));
    }
    let mut records = join_all(tasks).await?;
    records.sort_by(|a, b| a.id.cmp(&b.id));
    let stopped_by_budget = ctx.stop.lock().expect("stop lock").clone();
    Ok(Generated { records, stopped_by_budget })
}

/// Every task's records; the first fatal error wins.
async fn join_all(
    mut tasks: JoinSet<Result<Vec<PairRecord>, PipelineError>>,
) -> Result<Vec<PairRecord>, PipelineError> {
    let mut out = Vec::new();
    let mut first_err = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(mut records)) => out.append(&mut records),
            Ok(Err(e)) => {
                if first_err.is_none() {
                    first_err = Some(e);
                    tasks.abort_all();
                }
            }
            Err(e) if e.is_cancelled() => {}
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// A query on its way to becoming a pair.
#[derive(Clone)]
struct QueryItem {
    leaf: Arc<LeafInfo>,
    topic: Arc<String>,
    topic_id: Arc<String>,
    format: Arc<String>,
    raw_text: Arc<String>,
    jailbreak_type: Arc<String>,
}

/// The responses of one attempt, judged.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Responses {
    chosen: String,
    chosen_score: CandidateScore,
    rejected: String,
    rejected_score: CandidateScore,
}

/// A pair that passed validation.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Validated {
    chosen: String,
    rejected: String,
    verdicts: Verdicts,
    attempts: u32,
}

impl Ctx {
    fn cfg(&self) -> &RunConfig {
        &self.g.config
    }

    fn stopped(&self) -> bool {
        self.stop.lock().expect("stop lock").is_some()
    }

    fn stop_with(&self, reason: String) {
        let mut s = self.stop.lock().expect("stop lock");
        if s.is_none() {
            *s = Some(reason);
        }
    }

    /// Run `work` as step (`stage`, `id`), or read its output back.
    async fn step<T, F>(&self, stage: &'static str, id: &str, work: F) -> Result<Option<T>, PipelineError>
    where
        T: Serialize + DeserializeOwned,
        F: Future<Output = Result<(T, StepUsage), StepError>>,
    {
        let store = &self.g.store;
        let progress = &self.g.progress;
        let existing = store.get_item(stage, id)?;
        let attempts = match &existing {
            Some(item) if item.state == ItemState::Done => {
                let payload: Payload<T> = serde_json::from_value(item.payload.clone()).map_err(|e| {
                    PipelineError::Invalid(format!("store item {stage}/{id}: unreadable payload: {e}"))
                })?;
                progress.inc_done(stage, 1, payload.usage.prompt_tokens + payload.usage.completion_tokens);
                return Ok(payload.output);
            }
            Some(item) if item.state == ItemState::Dropped => {
                progress.inc_failed(stage, 1, item.error.as_deref().unwrap_or("dropped"));
                return Ok(None);
            }
            Some(item) => item.attempts,
            None => 0,
        };
        if self.stopped() {
            return Ok(None);
        }
        let mut item = WorkItem::pending(stage, id, serde_json::Value::Null);
        item.attempts = attempts + 1;
        item.state = ItemState::Running;
        store.put_item(&item)?;
        let result = work.await;
        item.updated_at_unix_ms = sagert_store::now_unix_ms();
        match result {
            Ok((output, usage)) => {
                item.state = ItemState::Done;
                item.payload = serde_json::to_value(Payload { output: Some(&output), usage })
                    .map_err(|e| PipelineError::Invalid(format!("cannot serialise {stage}/{id}: {e}")))?;
                store.put_item(&item)?;
                progress.inc_done(stage, 1, usage.prompt_tokens + usage.completion_tokens);
                Ok(Some(output))
            }
            Err(StepError::Item(reason)) => {
                item.state = ItemState::Failed;
                item.error = Some(reason.clone());
                store.put_item(&item)?;
                progress.inc_failed(stage, 1, &reason);
                Ok(None)
            }
            Err(StepError::Drop(reason)) => {
                item.state = ItemState::Dropped;
                item.error = Some(reason.clone());
                store.put_item(&item)?;
                progress.inc_failed(stage, 1, &reason);
                Ok(None)
            }
            Err(StepError::Stopped) => {
                item.state = ItemState::Pending;
                item.attempts = attempts;
                store.put_item(&item)?;
                Ok(None)
            }
            Err(StepError::Fatal(e)) => Err(e),
        }
    }

    /// One model call through a role, counted into `usage`.
    async fn call(
        &self,
        role: &Limited,
        mut request: ChatRequest,
        item: &str,
        purpose: &str,
        usage: &mut StepUsage,
    ) -> Result<ChatResponse, StepError> {
        if self.stopped() {
            return Err(StepError::Stopped);
        }
        request.params.seed = Some(derive_seed(self.cfg().run.seed, item, purpose));
        let _permit = role.permits.acquire().await.expect("semaphore never closed");
        match role.client.chat(&request, Some(item)).await {
            Ok(outcome) => {
                usage.prompt_tokens += outcome.response.usage.prompt_tokens;
                usage.completion_tokens += outcome.response.usage.completion_tokens;
                usage.calls += 1;
                usage.cached_calls += u64::from(outcome.cached);
                Ok(outcome.response)
            }
            // The model answered, but not in the schema even after repair: the
            // same request (same seed) would answer the same, so the item is
            // dropped, not retried.
            Err(EngineError::Backend(e @ BackendError::Structured { .. })) => {
                Err(StepError::Drop(format!("malformed structured output: {e}")))
            }
            Err(e) => match classify_call_error(e) {
                Ok(reason) => Err(StepError::Item(reason)),
                Err(PipelineError::Engine(EngineError::Backend(BackendError::Budget(reason)))) => {
                    self.stop_with(reason);
                    Err(StepError::Stopped)
                }
                Err(fatal) => Err(StepError::Fatal(fatal)),
            },
        }
    }

    async fn leaf(self: Arc<Self>, leaf: LeafInfo) -> Result<Vec<PairRecord>, PipelineError> {
        let leaf = Arc::new(leaf);
        let st = &self.cfg().stages.expand;
        let mut topics: Vec<String> = Vec::new();
        for round in 0..st.rounds {
            let id = format!("{}#r{round}", leaf.path);
            let known = topics.clone();
            let n = st.topics_per_round;
            let this = self.clone();
            let l = leaf.clone();
            let sid = id.clone();
            let new = self
                .step("expand", &sid, async move {
                    let mut usage = StepUsage::default();
                    let request =
                        stages::expand_request(&this.g.templates, &l, &known, n).map_err(StepError::Fatal)?;
                    let response =
                        this.call(&this.g.roles.expander, request, &id, "expand", &mut usage).await?;
                    let parsed = stages::parse_topics(&response).map_err(StepError::Drop)?;
                    let fresh = novel_topics(&known, parsed);
                    if fresh.is_empty() {
                        return Err(StepError::Drop("every topic repeats a known one".into()));
                    }
                    Ok((fresh, usage))
                })
                .await?;
            topics.extend(new.unwrap_or_default());
        }
        let mut tasks = JoinSet::new();
        let cfg = &self.cfg().stages;
        let raws_per_topic = cfg.raw_text.formats.len() as u64 * u64::from(cfg.raw_text.samples_per_topic);
        self.g.progress.add_total("seed_instructions", topics.len() as u64);
        self.g.progress.add_total("raw_text", topics.len() as u64 * raws_per_topic);
        for (k, topic) in topics.into_iter().enumerate() {
            let topic_id = format!("{}#t{k:02}", leaf.path);
            tasks.spawn(self.clone().topic(leaf.clone(), topic, topic_id));
        }
        join_all(tasks).await
    }

    async fn topic(
        self: Arc<Self>,
        leaf: Arc<LeafInfo>,
        topic: String,
        topic_id: String,
    ) -> Result<Vec<PairRecord>, PipelineError> {
        let n = self.cfg().stages.seed_instructions.per_topic;
        let instructions = if n == 0 {
            Vec::new()
        } else {
            let this = self.clone();
            let (l, t, id) = (leaf.clone(), topic.clone(), topic_id.clone());
            self.step("seed_instructions", &topic_id, async move {
                let mut usage = StepUsage::default();
                let request = stages::seed_request(&this.g.templates, &l, &t, n).map_err(StepError::Fatal)?;
                let response = this.call(&this.g.roles.generator, request, &id, "seed", &mut usage).await?;
                Ok((stages::parse_instructions(&response).map_err(StepError::Drop)?, usage))
            })
            .await?
            .unwrap_or_default()
        };
        let instructions = Arc::new(instructions);
        let (topic, topic_id) = (Arc::new(topic), Arc::new(topic_id));
        let mut tasks = JoinSet::new();
        let st = &self.cfg().stages.raw_text;
        for format in &st.formats {
            for s in 0..st.samples_per_topic {
                let raw_id = format!("{topic_id}/{format}/{s}");
                tasks.spawn(self.clone().raw(
                    leaf.clone(),
                    topic.clone(),
                    topic_id.clone(),
                    Arc::new(format.clone()),
                    instructions.clone(),
                    raw_id,
                ));
            }
        }
        join_all(tasks).await
    }

    async fn raw(
        self: Arc<Self>,
        leaf: Arc<LeafInfo>,
        topic: Arc<String>,
        topic_id: Arc<String>,
        format: Arc<String>,
        instructions: Arc<Vec<String>>,
        raw_id: String,
    ) -> Result<Vec<PairRecord>, PipelineError> {
        let this = self.clone();
        let (l, t, f, id) = (leaf.clone(), topic.clone(), format.clone(), raw_id.clone());
        let raw_text: Option<String> = self
            .step("raw_text", &raw_id, async move {
                let mut usage = StepUsage::default();
                let request = stages::raw_text_request(&this.g.templates, &l, &t, &f, &instructions)
                    .map_err(StepError::Fatal)?;
                let response =
                    this.call(&this.g.roles.generator, request, &id, "raw_text", &mut usage).await?;
                Ok((stages::parse_raw_text(&response).map_err(StepError::Drop)?, usage))
            })
            .await?;
        let Some(raw_text) = raw_text else { return Ok(Vec::new()) };
        let raw_text = Arc::new(raw_text);
        let types = self.cfg().stages.extract.jailbreak_types.clone();
        self.g.progress.add_total("extract", types.len() as u64);
        let mut tasks = JoinSet::new();
        for jt in types {
            let q = QueryItem {
                leaf: leaf.clone(),
                topic: topic.clone(),
                topic_id: topic_id.clone(),
                format: format.clone(),
                raw_text: raw_text.clone(),
                jailbreak_type: Arc::new(jt.clone()),
            };
            tasks.spawn(self.clone().extract(q, format!("{raw_id}/{jt}")));
        }
        join_all(tasks).await
    }

    async fn extract(self: Arc<Self>, q: QueryItem, id: String) -> Result<Vec<PairRecord>, PipelineError> {
        let n = self.cfg().stages.extract.per_type;
        let this = self.clone();
        let (qq, sid) = (q.clone(), id.clone());
        let queries: Option<Vec<String>> = self
            .step("extract", &id, async move {
                let mut usage = StepUsage::default();
                let request = stages::extract_request(
                    &this.g.templates,
                    &qq.leaf,
                    &qq.topic,
                    &qq.raw_text,
                    &qq.jailbreak_type,
                    n,
                )
                .map_err(StepError::Fatal)?;
                let response =
                    this.call(&this.g.roles.generator, request, &sid, "extract", &mut usage).await?;
                Ok((stages::parse_queries(&response, n).map_err(StepError::Drop)?, usage))
            })
            .await?;
        let Some(queries) = queries else { return Ok(Vec::new()) };
        let epochs = self.cfg().stages.diversify.epochs;
        self.g.progress.add_total("diversify", queries.len() as u64 * u64::from(epochs));
        self.g.progress.add_total("validate", queries.len() as u64 * (1 + u64::from(epochs)));
        let mut tasks = JoinSet::new();
        for (qi, query) in queries.into_iter().enumerate() {
            tasks.spawn(self.clone().chain(q.clone(), format!("{id}/q{qi}"), query, epochs));
        }
        join_all(tasks).await
    }

    /// A query and its rewrites, epoch after epoch; each becomes a pair.
    async fn chain(
        self: Arc<Self>,
        q: QueryItem,
        base: String,
        query: String,
        epochs: u32,
    ) -> Result<Vec<PairRecord>, PipelineError> {
        let mut tasks = JoinSet::new();
        tasks.spawn(self.clone().pair(q.clone(), format!("{base}/e0"), query.clone(), 0));
        let mut current = query;
        for epoch in 1..=epochs {
            let id = format!("{base}/e{epoch}");
            let this = self.clone();
            let (qq, sid, prev) = (q.clone(), id.clone(), current.clone());
            let rewritten: Option<String> = self
                .step("diversify", &id, async move {
                    let mut usage = StepUsage::default();
                    let seed = derive_seed(this.cfg().run.seed, &sid, "scenario");
                    let scenario = catalog::SCENARIOS[seed as usize % catalog::SCENARIOS.len()];
                    let style = catalog::STYLES[(seed >> 8) as usize % catalog::STYLES.len()];
                    let request = stages::diversify_request(
                        &this.g.templates,
                        &qq.leaf,
                        &prev,
                        &qq.jailbreak_type,
                        scenario,
                        style,
                    )
                    .map_err(StepError::Fatal)?;
                    let response =
                        this.call(&this.g.roles.generator, request, &sid, "diversify", &mut usage).await?;
                    Ok((stages::parse_rewrite(&response, &prev).map_err(StepError::Drop)?, usage))
                })
                .await?;
            // A failed rewrite ends the chain: later epochs rewrite earlier ones.
            let Some(rewritten) = rewritten else { break };
            tasks.spawn(self.clone().pair(q.clone(), id, rewritten.clone(), epoch));
            current = rewritten;
        }
        join_all(tasks).await
    }

    /// Responses, judged, regenerated on failure: the pair, or nothing.
    async fn pair(
        self: Arc<Self>,
        q: QueryItem,
        id: String,
        query: String,
        epoch: u32,
    ) -> Result<Vec<PairRecord>, PipelineError> {
        let this = self.clone();
        let (qq, sid, qtext) = (q.clone(), id.clone(), query.clone());
        let validated: Option<Validated> = self
            .step("validate", &id, async move {
                let max = this.cfg().stages.validate.max_regenerations;
                let mut last_failure = String::new();
                for attempt in 0..=max {
                    let responses =
                        this.clone().responses(&qq, &sid, &qtext, attempt).await.map_err(StepError::Fatal)?;
                    let Some(r) = responses else {
                        if this.stopped() {
                            return Err(StepError::Stopped);
                        }
                        last_failure = "no responses".into();
                        continue;
                    };
                    let verdicts = this
                        .g
                        .judge
                        .verdicts(
                            &qq.leaf,
                            &qtext,
                            (&r.chosen, r.chosen_score),
                            (&r.rejected, r.rejected_score),
                            &sid,
                        )
                        .await?;
                    if verdicts.passed() {
                        let v = Validated {
                            chosen: r.chosen,
                            rejected: r.rejected,
                            verdicts,
                            attempts: attempt + 1,
                        };
                        return Ok((v, StepUsage::default()));
                    }
                    let failed = verdicts.failed_checks();
                    if !verdicts.query_harmful || !verdicts.query_in_category {
                        // New responses cannot fix the query.
                        return Err(StepError::Drop(format!("failed validation: {}", failed.join(", "))));
                    }
                    last_failure = failed.join(", ");
                }
                Err(StepError::Drop(format!(
                    "failed validation: {last_failure} (after {} attempts)",
                    max + 1
                )))
            })
            .await?;
        let Some(v) = validated else { return Ok(Vec::new()) };
        let m = &self.models;
        Ok(vec![PairRecord {
            id,
            prompt: query,
            chosen: v.chosen,
            rejected: v.rejected,
            taxonomy_path: q.leaf.path.clone(),
            macro_category: q.leaf.macro_id.clone(),
            micro_category: q.leaf.micro_id.clone(),
            leaf: q.leaf.leaf_id.clone(),
            topic: q.topic.to_string(),
            topic_id: q.topic_id.to_string(),
            jailbreak_type: q.jailbreak_type.to_string(),
            raw_text_format: q.format.to_string(),
            epoch,
            expander_model: m.expander.clone(),
            generator_model: m.generator.clone(),
            safe_responder_model: m.safe.clone(),
            unsafe_responder_model: m.rejected.clone(),
            judge: m.judge.clone(),
            seed: self.cfg().run.seed,
            verdicts: v.verdicts,
        }])
    }

    /// One attempt's chosen and rejected responses, each the judge's pick of
    /// its candidates.
    async fn responses(
        self: Arc<Self>,
        q: &QueryItem,
        pair_id: &str,
        query: &str,
        attempt: u32,
    ) -> Result<Option<Responses>, PipelineError> {
        let id = format!("{pair_id}@{attempt}");
        self.g.progress.add_total("responses", 1);
        let this = self.clone();
        let (q, query) = (q.clone(), query.to_string());
        self.step("responses", &id.clone(), async move {
            let st = &this.cfg().stages.responses;
            let judge = &this.g.judge;
            let mut usage = StepUsage::default();

            let request =
                stages::response_request(&this.g.templates, "chosen_system.j2", &query, st.chosen_candidates)
                    .map_err(StepError::Fatal)?;
            let response =
                this.call(&this.g.roles.safe_responder, request, &id, "chosen", &mut usage).await?;
            let candidates = stages::parse_candidates(&response).map_err(StepError::Drop)?;
            let scores = judge.score(&query, &candidates, &id).await?;
            let best = judge.best_chosen(&candidates, &scores);
            let (chosen, chosen_score) = (candidates[best].clone(), scores[best]);

            let rejected_candidates = match (st.rejected_source, &this.g.roles.unsafe_responder) {
                (RejectedSource::UnsafeResponder, Some(role)) => {
                    let request = stages::response_request(
                        &this.g.templates,
                        "rejected_system.j2",
                        &query,
                        st.rejected_candidates,
                    )
                    .map_err(StepError::Fatal)?;
                    let response = this.call(role, request, &id, "rejected", &mut usage).await?;
                    stages::parse_candidates(&response).map_err(StepError::Drop)?
                }
                _ => vec![raw_text_excerpt(&q.raw_text, raw_excerpt_words(&this.g.config))],
            };
            let scores = judge.score(&query, &rejected_candidates, &id).await?;
            let best = judge.best_rejected(&scores);
            let (rejected, rejected_score) = (rejected_candidates[best].clone(), scores[best]);
            if chosen == rejected {
                return Err(StepError::Drop("chosen and rejected are the same text".into()));
            }
            Ok((Responses { chosen, chosen_score, rejected, rejected_score }, usage))
        })
        .await
    }
}

/// How many words of the raw text stand in for a rejected response: about
/// what the unsafe responder would write (3/4 of a token a word), else 200.
fn raw_excerpt_words(config: &RunConfig) -> usize {
    let tokens = config.roles.unsafe_responder.as_ref().and_then(|r| r.max_tokens).unwrap_or(266);
    (tokens as usize * 3 / 4).max(20)
}

/// The first `words` words of `text`, cut at a sentence end where one is near.
pub fn raw_text_excerpt(text: &str, words: usize) -> String {
    let all: Vec<&str> = text.split_whitespace().collect();
    if all.len() <= words {
        return all.join(" ");
    }
    let cut = &all[..words];
    let end = cut.iter().rposition(|w| w.ends_with(['.', '!', '?'])).filter(|&i| i + 1 >= words / 2);
    cut[..end.map_or(words, |i| i + 1)].join(" ")
}

/// The topics of `parsed` that are not near-duplicates of `known` or of each
/// other: same normalised text, or word-set Jaccard similarity of at least 0.7.
pub fn novel_topics(known: &[String], parsed: Vec<String>) -> Vec<String> {
    fn words(s: &str) -> std::collections::BTreeSet<String> {
        crate::dedup::normalize(s).split_whitespace().map(str::to_string).collect()
    }
    let mut seen: Vec<std::collections::BTreeSet<String>> = known.iter().map(|k| words(k)).collect();
    let mut out = Vec::new();
    for p in parsed {
        let w = words(&p);
        let near = seen.iter().any(|s| {
            let inter = s.intersection(&w).count() as f64;
            let union = s.union(&w).count() as f64;
            union == 0.0 || inter / union >= 0.7
        });
        if !near {
            seen.push(w);
            out.push(p);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_depend_on_item_and_purpose_and_fit_31_bits() {
        let a = derive_seed(7, "x/1", "chosen");
        assert_eq!(a, derive_seed(7, "x/1", "chosen"));
        assert_ne!(a, derive_seed(7, "x/1", "rejected"));
        assert_ne!(a, derive_seed(8, "x/1", "chosen"));
        assert!(a < 1 << 31);
    }

    #[test]
    fn near_duplicate_topics_are_dropped() {
        let known = vec!["[placeholder method] against small shops".to_string()];
        let got = novel_topics(
            &known,
            vec![
                "[Placeholder method] against small shops!".into(),
                "[another area] in schools".into(),
                "[another area] in the schools".into(),
            ],
        );
        assert_eq!(got, ["[another area] in schools"]);
    }

    #[test]
    fn excerpts_end_at_a_sentence_when_one_is_near() {
        let text = "One two three. Four five six seven eight nine ten";
        assert_eq!(raw_text_excerpt(text, 6), "One two three.");
        assert_eq!(raw_text_excerpt(text, 100), text);
        assert_eq!(raw_text_excerpt("a b c d e f", 4), "a b c d");
    }
}
