//! The training loop: data, reference log-probabilities, optimisation,
//! metrics, checkpoints, evaluation and export of one run.
//!
//! One optimiser step takes `grad_accum` micro-batches of `batch_size` pairs.
//! Micro-batches are drawn from a continuous stream: micro-batch `m` is slot
//! `m mod M` of epoch `m / M` (M micro-batches per epoch), and each epoch's
//! order is a permutation seeded by the run seed and the epoch. Dropout masks
//! are seeded by the run seed, the step and the micro-batch. A run resumed from
//! its checkpoint at step `s` therefore replays steps `s..` exactly.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use sagert_store::Store;

use crate::checkpoint::{self, CheckpointState};
use crate::config::AlignConfig;
use crate::data::{self, collate, Encoded, Encoder};
use crate::error::{AlignError, Result};
use crate::export::{self, ExportPlan, Exported};
use crate::loss::{preference_loss, sequence_logps, Objective, PairLogps};
use crate::model::{load_safetensors_dir, Llama, LlamaConfig, Trainable};
use crate::optim::{clip_grad_norm, lr_at, AdamW, GradAccumulator};
use crate::refs::{self, RefLogps};
use crate::report;

/// How a run reports progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Progress bars on stderr.
    Bars,
    /// Nothing.
    Quiet,
}

/// One training run, resolved: every path exists or is created by the run.
#[derive(Debug, Clone)]
pub struct TrainJob {
    /// The configuration (its `data.train`/`data.limit` are superseded by the fields below).
    pub config: AlignConfig,
    /// The base model as a transformers directory.
    pub base_dir: PathBuf,
    /// The training data and its name (for manifests).
    pub train: PathBuf,
    pub train_name: String,
    /// Held-out data, if any.
    pub eval: Option<PathBuf>,
    /// Use at most this many training pairs (stratified, nested sample).
    pub limit: Option<usize>,
    /// The run directory: store, checkpoints, metrics, summary, exports.
    pub run_dir: PathBuf,
    /// The directory whose store caches reference log-probabilities (a
    /// sweep's root, shared by its cells; else the run directory).
    pub cache_dir: PathBuf,
    /// Seeds the LoRA initialisation, the data order and dropout.
    pub seed: u64,
    /// Seeds the subset draw; equal across a sweep's sizes, so subsets nest.
    pub sample_seed: u64,
    pub progress: Progress,
}

/// Held-out metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalMetrics {
    pub pairs: usize,
    pub loss: f64,
    /// Fraction of pairs whose chosen reward exceeds the rejected one.
    pub reward_accuracy: f64,
    pub reward_margin: f64,
    /// Fraction of pairs whose chosen completion has the higher mean token
    /// log-probability under the policy (reference-free; meaningful before training).
    pub preference_accuracy: f64,
    pub logps_chosen: f64,
    pub logps_rejected: f64,
}

/// One optimiser step's metrics, as logged to `metrics.jsonl`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    pub step: u64,
    pub epoch: f64,
    pub loss: f64,
    #[serde(rename = "rewards/chosen")]
    pub rewards_chosen: f64,
    #[serde(rename = "rewards/rejected")]
    pub rewards_rejected: f64,
    #[serde(rename = "rewards/margin")]
    pub reward_margin: f64,
    #[serde(rename = "rewards/accuracy")]
    pub reward_accuracy: f64,
    #[serde(rename = "logps/chosen")]
    pub logps_chosen: f64,
    #[serde(rename = "logps/rejected")]
    pub logps_rejected: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens: usize,
    pub tokens_per_s: f64,
    pub seconds: f64,
    /// Held-out metrics, on the steps that evaluate.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub eval: Option<EvalMetrics>,
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct TrainSummary {
    pub run_dir: PathBuf,
    pub objective: String,
    pub pairs: usize,
    pub truncated: usize,
    pub eval_pairs: usize,
    pub steps: u64,
    pub resumed_from: Option<u64>,
    pub ref_logps_computed: usize,
    pub ref_logps_cached: usize,
    pub trainable_parameters: usize,
    pub train_tokens_per_s: f64,
    pub eval_before: Option<EvalMetrics>,
    pub eval_after: Option<EvalMetrics>,
    pub final_step: Option<StepMetrics>,
    pub exported: Exported,
    pub seconds: f64,
}

