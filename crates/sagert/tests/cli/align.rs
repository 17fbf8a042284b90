//! `sagert align`: a resumed run after SIGKILL ends at the same adapter as an
//! uninterrupted one (on a tiny random llama with SmolLM2's tokenizer), and a
//! short DPO run on SmolLM2 itself lowers the loss and exports an adapter that
//! PEFT loads (same logits), a merged model and a GGUF that `sagert chat` runs.
//! Skipped with a printed reason when SmolLM2 is not cached, except under CI.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use sagert_align::model::{load_safetensors_dir, Llama, LlamaConfig, Trainable};

use super::util::{cached, code, read_jsonl, sagert, text, Workspace};

const SMOL: &str = "smollm2-135m-instruct";

pub fn smol_gguf() -> Option<PathBuf> {
    if !cached(SMOL) {
        return None;
    }
    sagert_models::testing::model_or_skip("align", SMOL)
}

/// SmolLM2 as a transformers directory (f32), converted into `dir`.
pub fn smol_hf(gguf: &Path, dir: &Path) -> PathBuf {
    let out = dir.join("smol-hf");
    sagert_convert::gguf_to_hf(gguf, &out, sagert_convert::HfDtype::F32, &Default::default()).unwrap();
    out
}

/// A tiny random llama with SmolLM2's tokenizer and chat template.
pub fn tiny_model(smol: &Path, dir: &Path) -> PathBuf {
    let out = dir.join("tiny");
    std::fs::create_dir_all(&out).unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json", "generation_config.json"] {
        if smol.join(f).exists() {
            std::fs::copy(smol.join(f), out.join(f)).unwrap();
        }
    }
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(smol.join("config.json")).unwrap()).unwrap();
    let tiny = LlamaConfig::tiny(49152);
    for (k, v) in [
        ("hidden_size", tiny.hidden_size),
        ("intermediate_size", tiny.intermediate_size),
        ("num_hidden_layers", tiny.num_hidden_layers),
        ("num_attention_heads", tiny.num_attention_heads),
        ("num_key_value_heads", tiny.num_key_value_heads),
    ] {
        config[k] = serde_json::json!(v);
    }
    config["head_dim"] = serde_json::json!(tiny.hidden_size / tiny.num_attention_heads);
    std::fs::write(out.join("config.json"), serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    let cfg = LlamaConfig::from_file(&out.join("config.json")).unwrap();
    let model = Llama::random(&cfg, &Trainable::Full, 3, &Device::Cpu).unwrap();
    let weights: HashMap<String, Tensor> = model.merged_weights().unwrap().into_iter().collect();
    candle_core::safetensors::save(&weights, out.join("model.safetensors")).unwrap();
    out
}

/// Neutral toy preference pairs in TRL's standard form.
pub fn write_pairs(path: &Path, n: usize, offset: usize) {
    let mut s = String::new();
    for i in offset..offset + n {
        let row = serde_json::json!({
            "prompt": format!("Give me a short tip about topic number {i}."),
            "chosen": format!("Here is a friendly tip about topic {i}: keep it simple and clear."),
            "rejected": format!("No. Topic {i} is boring and I will not answer."),
            "category": if i % 2 == 0 { "even" } else { "odd" },
        });
        s += &format!("{row}\n");
    }
    std::fs::write(path, s).unwrap();
}

fn config(model: &Path, out: &str, extra: &str) -> String {
    format!(
        "[run]\noutput_dir = \"{out}\"\nseed = 5\n[model]\npath = \"{}\"\n\
         [data]\ntrain = \"train.jsonl\"\neval = \"test.jsonl\"\nmax_prompt_length = 64\nmax_length = 128\n\
         [objective]\ntype = \"dpo\"\nbeta = 0.1\n[lora]\nrank = 4\nalpha = 8\n{extra}",
        model.display()
    )
}

fn adapter(run: &Path) -> HashMap<String, Vec<f32>> {
    let tensors =
        candle_core::safetensors::load(run.join("export/adapter/adapter_model.safetensors"), &Device::Cpu)
            .unwrap();
    tensors.into_iter().map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1::<f32>().unwrap())).collect()
}

