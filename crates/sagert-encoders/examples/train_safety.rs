//! Trains the safety classifier's heads and writes
//! `data/safety-classifier.safetensors` and `data/safety-classifier.json`.
//!
//! ```text
//! cargo run --release -p sagert-encoders --example train_safety -- \
//!     [--data DIR] [--minilm DIR] [--out DIR] [--threads N] [--seed N]
//! ```
//!
//! `scripts/train-safety-classifier` fetches the data and the embedder and
//! runs this. Defaults: the data and MiniLM folders of the model cache
//! (`${SAGERT_CACHE_DIR:-$HOME/.cache/sagert}/models/{pyrit-scorer-evals,minilm-l6}`),
//! this crate's `data/` folder, 2 threads, and [`data::SPLIT_SEED`].
//!
//! For each label (refusal, harmful) it
//!
//! 1. reads PyRIT's CSVs ([`data`]) and splits them 80/20, stratified, seeded;
//! 2. embeds every response and prompt with the MiniLM embedder;
//! 3. for each [`HeadInput`] (the response alone; with the prompt's
//!    embedding, the cosine of the two, or their elementwise product), picks
//!    the L2 penalty from a grid by 5-fold cross-validated log-loss *on the
//!    training part*, and fits a logistic head on the whole training part;
//! 4. prints held-out accuracy, Cohen's kappa and the confusion matrix of both.
//!
//! The response-only head is always shipped (callers may not have the
//! prompt); of the heads that also read the prompt, the one with the lowest
//! cross-validated log-loss is shipped too when it beats the response alone by
//! at least [`MIN_GAIN`] (2%). The choice uses the training part only,
//! so the held-out numbers stay an honest estimate. The shipped heads are
//! fitted on the training part alone, so `tests/safety.rs` can measure them on
//! the held-out part recomputed from the same seed.

use std::path::PathBuf;
use std::time::Instant;

use sagert_encoders::embed::{EmbedOptions, Embedder};
use sagert_encoders::safety::data::{self, Example};
use sagert_encoders::safety::metrics::Confusion;
use sagert_encoders::safety::{log_loss, Head, HeadInput, Label, Logistic, SafetyHeads, EMBEDDER, THRESHOLD};
use serde_json::json;

/// The L2 penalties tried.
const L2_GRID: [f64; 9] = [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0];
/// The relative cut in cross-validated log-loss a head that reads the prompt
/// must bring over the response alone to be shipped.
const MIN_GAIN: f64 = 0.02;
/// Cross-validation folds.
const FOLDS: usize = 5;

struct Args {
    data: PathBuf,
    minilm: PathBuf,
    out: PathBuf,
    threads: usize,
    seed: u64,
}

fn parse_args() -> Args {
    let cache = std::env::var_os("SAGERT_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/sagert"));
    let mut args = Args {
        data: cache.join("models/pyrit-scorer-evals"),
        minilm: cache.join("models/minilm-l6"),
        out: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data"),
        threads: 2,
        seed: data::SPLIT_SEED,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--data" => args.data = value().into(),
            "--minilm" => args.minilm = value().into(),
            "--out" => args.out = value().into(),
            "--threads" => args.threads = value().parse().expect("--threads N"),
            "--seed" => args.seed = value().parse().expect("--seed N"),
            other => panic!("unknown flag {other} (see the docs at the top of examples/train_safety.rs)"),
        }
    }
    args
}

/// One label's data: examples, split, embeddings.
struct Task {
    label: Label,
    examples: Vec<Example>,
    split: data::Split,
    responses: Vec<Vec<f32>>,
    prompts: Vec<Vec<f32>>,
}

impl Task {
    fn features(&self, input: HeadInput, indices: &[usize]) -> (Vec<Vec<f32>>, Vec<bool>) {
        indices
            .iter()
            .map(|&i| (input.features_of(&self.responses[i], &self.prompts[i]), self.examples[i].label))
            .unzip()
    }
}

/// The outcome of one (label, input) candidate.
struct Candidate {
    input: HeadInput,
    l2: f64,
    cv_log_loss: f64,
    model: Logistic,
    confusion: Confusion,
    held_out_log_loss: f64,
}

