//! Behaviour tests of the differentiable llama and its LoRA adapters: every
//! trained tensor gets a gradient, merging and reloading keep the logits, dropout
//! is seeded, and SmolLM2-135M's log-probs match llama.cpp's on the same weights.
//!
//! The SmolLM2 test needs the file from `scripts/fetch-models`; without it, it
//! prints why and passes (except under `CI=true`).

use std::collections::HashMap;
use std::ffi::CString;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, D};
use sagert_align::lora::LoraConfig;
use sagert_align::model::{load_safetensors_dir, Llama, LlamaConfig, Trainable};
use sagert_convert::{HfDtype, Options};
use sagert_llama::{LlamaBackend, LlamaOptions};

const VOCAB: usize = 50;

fn cpu() -> Device {
    Device::Cpu
}

fn ids(rows: usize, cols: usize, seed: u64) -> Tensor {
    let mut rng = fastrand::Rng::with_seed(seed);
    let v: Vec<u32> = (0..rows * cols).map(|_| rng.u32(..VOCAB as u32)).collect();
    Tensor::from_vec(v, (rows, cols), &cpu()).unwrap()
}

fn uniform(dims: &[usize], scale: f32, rng: &mut fastrand::Rng) -> Tensor {
    let v: Vec<f32> = (0..dims.iter().product()).map(|_| (rng.f32() * 2.0 - 1.0) * scale).collect();
    Tensor::from_vec(v, dims, &cpu()).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
}

fn lora(dropout: f64) -> Trainable {
    Trainable::Lora(LoraConfig { rank: 4, alpha: 8.0, dropout, ..LoraConfig::default() })
}

/// A tiny config with q/k/v biases and tied embeddings (Qwen2's shape).
fn tied_with_bias() -> LlamaConfig {
    LlamaConfig { tie_word_embeddings: true, attention_bias: true, ..LlamaConfig::tiny(VOCAB) }
}

/// Gives every LoRA `B` (zero at init) small random values, so that the
/// adapters change the output and their `A`s get gradients.
fn randomize_b(model: &Llama, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let values: HashMap<String, Tensor> = model
        .trainable()
        .into_iter()
        .map(|(name, var)| {
            let t = match name.contains("lora_B") {
                true => uniform(var.dims(), 0.05, &mut rng),
                false => var.as_tensor().copy().unwrap(),
            };
            (name, t)
        })
        .collect();
    model.load_trainable(&values).unwrap();
}

/// Mean next-token cross-entropy of random targets.
fn loss(model: &Llama, input: &Tensor, dropout_seed: Option<u64>) -> Tensor {
    let logits = model.forward(input, dropout_seed).unwrap();
    let (b, t, v) = logits.dims3().unwrap();
    let targets = ids(b, t, 99).flatten_all().unwrap();
    candle_nn::loss::cross_entropy(&logits.reshape((b * t, v)).unwrap(), &targets).unwrap()
}

/// Every trained tensor gets a gradient that is present and non-zero. This
/// fails when any op on the path has no backward pass (candle-nn's fused
/// `rms_norm`, `softmax_last_dim` or `rope`): candle then drops the graph
/// below it without an error.
fn assert_all_trainables_get_gradients(model: &Llama, dropout_seed: Option<u64>) {
    let grads = loss(model, &ids(2, 7, 1), dropout_seed).backward().unwrap();
    let trainable = model.trainable();
    assert!(!trainable.is_empty());
    for (name, var) in &trainable {
        let grad = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("`{name}` has no gradient"));
        let norm: f32 = grad.sqr().unwrap().sum_all().unwrap().to_scalar().unwrap();
        assert!(norm > 0.0 && norm.is_finite(), "`{name}` has gradient norm {norm}");
    }
}

#[test]
fn every_lora_tensor_gets_a_gradient() {
    for cfg in [LlamaConfig::tiny(VOCAB), tied_with_bias()] {
        let model = Llama::random(&cfg, &lora(0.1), 3, &cpu()).unwrap();
        // A and B for 7 modules in each of 2 layers.
        assert_eq!(model.trainable().len(), 28);
        // B starts at zero, which makes dL/dA = scale · (dL/dy · B)ᵀ · x zero at
        // step 0: set B to small random values first, as one optimiser step would.
        randomize_b(&model, 4);
        assert_all_trainables_get_gradients(&model, None);
        assert_all_trainables_get_gradients(&model, Some(5));
    }
}