/// The device training runs on: the first CUDA device with the `cuda`
/// feature, else the CPU.
pub fn device() -> Result<Device> {
    #[cfg(feature = "cuda")]
    {
        return Ok(Device::new_cuda(0)?);
    }
    #[allow(unreachable_code)]
    Ok(Device::Cpu)
}

/// Seeds derived from a run seed and a purpose (SHA-256, as the generation
/// pipeline derives request seeds).
pub fn derive_seed(seed: u64, purpose: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(purpose.as_bytes());
    u64::from_le_bytes(h.finalize()[..8].try_into().expect("8 bytes"))
}

/// Read, sample and encode a dataset.
fn load_pairs(
    encoder: &Encoder,
    path: &Path,
    split: &str,
    limit: Option<usize>,
    seed: u64,
    job: &TrainJob,
) -> Result<(Vec<Encoded>, usize)> {
    let pairs = data::read_preferences(path, split)?;
    let pairs = data::limit(pairs, limit, seed);
    let limits = job.config.data.truncation();
    let mut truncated = 0;
    let mut out = Vec::with_capacity(pairs.len());
    for pair in &pairs {
        let e = encoder.encode(pair, &limits)?;
        truncated += usize::from(e.truncated);
        out.push(e);
    }
    Ok((out, truncated))
}

/// The hash that binds a run directory to what it trains: configuration
/// (without export, checkpoint and thread settings), base model, data and seeds.
fn definition_hash(job: &TrainJob, model_key: &str, pairs: &[Encoded]) -> String {
    let mut c = job.config.clone();
    c.export = Default::default();
    c.train.checkpoint_every = 1;
    c.train.keep_checkpoints = 1;
    c.train.threads = None;
    c.train.eval_every = 0;
    c.data.datasets.clear();
    c.data.train.clear();
    c.data.eval = None;
    c.data.limit = None;
    c.run.output_dir = PathBuf::new();
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(&c).expect("config serialises"));
    h.update(model_key.as_bytes());
    h.update(job.seed.to_le_bytes());
    for p in pairs {
        h.update(refs::key("", p).as_bytes());
    }
    hex::encode(&h.finalize()[..16])
}

/// Policy log-probabilities of a batch: summed log-probabilities and token
/// counts of the chosen and rejected completions, each (b,).
struct BatchLogps {
    chosen: Tensor,
    rejected: Tensor,
    chosen_len: Tensor,
    rejected_len: Tensor,
}

fn batch_logps(model: &Llama, batch: &data::Batch, dropout: Option<u64>) -> Result<BatchLogps> {
    let logits = model.forward(&batch.input_ids, dropout)?;
    let (sums, counts) = sequence_logps(&logits, &batch.input_ids, &batch.loss_mask)?;
    let b = batch.ids.len();
    Ok(BatchLogps {
        chosen: sums.narrow(0, 0, b)?,
        rejected: sums.narrow(0, b, b)?,
        chosen_len: counts.narrow(0, 0, b)?,
        rejected_len: counts.narrow(0, b, b)?,
    })
}

fn f64s(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn ref_tensors(refs: &[RefLogps], device: &Device) -> Result<(Tensor, Tensor)> {
    let c: Vec<f32> = refs.iter().map(|r| r.chosen as f32).collect();
    let r: Vec<f32> = refs.iter().map(|r| r.rejected as f32).collect();
    Ok((Tensor::new(c, device)?, Tensor::new(r, device)?))
}

/// How batches are built and progress shown.
struct Batching<'a> {
    pad_id: u32,
    batch_size: usize,
    progress: Progress,
    device: &'a Device,
}