fn main() {
    let args = parse_args();
    let started = Instant::now();
    let embedder = Embedder::load(&args.minilm, EmbedOptions { threads: args.threads, batch_size: 32 })
        .unwrap_or_else(|e| panic!("{e} (fetch it with `sagert models fetch minilm-l6`)"));
    let mut tasks = Vec::new();
    for (label, examples) in
        [(Label::Refusal, data::load_refusal(&args.data)), (Label::Harmful, data::load_harm(&args.data))]
    {
        let examples = examples.unwrap_or_else(|e| panic!("{e}"));
        let split = data::split(&examples, data::HELD_OUT_FRACTION, args.seed);
        let t = Instant::now();
        let responses: Vec<&str> = examples.iter().map(|e| e.response.as_str()).collect();
        let prompts: Vec<&str> = examples.iter().map(|e| e.prompt.as_str()).collect();
        let responses = embedder.embed(&responses).expect("embed the responses");
        let prompts = embedder.embed(&prompts).expect("embed the prompts");
        println!(
            "{}: {} examples ({} positive), {} train / {} held out; embedded in {:.1} s",
            label.name(),
            examples.len(),
            examples.iter().filter(|e| e.label).count(),
            split.train.len(),
            split.held_out.len(),
            t.elapsed().as_secs_f64()
        );
        tasks.push(Task { label, examples, split, responses, prompts });
    }

    let mut heads = Vec::new();
    let mut report = Vec::new();
    for task in &tasks {
        let candidates: Vec<Candidate> =
            HeadInput::ALL.into_iter().map(|input| evaluate(task, input, args.seed)).collect();
        // The best head that reads the prompt, if it beats the response alone.
        let with_prompt = candidates[1..]
            .iter()
            .min_by(|a, b| a.cv_log_loss.total_cmp(&b.cv_log_loss))
            .filter(|c| c.cv_log_loss < (1.0 - MIN_GAIN) * candidates[0].cv_log_loss)
            .map(|c| c.input);
        for c in &candidates {
            let shipped = c.input == HeadInput::Response || Some(c.input) == with_prompt;
            println!(
                "\n{} from {}: L2 {} (cv log-loss {:.4}); held out: accuracy {:.3}, kappa {:.3}, \
                 log-loss {:.4}, precision {:.3}, recall {:.3}{}\n{}",
                task.label.name(),
                c.input.name(),
                c.l2,
                c.cv_log_loss,
                c.confusion.accuracy(),
                c.confusion.kappa(),
                c.held_out_log_loss,
                c.confusion.precision(),
                c.confusion.recall(),
                if shipped { " [shipped]" } else { "" },
                c.confusion
            );
            report.push(json!({
                "label": task.label.name(),
                "input": c.input.name(),
                "shipped": shipped,
                "l2": c.l2,
                "cv_log_loss": round(c.cv_log_loss),
                "held_out": {
                    "n": c.confusion.total(),
                    "accuracy": round(c.confusion.accuracy()),
                    "kappa": round(c.confusion.kappa()),
                    "precision": round(c.confusion.precision()),
                    "recall": round(c.confusion.recall()),
                    "log_loss": round(c.held_out_log_loss),
                    "confusion": c.confusion,
                },
            }));
            if shipped {
                let name = match c.input {
                    HeadInput::Response => task.label.name().to_string(),
                    _ => format!("{}_with_prompt", task.label.name()),
                };
                heads.push(Head { name, label: task.label, input: c.input, model: c.model.clone() });
            }
        }
    }

    let heads = SafetyHeads { dim: embedder.dim(), embedder: EMBEDDER.to_string(), heads };
    let weights = args.out.join("safety-classifier.safetensors");
    std::fs::create_dir_all(&args.out).expect("create the output folder");
    std::fs::write(&weights, heads.to_bytes()).expect("write the weights");
    let sidecar = json!({
        "format": sagert_encoders::safety::WEIGHTS_FORMAT,
        "embedder": EMBEDDER,
        "dim": embedder.dim(),
        "model": "logistic regression per head, L2 penalty chosen by 5-fold cross-validated log-loss \
                  on the training part, fitted by Newton's method on the training part",
        "threshold": THRESHOLD,
        "data": {
            "source": "pyrit==1.1.0 pyrit/datasets/scorer_evals (sagert models fetch pyrit-scorer-evals)",
            "refusal_files": data::REFUSAL_FILES,
            "harm_files": data::HARM_FILES,
            "refusal_label": "human_score == 1",
            "harmful_label": format!("mean of the human_score columns >= {}", data::HARM_THRESHOLD),
            "examples": tasks.iter().map(|t| json!({
                "label": t.label.name(),
                "total": t.examples.len(),
                "positive": t.examples.iter().filter(|e| e.label).count(),
                "train": t.split.train.len(),
                "held_out": t.split.held_out.len(),
            })).collect::<Vec<_>>(),
        },
        "split": {"seed": args.seed, "held_out_fraction": data::HELD_OUT_FRACTION, "stratified": true},
        "l2_grid": L2_GRID,
        "heads": report,
        "trainer": "crates/sagert-encoders/examples/train_safety.rs",
    });
    let sidecar_path = args.out.join("safety-classifier.json");
    std::fs::write(&sidecar_path, serde_json::to_string_pretty(&sidecar).expect("JSON") + "\n")
        .expect("write the sidecar");
    println!(
        "\nwrote {} ({} bytes) and {} in {:.1} s",
        weights.display(),
        std::fs::metadata(&weights).map(|m| m.len()).unwrap_or(0),
        sidecar_path.display(),
        started.elapsed().as_secs_f64()
    );
}