#[test]
fn every_weight_gets_a_gradient_in_full_fine_tuning() {
    let model = Llama::random(&LlamaConfig::tiny(VOCAB), &Trainable::Full, 3, &cpu()).unwrap();
    // embed, lm_head, final norm; per layer 2 norms and 7 projections.
    assert_eq!(model.trainable().len(), 3 + 2 * 9);
    assert_all_trainables_get_gradients(&model, None);
    let model = Llama::random(&tied_with_bias(), &Trainable::Full, 3, &cpu()).unwrap();
    // No lm_head; q/k/v biases.
    assert_eq!(model.trainable().len(), 2 + 2 * 12);
    assert_all_trainables_get_gradients(&model, None);
}

#[test]
fn trainable_tensors_use_peft_names_and_shapes() {
    let model = Llama::random(&LlamaConfig::tiny(VOCAB), &lora(0.0), 3, &cpu()).unwrap();
    let trainable = model.trainable();
    let names: Vec<&str> = trainable.iter().map(|(n, _)| n.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted);
    let find = |name: &str| trainable.iter().find(|(n, _)| n == name).map(|(_, v)| v.dims().to_vec());
    // tiny: hidden 32, 4 heads of 8, 2 kv heads, MLP 64; rank 4.
    let a = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
    assert_eq!(find(a), Some(vec![4, 32]));
    assert_eq!(find("base_model.model.model.layers.1.self_attn.k_proj.lora_B.weight"), Some(vec![16, 4]));
    assert_eq!(find("base_model.model.model.layers.1.mlp.down_proj.lora_A.weight"), Some(vec![4, 64]));
    assert_eq!(find("base_model.model.model.layers.1.mlp.up_proj.lora_B.weight"), Some(vec![64, 4]));

    // Only the targeted modules get adapters.
    let only_v =
        Trainable::Lora(LoraConfig { target_modules: vec!["v_proj".into()], ..LoraConfig::default() });
    let model = Llama::random(&LlamaConfig::tiny(VOCAB), &only_v, 3, &cpu()).unwrap();
    assert_eq!(model.trainable().len(), 4);
    assert!(model.trainable().iter().all(|(n, _)| n.contains("v_proj")));
}

#[test]
fn load_trainable_names_what_does_not_fit() {
    let model = Llama::random(&LlamaConfig::tiny(VOCAB), &lora(0.0), 3, &cpu()).unwrap();
    let full: HashMap<String, Tensor> =
        model.trainable().into_iter().map(|(n, v)| (n, v.as_tensor().copy().unwrap())).collect();
    let a = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";

    let mut missing = full.clone();
    missing.remove(a);
    assert!(model.load_trainable(&missing).unwrap_err().to_string().contains(a));
    let mut extra = full.clone();
    extra.insert(
        "base_model.model.lm_head.lora_A.weight".into(),
        Tensor::zeros((4, 32), DType::F32, &cpu()).unwrap(),
    );
    assert!(model.load_trainable(&extra).unwrap_err().to_string().contains("lm_head.lora_A"));
    let mut misshaped = full.clone();
    misshaped.insert(a.into(), Tensor::zeros((4, 31), DType::F32, &cpu()).unwrap());
    let err = model.load_trainable(&misshaped).unwrap_err().to_string();
    assert!(err.contains(a) && err.contains("31"), "{err}");

    // A round trip restores the values.
    let mut changed = full.clone();
    changed.insert(a.into(), Tensor::ones((4, 32), DType::F32, &cpu()).unwrap());
    model.load_trainable(&changed).unwrap();
    let var = model.trainable().into_iter().find(|(n, _)| n == a).unwrap().1;
    assert_eq!(var.as_tensor().sum_all().unwrap().to_scalar::<f32>().unwrap(), 128.0);
}

