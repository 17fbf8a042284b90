//! Preference-training throughput on the CPU, for `scripts/bench-align`.
//!
//! The loop of `scripts/bench-align-torch.py` (its PyTorch + PEFT reference),
//! step for step: a transformers model directory loaded in f32, LoRA (rank
//! `r`, alpha `2r`, dropout 0) on all seven projections, the DPO sigmoid loss
//! (beta 0.1) against reference log-probabilities computed once before the loop
//! (the policy at step 0: `B = 0`) and held constant, AdamW at lr 1e-4 with no
//! weight decay. A batch is `batch` preference pairs, `2 * batch` sequences of
//! `seq` seeded random token ids; chosen and rejected of a pair share their
//! prompt (the first `seq / 2` tokens) and only the completion is scored. One
//! step = one forward over chosen and rejected concatenated in one batch, the
//! loss, backward, the optimizer step. The first `warmup` steps are not timed.
//!
//! Usage: `cargo bench -p sagert-align --bench train -- --model DIR [--seq 256]
//! [--batch 4] [--rank 16] [--steps 5] [--warmup 1] [--json]`; each flag
//! falls back to `SAGERT_BENCH_<FLAG>` (`SAGERT_BENCH_MODEL`, ...). cargo runs
//! benches in the package directory, so a relative model path not found there
//! is taken from the workspace root. Without a model the bench prints why and
//! exits 0. Threads: candle's CPU backend reads `RAYON_NUM_THREADS`. Prints one
//! JSON line (`"impl": "sagert"`, `tokens_per_s` = `2 * batch * seq` / mean
//! step seconds, `step_s`, `peak_rss_mb` from `VmHWM`, `threads`, ...); with
//! `--json` nothing else on stdout. Per-step times go to stderr.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use sagert_align::lora::LoraConfig;
use sagert_align::loss::{preference_loss, sequence_logps, DpoVariant, Objective, PairLogps};
use sagert_align::model::{load_safetensors_dir, Llama, LlamaConfig, Trainable};
use sagert_align::optim::{AdamW, AdamWConfig};
use sagert_align::AlignError;

const TARGETS: [&str; 7] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];
const BETA: f64 = 0.1;
const LR: f64 = 1e-4;
const SEED: u64 = 0;

/// The bench's settings (flags, else `SAGERT_BENCH_*`, else the defaults).
#[derive(Debug)]
struct Args {
    model: Option<PathBuf>,
    seq: usize,
    batch: usize,
    rank: usize,
    steps: usize,
    warmup: usize,
    json: bool,
}

/// The flags that take a value.
const FLAGS: [&str; 6] = ["model", "seq", "batch", "rank", "steps", "warmup"];

const USAGE: &str =
    "usage: train --model DIR [--seq 256] [--batch 4] [--rank 16] [--steps 5] [--warmup 1] [--json]";

fn parse_args(argv: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let env = |name: &str| std::env::var(format!("SAGERT_BENCH_{}", name.to_uppercase())).ok();
    let mut values = std::collections::BTreeMap::new();
    for name in FLAGS {
        if let Some(v) = env(name) {
            values.insert(name.to_string(), v);
        }
    }
    let mut json = env("json").is_some_and(|v| v == "1");
    let mut argv = argv.into_iter();
    while let Some(arg) = argv.next() {
        match arg.as_str() {
            "--json" => json = true,
            // cargo bench passes --bench to harness = false targets.
            "--bench" => {}
            "-h" | "--help" => return Err(USAGE.into()),
            flag => {
                let name = flag.strip_prefix("--").filter(|n| FLAGS.contains(n));
                let Some(name) = name else { return Err(format!("unknown argument `{flag}`\n{USAGE}")) };
                let value = argv.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
                values.insert(name.to_string(), value);
            }
        }
    }
    let number = |name: &str, default: usize, min: usize| -> Result<usize, String> {
        let Some(text) = values.get(name) else { return Ok(default) };
        match text.parse::<usize>() {
            Ok(n) if n >= min => Ok(n),
            _ => Err(format!("--{name} must be an integer >= {min}, got `{text}`")),
        }
    };
    Ok(Args {
        model: values.get("model").map(|m| resolve(Path::new(m))),
        seq: number("seq", 256, 2)?,
        batch: number("batch", 4, 1)?,
        rank: number("rank", 16, 1)?,
        steps: number("steps", 5, 1)?,
        warmup: number("warmup", 1, 0)?,
        json,
    })
}

/// `path` as given, or, when it is relative and missing, from the workspace
/// root: `cargo bench` runs benches in the package directory, not where it was called.
fn resolve(path: &Path) -> PathBuf {
    if path.is_relative() && !path.exists() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        if root.join(path).exists() {
            return root.join(path);
        }
    }
    path.to_path_buf()
}

/// Token ids `(2 * batch, seq)` u32, chosen rows first, and the completion mask (f32).
fn make_batch(
    batch: usize,
    seq: usize,
    vocab: usize,
    device: &Device,
) -> candle_core::Result<(Tensor, Tensor)> {
    let mut rng = fastrand::Rng::with_seed(SEED);
    let prompt_len = seq / 2;
    let mut token = || rng.u32(..vocab as u32);
    let prompts: Vec<Vec<u32>> = (0..batch).map(|_| (0..prompt_len).map(|_| token()).collect()).collect();
    let mut ids = Vec::with_capacity(2 * batch * seq);
    for _side in 0..2 {
        for prompt in &prompts {
            ids.extend_from_slice(prompt);
            ids.extend((prompt_len..seq).map(|_| token()));
        }
    }
    let mask: Vec<f32> =
        (0..2 * batch).flat_map(|_| (0..seq).map(|j| if j >= prompt_len { 1.0 } else { 0.0 })).collect();
    Ok((Tensor::from_vec(ids, (2 * batch, seq), device)?, Tensor::from_vec(mask, (2 * batch, seq), device)?))
}