#[test]
fn align_resumes_after_sigkill_to_the_same_adapter() {
    let Some(gguf) = smol_gguf() else { return };
    let ws = Workspace::new();
    let smol = smol_hf(&gguf, ws.path());
    let tiny = tiny_model(&smol, ws.path());
    write_pairs(&ws.path().join("train.jsonl"), 48, 0);
    write_pairs(&ws.path().join("test.jsonl"), 6, 100);
    let train = "[train]\nbatch_size = 2\nepochs = 2\nlr = 1e-3\ncheckpoint_every = 3\nthreads = 2\n\
                 [export]\nmerged = false\ngguf = \"none\"\n";
    ws.write("a.toml", &config(&tiny, "run-a", train));
    ws.write("b.toml", &config(&tiny, "run-b", train));

    let out = sagert().current_dir(ws.path()).args(["align", "-c", "a.toml"]).output().unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out).1);

    // Run b: killed once its second checkpoint is on disk.
    let mut child = sagert()
        .current_dir(ws.path())
        .args(["align", "-c", "b.toml"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ckpt = ws.path().join("run-b/checkpoints/step-00000006");
    let start = Instant::now();
    while !ckpt.exists() {
        assert!(start.elapsed() < Duration::from_secs(300), "no checkpoint after 5 minutes");
        assert!(child.try_wait().unwrap().is_none(), "run b ended before it could be killed");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!ws.path().join("run-b/export").exists(), "killed before the end");

    let out = sagert().current_dir(ws.path()).args(["align", "-c", "b.toml"]).output().unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out).1);
    assert!(text(&out).0.contains("resumed at"), "{}", text(&out).0);

    let (a, b) = (adapter(&ws.path().join("run-a")), adapter(&ws.path().join("run-b")));
    assert_eq!(a.len(), b.len());
    assert!(!a.is_empty());
    for (name, va) in &a {
        let vb = &b[name];
        let diff = va.iter().zip(vb).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(diff < 1e-5, "{name}: resumed adapter differs by {diff}");
    }
    // The metric log has each step once, with the same values.
    let (ma, mb) = (
        read_jsonl(&ws.path().join("run-a/metrics.jsonl")),
        read_jsonl(&ws.path().join("run-b/metrics.jsonl")),
    );
    assert_eq!(ma.len(), 48);
    assert_eq!(mb.len(), ma.len());
    for (x, y) in ma.iter().zip(&mb) {
        assert_eq!(x["step"], y["step"]);
        let (lx, ly) = (x["loss"].as_f64().unwrap(), y["loss"].as_f64().unwrap());
        assert!((lx - ly).abs() < 1e-5, "step {}: {lx} vs {ly}", x["step"]);
    }
    // A rerun of a finished run with another seed is refused.
    ws.write("c.toml", &config(&tiny, "run-a", train).replace("seed = 5", "seed = 6"));
    let out = sagert().current_dir(ws.path()).args(["align", "-c", "c.toml"]).output().unwrap();
    assert_ne!(code(&out), 0);
    assert!(text(&out).1.contains("another definition"), "{}", text(&out).1);
}