/// The merged weights of a LoRA model, loaded as a plain model, give the same logits.
#[test]
fn merged_weights_reproduce_the_lora_model() {
    for cfg in [LlamaConfig::tiny(VOCAB), tied_with_bias()] {
        let model = Llama::random(&cfg, &lora(0.0), 7, &cpu()).unwrap();
        randomize_b(&model, 8);
        let input = ids(3, 9, 2);
        let expected = model.forward(&input, None).unwrap();
        let merged: HashMap<String, Tensor> = model.merged_weights().unwrap().into_iter().collect();
        assert_eq!(merged.contains_key("lm_head.weight"), !cfg.tie_word_embeddings);
        assert_eq!(merged.contains_key("model.layers.0.self_attn.q_proj.bias"), cfg.attention_bias);
        assert!(merged.keys().all(|k| !k.contains("lora")));
        let plain = Llama::new(&cfg, &merged, &Trainable::Full, DType::F32, 0, &cpu()).unwrap();
        let got = plain.forward(&input, None).unwrap();
        let diff = max_abs_diff(&expected, &got);
        assert!(diff < 1e-4, "merged model differs by {diff}");
        // The adapters matter: the base alone gives other logits.
        let base = Llama::random(&cfg, &lora(0.0), 7, &cpu()).unwrap();
        assert!(max_abs_diff(&expected, &base.forward(&input, None).unwrap()) > 1e-3);
    }
}