/// The process's peak resident set (`VmHWM`), in MiB; 0 where /proc is unavailable.
fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// What one run measured.
struct Measured {
    step_s: f64,
    losses: Vec<f64>,
    trainable_params: usize,
}

fn run(args: &Args, model_dir: &Path) -> sagert_align::Result<Measured> {
    let device = Device::Cpu;
    let cfg = LlamaConfig::from_file(&model_dir.join("config.json"))?;
    let weights = load_safetensors_dir(model_dir, &device)?;
    let lora = LoraConfig {
        rank: args.rank,
        alpha: 2.0 * args.rank as f64,
        dropout: 0.0,
        target_modules: TARGETS.iter().map(|m| m.to_string()).collect(),
    };
    let model = Llama::new(&cfg, &weights, &Trainable::Lora(lora), DType::F32, SEED, &device)?;
    drop(weights);
    let vars = model.trainable();
    let trainable_params = vars.iter().map(|(_, v)| v.elem_count()).sum();
    let mut optimizer =
        AdamW::new(vars.clone(), AdamWConfig { lr: LR, weight_decay: 0.0, ..Default::default() })?;
    let objective = Objective::Dpo { beta: BETA, variant: DpoVariant::Sigmoid, label_smoothing: 0.0 };

    let (ids, mask) = make_batch(args.batch, args.seq, cfg.vocab_size, &device)?;
    let b = args.batch;
    // Reference log-probabilities: the policy before any step (B = 0), eval mode.
    let (reference, counts) = sequence_logps(&model.forward(&ids, None)?, &ids, &mask)?;
    let reference = reference.detach();
    eprintln!("peak RSS after loading and the reference (forward-only) pass: {:.0} MiB", peak_rss_mb());

    let mut times = Vec::with_capacity(args.steps);
    let mut losses = Vec::with_capacity(args.warmup + args.steps);
    for step in 0..args.warmup + args.steps {
        let start = Instant::now();
        let logits = model.forward(&ids, Some(SEED + step as u64))?;
        let (sums, _) = sequence_logps(&logits, &ids, &mask)?;
        let logps = PairLogps {
            chosen: sums.narrow(0, 0, b)?,
            rejected: sums.narrow(0, b, b)?,
            chosen_len: counts.narrow(0, 0, b)?,
            rejected_len: counts.narrow(0, b, b)?,
            ref_chosen: Some(reference.narrow(0, 0, b)?),
            ref_rejected: Some(reference.narrow(0, b, b)?),
        };
        let out = preference_loss(&objective, &logps)?;
        let grads = out.loss.backward()?;
        let grads: Vec<Tensor> = vars
            .iter()
            .map(|(name, var)| {
                grads.get(var.as_tensor()).cloned().ok_or_else(|| {
                    AlignError::from(candle_core::Error::Msg(format!(
                        "no gradient for `{name}`: cut from the graph"
                    )))
                })
            })
            .collect::<sagert_align::Result<_>>()?;
        optimizer.step(&grads, LR)?;
        let loss = out.loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let elapsed = start.elapsed().as_secs_f64();
        losses.push(loss);
        let timed = step >= args.warmup;
        eprintln!("step {step}: {elapsed:.3}s, loss {loss:.6}{}", if timed { "" } else { " (warmup)" });
        if timed {
            times.push(elapsed);
        }
    }
    Ok(Measured { step_s: times.iter().sum::<f64>() / times.len() as f64, losses, trainable_params })
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let Some(model_dir) = args.model.clone() else {
        eprintln!("train bench skipped: no model (pass --model DIR or set SAGERT_BENCH_MODEL; scripts/bench-align does)");
        return ExitCode::SUCCESS;
    };
    let measured = match run(&args, &model_dir) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("train bench failed on {}: {e}", model_dir.display());
            return ExitCode::FAILURE;
        }
    };
    let tokens = (2 * args.batch * args.seq) as f64;
    let line = serde_json::json!({
        "impl": "sagert",
        "tokens_per_s": tokens / measured.step_s,
        "step_s": measured.step_s,
        "peak_rss_mb": peak_rss_mb(),
        "threads": candle_core::utils::get_num_threads(),
        "seq": args.seq,
        "batch": args.batch,
        "rank": args.rank,
        "steps": args.steps,
        "warmup": args.warmup,
        "trainable_params": measured.trainable_params,
        "first_loss": measured.losses.first(),
        "last_loss": measured.losses.last(),
    });
    if !args.json {
        println!(
            "sagert: {:.1} tokens/s, {:.3} s/step ({} pairs x {} tokens, rank {}), peak RSS {:.0} MiB",
            tokens / measured.step_s,
            measured.step_s,
            args.batch,
            args.seq,
            args.rank,
            peak_rss_mb()
        );
    }
    println!("{line}");
    ExitCode::SUCCESS
}
