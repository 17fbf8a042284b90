//! Exports of a trained model, all under `RUN_DIR/export/`, replaced as a whole:
//!
//! - `adapter/`: the LoRA adapter in PEFT's format: `adapter_config.json` and
//!   `adapter_model.safetensors` with PEFT's tensor names
//!   (`base_model.model.<module path>.lora_A.weight`, `lora_B.weight`), loadable
//!   with `PeftModel.from_pretrained(base, "adapter")`;
//! - `merged/`: the base with the adapter folded in (or the fully fine-tuned
//!   weights), as a transformers directory (`model.safetensors` in f32,
//!   `config.json` and the base's tokenizer files), which `sagert`'s embedded
//!   endpoints load directly (converted to GGUF once, in the model cache);
//! - `model.gguf`: the merged model as GGUF, for llama.cpp and `sagert serve`.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::error::{AlignError, Result};
use crate::lora::LoraConfig;
use crate::model::Llama;

/// What [`export`] writes.
#[derive(Debug, Clone)]
pub struct ExportPlan {
    /// Write the PEFT adapter (LoRA runs only).
    pub adapter: bool,
    /// Write the merged transformers directory.
    pub merged: bool,
    /// Write `model.gguf` in this type (requires `merged`'s tensors; written
    /// from a merged directory even when `merged` is off, then removed).
    pub gguf: Option<sagert_convert::GgufDtype>,
}

/// What an export wrote.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Exported {
    pub adapter: Option<PathBuf>,
    pub merged: Option<PathBuf>,
    pub gguf: Option<PathBuf>,
}

/// The transformers files copied from the base directory next to merged weights.
const COPIED: [&str; 5] = [
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
    "special_tokens_map.json",
];

/// Write the exports of `model` (trained over the transformers directory
/// `base_dir`) to `run_dir/export`, atomically replacing an earlier export.
pub fn export(
    model: &Llama,
    lora: Option<&LoraConfig>,
    base_dir: &Path,
    run_dir: &Path,
    plan: &ExportPlan,
) -> Result<Exported> {
    let final_dir = run_dir.join("export");
    let tmp = run_dir.join(format!(".export.tmp-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(AlignError::io(&tmp))?;
    }
    fs::create_dir_all(&tmp).map_err(AlignError::io(&tmp))?;
    let mut out = Exported::default();
    if let (true, Some(lora)) = (plan.adapter, lora) {
        write_peft_adapter(model, lora, base_dir, &tmp.join("adapter"))?;
        out.adapter = Some(final_dir.join("adapter"));
    }
    if plan.merged || plan.gguf.is_some() {
        write_merged(model, base_dir, &tmp.join("merged"))?;
        if let Some(dtype) = plan.gguf {
            sagert_convert::hf_to_gguf(
                &tmp.join("merged"),
                &tmp.join("model.gguf"),
                dtype,
                &Default::default(),
            )?;
            out.gguf = Some(final_dir.join("model.gguf"));
        }
        if plan.merged {
            out.merged = Some(final_dir.join("merged"));
        } else {
            fs::remove_dir_all(tmp.join("merged")).map_err(AlignError::io(tmp.join("merged")))?;
        }
    }
    if final_dir.exists() {
        let old = run_dir.join(format!(".export.old-{}", std::process::id()));
        fs::rename(&final_dir, &old).map_err(AlignError::io(&final_dir))?;
        fs::rename(&tmp, &final_dir).map_err(AlignError::io(&final_dir))?;
        fs::remove_dir_all(&old).map_err(AlignError::io(&old))?;
    } else {
        fs::rename(&tmp, &final_dir).map_err(AlignError::io(&final_dir))?;
    }
    Ok(out)
}

/// PEFT's `adapter_config.json` for `lora` over the base at `base_dir`.
pub fn peft_config(lora: &LoraConfig, base_dir: &Path) -> serde_json::Value {
    let base = fs::canonicalize(base_dir).unwrap_or_else(|_| base_dir.to_path_buf());
    json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base.display().to_string(),
        "r": lora.rank,
        "lora_alpha": lora.alpha,
        "lora_dropout": lora.dropout,
        "target_modules": lora.target_modules,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "modules_to_save": null,
        "layers_to_transform": null,
        "layers_pattern": null,
        "rank_pattern": {},
        "alpha_pattern": {},
        "use_rslora": false,
        "use_dora": false,
        "revision": null,
        "library": "sagert",
    })
}

/// Write the adapter of `model` in PEFT's format into `dir` (created).
pub fn write_peft_adapter(model: &Llama, lora: &LoraConfig, base_dir: &Path, dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(AlignError::io(dir))?;
    let tensors: HashMap<String, candle_core::Tensor> =
        model.trainable().into_iter().map(|(name, var)| (name, var.as_tensor().clone())).collect();
    candle_core::safetensors::save(&tensors, dir.join("adapter_model.safetensors"))?;
    let config = serde_json::to_vec_pretty(&peft_config(lora, base_dir)).expect("json");
    fs::write(dir.join("adapter_config.json"), config)
        .map_err(AlignError::io(dir.join("adapter_config.json")))
}

/// Write `model`'s merged weights as a transformers directory `dir` (created),
/// with the configuration and tokenizer files of `base_dir`.
pub fn write_merged(model: &Llama, base_dir: &Path, dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(AlignError::io(dir))?;
    let weights: HashMap<String, candle_core::Tensor> = model.merged_weights()?.into_iter().collect();
    candle_core::safetensors::save(&weights, dir.join("model.safetensors"))?;
    for name in COPIED {
        let from = base_dir.join(name);
        if !from.is_file() {
            continue;
        }
        if name == "config.json" {
            let bytes = fs::read(&from).map_err(AlignError::io(&from))?;
            let mut config: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| AlignError::Model { path: from.clone(), message: e.to_string() })?;
            config["torch_dtype"] = json!("float32");
            let text = serde_json::to_vec_pretty(&config).expect("json");
            fs::write(dir.join(name), text).map_err(AlignError::io(dir.join(name)))?;
        } else {
            fs::copy(&from, dir.join(name)).map_err(AlignError::io(&from))?;
        }
    }
    Ok(())
}