/// Weights written as two shards with an index load back as they were.
#[test]
fn sharded_safetensors_load() {
    let cfg = LlamaConfig::tiny(VOCAB);
    let model = Llama::random(&cfg, &Trainable::Full, 11, &cpu()).unwrap();
    let weights = model.merged_weights().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (first, second): (Vec<_>, Vec<_>) = weights.iter().enumerate().partition(|(i, _)| i % 2 == 0);
    let mut map = serde_json::Map::new();
    for (file, part) in
        [("model-00001-of-00002.safetensors", first), ("model-00002-of-00002.safetensors", second)]
    {
        let part: HashMap<String, Tensor> =
            part.into_iter().map(|(_, (k, v))| (k.clone(), v.clone())).collect();
        for name in part.keys() {
            map.insert(name.clone(), file.into());
        }
        candle_core::safetensors::save(&part, dir.path().join(file)).unwrap();
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": map });
    std::fs::write(dir.path().join("model.safetensors.index.json"), index.to_string()).unwrap();
    let loaded = load_safetensors_dir(dir.path(), &cpu()).unwrap();
    assert_eq!(loaded.len(), weights.len());
    let reloaded = Llama::new(&cfg, &loaded, &lora(0.0), DType::F32, 0, &cpu()).unwrap();
    let input = ids(2, 5, 3);
    let diff = max_abs_diff(&model.forward(&input, None).unwrap(), &reloaded.forward(&input, None).unwrap());
    assert_eq!(diff, 0.0);
    assert!(load_safetensors_dir(&dir.path().join("absent"), &cpu()).is_err());
}

#[test]
fn dropout_is_seeded() {
    let cfg = LlamaConfig::tiny(VOCAB);
    let build = || {
        let model = Llama::random(&cfg, &lora(0.3), 21, &cpu()).unwrap();
        randomize_b(&model, 22);
        model
    };
    let (a, b) = (build(), build());
    let input = ids(2, 6, 4);
    let run = |m: &Llama, seed| m.forward(&input, seed).unwrap();
    assert_eq!(max_abs_diff(&run(&a, Some(5)), &run(&b, Some(5))), 0.0, "same seed, same masks");
    assert_eq!(max_abs_diff(&run(&a, None), &run(&b, None)), 0.0);
    assert!(max_abs_diff(&run(&a, Some(5)), &run(&a, Some(6))) > 1e-4, "another seed, other masks");
    assert!(max_abs_diff(&run(&a, Some(5)), &run(&a, None)) > 1e-4, "eval mode has no dropout");
    // Without dropout, training mode is eval mode.
    let plain = Llama::random(&cfg, &lora(0.0), 21, &cpu()).unwrap();
    randomize_b(&plain, 22);
    assert_eq!(max_abs_diff(&run(&plain, Some(5)), &run(&plain, None)), 0.0);
    // A different init seed gives different adapters.
    let other = Llama::random(&cfg, &lora(0.3), 22, &cpu()).unwrap();
    randomize_b(&other, 22);
    assert!(max_abs_diff(&run(&a, None), &run(&other, None)) > 1e-4);
}

#[test]
fn lora_config_validation() {
    let bad = |cfg: LoraConfig| cfg.validate().unwrap_err();
    assert!(bad(LoraConfig { rank: 0, ..LoraConfig::default() }).contains("rank"));
    assert!(bad(LoraConfig { dropout: 1.0, ..LoraConfig::default() }).contains("dropout"));
    assert!(bad(LoraConfig { dropout: -0.1, ..LoraConfig::default() }).contains("dropout"));
    let err =
        bad(LoraConfig { target_modules: vec!["q_proj".into(), "qkv_proj".into()], ..LoraConfig::default() });
    assert!(err.contains("qkv_proj") && err.contains("gate_proj"), "{err}");
    assert!(bad(LoraConfig { target_modules: vec![], ..LoraConfig::default() }).contains("target_modules"));
    assert!(bad(LoraConfig { target_modules: vec!["v_proj".into(); 2], ..LoraConfig::default() })
        .contains("twice"));
    let invalid = Trainable::Lora(LoraConfig { rank: 0, ..LoraConfig::default() });
    let err = Llama::random(&LlamaConfig::tiny(VOCAB), &invalid, 0, &cpu()).err().expect("rank 0 is refused");
    assert!(err.to_string().contains("rank"));
}

#[test]
fn missing_and_unexpected_weights_are_named() {
    let cfg = LlamaConfig::tiny(VOCAB);
    let weights: HashMap<String, Tensor> = Llama::random(&cfg, &Trainable::Full, 1, &cpu())
        .unwrap()
        .merged_weights()
        .unwrap()
        .into_iter()
        .collect();
    let mut missing = weights.clone();
    missing.remove("model.layers.1.mlp.up_proj.weight");
    let err = Llama::new(&cfg, &missing, &lora(0.0), DType::F32, 0, &cpu()).err().unwrap().to_string();
    assert!(err.contains("model.layers.1.mlp.up_proj.weight"), "{err}");
    let mut extra = weights.clone();
    extra.insert("model.layers.0.mlp.up_proj.bias".into(), Tensor::zeros(64, DType::F32, &cpu()).unwrap());
    let err = Llama::new(&cfg, &extra, &lora(0.0), DType::F32, 0, &cpu()).err().unwrap().to_string();
    assert!(err.contains("model.layers.0.mlp.up_proj.bias"), "{err}");
}

/// A bf16 frozen base stays close to f32 and still trains its adapters.
#[test]
fn bf16_base_is_close_to_f32() {
    let cfg = LlamaConfig::tiny(VOCAB);
    let weights: HashMap<String, Tensor> = Llama::random(&cfg, &Trainable::Full, 1, &cpu())
        .unwrap()
        .merged_weights()
        .unwrap()
        .into_iter()
        .collect();
    let f32 = Llama::new(&cfg, &weights, &lora(0.0), DType::F32, 2, &cpu()).unwrap();
    let bf16 = Llama::new(&cfg, &weights, &lora(0.0), DType::BF16, 2, &cpu()).unwrap();
    randomize_b(&f32, 3);
    randomize_b(&bf16, 3);
    let input = ids(2, 8, 5);
    let diff = max_abs_diff(&f32.forward(&input, None).unwrap(), &bf16.forward(&input, None).unwrap());
    assert!(diff > 0.0 && diff < 2e-2, "bf16 vs f32 logits differ by {diff}");
    assert_all_trainables_get_gradients(&bf16, None);
}

fn model_or_skip(test: &str) -> Option<PathBuf> {
    sagert_models::testing::model_or_skip(test, "smollm2-135m-instruct")
}

fn llama_options() -> LlamaOptions {
    LlamaOptions {
        model_id: "smollm2".into(),
        threads: 2,
        context_per_sequence: 256,
        max_sequences: 4,
        batch_tokens: 128,
        kv_cache_f32: true,
        ..LlamaOptions::default()
    }
}

/// SmolLM2 dequantized to F32 by llama.cpp's own quantizer: the reference
/// (the same file, by name and recipe, as sagert-llama's and sagert-convert's tests make).
fn f32_reference(q4: &Path) -> PathBuf {
    let dst = Path::new(env!("CARGO_TARGET_TMPDIR")).join("SmolLM2-135M-Instruct.F32.gguf");
    if dst.is_file() {
        return dst;
    }
    // llama.cpp's runtime must be initialised before the quantizer runs.
    drop(LlamaBackend::load(q4, llama_options()).expect("model loads"));
    let partial = dst.with_extension(format!("partial-{}", std::process::id()));
    let src = CString::new(q4.to_str().unwrap()).unwrap();
    let out = CString::new(partial.to_str().unwrap()).unwrap();
    // SAFETY: plain C call with valid NUL-terminated paths and llama.cpp's own
    // default parameters; the llama.cpp runtime is initialised above.
    let status = unsafe {
        let mut params = llama_cpp_sys_2::llama_model_quantize_default_params();
        params.ftype = llama_cpp_sys_2::LLAMA_FTYPE_ALL_F32;
        params.allow_requantize = true;
        params.nthread = 2;
        llama_cpp_sys_2::llama_model_quantize(src.as_ptr(), out.as_ptr(), &params)
    };
    assert_eq!(status, 0, "dequantizing {} to F32 failed", q4.display());
    std::fs::rename(&partial, &dst).unwrap();
    dst
}

/// Our SmolLM2-135M (GGUF → transformers F32) against llama.cpp on llama.cpp's
/// own F32 copy of the same weights: per-token log-probs of fixed texts,
/// scored as one right-padded batch.
#[test]
fn smollm2_log_probs_match_llama_cpp() {
    let test = "smollm2_log_probs_match_llama_cpp";
    let Some(q4) = model_or_skip(test) else { return };
    let dir = tempfile::tempdir().unwrap();
    let hf = dir.path().join("hf");
    sagert_convert::gguf_to_hf(&q4, &hf, HfDtype::F32, &Options::default()).unwrap();
    let cfg = LlamaConfig::from_file(&hf.join("config.json")).unwrap();
    assert_eq!((cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.head_dim()), (30, 3, 64));
    assert!(cfg.tie_word_embeddings);
    let weights = load_safetensors_dir(&hf, &cpu()).unwrap();
    let model = Llama::new(&cfg, &weights, &lora(0.0), DType::F32, 0, &cpu()).unwrap();
    drop(weights);

    let pairs: Vec<(String, String)> = [
        ("The capital of France is", " Paris, a city on the Seine."),
        ("<|im_start|>user\nName three colours.<|im_end|>\n<|im_start|>assistant\n", "Red, green and blue."),
        ("def square(x):\n", "    return x * x\n"),
        ("The quick brown fox", " jumps over the lazy dog 123 times."),
        ("你好，", "世界！这是一个测试。"),
    ]
    .iter()
    .map(|(p, c)| (p.to_string(), c.to_string()))
    .collect();
    let reference = f32_reference(&q4);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let scores = runtime.block_on(async {
        let llama = LlamaBackend::load(&reference, llama_options()).unwrap();
        llama.score_text(&pairs).await.unwrap()
    });

    let len = scores.iter().map(|s| s.tokens.len()).max().unwrap();
    let mut padded = Vec::new();
    for s in &scores {
        padded.extend(s.tokens.iter().copied().chain(std::iter::repeat_n(0, len - s.tokens.len())));
    }
    let input = Tensor::from_vec(padded, (scores.len(), len), &cpu()).unwrap();
    let logps = candle_nn::ops::log_softmax(&model.forward(&input, None).unwrap(), D::Minus1).unwrap();
    let logps: Vec<Vec<Vec<f32>>> = logps.to_vec3().unwrap();
    let mut worst = 0f64;
    let mut count = 0;
    for (row, s) in logps.iter().zip(&scores) {
        for (j, theirs) in (s.scored_from..s.tokens.len()).zip(&s.logprobs) {
            let ours = f64::from(row[j - 1][s.tokens[j] as usize]);
            worst = worst.max((ours - theirs).abs());
            count += 1;
        }
    }
    eprintln!("{count} tokens: max |Δ log-prob| against llama.cpp F32 = {worst:.2e}");
    assert!(count > 20);
    assert!(worst < 1e-3, "max |Δ log-prob| {worst}");
}