/// Compute the reference log-probabilities the cache lacks, with the model as
/// it is before training (LoRA's B is zero, so the policy is the base).
fn fill_refs(
    model: &Llama,
    store: &Store,
    model_key: &str,
    pairs: &[Encoded],
    how: &Batching<'_>,
) -> Result<(Vec<RefLogps>, usize)> {
    let (pad_id, batch_size, progress, device) = (how.pad_id, how.batch_size, how.progress, how.device);
    let found = refs::lookup(store, model_key, pairs)?;
    let missing: Vec<usize> = (0..pairs.len()).filter(|&i| found[i].is_none()).collect();
    let bar = bar(progress, missing.len() as u64, "reference log-probs");
    let mut all: Vec<Option<RefLogps>> = found;
    for chunk in missing.chunks(batch_size.max(1)) {
        let items: Vec<&Encoded> = chunk.iter().map(|&i| &pairs[i]).collect();
        let batch = collate(&items, pad_id, device)?;
        let lp = batch_logps(model, &batch, None)?;
        let (c, r) = (f64s(&lp.chosen)?, f64s(&lp.rejected)?);
        let computed: Vec<(&Encoded, RefLogps)> =
            items.iter().enumerate().map(|(k, p)| (*p, RefLogps { chosen: c[k], rejected: r[k] })).collect();
        refs::save(store, model_key, &computed)?;
        for (k, &i) in chunk.iter().enumerate() {
            all[i] = Some(computed[k].1);
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok((all.into_iter().map(|r| r.expect("filled")).collect(), missing.len()))
}

/// Held-out metrics of the model as it stands.
fn evaluate(
    model: &Llama,
    objective: &Objective,
    pairs: &[Encoded],
    refs: Option<&[RefLogps]>,
    pad_id: u32,
    batch_size: usize,
    device: &Device,
) -> Result<EvalMetrics> {
    let mut m = EvalMetrics { pairs: pairs.len(), ..Default::default() };
    if pairs.is_empty() {
        return Ok(m);
    }
    let (mut loss, mut acc, mut margin, mut pref, mut lc, mut lr) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for (start, chunk) in pairs.chunks(batch_size.max(1)).enumerate().map(|(i, c)| (i * batch_size, c)) {
        let items: Vec<&Encoded> = chunk.iter().collect();
        let batch = collate(&items, pad_id, device)?;
        let lp = batch_logps(model, &batch, None)?;
        let (ref_chosen, ref_rejected) = match refs {
            Some(r) => {
                let (c, r) = ref_tensors(&r[start..start + chunk.len()], device)?;
                (Some(c), Some(r))
            }
            None => (None, None),
        };
        let out = preference_loss(
            objective,
            &PairLogps {
                chosen: lp.chosen.clone(),
                rejected: lp.rejected.clone(),
                chosen_len: lp.chosen_len.clone(),
                rejected_len: lp.rejected_len.clone(),
                ref_chosen,
                ref_rejected,
            },
        )?;
        let n = chunk.len() as f64;
        loss += out.loss.to_dtype(DType::F64)?.to_scalar::<f64>()? * n;
        let (rc, rr) = (f64s(&out.rewards_chosen)?, f64s(&out.rewards_rejected)?);
        let (c, r) = (f64s(&lp.chosen)?, f64s(&lp.rejected)?);
        let (cl, rl) = (f64s(&lp.chosen_len)?, f64s(&lp.rejected_len)?);
        for k in 0..chunk.len() {
            acc += f64::from(u8::from(rc[k] > rr[k]));
            margin += rc[k] - rr[k];
            pref += f64::from(u8::from(c[k] / cl[k].max(1.0) > r[k] / rl[k].max(1.0)));
            lc += c[k];
            lr += r[k];
        }
    }
    let n = pairs.len() as f64;
    m.loss = loss / n;
    m.reward_accuracy = acc / n;
    m.reward_margin = margin / n;
    m.preference_accuracy = pref / n;
    m.logps_chosen = lc / n;
    m.logps_rejected = lr / n;
    Ok(m)
}

fn bar(progress: Progress, len: u64, what: &str) -> indicatif::ProgressBar {
    match progress {
        Progress::Quiet => indicatif::ProgressBar::hidden(),
        Progress::Bars => {
            let b = indicatif::ProgressBar::new(len);
            b.set_style(
                indicatif::ProgressStyle::with_template("{prefix:>20} [{bar:30}] {pos}/{len} {msg} ({eta})")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            b.set_prefix(what.to_string());
            b
        }
    }
}

/// A permutation of `0..n` for `epoch`.
fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = fastrand::Rng::with_seed(derive_seed(seed, &format!("order/{epoch}")));
    rng.shuffle(&mut order);
    order
}

/// Keep the first `lines` lines of `path` (a resumed run drops the metric lines
/// logged after its checkpoint, which it is about to log again).
fn truncate_lines(path: &Path, lines: u64) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let text = fs::read_to_string(path).map_err(AlignError::io(path))?;
    let kept: String = text.split_inclusive('\n').take(lines as usize).collect();
    sagert_engine::io::write_atomic(path, kept.as_bytes())
        .map_err(|e| AlignError::Io { path: path.into(), source: std::io::Error::other(e.to_string()) })
}

/// Run `job` to the end: resume from its last checkpoint if it has one.
pub fn train(job: &TrainJob) -> Result<TrainSummary> {
    let started = Instant::now();
    let cfg = &job.config;
    let device = device()?;
    fs::create_dir_all(&job.run_dir).map_err(AlignError::io(&job.run_dir))?;
    let store = Store::open(&job.run_dir)?;
    let cache_store = if job.cache_dir == job.run_dir { None } else { Some(Store::open(&job.cache_dir)?) };
    let ref_store = cache_store.as_ref().unwrap_or(&store);

    let encoder = Encoder::from_model_dir(&job.base_dir)?;
    let pad_id = encoder.pad_id();
    let (pairs, truncated) =
        load_pairs(&encoder, &job.train, &cfg.data.split, job.limit, job.sample_seed, job)?;
    if pairs.is_empty() {
        return Err(AlignError::Dataset { file: job.train.clone(), message: "no training pairs".into() });
    }
    let eval_pairs = match &job.eval {
        Some(path) => {
            load_pairs(&encoder, path, &cfg.data.eval_split, Some(cfg.data.eval_limit), job.sample_seed, job)?
                .0
        }
        None => Vec::new(),
    };

    let model_key = format!("{}:{}", sagert_convert::source_key(&job.base_dir)?, cfg.model.dtype);
    let definition = definition_hash(job, &model_key, &pairs);
    match store.meta("align.definition")? {
        Some(d) if d != definition => {
            return Err(AlignError::Config {
                file: job.run_dir.clone(),
                message: "this run directory holds a run of another definition (configuration, model, data \
                          or seed changed); choose a new run.output_dir or remove this one"
                    .into(),
            })
        }
        Some(_) => {}
        None => store.set_meta("align.definition", &definition)?,
    }

    let llama_cfg = LlamaConfig::from_file(&job.base_dir.join("config.json"))?;
    let weights = load_safetensors_dir(&job.base_dir, &device)?;
    let trainable = if cfg.train.full_finetune { Trainable::Full } else { Trainable::Lora(cfg.lora.clone()) };
    let dtype = if cfg.model.dtype == "bf16" { DType::BF16 } else { DType::F32 };
    let model = Llama::new(&llama_cfg, &weights, &trainable, dtype, derive_seed(job.seed, "init"), &device)?;
    drop(weights);

    // Reference log-probabilities, before any training step.
    let objective = &cfg.objective;
    let bs = cfg.train.batch_size;
    let (train_refs, eval_refs, computed) = if objective.needs_reference() {
        let how = Batching { pad_id, batch_size: bs, progress: job.progress, device: &device };
        let (t, ct) = fill_refs(&model, ref_store, &model_key, &pairs, &how)?;
        let (e, ce) = fill_refs(&model, ref_store, &model_key, &eval_pairs, &how)?;
        (Some(t), Some(e), ct + ce)
    } else {
        (None, None, 0)
    };
    let needed = if objective.needs_reference() { pairs.len() + eval_pairs.len() } else { 0 };

    let vars = model.trainable();
    let trainable_parameters = vars.iter().map(|(_, v)| v.as_tensor().elem_count()).sum();
    let mut optimizer = AdamW::new(vars.clone(), cfg.adamw())?;

    let metrics_path = job.run_dir.join("metrics.jsonl");
    let mut start_step = 0;
    let mut resumed_from = None;
    if let Some(ckpt) = checkpoint::latest(&store, &job.run_dir, &device)? {
        if ckpt.state.definition != definition {
            return Err(AlignError::Checkpoint {
                path: ckpt.dir,
                message: "made by another run definition".into(),
            });
        }
        model.load_trainable(&ckpt.trainable)?;
        optimizer.load_state(&ckpt.optimizer, ckpt.state.step)?;
        truncate_lines(&metrics_path, ckpt.state.metric_lines)?;
        start_step = ckpt.state.step;
        resumed_from = Some(ckpt.state.step);
    } else if metrics_path.exists() {
        fs::remove_file(&metrics_path).map_err(AlignError::io(&metrics_path))?;
    }
    let lines_at_start = if metrics_path.exists() {
        fs::read_to_string(&metrics_path).map_err(AlignError::io(&metrics_path))?.lines().count() as u64
    } else {
        0
    };

    let eval_before = match store.meta("align.eval_before")? {
        Some(json) => serde_json::from_str(&json).ok(),
        None if !eval_pairs.is_empty() => {
            let m = evaluate(&model, objective, &eval_pairs, eval_refs.as_deref(), pad_id, bs, &device)?;
            store.set_meta("align.eval_before", &serde_json::to_string(&m).expect("json"))?;
            Some(m)
        }
        None => None,
    };

    // The schedule.
    let accum = cfg.train.grad_accum as u64;
    let micro_per_epoch = pairs.len().div_ceil(bs) as u64;
    let steps_per_epoch = micro_per_epoch.div_ceil(accum);
    let total_steps = cfg.train.max_steps.unwrap_or(steps_per_epoch * u64::from(cfg.train.epochs)).max(1);
    let warmup = (cfg.train.warmup_ratio * total_steps as f64).ceil() as u64;

    let mut log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&metrics_path)
        .map_err(AlignError::io(&metrics_path))?;
    let train_bar = bar(job.progress, total_steps, "train");
    train_bar.set_position(start_step);
    let mut accumulator = GradAccumulator::new(&vars);
    let mut orders: Option<(u64, Vec<usize>)> = None;
    let mut last: Option<StepMetrics> = None;
    let mut tokens_total = 0usize;
    let mut train_seconds = 0.0;
    for step in start_step..total_steps {
        let t0 = Instant::now();
        let mut m = StepMetrics { step: step + 1, ..Default::default() };
        let (mut rc, mut rr, mut lc, mut lrj, mut loss_sum) = (vec![], vec![], vec![], vec![], 0.0);
        for k in 0..accum {
            let micro = step * accum + k;
            let epoch = micro / micro_per_epoch;
            if orders.as_ref().map(|(e, _)| *e) != Some(epoch) {
                orders = Some((epoch, epoch_order(pairs.len(), job.seed, epoch)));
            }
            let order = &orders.as_ref().expect("set").1;
            let slot = (micro % micro_per_epoch) as usize;
            let idx: Vec<usize> = order[slot * bs..((slot + 1) * bs).min(pairs.len())].to_vec();
            let items: Vec<&Encoded> = idx.iter().map(|&i| &pairs[i]).collect();
            let batch = collate(&items, pad_id, &device)?;
            m.tokens += batch.tokens;
            let lp =
                batch_logps(&model, &batch, Some(derive_seed(job.seed, &format!("dropout/{step}/{k}"))))?;
            let (ref_chosen, ref_rejected) = match &train_refs {
                Some(r) => {
                    let picked: Vec<RefLogps> = idx.iter().map(|&i| r[i]).collect();
                    let (c, r) = ref_tensors(&picked, &device)?;
                    (Some(c), Some(r))
                }
                None => (None, None),
            };
            let out = preference_loss(
                objective,
                &PairLogps {
                    chosen: lp.chosen.clone(),
                    rejected: lp.rejected.clone(),
                    chosen_len: lp.chosen_len.clone(),
                    rejected_len: lp.rejected_len.clone(),
                    ref_chosen,
                    ref_rejected,
                },
            )?;
            let scaled = (&out.loss / accum as f64)?;
            let grads = scaled.backward()?;
            accumulator.add(&grads)?;
            loss_sum += out.loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            rc.extend(f64s(&out.rewards_chosen)?);
            rr.extend(f64s(&out.rewards_rejected)?);
            lc.extend(f64s(&lp.chosen.detach())?);
            lrj.extend(f64s(&lp.rejected.detach())?);
        }
        m.loss = loss_sum / accum as f64;
        if !m.loss.is_finite() {
            return Err(AlignError::Diverged { step: step + 1, message: format!("loss is {}", m.loss) });
        }
        let mut grads = accumulator.take();
        m.grad_norm = if cfg.train.max_grad_norm > 0.0 {
            clip_grad_norm(&mut grads, cfg.train.max_grad_norm, step + 1)?
        } else {
            clip_grad_norm(&mut grads, f64::INFINITY, step + 1)?
        };
        m.lr = lr_at(cfg.train.schedule, cfg.train.lr, warmup, total_steps, step);
        optimizer.step(&grads, m.lr)?;

        m.rewards_chosen = mean(&rc);
        m.rewards_rejected = mean(&rr);
        m.reward_margin = m.rewards_chosen - m.rewards_rejected;
        m.reward_accuracy =
            mean(&rc.iter().zip(&rr).map(|(c, r)| f64::from(u8::from(c > r))).collect::<Vec<_>>());
        m.logps_chosen = mean(&lc);
        m.logps_rejected = mean(&lrj);
        m.epoch = ((step + 1) * accum) as f64 / micro_per_epoch as f64;
        m.seconds = t0.elapsed().as_secs_f64();
        m.tokens_per_s = m.tokens as f64 / m.seconds.max(1e-9);
        tokens_total += m.tokens;
        train_seconds += m.seconds;
        let done = step + 1 == total_steps;
        if !eval_pairs.is_empty()
            && cfg.train.eval_every > 0
            && (step + 1) % cfg.train.eval_every == 0
            && !done
        {
            m.eval =
                Some(evaluate(&model, objective, &eval_pairs, eval_refs.as_deref(), pad_id, bs, &device)?);
        }
        let line = serde_json::to_string(&m).expect("metrics serialise");
        writeln!(log, "{line}").map_err(AlignError::io(&metrics_path))?;
        log.flush().map_err(AlignError::io(&metrics_path))?;
        train_bar.set_message(format!(
            "loss {:.4} acc {:.2} margin {:.3} {:.0} tok/s",
            m.loss, m.reward_accuracy, m.reward_margin, m.tokens_per_s
        ));
        train_bar.inc(1);
        if (step + 1) % cfg.train.checkpoint_every == 0 || done {
            log.sync_data().map_err(AlignError::io(&metrics_path))?;
            let state = CheckpointState {
                step: step + 1,
                definition: definition.clone(),
                seed: job.seed,
                rng: "data order: fastrand seeded by sha256(seed, \"order/<epoch>\"); dropout: sha256(seed, \
                      \"dropout/<step>/<micro-batch>\")"
                    .into(),
                metric_lines: lines_at_start + (step + 1 - start_step),
            };
            let trainable: std::collections::HashMap<String, Tensor> =
                vars.iter().map(|(n, v)| (n.clone(), v.as_tensor().clone())).collect();
            let opt: std::collections::HashMap<String, Tensor> = optimizer.state().into_iter().collect();
            checkpoint::save(&store, &job.run_dir, &state, &trainable, &opt, cfg.train.keep_checkpoints)?;
        }
        last = Some(m);
    }
    train_bar.finish_and_clear();

    let eval_after = if eval_pairs.is_empty() {
        None
    } else {
        Some(evaluate(&model, objective, &eval_pairs, eval_refs.as_deref(), pad_id, bs, &device)?)
    };

    let gguf = match cfg.export.gguf.as_str() {
        "none" => None,
        other => Some(
            other
                .parse()
                .map_err(|e: String| AlignError::Config { file: job.run_dir.clone(), message: e })?,
        ),
    };
    let plan = ExportPlan {
        adapter: cfg.export.adapter && !cfg.train.full_finetune,
        merged: cfg.export.merged,
        gguf,
    };
    let lora = (!cfg.train.full_finetune).then_some(&cfg.lora);
    let exported = export::export(&model, lora, &job.base_dir, &job.run_dir, &plan)?;

    let history = report::read_metrics(&metrics_path)?;
    let final_step = last.or_else(|| history.last().cloned());
    let summary = TrainSummary {
        run_dir: job.run_dir.clone(),
        objective: objective.name().into(),
        pairs: pairs.len(),
        truncated,
        eval_pairs: eval_pairs.len(),
        steps: total_steps,
        resumed_from,
        ref_logps_computed: computed,
        ref_logps_cached: needed - computed,
        trainable_parameters,
        train_tokens_per_s: if train_seconds > 0.0 { tokens_total as f64 / train_seconds } else { 0.0 },
        eval_before,
        eval_after,
        final_step,
        exported,
        seconds: started.elapsed().as_secs_f64(),
    };
    report::write(job, &summary, &history, &definition)?;
    Ok(summary)
}