#[test]
fn align_smollm2_lowers_the_loss_and_exports_for_peft_and_chat() {
    let Some(gguf) = smol_gguf() else { return };
    let ws = Workspace::new();
    write_pairs(&ws.path().join("train.jsonl"), 4, 0);
    write_pairs(&ws.path().join("test.jsonl"), 2, 100);
    let train =
        "[train]\nbatch_size = 2\nepochs = 3\nlr = 5e-4\nwarmup_ratio = 0.0\nschedule = \"constant\"\n\
                 checkpoint_every = 2\nthreads = 2\n[export]\ngguf = \"f16\"\n";
    ws.write("align.toml", &config(&gguf, "run", train));
    let cache = ws.path().join("cache");
    let out = sagert()
        .current_dir(ws.path())
        .env("SAGERT_CACHE_DIR", &cache)
        .args(["align", "-c", "align.toml", "--json"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out).1);
    let summary: serde_json::Value = serde_json::from_str(text(&out).0.trim()).unwrap();
    assert_eq!(summary["steps"], 6);
    assert_eq!(summary["ref_logps_computed"], 6);

    let metrics = read_jsonl(&ws.path().join("run/metrics.jsonl"));
    let losses: Vec<f64> = metrics.iter().map(|m| m["loss"].as_f64().unwrap()).collect();
    assert!(
        (losses[0] - std::f64::consts::LN_2).abs() < 1e-3,
        "the policy starts as the reference: {losses:?}"
    );
    assert!(losses[losses.len() - 1] < losses[0] - 0.05, "the loss goes down: {losses:?}");
    let before = summary["eval_before"]["loss"].as_f64().unwrap();
    let after = summary["eval_after"]["loss"].as_f64().unwrap();
    assert!(after < before, "held-out loss {before} -> {after}");
    for f in ["summary.md", "summary.json", "loss.svg", "rewards.svg", "manifest.json"] {
        assert!(ws.path().join("run").join(f).is_file(), "{f}");
    }
    let run = ws.path().join("run/export");
    assert!(run.join("merged/model.safetensors").is_file() && run.join("merged/tokenizer.json").is_file());

    // The GGUF runs in `sagert chat`.
    let mut child = sagert()
        .args(["chat", "--model"])
        .arg(run.join("model.gguf"))
        .args(["--temperature", "0", "--max-tokens", "8"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"Say hello.\n/exit\n").unwrap();
    let chat = child.wait_with_output().unwrap();
    assert_eq!(code(&chat), 0, "{}", text(&chat).1);
    assert!(!text(&chat).0.trim().is_empty());

    // PEFT loads the adapter onto the base and gives sagert's logits.
    let base = std::fs::read_dir(cache.join("models/hf")).unwrap().next().unwrap().unwrap().path();
    let adapter_dir = run.join("adapter");
    let adapter_config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(adapter_dir.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(adapter_config["peft_type"], "LORA");
    assert_eq!(adapter_config["r"], 4);
    let lora = sagert_align::lora::LoraConfig { rank: 4, alpha: 8.0, ..Default::default() };
    let cfg = LlamaConfig::from_file(&base.join("config.json")).unwrap();
    let weights = load_safetensors_dir(&base, &Device::Cpu).unwrap();
    let model =
        Llama::new(&cfg, &weights, &Trainable::Lora(lora), candle_core::DType::F32, 0, &Device::Cpu).unwrap();
    let trained =
        candle_core::safetensors::load(adapter_dir.join("adapter_model.safetensors"), &Device::Cpu).unwrap();
    model.load_trainable(&trained).unwrap();
    let ids: Vec<u32> = vec![1, 9690, 198, 19556, 750, 253, 1980, 3458];
    let logits = model
        .forward(&Tensor::new(ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap(), None)
        .unwrap();
    let expected = serde_json::json!({ "input_ids": [ids], "logits": logits.to_vec3::<f32>().unwrap() });
    let expected_path = ws.path().join("expected.json");
    std::fs::write(&expected_path, expected.to_string()).unwrap();
    if std::process::Command::new("python3")
        .args(["-c", "import peft, transformers, torch"])
        .status()
        .unwrap()
        .success()
    {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/check-peft.py");
        let out = std::process::Command::new("python3")
            .arg(script)
            .arg(&base)
            .arg(&adapter_dir)
            .arg(&expected_path)
            .arg("--merged")
            .arg(run.join("merged"))
            .output()
            .unwrap();
        assert_eq!(code(&out), 0, "check-peft: {}\n{}", text(&out).0, text(&out).1);
    } else {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI must run the PEFT check: pip install peft");
        eprintln!("skipped the PEFT check: python3 lacks peft, transformers or torch");
    }
}

#[test]
fn align_sweep_runs_the_grid_with_shared_reference_log_probs() {
    let Some(gguf) = smol_gguf() else { return };
    let ws = Workspace::new();
    let smol = smol_hf(&gguf, ws.path());
    let tiny = tiny_model(&smol, ws.path());
    write_pairs(&ws.path().join("train.jsonl"), 12, 0);
    write_pairs(&ws.path().join("other.jsonl"), 12, 50);
    write_pairs(&ws.path().join("test.jsonl"), 2, 100);
    let extra = "[data.datasets]\nsage = \"train.jsonl\"\npku = \"other.jsonl\"\n\
                 [train]\nbatch_size = 2\nmax_steps = 1\nthreads = 2\n[export]\nmerged = false\ngguf = \"none\"\n";
    ws.write("sweep.toml", &config(&tiny, "sweep", extra));
    let out = sagert()
        .current_dir(ws.path())
        .args(["align", "-c", "sweep.toml", "--datasets", "sage,pku", "--sizes", "4,8", "--json"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out).1);
    let summaries: Vec<serde_json::Value> =
        text(&out).0.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(summaries.len(), 4);
    // Nested subsets share their pairs' reference log-probs: the n8 cell
    // computes only the 4 pairs the n4 cell did not (the 2 held-out pairs are
    // computed once, by the first cell).
    let computed: Vec<u64> = summaries.iter().map(|s| s["ref_logps_computed"].as_u64().unwrap()).collect();
    assert_eq!(computed, [4 + 2, 4, 4, 4]);
    let mut seeds = Vec::new();
    for cell in ["sage-n4", "sage-n8", "pku-n4", "pku-n8"] {
        let manifest: serde_json::Value = serde_json::from_slice(
            &std::fs::read(ws.path().join("sweep").join(cell).join("manifest.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(manifest["pairs"], if cell.ends_with("n4") { 4 } else { 8 }, "{cell}");
        assert_eq!(manifest["sample_seed"], 5);
        seeds.push(manifest["seed"].as_u64().unwrap());
        assert!(ws.path().join("sweep").join(cell).join("export/adapter/adapter_config.json").is_file());
    }
    seeds.sort();
    seeds.dedup();
    assert_eq!(seeds.len(), 4, "one seed per cell");
}