/// Picks the penalty by cross-validation on the training part, fits on all of
/// it, and measures on the held-out part.
fn evaluate(task: &Task, input: HeadInput, seed: u64) -> Candidate {
    let folds = folds(task, seed);
    let mut best = (f64::INFINITY, L2_GRID[0]);
    for l2 in L2_GRID {
        let mut loss = 0.0;
        for k in 0..FOLDS {
            let fit_idx: Vec<usize> =
                task.split.train.iter().zip(&folds).filter(|(_, &f)| f != k).map(|(&i, _)| i).collect();
            let val_idx: Vec<usize> =
                task.split.train.iter().zip(&folds).filter(|(_, &f)| f == k).map(|(&i, _)| i).collect();
            let (x, y) = task.features(input, &fit_idx);
            let model = Logistic::fit(&x, &y, l2);
            let (vx, vy) = task.features(input, &val_idx);
            let q: Vec<f32> = vx.iter().map(|r| model.probability(r)).collect();
            loss += log_loss(&q, &vy) * vy.len() as f64;
        }
        let loss = loss / task.split.train.len() as f64;
        if loss < best.0 {
            best = (loss, l2);
        }
    }
    let (x, y) = task.features(input, &task.split.train);
    let model = Logistic::fit(&x, &y, best.1);
    let (hx, hy) = task.features(input, &task.split.held_out);
    let q: Vec<f32> = hx.iter().map(|r| model.probability(r)).collect();
    let confusion = Confusion::from_pairs(hy.iter().zip(&q).map(|(&t, &p)| (t, p >= THRESHOLD)));
    Candidate {
        input,
        l2: best.1,
        cv_log_loss: best.0,
        model,
        confusion,
        held_out_log_loss: log_loss(&q, &hy),
    }
}

/// A fold for each training example: stratified, by a seeded shuffle of each
/// class dealt round-robin.
fn folds(task: &Task, seed: u64) -> Vec<usize> {
    let mut state = seed ^ 0x5851_f42d_4c95_7f2d;
    let mut next = move || {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        state >> 33
    };
    let mut fold = vec![0; task.split.train.len()];
    for class in [false, true] {
        let mut members: Vec<usize> = (0..task.split.train.len())
            .filter(|&j| task.examples[task.split.train[j]].label == class)
            .collect();
        for i in (1..members.len()).rev() {
            let j = (next() % (i as u64 + 1)) as usize;
            members.swap(i, j);
        }
        for (n, &j) in members.iter().enumerate() {
            fold[j] = n % FOLDS;
        }
    }
    fold
}

fn round(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}
